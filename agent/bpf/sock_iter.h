// The connection-lifecycle iterators (bpf/sock_iter.bpf.c), loaded by the
// agent beside the pinned data plane. Their programs read the pinned maps
// (aimesh_sockets, aimesh_backends, aimesh_be_load, aimesh_be_tel) and own
// three maps of their own, not pinned (aimesh_lc_ctl, aimesh_lc_svc,
// aimesh_lc_be): nothing of this outlives the agent, and nothing here is
// attached to a hook. A pass runs iter/tcp and iter/udp once in one network
// namespace and returns a record per socket the connect hook sent to a
// backend there; the programs close the ones the rules select.
//
// What the rules are and when passes run is agent/lifecycle/'s business.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "aimesh/abi.h"
#include "reconcile/limits.h"
#include "util/result.h"
#include "util/unique_fd.h"

struct bpf_link;

namespace aimesh {

class SockIter {
 public:
  // Loads the object with the maps under pinDir and creates the two iterator
  // links. Fails, saying why, on a kernel without TCP/UDP socket iterators or
  // bpf_sock_destroy() (Linux < 6.5): the agent then runs without lifecycle
  // management and meshctl doctor reports it.
  static Result<SockIter> open(const std::string& pinDir, const MapLimits& limits);
  // Can this kernel run them? Loads the object with maps of its own (nothing
  // pinned, nothing attached, nothing run) and lets it go (meshctl doctor).
  static Status probe();

  SockIter(SockIter&&) noexcept = default;
  SockIter& operator=(SockIter&&) noexcept = default;
  ~SockIter();

  int ctlFd() const { return ctlFd_; }
  int svcFd() const { return svcFd_; }
  int beFd() const { return beFd_; }

  // One pass in the network namespace `netnsFd` (an fd of /proc/PID/ns/net).
  // The calling thread enters it to create the iterators (an iterator walks
  // the namespace it was created in) and returns to `homeNetnsFd` before
  // reading them. Serialise passes: they share aimesh_lc_ctl and the budgets.
  Result<std::vector<aimesh_conn>> pass(int netnsFd, int homeNetnsFd);

 private:
  SockIter() = default;
  struct SkelDeleter {
    void operator()(void* skel) const;
  };
  struct LinkDeleter {
    void operator()(bpf_link* l) const;
  };
  // Links before the skeleton: destroyed first.
  std::unique_ptr<void, SkelDeleter> skel_;
  std::unique_ptr<bpf_link, LinkDeleter> tcp_, udp_;
  int ctlFd_ = -1, svcFd_ = -1, beFd_ = -1;
};

}  // namespace aimesh
