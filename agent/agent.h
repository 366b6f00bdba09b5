// Agent: ties the data plane, the state source, the reconciler and the
// telemetry endpoints together. main.cc only parses flags and runs it.
#pragma once

#include <atomic>
#include <chrono>
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
#include "telemetry/model_scraper.h"
#include "bpf/bpf_map_writer.h"
#include "reconcile/plan.h"
#include "reconcile/policy_resolver.h"
#include "reconcile/reconciler.h"
#include "telemetry/api_server.h"
#include "telemetry/datapath_reader.h"
#include "telemetry/http_server.h"
#include "telemetry/metrics.h"
#include "telemetry/telemetry.h"

namespace aimesh {

struct AgentOptions {
  std::string cgroup;        // cgroup v2 directory to attach to
  std::string stateFile;
  std::string metricsAddr = "0.0.0.0:9464";
  std::string apiSocket = "/run/aimesh/agent.sock";
  std::string pinDir = "/sys/fs/bpf/aimesh";
  std::chrono::milliseconds resync{30000};  // re-apply the last good state this often
  bool telemetry = true;                     // attach sock_ops + cgroup_skb telemetry
  std::vector<std::string> tcInterfaces;     // attach the TC load balancer at these interfaces' ingress
  std::chrono::milliseconds ctSweepInterval{5000};  // delete idle TC flows this often
  DatapathOptions::Tuning tuning;            // balancer feedback tunables (aimesh_config)
  MapLimits limits;                          // map sizes (--max-services, --max-backends, --max-flows)
  // Model-server metrics scraping (services with model_metrics:).
  std::chrono::milliseconds scrapeInterval{500};
  std::chrono::milliseconds scrapeTimeout{300};
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
};

class Agent {
 public:
  // Loads and attaches (or adopts) the data plane, applies the state file if
  // it is valid, and starts the metrics and API servers. Errors here are
  // fatal and say what to fix.
  static Result<std::unique_ptr<Agent>> start(const AgentOptions& opts);

  // Follows the state source (file or Kubernetes) until `stop` becomes true.
  void run(const std::atomic<bool>& stop);

  // At exit, with --daemonset: true if the DaemonSet is gone or being deleted
  // (helm uninstall), so the data plane should be removed rather than left
  // for the next agent. Unknown (API unreachable) counts as not uninstalling.
  bool uninstalling();

  // Parses the state file and applies it; a bad file keeps the last good
  // state. Returns false if the file was rejected or applying failed.
  bool reload();
  const std::string& podCgroupRoot() const { return opts_.podCgroupRoot.empty() ? opts_.cgroup : opts_.podCgroupRoot; }

  nlohmann::json handleApi(const nlohmann::json& req);
  std::string metricsText(bool openMetrics = false);
  bool ready();

 private:
  explicit Agent(AgentOptions opts, Datapath dp);
  bool applyLocked(const Snapshot& snap);
  void applyKube(const kube::BuildResult& br);
  nlohmann::json statusJson();
  nlohmann::json servicesJson();
  nlohmann::json policyJson();
  // Re-resolves the policies' cgroup paths; applies again if an id changed.
  void recheckPolicyLocked();
  bool policyRecheckDue();
  nlohmann::json endpointsJson(const nlohmann::json& req);
  nlohmann::json latencyJson(const nlohmann::json& req);
  nlohmann::json topJson();
  nlohmann::json flowsJson(const nlohmann::json& req);
  nlohmann::json connectionsJson(const nlohmann::json& req);
  std::string endpointName(uint32_t backendId) const;  // "10.77.0.2:8000" or "[fd77::2]:8000"
  std::vector<ScrapeTarget> scrapeTargets() const;     // endpoints of services with model_metrics

  AgentOptions opts_;
  Datapath dp_;
  BpfMapWriter writer_;
  Reconciler reconciler_;
  std::mutex mu_;  // guards everything below
  std::optional<Snapshot> lastGood_;
  IdIndex index_;
  AgentCounters counters_;
  std::string lastError_;
  std::set<std::string> warnedAlgorithm_;
  // Workload policy: allowed cgroup paths with no cgroup at the last apply
  // (resolved again every second while any are missing), and the ids applied.
  std::vector<UnresolvedCgroup> unresolvedCgroups_;
  std::set<std::string> warnedCgroups_;
  std::chrono::steady_clock::time_point lastPolicyCheck_{};
  std::chrono::steady_clock::time_point started_;
  // The read side: counters, telemetry, occupancy and flow events.
  std::unique_ptr<DatapathReader> reader_;
  std::optional<HttpServer> http_;
  std::shared_ptr<HttpServerCounters> httpCounters_ = std::make_shared<HttpServerCounters>();
  std::optional<ApiServer> api_;
  std::set<std::string> kubeWarnings_;  // logged once each
  std::unique_ptr<KubeSource> kube_;
  // Its thread reads the data plane's maps: destroyed before them.
  std::unique_ptr<Lifecycle> lifecycle_;
  // Last: destroyed first, before the map fds its thread writes to.
  std::unique_ptr<ModelScraper> scraper_;
};

}  // namespace aimesh
