// The loaded socket data plane: the sock_lb skeleton with its maps pinned by
// name under the pin dir and its programs attached to one cgroup through
// pinned bpf_links, so traffic keeps being served when the agent is gone.
//
// open() adopts what an earlier agent pinned: maps are reused by name, and a
// pinned link has its program replaced in place (bpf_link_update), so a
// restart never attaches twice and never leaves a gap. cleanup() detaches and
// removes everything under the pin dir that aimesh created.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "aimesh/abi.h"
#include "util/unique_fd.h"
#include "util/result.h"
#include "reconcile/limits.h"

struct bpf_link;
struct bpf_object;

namespace aimesh {

struct DatapathOptions {
  std::string pinDir = "/sys/fs/bpf/aimesh";
  std::string cgroupPath;  // cgroup v2 directory to attach to
  // Attach the telemetry objects (sock_ops, sock_telemetry). When false, any
  // pinned telemetry links are detached.
  bool telemetry = true;
  // Network interfaces to attach the TC load balancer (tc_lb) to, at ingress
  // (clsact). Interfaces attached by an earlier agent and not listed now are
  // detached.
  std::vector<std::string> tcInterfaces;
  // Sizes of the maps (set before load; pinned maps must already match).
  MapLimits limits;
  // Tunables written into aimesh_config at every start (balancer feedback).
  // The defaults are abi.h's, the only copy (the agent's flags show them).
  struct Tuning {
    uint64_t ewmaTauNs = AIMESH_DEFAULT_EWMA_TAU_NS;
    uint64_t penaltyHalfLifeNs = AIMESH_DEFAULT_PENALTY_HALF_LIFE_NS;
    uint64_t ejectBaseNs = AIMESH_DEFAULT_EJECT_BASE_NS;
    uint64_t ejectMaxNs = AIMESH_DEFAULT_EJECT_MAX_NS;
    uint32_t penaltyPerFailure = AIMESH_DEFAULT_PENALTY_PER_FAILURE;
    uint32_t ejectAfter = AIMESH_DEFAULT_EJECT_AFTER;
    // TC path flow idle timeouts.
    uint64_t ctTcpTimeoutNs = AIMESH_CT_TCP_TIMEOUT_NS;
    uint64_t ctUdpTimeoutNs = AIMESH_CT_UDP_TIMEOUT_NS;
    uint64_t ctClosingTimeoutNs = AIMESH_CT_CLOSING_TIMEOUT_NS;
  } tuning;
};

struct ProgramStatus {
  std::string name;      // e.g. "connect4"
  std::string attachTo;  // cgroup path, or "tc ingress IFNAME"
  uint32_t linkId = 0;   // 0 for TC filters (not links)
  uint32_t progId = 0;
  bool adopted = false;  // the link existed before this agent started
};

// Our TC filter: a fixed handle and priority on the clsact ingress hook, so
// a restarted agent replaces it in place instead of adding a second one
// (and meshctl bpf can tell it from other filters).
inline constexpr uint32_t kTcHandle = 0xa1e5;
inline constexpr uint32_t kTcPriority = 0xa1;

struct MapFds {
  int frontends = -1, services = -1, slots = -1, backends = -1;
  int revnat = -1, svcStats = -1, beStats = -1, reasons = -1;
  int hist = -1, beTel = -1, beLoad = -1, events = -1;
  int hashTables = -1, svcLoad = -1, beSignal = -1, config = -1;
  int ct = -1;  // aimesh_ct, only with TC interfaces
  int policy = -1;
  int clients = -1;  // aimesh_clients
  int splits = -1, splitStats = -1;  // aimesh_splits, aimesh_split_stats
  // The counter maps (stats, load, telemetry, histograms, clients) were
  // created by this agent's load, not adopted from pins: every entry is
  // zero, so the first run need not reset the counters of its new ids.
  bool countersZero = false;
};

class Datapath {
 public:
  static Result<Datapath> open(const DatapathOptions& opts);
  // Detach every pinned link and remove every pin aimesh made under pinDir.
  // Succeeds when there is nothing to remove. Returns how many pins it removed.
  static Result<int> cleanup(const std::string& pinDir);

  Datapath(Datapath&&) noexcept;
  Datapath& operator=(Datapath&&) noexcept;
  ~Datapath();

  const MapFds& maps() const { return maps_; }
  const std::vector<ProgramStatus>& programs() const { return programs_; }

 private:
  Datapath();
  // One loaded object: its skeleton (type-erased) and the bpf_object inside.
  struct Object {
    void* skel = nullptr;
    void (*destroy)(void*) = nullptr;
    bpf_object* obj = nullptr;
    Object() = default;
    Object(Object&& o) noexcept;
    Object& operator=(Object&& o) noexcept;
    ~Object();
  };
  struct LinkDeleter {
    void operator()(bpf_link* l) const;
  };
  Status attachAll(const Object& o, const DatapathOptions& opts, int cgFd, uint64_t cgId);
  Status attachTc(const DatapathOptions& opts);
  std::vector<Object> objects_;
  std::vector<std::unique_ptr<bpf_link, LinkDeleter>> links_;
  std::vector<ProgramStatus> programs_;
  MapFds maps_;
};

}  // namespace aimesh
