#include "bpf/datapath.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <filesystem>

#include "bpf/system.h"
#include "sock_lb.skel.h"

namespace aimesh {
namespace fs = std::filesystem;

namespace {
std::string linksDir(const std::string& pinDir) { return pinDir + "/links"; }

std::vector<std::pair<std::string, bpf_program*>> programsOf(sock_lb* s) {
  return {
      {"connect4", s->progs.aimesh_connect4},   {"connect6", s->progs.aimesh_connect6},
      {"sendmsg4", s->progs.aimesh_sendmsg4},   {"sendmsg6", s->progs.aimesh_sendmsg6},
      {"recvmsg4", s->progs.aimesh_recvmsg4},   {"recvmsg6", s->progs.aimesh_recvmsg6},
      {"getpeername4", s->progs.aimesh_getpeer4}, {"getpeername6", s->progs.aimesh_getpeer6},
  };
}

Result<bpf_link_info> linkInfo(int fd) {
  bpf_link_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) return Error::fromErrno("bpf_obj_get_info_by_fd(link)");
  return info;
}
}  // namespace

void Datapath::SkelDeleter::operator()(sock_lb* s) const { sock_lb__destroy(s); }
// Closing our fd of a pinned link leaves it attached (the pin holds it).
void Datapath::LinkDeleter::operator()(bpf_link* l) const { bpf_link__destroy(l); }

Datapath::Datapath() = default;
Datapath::Datapath(Datapath&&) noexcept = default;
Datapath& Datapath::operator=(Datapath&&) noexcept = default;
Datapath::~Datapath() = default;

Result<Datapath> Datapath::open(const DatapathOptions& opts) {
  std::error_code ec;
  fs::create_directories(linksDir(opts.pinDir), ec);
  if (ec) return Error::fromCode(ec.value(), "create pin dir " + linksDir(opts.pinDir));
  ::chmod(opts.pinDir.c_str(), 0700);
  ::chmod(linksDir(opts.pinDir).c_str(), 0700);

  auto cgId = cgroupId(opts.cgroupPath);
  if (!cgId) return cgId.error();
  UniqueFd cgFd(::open(opts.cgroupPath.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!cgFd.valid()) return Error::fromErrno("open cgroup " + opts.cgroupPath);

  Datapath dp;
  LIBBPF_OPTS(bpf_object_open_opts, oo, .pin_root_path = opts.pinDir.c_str());
  dp.skel_.reset(sock_lb__open_opts(&oo));
  if (!dp.skel_) return Error::fromErrno("open sock_lb BPF object");
  if (int err = sock_lb__load(dp.skel_.get()); err != 0)
    return Error::fromCode(err,
                           "load sock_lb BPF programs (verifier log above; if pinned maps under " + opts.pinDir +
                               " are from an incompatible version, run aimesh-agent --cleanup)");

  for (auto& [name, prog] : programsOf(dp.skel_.get())) {
    std::string pin = linksDir(opts.pinDir) + "/" + name;
    ProgramStatus st{name, opts.cgroupPath, 0, false};
    bpf_link* link = nullptr;
    if (fs::exists(pin)) {
      link = bpf_link__open(pin.c_str());
      if (!link) return Error::fromErrno("open pinned link " + pin);
      auto info = linkInfo(bpf_link__fd(link));
      if (info && info->type == BPF_LINK_TYPE_CGROUP && info->cgroup.cgroup_id == *cgId) {
        // Same hook: swap the program in place, no moment without one.
        if (int err = bpf_link__update_program(link, prog); err != 0) {
          bpf_link__destroy(link);
          return Error::fromCode(err, "replace program of pinned link " + pin);
        }
        st.adopted = true;
      } else {
        // Pinned for another cgroup: detach it and attach where asked.
        spdlog::warn("pinned link {} belongs to another cgroup; re-attaching to {}", pin, opts.cgroupPath);
        bpf_link__detach(link);
        bpf_link__unpin(link);
        bpf_link__destroy(link);
        link = nullptr;
      }
    }
    if (!link) {
      link = bpf_program__attach_cgroup(prog, cgFd.get());
      if (!link) return Error::fromErrno("attach " + name + " to cgroup " + opts.cgroupPath);
      if (int err = bpf_link__pin(link, pin.c_str()); err != 0) {
        bpf_link__detach(link);
        bpf_link__destroy(link);
        return Error::fromCode(err, "pin link " + pin);
      }
    }
    dp.links_.emplace_back(link);
    auto info = linkInfo(bpf_link__fd(link));
    st.linkId = info ? info->id : 0;
    dp.programs_.push_back(st);
  }

  auto* m = &dp.skel_->maps;
  dp.maps_ = MapFds{bpf_map__fd(m->aimesh_frontends), bpf_map__fd(m->aimesh_services), bpf_map__fd(m->aimesh_slots),
                    bpf_map__fd(m->aimesh_backends),  bpf_map__fd(m->aimesh_revnat),   bpf_map__fd(m->aimesh_svc_stats),
                    bpf_map__fd(m->aimesh_be_stats),  bpf_map__fd(m->aimesh_reasons)};
  return dp;
}

Result<int> Datapath::cleanup(const std::string& pinDir) {
  int removed = 0;
  std::error_code ec;
  std::string ld = linksDir(pinDir);
  if (fs::is_directory(ld, ec)) {
    for (auto& e : fs::directory_iterator(ld, ec)) {
      // Detach explicitly: another process may still hold an fd of the link.
      int fd = bpf_obj_get(e.path().c_str());
      if (fd >= 0) {
        bpf_link_detach(fd);
        ::close(fd);
      }
      if (::unlink(e.path().c_str()) != 0) return Error::fromErrno("unlink " + e.path().string());
      ++removed;
    }
    if (::rmdir(ld.c_str()) != 0) return Error::fromErrno("rmdir " + ld);
  }
  if (fs::is_directory(pinDir, ec)) {
    for (auto& e : fs::directory_iterator(pinDir, ec)) {
      if (e.path().filename().string().rfind("aimesh_", 0) != 0) continue;
      if (::unlink(e.path().c_str()) != 0) return Error::fromErrno("unlink " + e.path().string());
      ++removed;
    }
    if (::rmdir(pinDir.c_str()) != 0)
      return Error::fromErrno("rmdir " + pinDir + " (something not made by aimesh is in it)");
  }
  return removed;
}

}  // namespace aimesh
