// The agent's read API as types: what each method of the API socket answers
// (and what meshctl reads), one struct per response, with JSON conversion
// generated from one field list per struct. The agent builds these
// (telemetry/views.h), meshctl parses them (parseView), so a key typed in one
// place and read in another is checked by the compiler. docs/api.md lists the
// methods; tests/e2e/golden/ holds their exact output on a fixed state.
//
// Every struct lists its fields once, in fields(): the JSON key and the
// member. std::optional members are left out of the JSON when empty (and
// stay empty when the key is missing); every other missing key keeps the
// member's default, so meshctl reads an older agent's answer without failing.
#pragma once

#include <concepts>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "util/result.h"

namespace aimesh::view {

// The field list of view type T: `v(key, member)` for each member, for a
// const or non-const T alike.
#define AIMESH_VIEW_FIELDS(T) \
  template <class S, class V> \
    requires std::same_as<std::remove_const_t<S>, T> \
  void fields(S& s, V&& v)

// ---- status ----------------------------------------------------------------

struct Program {
  std::string name;
  bool attached = true;
  std::string attachTo;
  uint32_t linkId = 0;
  uint32_t progId = 0;
  bool adopted = false;
};
AIMESH_VIEW_FIELDS(Program) {
  v("name", s.name), v("attached", s.attached), v("attach_to", s.attachTo), v("link_id", s.linkId),
      v("prog_id", s.progId), v("adopted", s.adopted);
}

struct Limits {
  uint32_t services = 0;
  uint32_t backends = 0;
  uint32_t flows = 0;
};
AIMESH_VIEW_FIELDS(Limits) { v("services", s.services), v("backends", s.backends), v("flows", s.flows); }

struct LifecycleStatus {
  bool available = false;
  std::string reason;
  uint64_t passes = 0;
  uint64_t passErrors = 0;
  uint64_t namespaces = 0;
  uint64_t connections = 0;
};
AIMESH_VIEW_FIELDS(LifecycleStatus) {
  v("available", s.available), v("reason", s.reason), v("passes", s.passes), v("pass_errors", s.passErrors),
      v("namespaces", s.namespaces), v("connections", s.connections);
}

struct KubernetesStatus {
  std::string server;
  std::string config;
  bool synced = false;
  uint64_t services = 0;
  uint64_t endpointslices = 0;
  std::string nodeName;
  uint64_t pods = 0;
  uint64_t relists = 0;
  uint64_t watchRestarts = 0;
  uint64_t errors = 0;
  std::string lastError;
};
AIMESH_VIEW_FIELDS(KubernetesStatus) {
  v("server", s.server), v("config", s.config), v("synced", s.synced), v("services", s.services),
      v("endpointslices", s.endpointslices), v("node_name", s.nodeName), v("pods", s.pods),
      v("relists", s.relists), v("watch_restarts", s.watchRestarts), v("errors", s.errors),
      v("last_error", s.lastError);
}

struct Status {
  std::string version;
  int64_t pid = 0;
  bool ready = false;
  double uptimeSeconds = 0;
  std::string cgroup;
  std::string pinDir;
  std::string stateFile;
  std::string source;  // "file" or "kubernetes"
  std::string metricsAddr;
  uint64_t reconciles = 0;
  uint64_t reconcileErrors = 0;
  uint64_t stateFileErrors = 0;
  std::string lastError;
  uint64_t services = 0;
  uint64_t endpoints = 0;
  std::vector<Program> programs;
  Limits limits;
  std::optional<LifecycleStatus> connectionLifecycle;
  std::optional<KubernetesStatus> kubernetes;
};
AIMESH_VIEW_FIELDS(Status) {
  v("version", s.version), v("pid", s.pid), v("ready", s.ready), v("uptime_seconds", s.uptimeSeconds),
      v("cgroup", s.cgroup), v("pin_dir", s.pinDir), v("state_file", s.stateFile), v("source", s.source),
      v("metrics_addr", s.metricsAddr), v("reconciles", s.reconciles), v("reconcile_errors", s.reconcileErrors),
      v("state_file_errors", s.stateFileErrors), v("last_error", s.lastError), v("services", s.services),
      v("endpoints", s.endpoints), v("programs", s.programs), v("limits", s.limits),
      v("connection_lifecycle", s.connectionLifecycle), v("kubernetes", s.kubernetes);
}

// ---- services ----------------------------------------------------------------

struct Service {
  std::string name;
  std::string nameSpace;
  std::string model;
  std::string algorithm;
  uint32_t serviceId = 0;
  std::vector<std::string> frontends;  // "10.96.0.40:8000/TCP"
  uint64_t endpoints = 0;
  uint64_t activeEndpoints = 0;  // active state and weight > 0
  uint64_t connections = 0;
  uint64_t datagrams = 0;
  uint64_t refused = 0;
  uint64_t denied = 0;
  bool policy = false;
  std::optional<bool> failClose;  // set (true) only for a fail-close service
};
AIMESH_VIEW_FIELDS(Service) {
  v("name", s.name), v("namespace", s.nameSpace), v("model", s.model), v("algorithm", s.algorithm),
      v("service_id", s.serviceId), v("frontends", s.frontends), v("endpoints", s.endpoints),
      v("active_endpoints", s.activeEndpoints), v("connections", s.connections), v("datagrams", s.datagrams),
      v("refused", s.refused), v("denied", s.denied), v("policy", s.policy),
      v("fail_close", s.failClose);
}

struct ServiceList {
  std::vector<Service> services;
};
AIMESH_VIEW_FIELDS(ServiceList) { v("services", s.services); }

// ---- endpoints ---------------------------------------------------------------

struct Endpoint {
  std::string service;
  std::string nameSpace;
  std::string address;
  uint16_t port = 0;
  std::string protocol;
  std::string pod;  // "" when not known (state file without pod:, non-Pod targetRef)
  uint32_t weight = 0;
  std::string state;
  uint32_t backendId = 0;
  uint64_t connections = 0;
  uint64_t datagrams = 0;
  // Live load and health, from the kernel (0 when telemetry is off).
  int64_t inFlight = 0;
  int64_t idleConnections = 0;
  double ttftEwmaMs = 0;
  double failurePenalty = 0;
  uint32_t consecutiveFailures = 0;
  bool ejected = false;
  double ejectedForSeconds = 0;
  // Scraped from the model server (services with model_metrics).
  std::optional<uint32_t> queuedRequests;
  std::optional<uint32_t> runningRequests;
  std::optional<double> kvCacheUsage;
};
AIMESH_VIEW_FIELDS(Endpoint) {
  v("service", s.service), v("namespace", s.nameSpace), v("address", s.address), v("port", s.port),
      v("protocol", s.protocol), v("pod", s.pod), v("weight", s.weight), v("state", s.state),
      v("backend_id", s.backendId),
      v("connections", s.connections), v("datagrams", s.datagrams), v("in_flight", s.inFlight),
      v("idle_connections", s.idleConnections), v("ttft_ewma_ms", s.ttftEwmaMs),
      v("failure_penalty", s.failurePenalty), v("consecutive_failures", s.consecutiveFailures),
      v("ejected", s.ejected), v("ejected_for_seconds", s.ejectedForSeconds),
      v("queued_requests", s.queuedRequests), v("running_requests", s.runningRequests),
      v("kv_cache_usage", s.kvCacheUsage);
}

struct EndpointList {
  std::vector<Endpoint> endpoints;
};
AIMESH_VIEW_FIELDS(EndpointList) { v("endpoints", s.endpoints); }

// ---- latency -----------------------------------------------------------------

// One non-empty histogram bucket: [lower, upper) in seconds, and its count.
// In JSON a 3-element array; an upper bound of null reads as infinity.
struct Bucket {
  double lower = 0;
  double upper = 0;
  uint64_t count = 0;
};

struct Histogram {
  uint64_t count = 0;
  double sumSeconds = 0;
  double p50 = 0;
  double p90 = 0;
  double p99 = 0;
  std::vector<Bucket> buckets;
};
AIMESH_VIEW_FIELDS(Histogram) {
  v("count", s.count), v("sum_seconds", s.sumSeconds), v("p50", s.p50), v("p90", s.p90), v("p99", s.p99),
      v("buckets", s.buckets);
}

struct EndpointLatency {
  std::string service;
  std::string nameSpace;
  std::string model;
  std::string endpoint;  // host:port
  uint32_t backendId = 0;
  std::map<std::string, Histogram> metrics;  // by metric name (ttft, gap, ...); empty: no histograms
};
AIMESH_VIEW_FIELDS(EndpointLatency) {
  v("service", s.service), v("namespace", s.nameSpace), v("model", s.model), v("endpoint", s.endpoint),
      v("backend_id", s.backendId), v("metrics", s.metrics);
}

struct Latency {
  std::vector<EndpointLatency> endpoints;
};
AIMESH_VIEW_FIELDS(Latency) { v("endpoints", s.endpoints); }

// ---- top ---------------------------------------------------------------------

struct TopEndpoint {
  std::string service;
  std::string nameSpace;
  std::string model;
  std::string endpoint;
  uint32_t backendId = 0;
  int64_t active = 0;
  uint64_t opened = 0;
  uint64_t requests = 0;
  uint64_t responses = 0;
  uint64_t errors = 0;  // refused + timed out + reset
  double ttftP50 = 0;
  double ttftP99 = 0;
  double gapP50 = 0;
  // An endpoint of a guarded canary: its service's canary guard state on
  // this node (ok, probing, tripped; the worst when several splits guard it).
  std::optional<std::string> guard;
};
AIMESH_VIEW_FIELDS(TopEndpoint) {
  v("service", s.service), v("namespace", s.nameSpace), v("model", s.model), v("endpoint", s.endpoint),
      v("backend_id", s.backendId), v("active", s.active), v("opened", s.opened), v("requests", s.requests),
      v("responses", s.responses), v("errors", s.errors), v("ttft_p50", s.ttftP50), v("ttft_p99", s.ttftP99),
      v("gap_p50", s.gapP50), v("guard", s.guard);
}

struct Top {
  double timeSeconds = 0;  // CLOCK_MONOTONIC when read: rates come from two of these
  std::vector<TopEndpoint> endpoints;
};
AIMESH_VIEW_FIELDS(Top) { v("time_seconds", s.timeSeconds), v("endpoints", s.endpoints); }

// ---- clients (who calls which service) ---------------------------------------

// One (client, service) pair: calls from processes of one cgroup on this node
// to one service, counted in the kernel (aimesh_clients). The pairs past the
// agent's top K (by connections + datagrams + requests + refused + denied)
// are summed per service into a row whose client is "other".
struct ClientRow {
  std::string client;     // "namespace/pod" (Kubernetes), the cgroup path, "cgroup:ID", or "other"
  uint64_t cgroupId = 0;  // 0 for "other"; the lowest id when several cgroups (a pod's) share the name
  std::string service;
  std::string nameSpace;
  uint16_t port = 0;  // the service port (a service with two ports has a row per port)
  std::string protocol;
  uint64_t connections = 0;  // TCP connects sent to an endpoint
  uint64_t datagrams = 0;    // unconnected UDP sends sent to an endpoint
  uint64_t requests = 0;     // requests on sampled connections
  uint64_t refused = 0;      // no usable endpoint (ECONNREFUSED)
  uint64_t denied = 0;       // not allowed by the service's policy (EPERM)
};
AIMESH_VIEW_FIELDS(ClientRow) {
  v("client", s.client), v("cgroup_id", s.cgroupId), v("service", s.service), v("namespace", s.nameSpace),
      v("port", s.port), v("protocol", s.protocol), v("connections", s.connections), v("datagrams", s.datagrams), v("requests", s.requests),
      v("refused", s.refused), v("denied", s.denied);
}

struct Clients {
  double timeSeconds = 0;  // CLOCK_MONOTONIC when read: rates come from two of these
  uint32_t topK = 0;       // pairs shown by name; the rest are in "other"
  uint64_t pairs = 0;      // (client, service) pairs the kernel counts
  std::vector<ClientRow> clients;
};
AIMESH_VIEW_FIELDS(Clients) {
  v("time_seconds", s.timeSeconds), v("top_k", s.topK), v("pairs", s.pairs), v("clients", s.clients);
}

// ---- flows -------------------------------------------------------------------

struct Flow {
  uint64_t seq = 0;
  double timeSeconds = 0;
  std::string type;
  std::string service;
  std::string nameSpace;
  std::string endpoint;
  double durationSeconds = 0;
  uint64_t bytesSent = 0;
  uint64_t bytesReceived = 0;
  uint32_t requests = 0;
  uint32_t retransmits = 0;
  uint64_t clientCgroupId = 0;
  std::optional<std::string> reason;  // the agent's events (guard_*): why
};
AIMESH_VIEW_FIELDS(Flow) {
  v("seq", s.seq), v("time_seconds", s.timeSeconds), v("type", s.type), v("service", s.service),
      v("namespace", s.nameSpace), v("endpoint", s.endpoint), v("duration_seconds", s.durationSeconds),
      v("bytes_sent", s.bytesSent), v("bytes_received", s.bytesReceived), v("requests", s.requests),
      v("retransmits", s.retransmits), v("client_cgroup_id", s.clientCgroupId), v("reason", s.reason);
}

struct Flows {
  uint64_t next = 0;  // ask with since = next for what follows
  uint64_t dropped = 0;
  std::vector<Flow> events;
};
AIMESH_VIEW_FIELDS(Flows) { v("next", s.next), v("dropped", s.dropped), v("events", s.events); }

// ---- policy ------------------------------------------------------------------

// One allowed client: a cgroup path, or a pod (Kubernetes).
struct PolicyAllow {
  std::optional<std::string> cgroup;  // the path (cgroup entries), or the pod's resolved cgroup
  std::optional<std::string> pod;
  std::optional<std::string> uid;
  bool resolved = false;
  std::optional<std::string> reason;  // why it did not resolve
};
AIMESH_VIEW_FIELDS(PolicyAllow) {
  v("cgroup", s.cgroup), v("pod", s.pod), v("uid", s.uid), v("resolved", s.resolved), v("reason", s.reason);
}

struct ServicePolicy {
  std::string name;
  std::string nameSpace;
  uint32_t serviceId = 0;
  uint16_t port = 0;
  std::string protocol;
  bool enforced = false;
  uint64_t denied = 0;
  std::vector<PolicyAllow> allow;
  std::optional<std::string> podSelector;
  std::optional<std::vector<uint64_t>> allowedCgroupIds;  // present when enforced
};
AIMESH_VIEW_FIELDS(ServicePolicy) {
  v("name", s.name), v("namespace", s.nameSpace), v("service_id", s.serviceId), v("port", s.port),
      v("protocol", s.protocol), v("enforced", s.enforced), v("denied", s.denied), v("allow", s.allow),
      v("pod_selector", s.podSelector), v("allowed_cgroup_ids", s.allowedCgroupIds);
}

struct Policy {
  std::vector<ServicePolicy> services;
};
AIMESH_VIEW_FIELDS(Policy) { v("services", s.services); }

// ---- routes (splits) ---------------------------------------------------------

// One backend service of a split, and what this node's canary guard thinks
// of it (guarded canaries only).
struct RouteBackend {
  std::string service;  // namespace/name
  uint16_t port = 0;
  uint32_t weight = 0;           // configured
  uint32_t effectiveWeight = 0;  // in the kernel now (the guard's, else configured)
  bool resolved = false;         // the service and its port exist
  double configuredShare = 0;    // % of the split by configured weights
  std::optional<double> observedShare;  // % of the split's connections in the window; none without any
  uint64_t connections = 0;      // sent here since the split's id was given (connects + datagrams)
  std::optional<std::string> guard;     // ok, probing, tripped; none: not a guarded canary
  std::optional<uint64_t> guardTrips;
  std::optional<std::string> guardReason;  // of its last transition
  std::optional<double> guardMetricMs, primaryMetricMs;  // compared over the guard's window
  std::optional<uint64_t> guardSamples, primarySamples;
};
AIMESH_VIEW_FIELDS(RouteBackend) {
  v("service", s.service), v("port", s.port), v("weight", s.weight), v("effective_weight", s.effectiveWeight),
      v("resolved", s.resolved), v("configured_share", s.configuredShare), v("observed_share", s.observedShare),
      v("connections", s.connections), v("guard", s.guard), v("guard_trips", s.guardTrips),
      v("guard_reason", s.guardReason), v("guard_metric_ms", s.guardMetricMs),
      v("primary_metric_ms", s.primaryMetricMs), v("guard_samples", s.guardSamples),
      v("primary_samples", s.primarySamples);
}

// One split service port.
struct Route {
  std::string name;
  std::string nameSpace;
  uint32_t serviceId = 0;
  uint16_t port = 0;
  std::string protocol;
  std::string source;  // "state file", "HTTPRoute ns/name", ...
  std::optional<std::string> guardMetric;  // ttft_p99 / ttft_p50 when guarded
  std::optional<std::string> primary;      // the guard's primary (namespace/name)
  double windowSeconds = 0;                // what observed_share covers
  std::vector<RouteBackend> backends;
};
AIMESH_VIEW_FIELDS(Route) {
  v("name", s.name), v("namespace", s.nameSpace), v("service_id", s.serviceId), v("port", s.port),
      v("protocol", s.protocol), v("source", s.source), v("guard_metric", s.guardMetric), v("primary", s.primary),
      v("window_seconds", s.windowSeconds), v("backends", s.backends);
}

// A canary guard's transition on this node.
struct GuardEvent {
  double timeSeconds = 0;  // unix time
  std::string split;       // namespace/name
  std::string backend;     // namespace/name
  std::string from, to;
  std::string reason;
};
AIMESH_VIEW_FIELDS(GuardEvent) {
  v("time_seconds", s.timeSeconds), v("split", s.split), v("backend", s.backend), v("from", s.from), v("to", s.to),
      v("reason", s.reason);
}

// A Kubernetes mesh route (HTTPRoute, GRPCRoute, TCPRoute with a Service
// parent) and what the agent made of it.
struct MeshRoute {
  std::string route;                 // "HTTPRoute ml/llama-canary"
  std::string state;                 // applied, partial, not_applied
  std::vector<std::string> parents;  // its parent Services
  std::vector<std::string> splits;   // the services it made splits
  std::vector<std::string> notes;    // why not applied, or what of it is not
  std::optional<std::string> pool;   // its InferencePool backend ("ml/llama-pool")
  std::optional<std::vector<std::string>> pooled;  // the services that balance the pool's members
};
AIMESH_VIEW_FIELDS(MeshRoute) {
  v("route", s.route), v("state", s.state), v("parents", s.parents), v("splits", s.splits), v("notes", s.notes),
      v("pool", s.pool), v("pooled", s.pooled);
}

struct Routes {
  std::vector<Route> routes;
  std::vector<GuardEvent> guardEvents;  // the last ones, oldest first
  std::vector<MeshRoute> meshRoutes;    // from the Kubernetes source; by route
};
AIMESH_VIEW_FIELDS(Routes) {
  v("routes", s.routes), v("guard_events", s.guardEvents), v("mesh_routes", s.meshRoutes);
}

// ---- connections -------------------------------------------------------------

struct Connection {
  uint64_t cookie = 0;
  std::string protocol;
  std::string client;  // host:port
  double ageSeconds = 0;
  uint32_t requests = 0;
  std::string state;  // new, busy, idle, ...
  uint64_t netns = 0;  // inode of its network namespace
  std::optional<double> idleSeconds;  // idle ones: since the last response ended
};
AIMESH_VIEW_FIELDS(Connection) {
  v("cookie", s.cookie), v("protocol", s.protocol), v("client", s.client), v("age_seconds", s.ageSeconds),
      v("requests", s.requests), v("state", s.state), v("netns", s.netns), v("idle_seconds", s.idleSeconds);
}

// The connections of one endpoint (or of one that left the state: "removed").
struct EndpointConnections {
  std::string service;
  std::string nameSpace;
  uint16_t port = 0;
  std::string protocol;
  std::string endpoint;
  uint32_t backendId = 0;
  std::string state;
  bool ejected = false;
  std::map<std::string, uint64_t> closed;  // by aimesh, by reason
  int64_t open = 0;
  int64_t idle = 0;
  int64_t busy = 0;
  int64_t requests = 0;
  double oldestSeconds = 0;
  std::vector<Connection> connections;
};
AIMESH_VIEW_FIELDS(EndpointConnections) {
  v("service", s.service), v("namespace", s.nameSpace), v("port", s.port), v("protocol", s.protocol),
      v("endpoint", s.endpoint), v("backend_id", s.backendId), v("state", s.state), v("ejected", s.ejected),
      v("closed", s.closed), v("open", s.open), v("idle", s.idle), v("busy", s.busy), v("requests", s.requests),
      v("oldest_seconds", s.oldestSeconds), v("connections", s.connections);
}

struct Connections {
  bool available = false;
  std::string reason;                     // why not available
  std::optional<uint64_t> namespacesWalked;  // when available
  std::vector<EndpointConnections> endpoints;
};
AIMESH_VIEW_FIELDS(Connections) {
  v("available", s.available), v("reason", s.reason), v("namespaces_walked", s.namespacesWalked),
      v("endpoints", s.endpoints);
}

#undef AIMESH_VIEW_FIELDS

// ---- JSON ----------------------------------------------------------------------

template <class T>
concept View = requires(T& t) { fields(t, [](const char*, auto&) {}); };

namespace detail {
template <class M>
struct IsOptional : std::false_type {};
template <class M>
struct IsOptional<std::optional<M>> : std::true_type {};
}  // namespace detail

template <View T>
void to_json(nlohmann::json& j, const T& t) {
  j = nlohmann::json::object();
  fields(t, [&](const char* key, const auto& m) {
    using M = std::remove_cvref_t<decltype(m)>;
    if constexpr (detail::IsOptional<M>::value) {
      if (m) j[key] = *m;
    } else {
      j[key] = m;
    }
  });
}

// Throws nlohmann::json::exception on a value of the wrong type; see parseView.
template <View T>
void from_json(const nlohmann::json& j, T& t) {
  if (!j.is_object()) throw nlohmann::json::type_error::create(302, "expected an object", &j);
  fields(t, [&](const char* key, auto& m) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return;
    using M = std::remove_cvref_t<decltype(m)>;
    if constexpr (detail::IsOptional<M>::value) {
      m = it->template get<typename M::value_type>();
    } else {
      m = it->template get<M>();
    }
  });
}

void to_json(nlohmann::json& j, const Bucket& b);
void from_json(const nlohmann::json& j, Bucket& b);

// A response as T, or an error that says what is wrong: the agent's own
// {"error": ...}, or a key of the wrong type.
template <View T>
Result<T> parseView(const nlohmann::json& response) {
  if (response.is_object())
    if (auto e = response.find("error"); e != response.end() && e->is_string()) return Error::msg(e->get<std::string>());
  try {
    return response.get<T>();
  } catch (const nlohmann::json::exception& e) {
    return Error::msg(std::string("unexpected response from the agent: ") + e.what());
  }
}

}  // namespace aimesh::view
