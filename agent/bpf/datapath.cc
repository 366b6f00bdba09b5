#include "bpf/datapath.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <unistd.h>
#include <net/if.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <sys/stat.h>

#include <filesystem>

#include "aimesh/abi.h"
#include "bpf/map_copy.h"
#include "bpf/system.h"
#include "util/cgroup.h"
#include "sock_lb.skel.h"
#include "sock_ops.skel.h"
#include "sock_telemetry.skel.h"
#include "tc_lb.skel.h"

namespace aimesh {

namespace fs = std::filesystem;

namespace {

std::string linksDir(const std::string& pinDir) { return pinDir + "/links"; }
// One pin per interface the TC program is attached to (the program itself:
// TC filters are not links), so a later agent or --cleanup knows where.
std::string tcDir(const std::string& pinDir) { return pinDir + "/tc"; }

// Pin directories are 0700 and ours: a bpffs mounted world-writable (its
// default mode is 1777) would otherwise let a local user create the directory
// first and swap or plant pins the agent then adopts. The pins themselves are
// created 0600 & ~umask by the kernel (bpf_obj_pin). docs/security.md.
Status securePinDir(const std::string& dir) {
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) return Error::fromErrno("stat pin dir " + dir);
  if (!S_ISDIR(st.st_mode) || st.st_uid != ::geteuid()) {
    return Error::msg("pin dir " + dir + " is not a directory owned by this agent's user; remove it and restart");
  }
  if (::chmod(dir.c_str(), 0700) != 0) return Error::fromErrno("chmod 0700 " + dir);
  return {};
}


// Detaches our filter from IFNAME's ingress (if it is there). Missing
// interfaces and filters are fine: there is nothing to remove.
void detachTc(const std::string& ifname) {
  int ifindex = static_cast<int>(if_nametoindex(ifname.c_str()));
  if (ifindex == 0) return;
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
  LIBBPF_OPTS(bpf_tc_opts, o, .handle = kTcHandle, .priority = kTcPriority);
  bpf_tc_detach(&hook, &o);
}

// Short program name: the function name without "aimesh_"; also the link's
// pin name, e.g. "connect4", "sockops", "skb_ingress".
std::string shortName(const bpf_program* p) {
  std::string n = bpf_program__name(p);
  return n.rfind("aimesh_", 0) == 0 ? n.substr(7) : n;
}

Result<bpf_link_info> linkInfo(int fd) {
  bpf_link_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) return Error::fromErrno("bpf_obj_get_info_by_fd(link)");
  return info;
}

// A pinned map whose size is not what the limits want: libbpf creates it
// anew at load (not pinned), and finishResizes() fills it from the old one
// and pins it in the old one's place.
struct Resize {
  bpf_map* map = nullptr;
  std::string pin;
  UniqueFd old;
  uint32_t from = 0, to = 0;
};

// Sizes every sized map of `obj` from `limits`, before load. A map already
// pinned with another type, key or value size cannot be reused (libbpf would
// refuse with a bare EINVAL): say which map, what differs and the way out. A
// map pinned with another size is resized: returned for finishResizes().
Result<std::vector<Resize>> sizeMaps(bpf_object* obj, const MapLimits& limits) {
  std::vector<Resize> resizes;
  bpf_map* m = nullptr;
  bpf_object__for_each_map(m, obj) {
    auto want = limits.entriesOf(bpf_map__name(m));
    if (want)
      if (int err = bpf_map__set_max_entries(m, *want); err != 0)
        return Error::fromCode(err, fmt::format("size map {} to {} entries", bpf_map__name(m), *want));
    const char* pin = bpf_map__pin_path(m);
    if (!pin) continue;
    UniqueFd fd(bpf_obj_get(pin));
    if (!fd.valid()) continue;  // not pinned yet: created at load
    bpf_map_info info{};
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(fd.get(), &info, &len) != 0) return Error::fromErrno(std::string("inspect ") + pin);
    if (info.type != bpf_map__type(m) || info.value_size != bpf_map__value_size(m) ||
        info.key_size != bpf_map__key_size(m))
      return Error::msg(fmt::format(
          "pinned map {} is a {} of {}-byte keys and {}-byte values but this agent's programs want a {} of "
          "{}-byte keys and {}-byte values: it was made by another aimesh version; run aimesh-agent --cleanup "
          "first (that detaches the data plane until the agent starts again)",
          pin, libbpf_bpf_map_type_str(static_cast<bpf_map_type>(info.type)), info.key_size, info.value_size,
          libbpf_bpf_map_type_str(bpf_map__type(m)), bpf_map__key_size(m), bpf_map__value_size(m)));
    if (want && info.max_entries != *want) {
      Resize r{m, pin, std::move(fd), info.max_entries, *want};
      if (int err = bpf_map__set_pin_path(m, nullptr); err != 0)
        return Error::fromCode(err, std::string("resize ") + pin);
      resizes.push_back(std::move(r));
    }
  }
  return resizes;
}

