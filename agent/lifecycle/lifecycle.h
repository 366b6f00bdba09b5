// Connection lifecycle: what lives longer than a connect(). A thread looks
// at the data plane every `interval` and, when there is something to do,
// runs a pass of the socket iterators (bpf/sock_iter.bpf.c) in every network
// namespace of the agent's cgroup. The kernel programs decide, under each
// socket's lock, which connections to close (lib/lifecycle.h); this side
// decides when to look and hands them what only it knows:
//   - per-service rules (max age, max requests, drain timeout) from the state;
//   - a re-balancing budget per endpoint (rebalance.h), spent at the
//     service's rate;
//   - passes every interval while connections to removed endpoints remain
//     (busy ones close as soon as their response ends) and while draining or
//     ejected endpoints have idle connections; otherwise every `sweep`.
// It also answers `meshctl connections` with a report-only pass and keeps
// the counts of what it closed, by reason, for /metrics.
//
// Without socket iterators or bpf_sock_destroy (Linux < 6.5) start() still
// returns a Lifecycle that does nothing and says why (available()).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "aimesh/abi.h"
#include "bpf/datapath.h"
#include "bpf/sock_iter.h"
#include "lifecycle/netns.h"
#include "lifecycle/rebalance.h"
#include "reconcile/plan.h"

namespace aimesh {

struct LifecycleOptions {
  bool enabled = true;                          // --connection-lifecycle
  std::string cgroup;                           // walk the network namespaces of this cgroup's processes
  std::string netnsDir;                         // and of every namespace file here ("": none)
  bool telemetry = true;                        // request phases are tracked (else nothing is ever idle)
  std::chrono::milliseconds interval{200};      // how often to look
  std::chrono::milliseconds sweep{5000};        // a pass at least this often while connections are open
  std::chrono::milliseconds netnsRefresh{2000}; // how often to look for new namespaces
  std::chrono::milliseconds idleGuard{5};       // a response must have ended this long ago to be idle
  std::chrono::milliseconds newIdle{5000};      // a connection with no request yet is idle after this
  std::chrono::milliseconds drainTimeout{kDefaultDrainTimeoutMs};  // for services without rules
};

// "removed", "drained", ... (enum aimesh_close_reason), "" for 0.
const char* closeReasonName(uint8_t reason);
// "idle", "busy", "new", "unknown", "datagram", "closing" (enum aimesh_conn_state).
const char* connStateName(uint8_t state);

// One connection as a pass saw it.
struct ConnectionSeen {
  aimesh_conn rec{};
  uint64_t netns = 0;  // inode of its network namespace
};

// Connections aimesh closed to one endpoint since the agent started.
struct ClosedSeries {
  std::string service, nameSpace, model;
  PortSpec port;
  std::string endpoint;  // "10.77.0.2:8000" / "[fd77::2]:8000"
  bool current = false;  // the endpoint is in the state now
  std::array<uint64_t, AIMESH_CLOSE_MAX> byReason{};
};

struct LifecycleStats {
  bool available = false;
  uint64_t passes = 0, passErrors = 0;
  double passSeconds = 0;   // all passes together
  uint64_t namespaces = 0;  // walked by the last pass
  uint64_t connections = 0; // seen by the last pass
};

class Lifecycle {
 public:
  static std::unique_ptr<Lifecycle> start(const LifecycleOptions& opts, const std::string& pinDir,
                                          const MapLimits& limits, const MapFds& maps);
  ~Lifecycle();

  bool available() const { return iter_.has_value(); }
  const std::string& unavailableReason() const { return reason_; }

  // After every apply: the services' rules and endpoints. Endpoints that
  // left the state have their connections looked for until none is left.
  // With a change that is not `all`, only the service ids it names are
  // looked at (a change to one service of 10,000 copies one service).
  void setIndex(const IdIndex& index, const IndexChange& change = {});

  // A report-only pass now, in every namespace (meshctl connections).
  Result<std::vector<ConnectionSeen>> connections();
  size_t namespacesWalked() const;

  std::vector<ClosedSeries> closed() const;
  LifecycleStats stats() const;

  // The endpoint text of a backend address, as metrics and the API show it.
  static std::string endpointText(const uint8_t addr[16], uint16_t port);

 private:
  // What the lifecycle keeps of a service of the index (at 10,000 services
  // a copy of every ServiceInfo was ~4.5 MiB; this is about half).
  struct ServiceRules {
    std::string name, nameSpace, model;
    PortSpec port;
    Algorithm algorithm = Algorithm::kRandom;
    ConnectionPolicy connections;
    std::vector<uint32_t> backendIds;
  };
  static ServiceRules rulesOf(const ServiceInfo& s);
  struct EndpointInfo {
    uint32_t serviceId = 0;
    uint16_t weight = 1;
    bool active = true;
    uint16_t port = 0;  // the resolved (target) port
    IpAddr address;
    bool sameEndpoint(const EndpointInfo& o) const { return address == o.address && port == o.port; }
    std::string text() const { return formatHostPort(address, port); }  // as endpointText() gives it
  };

  Lifecycle(const LifecycleOptions& opts, const MapFds& maps);
  void loop();
  void tick(std::chrono::steady_clock::time_point now);
  using OpenLoads = std::vector<std::pair<uint32_t, aimesh_be_load>>;  // by id
  std::vector<EndpointLoad> endpointLoadsLocked(const ServiceRules& s, const OpenLoads& open, uint64_t mono) const;
  // Runs one pass in every namespace; must hold passMu_.
  Result<std::vector<ConnectionSeen>> passLocked(bool act);
  void account(const std::vector<ConnectionSeen>& seen);
  using ClosedKey = std::tuple<std::string, uint16_t, uint8_t, std::string>;
  static ClosedKey closedKey(const ServiceRules& s, const std::string& endpoint);
  static EndpointInfo endpointInfo(const BackendInfo& b);
  void replaceIndexLocked(const IdIndex& index);
  void patchIndexLocked(const IdIndex& index, const IndexChange& change);
  void writeRuleLocked(uint32_t id, const ServiceRules& s);

  LifecycleOptions opts_;
  MapFds maps_;
  std::optional<SockIter> iter_;
  std::string reason_;
  NetnsFinder netns_;

  mutable std::mutex mu_;  // guards the fields below up to passMu_
  std::map<uint32_t, ServiceRules> services_;
  std::map<uint32_t, ServiceRules> goneServices_;  // left the state; names their leftover connections
  std::map<uint32_t, EndpointInfo> endpoints_;
  std::map<uint32_t, aimesh_lc_svc> svcRules_;  // as last written to the iterators' map
  // A service's bucket is refilled when a tick looks at it (one with an open
  // connection), by the time since it last was: as if every tick had.
  struct Bucket {
    CloseTokens tokens;
    std::chrono::steady_clock::time_point refilled{};
  };
  std::map<uint32_t, Bucket> tokens_;
  bool pendingRemoval_ = true;  // look for connections to endpoints that left (also what an earlier agent left)
  std::map<ClosedKey, ClosedSeries> closed_;
  LifecycleStats stats_;
  std::chrono::steady_clock::time_point lastPass_{}, lastTick_{}, lastNetns_{};
  std::vector<NetnsRef> namespaces_;

  std::mutex passMu_;  // one pass at a time: they share aimesh_lc_ctl and the budgets
  int homeNetns_ = -1;

  std::mutex stopMu_;
  std::condition_variable stopCv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace aimesh
