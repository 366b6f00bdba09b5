// Kubernetes Services and EndpointSlices as the agent sees them, and the
// mapping from them to a Snapshot. Pure: JSON in, value types out, no I/O.
// Talking to the API server (list, watch, TLS, retries) lives in
// kube_source.h, not here.
//
// Decoding reads only the fields the mapping needs, is lenient about what the
// API server may omit (absent and null mean the same) and strict about types:
// a wrong-typed or out-of-range field makes decode* return an Error that names
// the object and the field, e.g.
//   "Service ml/llama: spec.ports[1].port: must be 1..65535, got 0".
// Nothing here throws on odd input.
//
// buildSnapshot() mapping rules:
//  - Services being deleted (metadata.deletionTimestamp set), headless
//    Services (spec.clusterIP "None", or no cluster IP) and type ExternalName
//    are skipped silently: that is normal, not a problem.
//  - vips = spec.clusterIPs (spec.clusterIP when clusterIPs is absent), in the
//    API server's order. An address that does not parse is skipped with a
//    warning; a Service left with no address is skipped with a warning.
//    NodePort and LoadBalancer Services are served on their cluster IPs only.
//  - One Snapshot Service per Service port; SCTP ports are skipped with a
//    warning. Name: the Service name if the Service has exactly one port
//    (SCTP ones count), else "<name>:<port name>", or "<name>:<port number>"
//    when the port has no name. nameSpace = metadata.namespace, ports = {that
//    port and protocol}. Two ports that map to the same name (unnamed ports
//    with the same number) keep the first, with a warning.
//  - A frontend (vip, port, protocol) is owned by the first Service in key
//    order that claims it; a later claimant loses that vip with a warning (and
//    is skipped if it has none left). The API server never hands out a
//    cluster IP twice, so this only guards against inconsistent input.
//  - Endpoints of a port come from every EndpointSlice in the same namespace
//    whose kubernetes.io/service-name label is the Service's name and whose
//    addressType is IPv4 or IPv6 (FQDN and unknown types: skipped with one
//    warning per slice). The slice port used is the one with the same name as
//    the Service port ("" for both when unnamed) and the same protocol;
//    Endpoint.port is its port (the resolved targetPort). A slice port without
//    a port number means "all ports" in Kubernetes and gives Endpoint.port 0,
//    the frontend's port. A slice without a matching port contributes nothing
//    to that Service port. Every address of an endpoint is one Endpoint,
//    weight 1; an address that does not parse, or is not of the slice's
//    addressType, is skipped with a warning. Slices being deleted still count
//    (as in kube-proxy): their endpoints' conditions say what is going away.
//  - Conditions, with Kubernetes semantics (an absent ready means ready, an
//    absent terminating means not terminating; serving is not consulted):
//    ready → kActive; not ready and terminating → kDraining; not ready and not
//    terminating (not started yet, failing its readiness probe) → omitted.
//  - The same address:port from several slices (slices being rebalanced)
//    appears once; active wins over draining.
//  - spec.internalTrafficPolicy Local keeps only the endpoints whose nodeName
//    is MappingOptions::nodeName (none there: the Service has no endpoints,
//    and connects are refused, as kube-proxy drops them); without a node
//    name, every endpoint, with a warning.
//  - algorithm: aimesh.io/lb-algorithm, else maglev when spec.sessionAffinity
//    is ClientIP (one client pod always reaches one endpoint while the
//    endpoints stay; no timeout), else MappingOptions::defaultAlgorithm.
//    Not read: sessionAffinityConfig, trafficDistribution, topology hints,
//    externalTrafficPolicy, loadBalancerSourceRanges (docs/kubernetes.md).
//  - Annotations on the Service (bad values are warnings naming the Service,
//    annotation and value; the default is kept):
//      aimesh.io/lb-algorithm          random|maglev|least_conn|latency|bounded_hash → algorithm
//      aimesh.io/model                 → model
//      aimesh.io/model-metrics-port    1..65535 → modelMetrics.port
//      aimesh.io/model-metrics-path    starts with '/', no spaces; default /metrics
//                                      (ignored, with a warning, without the port)
//      aimesh.io/hash-table-size       a prime 7..65521 → hashTableSize (as the state file)
//      aimesh.io/rebalance             true|false → connections.rebalance (unset: the algorithm's default)
//      aimesh.io/rebalance-rate        a number > 0, <= 1000 → connections.rebalanceRate
//      aimesh.io/max-connection-age    a duration ("90", "1.5", "500ms", "30s", "10m", "1h") → connections.maxAgeMs
//      aimesh.io/max-requests-per-connection  0..2^32-1 → connections.maxRequests
//      aimesh.io/drain-timeout         a duration → connections.drainTimeoutMs
//                                      (values read by model/connection_rules.h, as the state file's
//                                      connections map)
//      aimesh.io/allow-pods            a label selector → a workload policy: only the pods it
//                                      selects may connect (docs/policy.md)
//      aimesh.io/allow-namespaces      "a,b": where allow-pods looks (default: the Service's
//                                      namespace); alone, it allows every pod there
//    Either policy annotation makes the Service a policed one: policy.allowPods = the pods
//    of `pods` in those namespaces whose labels match, that have not finished (phase
//    Succeeded/Failed), in key order. Fail closed: a selector or namespace that does not
//    parse, or pods == nullptr (the agent does not watch the pods of its node), gives a
//    policy that allows nobody, with a warning.
//  - Deterministic: services sorted by key() (as Snapshot requires),
//    endpoints by (address, port), warnings in service-key order; the order
//    the maps were filled in does not matter.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "model/snapshot.h"
#include "util/result.h"