// After load: copies each resized map's entries from the old map, then pins
// every new map in its old one's place (a rename over the pin: a reader sees
// the old map or the new one, never none). A copy that fails leaves every
// pin as it was. The programs still attached keep the old maps until
// attachAll() swaps them: the agent's own maps (services, endpoints) are
// exact; counters and loads the old programs change meanwhile (milliseconds)
// are not carried over.
Status finishResizes(std::vector<Resize>& resizes, const MapLimits& limits) {
  std::vector<uint64_t> copied;
  for (auto& r : resizes) {
    std::string name = bpf_map__name(r.map);
    uint32_t idLimit = name == "aimesh_services" ? limits.services : name == "aimesh_backends" ? limits.backends : 0;
    auto n = copyMapEntries(r.old.get(), bpf_map__fd(r.map), r.pin, idLimit);
    if (!n)
      return Error::msg(fmt::format("cannot resize {} from {} to {} entries: {}{}", r.pin, r.from, r.to,
                                    n.error().message(),
                                    r.to < r.from ? " (raise the limit again, or run aimesh-agent --cleanup first)"
                                                  : ""));
    copied.push_back(*n);
  }
  for (size_t i = 0; i < resizes.size(); ++i) {
    const Resize& r = resizes[i];
    std::string tmp = r.pin + "_resized";  // bpffs names have no dots
    ::unlink(tmp.c_str());
    if (bpf_obj_pin(bpf_map__fd(r.map), tmp.c_str()) != 0) return Error::fromErrno("pin " + tmp);
    if (::rename(tmp.c_str(), r.pin.c_str()) != 0) {
      Error e = Error::fromErrno("replace " + r.pin);
      ::unlink(tmp.c_str());
      return e;
    }
    spdlog::info("resized map {} from {} to {} entries ({} entries copied)", r.pin, r.from, r.to, copied[i]);
  }
  return {};
}

