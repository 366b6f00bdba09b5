// KubeSource: cluster state from the Kubernetes API. Lists, then watches,
// Services (v1) and EndpointSlices (discovery.k8s.io/v1), the Gateway API's
// mesh routes and ReferenceGrants and the InferencePools (with their member
// pods) when they are installed, and, given the node's name, the Pods of
// this node (for workload policies), one thread per resource, and keeps the decoded objects; the agent takes a new Snapshot
// (kube_objects.h maps objects to it) whenever something changed.
//
// The protocol, as client-go's reflector does it:
// - list (paged with limit/continue) → replace the store, remember the list's
//   resourceVersion; then watch from it with allowWatchBookmarks, each watch
//   ending after a jittered timeoutSeconds and resumed from the last
//   resourceVersion seen (events and bookmarks both move it on);
// - "410 Gone" (as an HTTP status or as an ERROR event: the version was
//   compacted away) → list again;
// - any other failure (refused, reset, a stream cut mid-event, 5xx, 429,
//   timeouts) → retry after a jittered exponential back-off, resuming the
//   watch from the last complete event, so nothing is lost or applied twice.
// Nothing is handed out before every resource has been listed once, and the
// data plane keeps its last state for as long as the API server is away.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "source/kube_client.h"
#include "source/kube_objects.h"
#include "source/kube_routes.h"
#include "source/state_source.h"

namespace aimesh {

struct KubeSourceOptions {
  std::string serviceSelector;  // label selector for the Services the mesh manages ("" = all)
  // The algorithm of Services that name none (kube::MappingOptions).
  Algorithm defaultAlgorithm = Algorithm::kRandom;
  std::chrono::seconds watchTimeout{300};  // asked of the server per watch, jittered down to 1/2
  std::chrono::milliseconds backoffMin{200};
  std::chrono::milliseconds backoffMax{30000};
  int pageSize = 500;
  // The agent's own DaemonSet, watched (by name) so that at exit it knows
  // whether it was deleted even if its RBAC went away with it (helm
  // uninstall deletes the DaemonSet, then the ClusterRole); "" = none.
  std::string daemonSetNamespace, daemonSetName;
  // This node's name (spec.nodeName of its pods): its Pods are watched
  // (fieldSelector=spec.nodeName=NAME) for the Services' workload
  // policies. "" = not watched; such policies then allow nobody. Also
  // allowing nobody, without holding anything else back: while the pods
  // are forbidden (403) to the agent.
  std::string nodeName;
};

// Routes and ReferenceGrants (Gateway API, kube_routes.h) and InferencePools
// (kube_pools.h) are optional: a resource the API server does not serve
// (404: its CRD is not installed) or does not let the agent list (403)
// counts as synced and empty, is logged once and listed again every
// backoffMax, so installing the CRD later turns them on without a restart.
// The pools' member pods (kPoolPods: the pods of every node, reduced to
// labels, addresses and readiness) are watched only while there is an
// InferencePool, in the pools' namespace when they share one (else in
// all); until they are listed, and again after the pools move to another
// namespace, no state is handed out.
enum class KubeResource {
  kServices = 0, kEndpointSlices = 1, kPods = 2, kHttpRoutes = 3, kGrpcRoutes = 4, kTcpRoutes = 5,
  kReferenceGrants = 6, kInferencePools = 7, kPoolPods = 8
};
inline constexpr int kKubeResources = 9;
// "services", "endpointslices", "pods", "httproutes", "grpcroutes", "tcproutes", "referencegrants",
// "inferencepools", "pool_pods"
const char* toString(KubeResource r);
bool optionalResource(KubeResource r);  // may be absent (404/403): Gateway API, InferencePool and pool pods
inline constexpr KubeResource kAllKubeResources[] = {
    KubeResource::kServices,        KubeResource::kEndpointSlices, KubeResource::kPods,
    KubeResource::kHttpRoutes,      KubeResource::kGrpcRoutes,     KubeResource::kTcpRoutes,
    KubeResource::kReferenceGrants, KubeResource::kInferencePools, KubeResource::kPoolPods};

struct KubeResourceStats {
  uint64_t lists = 0;          // list requests answered 200 (first sync included)
  uint64_t relists = 0;        // lists after the first: 410 Gone, or a failed watch start
  uint64_t watches = 0;        // watch streams opened
  uint64_t watchRestarts = 0;  // watch streams after the first
  uint64_t errors = 0;         // failed requests (transport or HTTP status)
  uint64_t added = 0, modified = 0, deleted = 0, bookmarks = 0;
  uint64_t decodeErrors = 0;   // objects the decoder rejected (skipped)
  uint64_t objects = 0;        // in the store now
  bool synced = false;         // listed at least once (or found absent)
  bool absent = false;         // optionalResource(): the API server does not serve it, or forbids it, now
};

struct KubeSourceStats {
  KubeResourceStats resources[kKubeResources];  // indexed by KubeResource; pods only with a node name
  std::string lastError;
};

class KubeSource {
 public:
  static Result<std::unique_ptr<KubeSource>> start(KubeClient client, KubeSourceOptions opts);
  ~KubeSource();  // stops and joins the watch threads (aborts requests in flight)
  KubeSource(const KubeSource&) = delete;
  KubeSource& operator=(const KubeSource&) = delete;