namespace aimesh::kube {

inline constexpr const char* kServiceNameLabel = "kubernetes.io/service-name";
inline constexpr const char* kAlgorithmAnnotation = "aimesh.io/lb-algorithm";
inline constexpr const char* kModelAnnotation = "aimesh.io/model";
inline constexpr const char* kModelMetricsPortAnnotation = "aimesh.io/model-metrics-port";
inline constexpr const char* kModelMetricsPathAnnotation = "aimesh.io/model-metrics-path";
inline constexpr const char* kHashTableSizeAnnotation = "aimesh.io/hash-table-size";
inline constexpr const char* kAllowPodsAnnotation = "aimesh.io/allow-pods";
inline constexpr const char* kAllowNamespacesAnnotation = "aimesh.io/allow-namespaces";
inline constexpr const char* kRebalanceAnnotation = "aimesh.io/rebalance";
inline constexpr const char* kRebalanceRateAnnotation = "aimesh.io/rebalance-rate";
inline constexpr const char* kMaxConnectionAgeAnnotation = "aimesh.io/max-connection-age";
inline constexpr const char* kMaxRequestsAnnotation = "aimesh.io/max-requests-per-connection";
inline constexpr const char* kDrainTimeoutAnnotation = "aimesh.io/drain-timeout";
inline constexpr const char* kTelemetrySampleAnnotation = "aimesh.io/telemetry-sample";

struct ObjectMeta {
  std::string name, nameSpace, resourceVersion, uid;  // "namespace" is a keyword
  std::map<std::string, std::string> labels, annotations;
  bool deleting = false;  // metadata.deletionTimestamp is set

  std::string key() const { return nameSpace + "/" + name; }
  auto operator<=>(const ObjectMeta&) const = default;
};

struct ServicePort {
  std::string name;
  uint16_t port = 0;
  Protocol protocol = Protocol::kTcp;  // kTcp when not supported
  bool supported = true;               // false for SCTP
  auto operator<=>(const ServicePort&) const = default;
};

struct ServiceObj {
  ObjectMeta meta;
  std::string type = "ClusterIP";       // ClusterIP, NodePort, LoadBalancer, ExternalName
  std::vector<std::string> clusterIPs;  // spec.clusterIPs, or [spec.clusterIP]; unparsed
  std::vector<ServicePort> ports;
  // spec.internalTrafficPolicy ("Cluster" when absent) and
  // spec.sessionAffinity ("None" when absent), as written.
  std::string internalTrafficPolicy = "Cluster";
  std::string sessionAffinity = "None";