// Opens a skeleton with maps pinned by name under pinDir, sizes its maps and
// loads it.
template <class Skel>
Result<void*> openSkel(const char* what, Skel* (*open)(const bpf_object_open_opts*), int (*load)(Skel*),
                       void (*destroy)(Skel*), const std::string& pinDir, const MapLimits& limits) {
  LIBBPF_OPTS(bpf_object_open_opts, oo, .pin_root_path = pinDir.c_str());
  Skel* s = open(&oo);
  if (!s) return Error::fromErrno(std::string("open BPF object ") + what);
  auto resizes = sizeMaps(s->obj, limits);
  if (!resizes) {
    destroy(s);
    return resizes.error();
  }
  auto t0 = std::chrono::steady_clock::now();
  int err = load(s);
  spdlog::debug("loaded BPF object {} in {:.0f} ms (maps created or reused, programs verified)", what,
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  if (err != 0) {
    destroy(s);
    return Error::fromCode(err, std::string("load BPF object ") + what +
                                    " (verifier log above; if pinned maps under " + pinDir +
                                    " are from an incompatible version, run aimesh-agent --cleanup)");
  }
  if (auto st = finishResizes(*resizes, limits); !st) {
    destroy(s);
    return st.error();
  }
  return static_cast<void*>(s);
}

// Loads a skeleton (openSkel) and appends it to `objects`, which then owns
// it; returns the skeleton. `Object` is Datapath::Object, deduced (the name
// is private to Datapath).
template <class Skel, void (*Destroy)(Skel*), class Object>
Result<Skel*> loadObject(std::vector<Object>& objects, const char* what, Skel* (*open)(const bpf_object_open_opts*),
                         int (*load)(Skel*), const DatapathOptions& opts) {
  auto s = openSkel(what, open, load, Destroy, opts.pinDir, opts.limits);
  if (!s) return s.error();
  auto* skel = static_cast<Skel*>(*s);
  Object o;
  o.skel = skel;
  o.destroy = [](void* p) { Destroy(static_cast<Skel*>(p)); };
  o.obj = skel->obj;
  objects.push_back(std::move(o));
  return skel;
}

// The telemetry programs, detached when telemetry is off.
bool isTelemetryLink(const std::string& name) {
  return name == "sockops" || name == "skb_egress" || name == "skb_ingress";
}

// Makes the pin dir and its links dir, each checked before anything is made
// inside it.
Status makePinDirs(const std::string& pinDir) {
  std::error_code ec;
  for (const auto& dir : {pinDir, linksDir(pinDir)}) {
    fs::create_directories(dir, ec);
    if (ec) return Error::fromCode(ec.value(), "create pin dir " + dir);
    if (auto st = securePinDir(dir); !st) return st.error();
  }
  return {};
}

// Telemetry off: detach telemetry links an earlier agent pinned.
void detachTelemetryLinks(const std::string& pinDir) {
  std::error_code ec;
  for (auto& e : fs::directory_iterator(linksDir(pinDir), ec)) {
    if (!isTelemetryLink(e.path().filename())) continue;
    int fd = bpf_obj_get(e.path().c_str());
    if (fd >= 0) {
      bpf_link_detach(fd);
      ::close(fd);
    }
    ::unlink(e.path().c_str());
  }
}

MapFds mapFdsOf(const sock_lb& lb) {
  auto* m = &lb.maps;
  MapFds fds{bpf_map__fd(m->aimesh_frontends), bpf_map__fd(m->aimesh_services), bpf_map__fd(m->aimesh_slots),
             bpf_map__fd(m->aimesh_backends),  bpf_map__fd(m->aimesh_revnat),   bpf_map__fd(m->aimesh_svc_stats),
             bpf_map__fd(m->aimesh_be_stats),  bpf_map__fd(m->aimesh_reasons),  bpf_map__fd(m->aimesh_hist),
             bpf_map__fd(m->aimesh_be_tel),    bpf_map__fd(m->aimesh_be_load),  bpf_map__fd(m->aimesh_events),
             bpf_map__fd(m->aimesh_hash_tables), bpf_map__fd(m->aimesh_svc_load), bpf_map__fd(m->aimesh_be_signal),
             bpf_map__fd(m->aimesh_config)};
  fds.policy = bpf_map__fd(m->aimesh_policy);
  fds.clients = bpf_map__fd(m->aimesh_clients);
  fds.splits = bpf_map__fd(m->aimesh_splits);
  fds.splitStats = bpf_map__fd(m->aimesh_split_stats);
  return fds;
}

// Writes the tunables into aimesh_config (one entry, at key 0).
Status writeConfig(int configFd, const DatapathOptions::Tuning& tuning) {
  aimesh_config cfg{};
  cfg.ewma_tau_ns = tuning.ewmaTauNs;
  cfg.penalty_half_life_ns = tuning.penaltyHalfLifeNs;
  cfg.eject_base_ns = tuning.ejectBaseNs;
  cfg.eject_max_ns = tuning.ejectMaxNs;
  cfg.penalty_per_failure = tuning.penaltyPerFailure;
  cfg.eject_after = tuning.ejectAfter;
  cfg.ct_tcp_timeout_ns = tuning.ctTcpTimeoutNs;
  cfg.ct_udp_timeout_ns = tuning.ctUdpTimeoutNs;
  cfg.ct_closing_timeout_ns = tuning.ctClosingTimeoutNs;
  uint32_t zero = 0;
  if (bpf_map_update_elem(configFd, &zero, &cfg, BPF_ANY) != 0) return Error::fromErrno("write aimesh_config");
  return {};
}

}  // namespace

