// Agent: ties the data plane, the state source, the reconciler and the
// telemetry endpoints together. main.cc only parses flags and runs it.
#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "bpf/datapath.h"
#include "lifecycle/lifecycle.h"
#include "model/snapshot.h"
#include "source/kube_source.h"
#include "source/state_source.h"
#include "telemetry/model_scraper.h"
#include "bpf/bpf_map_writer.h"
#include "reconcile/plan.h"
#include "reconcile/policy_resolver.h"
#include "reconcile/reconciler.h"
#include "reconcile/split_resolver.h"
#include "telemetry/api_server.h"
#include "telemetry/canary_guard.h"
#include "telemetry/datapath_reader.h"
#include "telemetry/http_server.h"
#include "telemetry/metrics.h"
#include "telemetry/metrics_proto.h"
#include "telemetry/telemetry.h"
#include "telemetry/views.h"

namespace aimesh {

struct AgentOptions {
  std::string cgroup;        // cgroup v2 directory to attach to
  std::string stateFile;
  std::string metricsAddr = "0.0.0.0:9464";
  int histogramBucketsPerOctave = 2;  // classic `le` bounds per power of two in /metrics (1, 2, 4, 8)
  uint32_t clientTopK = 20;  // (client, service) pairs shown by name; the rest are "other"
  // /metrics: also the services and endpoints nothing on this node used
  // (all zero); off, a scrape's size follows the traffic, not the cluster.
  bool metricsIdleSeries = false;
  std::string apiSocket = "/run/aimesh/agent.sock";
  std::string pinDir = DatapathOptions{}.pinDir;
  std::chrono::milliseconds resync{30000};  // re-apply the last good state this often
  bool telemetry = DatapathOptions{}.telemetry;  // attach sock_ops + cgroup_skb telemetry
  std::vector<std::string> tcInterfaces;     // attach the TC load balancer at these interfaces' ingress
  // Delete idle TC flows this often (parseAgentFlags() lowers it to half the shortest flow timeout).
  std::chrono::milliseconds ctSweepInterval{5000};
  DatapathOptions::Tuning tuning;            // balancer feedback tunables (aimesh_config)
  MapLimits limits;                          // map sizes (--max-services, --max-backends, --max-flows)
  // Model-server metrics scraping (services with model_metrics:).
  std::chrono::milliseconds scrapeInterval = ModelScraper::Options{}.interval;
  std::chrono::milliseconds scrapeTimeout = ModelScraper::Options{}.timeout;
  std::string scrapeNetns;  // scrape from inside this network namespace ("" = the agent's)
  // Kubernetes source instead of the state file (set: --kubernetes / --kubeconfig).
  std::optional<KubeConfig> kube;
  KubeSourceOptions kubeOptions;
  std::string daemonSet;  // "NAMESPACE/NAME": on exit, clean up if it was deleted (uninstall)
  std::string podCgroupRoot;  // where allowed pods' cgroups are looked for ("" = cgroup)
  HttpServerOptions http;     // metrics listener limits (--metrics-max-connections, --metrics-request-timeout-ms)
  // Closing connections to removed, draining and over-share endpoints
  // (cgroup and telemetry are taken from the fields above).
  LifecycleOptions lifecycle;

  // What the kernel side is opened with: the same cgroup, pins, telemetry,
  // TC interfaces, tuning and map sizes as above, in one place.
  DatapathOptions datapathOptions() const {
    return DatapathOptions{.pinDir = pinDir, .cgroupPath = cgroup, .telemetry = telemetry,
                           .tcInterfaces = tcInterfaces, .limits = limits, .tuning = tuning};
  }
  // The lifecycle's options with the agent's cgroup and telemetry.
  LifecycleOptions lifecycleOptions() const {
    LifecycleOptions l = lifecycle;
    l.cgroup = cgroup;
    l.telemetry = telemetry;
    return l;
  }
};

// What an agent runs on. start() builds them over the kernel; a unit test
// gives fakes (tests/fixtures: FakeMapWriter, FakeDatapathReader, a source).
struct AgentParts {
  std::unique_ptr<MapWriter> writer;      // the write side (reconciles go here)
  std::unique_ptr<DatapathReader> reader; // the read side (views, /metrics)
  std::unique_ptr<StateSource> source;    // null: no desired state
};

class Agent {
 public:
  // Loads and attaches (or adopts) the data plane, applies the state file if
  // it is valid, and starts the metrics and API servers. Errors here are
  // fatal and say what to fix.
  static Result<std::unique_ptr<Agent>> start(const AgentOptions& opts);

  // An agent over these parts only: no kernel, no servers, no lifecycle or
  // scraper. For tests; apply with reload() or run().
  static std::unique_ptr<Agent> assemble(AgentOptions opts, AgentParts parts);

  // Follows the state source (file or Kubernetes) until `stop` becomes true.
  void run(const std::atomic<bool>& stop);