  bool headless() const;  // clusterIP "None", or no cluster IP at all
  auto operator<=>(const ServiceObj&) const = default;
};

struct SlicePort {
  std::string name;
  uint16_t port = 0;  // 0: no port number ("all ports")
  Protocol protocol = Protocol::kTcp;
  auto operator<=>(const SlicePort&) const = default;
};

struct SliceEndpoint {
  std::vector<std::string> addresses;  // unparsed
  std::optional<bool> ready, serving, terminating;
  std::string nodeName;
  std::string pod;  // targetRef.name when targetRef.kind is Pod
  auto operator<=>(const SliceEndpoint&) const = default;
};

struct EndpointSliceObj {
  ObjectMeta meta;
  std::string serviceName;       // label kubernetes.io/service-name; "" if absent
  std::string addressType;       // IPv4, IPv6, FQDN
  std::vector<SlicePort> ports;  // SCTP ports are left out: no Service port can use them
  std::vector<SliceEndpoint> endpoints;
  auto operator<=>(const EndpointSliceObj&) const = default;
};

// A v1 Pod, reduced to what a workload policy needs: who it is (name,
// namespace, uid, labels), where it runs and whether it has finished.
// Annotations are not kept (they can be large and are not used).
struct PodObj {
  ObjectMeta meta;
  std::string nodeName;  // spec.nodeName; "" before it is scheduled
  std::string phase;     // status.phase: Pending, Running, Succeeded, Failed, Unknown; "" if absent
  // Only decodePoolPod() reads these (InferencePool members, kube_pools.h):
  std::vector<std::string> ips;  // status.podIPs (status.podIP when absent); unparsed
  bool ready = false;            // status.conditions: type Ready is "True"
  bool finished() const { return phase == "Succeeded" || phase == "Failed"; }
  auto operator<=>(const PodObj&) const = default;
};

// metadata of any object; name is required, everything else optional.
// Errors name the field from the object's root ("metadata.labels[app]: ...").
Result<ObjectMeta> decodeMeta(const nlohmann::json& object);
// A v1 Service (a List item or a watch event's object). namespace is required;
// kind, when present, must be Service.
Result<ServiceObj> decodeService(const nlohmann::json& object);
// A discovery.k8s.io/v1 EndpointSlice. namespace and addressType are required.
Result<EndpointSliceObj> decodeEndpointSlice(const nlohmann::json& object);
// A v1 Pod. namespace and uid are required (the uid names its cgroup).
Result<PodObj> decodePod(const nlohmann::json& object);

// A label selector as kubectl -l writes it (k8s.io/apimachinery/pkg/labels):
// requirements separated by ',' that must all hold:
//   a=b, a==b    a is set to b          a!=b          a is not set to b (or unset)
//   a in (x,y)   a is set to x or y     a notin (x,y) a is set to neither (or unset)
//   a            a is set               !a            a is not set
// Whitespace between tokens is allowed. The empty selector matches everything.
struct Requirement {
  enum class Op : uint8_t { kEquals, kNotEquals, kIn, kNotIn, kExists, kDoesNotExist };
  std::string key;
  Op op = Op::kExists;
  std::vector<std::string> values;  // sorted, unique; one for kEquals/kNotEquals, none for kExists/kDoesNotExist
  auto operator<=>(const Requirement&) const = default;
};

struct Selector {
  std::vector<Requirement> requirements;  // in the order written
  bool empty() const { return requirements.empty(); }
  auto operator<=>(const Selector&) const = default;
};

// Errors quote the selector and say what was expected where, e.g.
// "label selector \"app in (a\": expected ',' or ')' after 'a', got end of input".
Result<Selector> parseSelector(const std::string& text);
bool matches(const Selector& selector, const std::map<std::string, std::string>& labels);

struct BuildResult {
  Snapshot snapshot;
  std::vector<std::string> warnings;  // one per skipped object or field, naming it
};

// How Services map beyond their own fields: the agent's settings.
struct MappingOptions {
  // The algorithm of a Service without aimesh.io/lb-algorithm (and without
  // sessionAffinity ClientIP, which maps to maglev).
  Algorithm defaultAlgorithm = Algorithm::kRandom;
  // This node (--node-name): a Service with internalTrafficPolicy Local
  // keeps only the endpoints on it. "" = unknown (then Local is not
  // honoured, with a warning).
  std::string nodeName;
  auto operator<=>(const MappingOptions&) const = default;
};

// services, slices and pods keyed by "namespace/name" (the key is only for
// lookup; the names used come from each object's metadata). pods: the pods
// of this node, or nullptr when they are not watched.
BuildResult buildSnapshot(const std::map<std::string, ServiceObj>& services,
                          const std::map<std::string, EndpointSliceObj>& slices,
                          const std::map<std::string, PodObj>* pods = nullptr, const MappingOptions& opts = {});

// What one Service object maps to: a Snapshot service per supported port,
// the warnings about it and its slices, and whether it has a workload
// policy (then it depends on the pods too). `slices`: its EndpointSlices, in
// key order.
struct ServiceBuild {
  std::vector<SharedServices::Ptr> services;  // shared with the snapshots built from it
  std::vector<std::string> warnings;
  bool usesPods = false;
};
ServiceBuild buildService(const ServiceObj& svc, const std::vector<const EndpointSliceObj*>& slices,
                          const std::map<std::string, PodObj>* pods, const MappingOptions& opts = {});

// What assemble() decided beyond the builds: its own warnings, and the
// services it skipped or trimmed (a second port of one name, an address
// another Service claimed first).
struct AssembleNotes {
  std::vector<std::string> warnings;
  std::set<const Service*> special;
};

// buildSnapshot() for a store that changes a few objects at a time: each
// Service's build is kept and made again only when the Service, one of its
// EndpointSlices or (with a workload policy) the pods changed. Told of each
// change before the store is read again; build() then gives what
// buildSnapshot() gives for the same store (a property test holds it to
// that). At 10,000 Services one endpoint's event rebuilds one Service, and
// when the rebuilt Services keep their names, addresses and ports (and were
// not skipped or trimmed) their new versions are swapped into the last
// result instead of assembling every Service again.

class SnapshotCache {
 public:
  void serviceChanged(const std::string& key);  // the store key ("namespace/name") of a Service added, changed or gone
  // A slice added (before null), changed or deleted (after null).
  void sliceChanged(const std::string& key, const EndpointSliceObj* before, const EndpointSliceObj* after);
  void podsChanged();
  void reset();  // anything may have changed (a store replaced by a list)
  // Every Service is built with these from the next build() on.
  void setOptions(const MappingOptions& opts) {
    if (opts != opts_) all_ = true;
    opts_ = opts;
  }
  BuildResult build(const std::map<std::string, ServiceObj>& services,
                    const std::map<std::string, EndpointSliceObj>& slices,
                    const std::map<std::string, PodObj>* pods = nullptr);
  // How many builds patched the last result instead of assembling anew.
  size_t patched() const { return patched_; }

 private:
  size_t patched_ = 0;
  MappingOptions opts_;
  std::map<std::string, ServiceBuild> builds_;  // by Service store key
  std::map<std::pair<std::string, std::string>, std::set<std::string>> slicesOf_;  // (namespace, service) -> slice keys
  std::set<std::string> dirty_;
  std::set<std::string> warned_;  // keys of builds_ with warnings
  bool all_ = true, pods_ = false, hadPods_ = false;
  std::optional<BuildResult> last_;  // the last build() result
  AssembleNotes notes_;              // and what its assemble() noted
  bool patch(const std::vector<std::pair<ServiceBuild, const ServiceBuild*>>& rebuilt);
};

}  // namespace aimesh::kube
