#include "bpf/sock_iter.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include <fmt/format.h>

#include "sock_iter.skel.h"

namespace aimesh {

namespace {

// Reads an iterator to its end. The seq_file hands out whole records.
Result<std::vector<aimesh_conn>> drain(int fd, std::vector<aimesh_conn>& out) {
  char buf[64 * 1024];
  std::string pending;
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::fromErrno("read socket iterator");
    }
    if (n == 0) break;
    pending.append(buf, static_cast<size_t>(n));
  }
  if (pending.size() % sizeof(aimesh_conn) != 0)
    return Error::msg(fmt::format("socket iterator returned {} bytes, not whole records of {}", pending.size(),
                                  sizeof(aimesh_conn)));
  for (size_t off = 0; off < pending.size(); off += sizeof(aimesh_conn)) {
    aimesh_conn c;
    std::memcpy(&c, pending.data() + off, sizeof(c));
    out.push_back(c);
  }
  return out;
}
}  // namespace

Result<SockIter> SockIter::open(const std::string& pinDir, const MapLimits& limits) {
  LIBBPF_OPTS(bpf_object_open_opts, oo, .pin_root_path = pinDir.c_str());
  sock_iter* s = sock_iter__open_opts(&oo);
  if (!s) return Error::fromErrno("open BPF object sock_iter");
  bpf_map* m = nullptr;
  bpf_object__for_each_map(m, s->obj) {
    if (auto want = limits.entriesOf(bpf_map__name(m))) bpf_map__set_max_entries(m, *want);
  }
  if (int err = sock_iter__load(s); err != 0) {
    sock_iter__destroy(s);
    return Error::fromCode(err, "load the socket iterators (iter/tcp, iter/udp with bpf_sock_destroy: Linux >= 6.5)");
  }
  SockIter it;
  it.skel_.reset(s);
  it.tcp_.reset(bpf_program__attach_iter(s->progs.aimesh_iter_tcp, nullptr));
  if (!it.tcp_) return Error::fromErrno("create the iter/tcp link");
  it.udp_.reset(bpf_program__attach_iter(s->progs.aimesh_iter_udp, nullptr));
  if (!it.udp_) return Error::fromErrno("create the iter/udp link");
  it.ctlFd_ = bpf_map__fd(s->maps.aimesh_lc_ctl);
  it.svcFd_ = bpf_map__fd(s->maps.aimesh_lc_svc);
  it.beFd_ = bpf_map__fd(s->maps.aimesh_lc_be);
  return it;
}

Status SockIter::probe() {
  sock_iter* s = sock_iter__open();
  if (!s) return Error::fromErrno("open BPF object sock_iter");
  std::unique_ptr<void, SkelDeleter> owner(s);
  bpf_map* m = nullptr;
  bpf_object__for_each_map(m, s->obj) bpf_map__set_pin_path(m, nullptr);
  if (int err = sock_iter__load(s); err != 0)
    return Error::fromCode(err, "load iter/tcp and iter/udp programs calling bpf_sock_destroy");
  std::unique_ptr<bpf_link, LinkDeleter> tcp(bpf_program__attach_iter(s->progs.aimesh_iter_tcp, nullptr));
  if (!tcp) return Error::fromErrno("create an iter/tcp link");
  std::unique_ptr<bpf_link, LinkDeleter> udp(bpf_program__attach_iter(s->progs.aimesh_iter_udp, nullptr));
  if (!udp) return Error::fromErrno("create an iter/udp link");
  return {};
}

void SockIter::SkelDeleter::operator()(void* skel) const { sock_iter__destroy(static_cast<sock_iter*>(skel)); }
void SockIter::LinkDeleter::operator()(bpf_link* l) const { bpf_link__destroy(l); }

SockIter::~SockIter() {
  tcp_.reset();  // the links before the programs they hold
  udp_.reset();
}

Result<std::vector<aimesh_conn>> SockIter::pass(int netnsFd, int homeNetnsFd) {
  if (::setns(netnsFd, CLONE_NEWNET) != 0) return Error::fromErrno("enter network namespace");
  UniqueFd tcp(bpf_iter_create(bpf_link__fd(tcp_.get())));
  int tcpErr = errno;
  UniqueFd udp(bpf_iter_create(bpf_link__fd(udp_.get())));
  int udpErr = errno;
  if (::setns(homeNetnsFd, CLONE_NEWNET) != 0) return Error::fromErrno("return to the agent's network namespace");
  if (!tcp.valid()) return Error::fromCode(-tcpErr, "create a TCP socket iterator");
  if (!udp.valid()) return Error::fromCode(-udpErr, "create a UDP socket iterator");
  std::vector<aimesh_conn> out;
  if (auto r = drain(tcp.get(), out); !r) return r.error();
  if (auto r = drain(udp.get(), out); !r) return r.error();
  return out;
}

}  // namespace aimesh