  // At exit, with --daemonset: true if the DaemonSet is gone or being deleted
  // (helm uninstall), so the data plane should be removed rather than left
  // for the next agent. Unknown (API unreachable) counts as not uninstalling.
  bool uninstalling();

  // Reads the source's current state and applies it; a bad state file keeps
  // the last good state. Returns false if it was rejected or applying failed
  // (or the source has no state yet).
  bool reload();
  // Returns the heap's free memory to the kernel (after a parse's peak).
  static void releaseFreedMemory();
  bool fullApplyLast();  // the last reconcile planned every service
  const std::string& podCgroupRoot() const { return opts_.podCgroupRoot.empty() ? opts_.cgroup : opts_.podCgroupRoot; }

  nlohmann::json handleApi(const nlohmann::json& req);
  std::string metricsText(MetricsFormat format = MetricsFormat::kText);
  bool ready();

 private:
  Agent(AgentOptions opts, std::optional<Datapath> dp, std::unique_ptr<MapWriter> writer);
  // Resolves the policies' cgroups of `snap` and reconciles it.
  bool applyLocked(Snapshot snap, Reconciler::Verify verify = Reconciler::Verify::kKnown);
  // Applies a source's update, or counts and logs why it was rejected.
  bool applyUpdate(StateUpdate u);
  // The ids of the last applied state (the reconciler keeps it, patched in
  // place by a change to a few services).
  const IdIndex& index() const { return reconciler_.index(); }
  void sweepFlows();
  // Re-resolves the policies' cgroup paths; applies again if an id changed.
  void recheckPolicyLocked();
  bool policyRecheckDue();
  // The API's views (view/views.h), built by telemetry/views.h from what
  // the reader and the lifecycle read.
  view::Status statusView();
  view::ServiceList servicesView();
  view::Policy policyView();
  view::EndpointList endpointsView(const ServiceFilter& filter);
  Result<view::Latency> latencyView(const ServiceFilter& filter);
  Result<view::Top> topView();
  Result<view::Flows> flowsView(uint64_t since);
  Result<view::Connections> connectionsView(const ServiceFilter& filter);
  view::Clients clientsView();
  view::Routes routesView(const ServiceFilter& filter);
  view::Routes routesLocked(const ServiceFilter& filter);
  // Once a second: reads the guarded splits' backend services, moves the
  // canary guard, and applies again when the weights it sets change; keeps
  // the split counters' history for the observed shares.
  void guardTick();
  std::map<std::string, CanaryGuard::Split> guardInputsLocked();
  void markGuardedLocked(view::Top& top);
  // Reads aimesh_clients, names the cgroups and forgets those that are gone.
  view::Clients clientsLocked();
  std::vector<ScrapeTarget> scrapeTargets() const;     // endpoints of services with model_metrics

  AgentOptions opts_;
  std::optional<Datapath> dp_;  // none when assembled from parts
  std::unique_ptr<MapWriter> writer_;
  Reconciler reconciler_;
  std::mutex mu_;  // guards everything below
  // The last good state is reconciler_.applied() (with the policies' cgroup
  // ids as last resolved).
  AgentCounters counters_;
  std::string lastError_;
  std::set<std::string> warnedAlgorithm_;
  // Workload policy: allowed cgroup paths with no cgroup at the last apply
  // (resolved again every second while any are missing), and the ids applied.
  std::vector<UnresolvedCgroup> unresolvedCgroups_;
  std::set<std::string> warnedCgroups_;
  std::set<std::string> warnedSplits_;  // split backends left out, logged once each
  // Splits: the canary guard, its recent transitions, and the split
  // counters every few seconds over the last minute (observed shares).
  CanaryGuard guard_;
  std::deque<view::GuardEvent> guardEvents_;
  std::deque<std::pair<std::chrono::steady_clock::time_point, SplitStats>> splitHistory_;
  std::chrono::steady_clock::time_point lastGuard_{};
  bool anySplits_ = false;  // the applied state has splits (else the guard's tick does nothing)
  std::chrono::steady_clock::time_point lastPolicyCheck_{};
  std::chrono::steady_clock::time_point started_;
  std::chrono::steady_clock::time_point lastSweep_ = std::chrono::steady_clock::now();  // TC flows
  std::unique_ptr<CgroupIndex> clientCgroups_;  // names the clients' cgroups (made at first use)
  // The read side: counters, telemetry, occupancy and flow events.
  std::unique_ptr<DatapathReader> reader_;
  std::optional<HttpServer> http_;
  std::shared_ptr<HttpServerCounters> httpCounters_ = std::make_shared<HttpServerCounters>();
  std::optional<ApiServer> api_;
  std::set<std::string> sourceWarnings_;  // logged once each
  std::unique_ptr<KubeSource> kube_;
  std::unique_ptr<StateSource> source_;  // may refer to kube_: destroyed first
  // Its thread reads the data plane's maps: destroyed before them.
  std::unique_ptr<Lifecycle> lifecycle_;
  // Last: destroyed first, before the map fds its thread writes to.
  std::unique_ptr<ModelScraper> scraper_;
};

}  // namespace aimesh