Datapath::Object::Object(Object&& o) noexcept
    : skel(std::exchange(o.skel, nullptr)), destroy(o.destroy), obj(std::exchange(o.obj, nullptr)) {}
Datapath::Object& Datapath::Object::operator=(Object&& o) noexcept {
  if (this != &o) {
    if (skel) destroy(skel);
    skel = std::exchange(o.skel, nullptr);
    destroy = o.destroy;
    obj = std::exchange(o.obj, nullptr);
  }
  return *this;
}
Datapath::Object::~Object() {
  if (skel) destroy(skel);
}

// Closing our fd of a pinned link leaves it attached (the pin holds it).
void Datapath::LinkDeleter::operator()(bpf_link* l) const { bpf_link__destroy(l); }

Datapath::Datapath() = default;
Datapath::Datapath(Datapath&&) noexcept = default;
Datapath& Datapath::operator=(Datapath&&) noexcept = default;
Datapath::~Datapath() {
  links_.clear();  // before the objects their programs belong to
}

Status Datapath::attachAll(const Object& o, const DatapathOptions& opts, int cgFd, uint64_t cgId) {
  bpf_program* prog;
  bpf_object__for_each_program(prog, o.obj) {
    std::string name = shortName(prog);
    std::string pin = linksDir(opts.pinDir) + "/" + name;
    ProgramStatus st{name, opts.cgroupPath, 0, 0, false};
    bpf_link* link = nullptr;
    if (fs::exists(pin)) {
      link = bpf_link__open(pin.c_str());
      if (!link) return Error::fromErrno("open pinned link " + pin);
      auto info = linkInfo(bpf_link__fd(link));
      if (info && info->type == BPF_LINK_TYPE_CGROUP && info->cgroup.cgroup_id == cgId) {
        // Same hook: swap the program in place, no moment without one.
        if (int err = bpf_link__update_program(link, prog); err != 0) {
          bpf_link__destroy(link);
          return Error::fromCode(err, "replace program of pinned link " + pin);
        }
        st.adopted = true;
      } else {
        spdlog::warn("pinned link {} belongs to another cgroup; re-attaching to {}", pin, opts.cgroupPath);
        bpf_link__detach(link);
        bpf_link__unpin(link);
        bpf_link__destroy(link);
        link = nullptr;
      }
    }
    if (!link) {
      link = bpf_program__attach_cgroup(prog, cgFd);
      if (!link) return Error::fromErrno("attach " + name + " to cgroup " + opts.cgroupPath);
      if (int err = bpf_link__pin(link, pin.c_str()); err != 0) {
        bpf_link__detach(link);
        bpf_link__destroy(link);
        return Error::fromCode(err, "pin link " + pin);
      }
    }
    links_.emplace_back(link);
    auto info = linkInfo(bpf_link__fd(link));
    st.linkId = info ? info->id : 0;
    programs_.push_back(st);
  }
  return {};
}