  // Up to `timeout`: once every watched resource is synced, the cluster state as of
  // now if it changed since the last call (the first call after sync always
  // returns it).
  std::optional<kube::BuildResult> waitForChange(std::chrono::milliseconds timeout);

  bool synced() const;
  bool watchesPods() const { return !opts_.nodeName.empty(); }
  KubeSourceStats stats() const;
  // "namespace/name" of the watched pod with this uid (pods of this node), if any.
  std::optional<std::string> podName(const std::string& uid) const;

  // For uninstall detection: is this DaemonSet still there? Asked now.
  enum class DaemonSetState { kPresent, kDeleting, kGone, kUnknown };
  DaemonSetState daemonSet(const std::string& nameSpace, const std::string& name, std::string* error) const;
  // The same, as last seen by the watch of options' daemonSetName
  // (kUnknown before its first list, or without one).
  DaemonSetState watchedDaemonSet() const { return watchedDs_.load(); }

 private:
  KubeSource(KubeClient client, KubeSourceOptions opts);
  void run(KubeResource r);
  bool list(KubeResource r, std::string* rv, bool relist);
  enum class WatchEnd { kResume, kRelist, kError };
  WatchEnd watch(KubeResource r, std::string* rv);
  bool applyEvent(KubeResource r, const std::string& type, const nlohmann::json& obj);
  void markAbsent(KubeResource r, long status, const std::string& body);
  // Calls f(store, decode) with the store of r and its decoder.
  template <class F>
  decltype(auto) withStore(KubeResource r, F&& f);
  bool syncedLocked() const;
  bool poolPodsNeededLocked() const;  // an InferencePool exists: its members are watched
  bool waitForPools();                // until poolPodsNeededLocked(), then takes its scope (false: stopping)
  bool poolPodsStale();               // after their watch: list again (or drop them)?
  void dropPoolPodsLocked();          // no pool left: empty and unsynced
  std::string poolScopeLocked() const;  // the pools' namespace, or "" when they are in several
  void poolsChangedLocked();          // after pools_ changed: end the pool pods' watch if it is stale
  void podsForbidden();
  void fail(KubeResource r, const std::string& what);
  void sleepFor(std::chrono::milliseconds d);
  std::string query(KubeResource r, bool watch, const std::string& rv, const std::string& cont) const;
  void runDaemonSet();

  KubeClient client_;
  KubeSourceOptions opts_;
  std::optional<kube::Selector> selector_;
  std::atomic<bool> stop_{false};
  std::mutex sleepMu_;
  std::condition_variable sleepCv_;

  mutable std::mutex mu_;  // guards everything below
  std::condition_variable changed_;
  std::map<std::string, kube::ServiceObj> services_;
  std::map<std::string, kube::EndpointSliceObj> slices_;
  std::map<std::string, kube::PodObj> pods_;
  std::map<std::string, kube::RouteObj> httpRoutes_, grpcRoutes_, tcpRoutes_;
  std::map<std::string, kube::ReferenceGrantObj> grants_;
  std::map<std::string, kube::InferencePoolObj> pools_;
  std::map<std::string, kube::PodObj> poolPods_;  // every node's pods, while pools_ is not empty
  // The namespace the pool pods are listed and watched in ("": all), as the
  // pools' were when listed; written by their thread only, under mu_.
  std::string poolScope_;
  std::atomic<bool> poolAbort_{false};  // ends the pool pods' watch (stale scope, no pool, or stopping)
  kube::SnapshotCache cache_;  // the snapshot of the stores, rebuilt where they changed
  KubeSourceStats stats_;
  uint64_t version_ = 0, taken_ = 0;  // store changes; the version last handed out
  std::chrono::steady_clock::time_point firstChange_{};  // of a watch event not handed out yet (debug timing)
  bool handedOut_ = false;
  bool podsForbidden_ = false;  // a pods list was answered 403: do not wait for them

  std::atomic<DaemonSetState> watchedDs_{DaemonSetState::kUnknown};
  std::thread threads_[kKubeResources + 1];  // one per resource, and the DaemonSet's
};

// The Kubernetes API as the agent's StateSource. The agent keeps the
// KubeSource itself too (its counters, the DaemonSet checks at exit); this
// only hands on its snapshots, with the objects it skipped as warnings.
class KubeStateSource final : public StateSource {
 public:
  KubeStateSource(KubeSource& source, std::string server) : source_(source), server_(std::move(server)) {}
  std::optional<StateUpdate> current() override { return std::nullopt; }  // the first state comes once synced
  std::optional<StateUpdate> next(std::chrono::milliseconds timeout) override;
  std::string describe() const override { return "kubernetes " + server_; }

 private:
  KubeSource& source_;
  std::string server_;
};

}  // namespace aimesh
