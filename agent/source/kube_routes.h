// Gateway API mesh routes (GAMMA) as the agent sees them, and how they turn
// Services of a Snapshot into splits. Pure, like kube_objects.h: JSON in,
// value types out. docs/traffic-management.md ("Kubernetes routes") is the
// user's view of the rules below.
//
// Watched kinds: HTTPRoute and GRPCRoute (gateway.networking.k8s.io/v1),
// TCPRoute (v1alpha2) and ReferenceGrant (v1beta1). A route binds to the
// mesh through a parentRef {group: "" (or "core"), kind: Service, name,
// optional port or sectionName}; parentRefs to Gateways are other
// controllers' business and ignored without a word.
//
// applyRoutes() rules (aimesh balances connections, so a route is applied
// whole at L4 or not at all; what it cannot honour is reported, never half-
// applied):
//  - Applied: exactly one rule, whose matches are the default (none, or one
//    PathPrefix "/" match for HTTPRoute, an empty match for GRPCRoute), with
//    no filters (on the rule or on a backendRef), and 1..16 backendRefs to
//    Services. The parent Service's port (each TCP port without a port in
//    the parentRef) becomes a split over the backends' snapshot services,
//    weights as written (Gateway API's 0..1,000,000 is the kernel's range).
//  - Applied and reported as ignored: timeouts, retry, sessionPersistence,
//    hostnames (a connection is balanced before any request is seen).
//  - Not applied (the parent keeps balancing its own endpoints), with the
//    reasons: several rules, non-default matches, filters, no backendRefs,
//    more than 16, a backendRef that is not a Service, names the parent
//    itself, does not exist, lacks the port, or is in another namespace
//    without a ReferenceGrant there that allows it (a backendRef of weight 0
//    that does not resolve is dropped instead: it would get nothing anyway);
//    a parent in another namespace than the route (a "consumer route": it
//    would apply to that namespace's clients only, which a per-node split
//    cannot tell apart); a parent Service that is not in the snapshot
//    (headless, ExternalName, not selected) or has no TCP port that matches.
//  - An InferencePool backendRef (group inference.networking.k8s.io, kind
//    InferencePool; kube_pools.h) must be the rule's only one, of weight > 0.
//    The parent's ports then balance the pool's members instead of the
//    parent's own endpoints: algorithm latency and model-server metrics
//    scraped on the first target port at /metrics, unless the parent
//    Service's aimesh.io/lb-algorithm or aimesh.io/model-metrics-port says
//    otherwise; failClose from the pool's failureMode. A backendRef port is
//    ignored (the pool's targetPorts are used). Not applied: a pool with
//    other backendRefs (a split between pools needs split targets without
//    an address, which aimesh does not have), a pool that does not exist, or
//    one in another namespace without a ReferenceGrant for InferencePools.
//  - Conflicts: one route per parent port. The oldest route
//    (metadata.creationTimestamp) wins, then the lower namespace/name.
//  - A parent that has a canary guard: the route's aimesh.io/canary-guard
//    annotation, else the parent Service's (parseCanaryGuardText()). Its
//    primary is a backend Service's name; unset, the first backendRef.
//  - Deterministic: routes in (kind, namespace, name) order; notes sorted.
// No route status is written back to the API server: `meshctl routes` and
// the agent's log show what was applied.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "model/snapshot.h"
#include "source/kube_objects.h"
#include "source/kube_pools.h"
#include "util/result.h"

namespace aimesh::kube {

inline constexpr const char* kCanaryGuardAnnotation = "aimesh.io/canary-guard";
inline constexpr const char* kGatewayGroup = "gateway.networking.k8s.io";

enum class RouteKind : uint8_t { kHttp = 0, kGrpc = 1, kTcp = 2 };
const char* toString(RouteKind k);  // "HTTPRoute", "GRPCRoute", "TCPRoute"

struct RouteParent {
  std::string group = kGatewayGroup, kind = "Gateway";  // Gateway API's defaults
  std::string nameSpace;                                 // "" = the route's
  std::string name;
  std::optional<uint16_t> port;
  std::string sectionName;
  bool isService() const { return (group.empty() || group == "core") && kind == "Service"; }
  auto operator<=>(const RouteParent&) const = default;
};

struct RouteBackend {
  std::string group, kind = "Service";
  std::string name, nameSpace;  // nameSpace "" = the route's
  std::optional<uint16_t> port;
  uint32_t weight = 1;
  bool filters = false;
  bool isService() const { return (group.empty() || group == "core") && kind == "Service"; }
  auto operator<=>(const RouteBackend&) const = default;
};

struct RouteRule {
  std::vector<RouteBackend> backends;
  std::vector<std::string> unsupported;  // "matches", "filters": the route is not applied
  std::vector<std::string> ignored;      // "timeouts", "retry", "sessionPersistence"
  auto operator<=>(const RouteRule&) const = default;
};

struct RouteObj {
  ObjectMeta meta;
  RouteKind kind = RouteKind::kHttp;
  std::string created;  // metadata.creationTimestamp (RFC 3339, compared as text)
  std::vector<RouteParent> parents;
  std::vector<RouteRule> rules;
  bool hostnames = false;  // spec.hostnames given (ignored)
  std::string name() const { return std::string(toString(kind)) + " " + meta.key(); }
  auto operator<=>(const RouteObj&) const = default;
};

struct ReferenceGrantObj {
  struct From {
    std::string group, kind, nameSpace;
    auto operator<=>(const From&) const = default;
  };
  struct To {
    std::string group, kind, name;  // name "" = every object of the kind
    auto operator<=>(const To&) const = default;
  };
  ObjectMeta meta;
  std::vector<From> from;
  std::vector<To> to;
  auto operator<=>(const ReferenceGrantObj&) const = default;
};

Result<RouteObj> decodeHttpRoute(const nlohmann::json& object);
Result<RouteObj> decodeGrpcRoute(const nlohmann::json& object);
Result<RouteObj> decodeTcpRoute(const nlohmann::json& object);
Result<ReferenceGrantObj> decodeReferenceGrant(const nlohmann::json& object);

// The routes of a store, by kind, each map keyed by "namespace/name".
struct RouteStores {
  const std::map<std::string, RouteObj>* http = nullptr;
  const std::map<std::string, RouteObj>* grpc = nullptr;
  const std::map<std::string, RouteObj>* tcp = nullptr;
  const std::map<std::string, ReferenceGrantObj>* grants = nullptr;
  const std::map<std::string, InferencePoolObj>* pools = nullptr;
  const std::map<std::string, PodObj>* poolPods = nullptr;  // decodePoolPod(), every namespace
};

// Turns the parents of the routes into splits in `result` (services
// replaced, shared otherwise), sets result.snapshot.routes to a note per
// mesh route and adds a warning per route not applied in full. `services`:
// the Service objects the snapshot was built from.
void applyRoutes(BuildResult& result, const std::map<std::string, ServiceObj>& services, const RouteStores& routes);

}  // namespace aimesh::kube
