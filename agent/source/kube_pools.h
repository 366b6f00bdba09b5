// InferencePool (inference.networking.k8s.io/v1, the Gateway API Inference
// Extension) as the agent sees it, and the endpoints its member pods make.
// Pure, like kube_objects.h: JSON in, value types out.
//
// A pool is a set of model-server pods (spec.selector.matchLabels in the
// pool's namespace) serving on spec.targetPorts. It has no address of its
// own: clients reach it through a mesh route whose only backendRef is the
// pool, and the route's parent Service then balances the pool's members
// (kube_routes.h; docs/traffic-management.md "InferencePool").
//
// poolMembers() rules, one Endpoint per pod address and target port:
//  - a member is a pod in the pool's namespace whose labels include every
//    matchLabels pair, that has not finished (phase Succeeded/Failed) and
//    has an address (status.podIPs, else status.podIP);
//  - Ready condition "True" and not being deleted → kActive; being deleted →
//    kDraining (as a terminating EndpointSlice endpoint); otherwise (not
//    ready yet, failing its readiness probe) the member is standing by;
//  - endpointPickerRef.failureMode FailOpen: when no member is ready, the
//    standing-by members take connections (kActive); FailClose (Gateway
//    API's default): they never do, and with no ready member the parent
//    refuses connections. The kernel side of the mode is Service::failClose.
//  - aimesh picks among the members per connection with its own algorithm
//    and kernel signals; it never calls the pool's endpoint picker (whose
//    name is kept only to be shown).
//  - Deterministic: endpoints sorted by (address, port).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "model/snapshot.h"
#include "source/kube_objects.h"
#include "util/result.h"

namespace aimesh::kube {

inline constexpr const char* kInferenceGroup = "inference.networking.k8s.io";
inline constexpr size_t kMaxPoolTargetPorts = 8;  // the CRD's bound

struct InferencePoolObj {
  ObjectMeta meta;
  std::map<std::string, std::string> matchLabels;  // spec.selector.matchLabels; never empty
  std::vector<uint16_t> targetPorts;               // spec.targetPorts[].number: 1..8, distinct, as written
  bool failOpen = false;                           // spec.endpointPickerRef.failureMode is FailOpen
  std::string picker;                              // spec.endpointPickerRef.name
  auto operator<=>(const InferencePoolObj&) const = default;
};

// A v1 InferencePool. Errors name the object and field, e.g.
// "InferencePool ml/llama: spec.targetPorts[1].number: must be 1..65535, got 0".
Result<InferencePoolObj> decodeInferencePool(const nlohmann::json& object);
// A v1 Pod as a pool member: decodePod() plus its addresses and readiness.
Result<PodObj> decodePoolPod(const nlohmann::json& object);

struct PoolMembers {
  std::vector<Endpoint> endpoints;      // sorted by (address, port)
  size_t ready = 0, standby = 0, draining = 0;  // member pods by state
  bool failedOpen = false;              // no ready member: the standing-by ones were used (FailOpen)
};
// `pods`: keyed "namespace/name" (only the pool's namespace is read).
PoolMembers poolMembers(const InferencePoolObj& pool, const std::map<std::string, PodObj>& pods);

}  // namespace aimesh::kube