Status Datapath::attachTc(const DatapathOptions& opts) {
  std::error_code ec;
  fs::create_directories(tcDir(opts.pinDir), ec);
  if (auto st = securePinDir(tcDir(opts.pinDir)); !st) return st.error();
  // Interfaces an earlier agent attached to and that are no longer wanted.
  for (auto& e : fs::directory_iterator(tcDir(opts.pinDir), ec)) {
    std::string ifname = e.path().filename();
    if (std::find(opts.tcInterfaces.begin(), opts.tcInterfaces.end(), ifname) != opts.tcInterfaces.end()) continue;
    detachTc(ifname);
    ::unlink(e.path().c_str());
    spdlog::info("detached tc_lb from {} (no longer in --tc-interfaces)", ifname);
  }
  if (opts.tcInterfaces.empty()) return {};

  auto tc = loadObject<tc_lb, tc_lb__destroy>(objects_, "tc_lb", tc_lb__open_opts, tc_lb__load, opts);
  if (!tc) return tc.error();
  tc_lb* skel = *tc;
  maps_.ct = bpf_map__fd(skel->maps.aimesh_ct);
  int progFd = bpf_program__fd(skel->progs.aimesh_tc_ingress);
  bpf_prog_info pinfo{};
  uint32_t plen = sizeof(pinfo);
  bpf_obj_get_info_by_fd(progFd, &pinfo, &plen);

  for (auto& ifname : opts.tcInterfaces) {
    int ifindex = static_cast<int>(if_nametoindex(ifname.c_str()));
    if (ifindex == 0) return Error::fromErrno("--tc-interfaces: no interface " + ifname);
    LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
    int err = bpf_tc_hook_create(&hook);  // the clsact qdisc; EEXIST when there
    if (err && err != -EEXIST) return Error::fromCode(err, "create clsact qdisc on " + ifname);
    LIBBPF_OPTS(bpf_tc_opts, q, .handle = kTcHandle, .priority = kTcPriority);
    bool adopted = bpf_tc_query(&hook, &q) == 0;
    // Replace in place: no moment without a filter, never two.
    LIBBPF_OPTS(bpf_tc_opts, a, .prog_fd = progFd, .flags = BPF_TC_F_REPLACE, .handle = kTcHandle,
                .priority = kTcPriority);
    if ((err = bpf_tc_attach(&hook, &a)) != 0) return Error::fromCode(err, "attach tc_lb to " + ifname + " ingress");
    std::string pin = tcDir(opts.pinDir) + "/" + ifname;
    ::unlink(pin.c_str());
    if (bpf_obj_pin(progFd, pin.c_str()) != 0) return Error::fromErrno("pin " + pin);
    programs_.push_back(ProgramStatus{"tc_ingress", "tc ingress " + ifname, 0, pinfo.id, adopted});
  }
  return {};
}

Result<Datapath> Datapath::open(const DatapathOptions& opts) {
  if (Status st = makePinDirs(opts.pinDir); !st) return st.error();
  auto cgId = cgroupId(opts.cgroupPath);
  if (!cgId) return cgId.error();
  UniqueFd cgFd(::open(opts.cgroupPath.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!cgFd.valid()) return Error::fromErrno("open cgroup " + opts.cgroupPath);

  Datapath dp;
  // Counter maps not pinned yet are created by this load, all zeros.
  bool countersZero = true;
  for (const char* m : {"aimesh_svc_stats", "aimesh_svc_load", "aimesh_be_stats", "aimesh_be_tel", "aimesh_be_load",
                        "aimesh_be_signal", "aimesh_hist", "aimesh_clients", "aimesh_split_stats"})
    if (::access((opts.pinDir + "/" + m).c_str(), F_OK) == 0) countersZero = false;
  // sock_lb first: it creates and pins every map; the others reuse the pins.
  auto lb = loadObject<sock_lb, sock_lb__destroy>(dp.objects_, "sock_lb", sock_lb__open_opts, sock_lb__load, opts);
  if (!lb) return lb.error();
  if (opts.telemetry) {
    auto ops = loadObject<sock_ops, sock_ops__destroy>(dp.objects_, "sock_ops", sock_ops__open_opts, sock_ops__load,
                                                       opts);
    if (!ops) return ops.error();
    auto tel = loadObject<sock_telemetry, sock_telemetry__destroy>(dp.objects_, "sock_telemetry",
                                                                   sock_telemetry__open_opts, sock_telemetry__load,
                                                                   opts);
    if (!tel) return tel.error();
  } else {
    detachTelemetryLinks(opts.pinDir);
  }

  for (auto& obj : dp.objects_) {
    Status st = dp.attachAll(obj, opts, cgFd.get(), *cgId);
    if (!st) return st.error();
  }
  dp.maps_ = mapFdsOf(**lb);
  dp.maps_.countersZero = countersZero;
  if (Status st = writeConfig(dp.maps_.config, opts.tuning); !st) return st.error();
  // Last: the TC program reads the configuration just written (timeouts).
  if (Status st = dp.attachTc(opts); !st) return st.error();
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
  std::string td = tcDir(pinDir);
  if (fs::is_directory(td, ec)) {
    for (auto& e : fs::directory_iterator(td, ec)) {
      detachTc(e.path().filename());
      if (::unlink(e.path().c_str()) != 0) return Error::fromErrno("unlink " + e.path().string());
      ++removed;
    }
    if (::rmdir(td.c_str()) != 0) return Error::fromErrno("rmdir " + td);
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
