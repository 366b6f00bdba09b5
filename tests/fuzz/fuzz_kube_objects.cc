// libFuzzer target: the Kubernetes object decoder and mapper
// (agent/source/kube_objects.h) on arbitrary bytes as JSON, parsed as the
// agent parses API answers (json::parse without exceptions). The value is
// taken the way kube_source.cc takes it: a List ("items": every item decoded
// as a Service, an EndpointSlice and a Pod), a watch event ("object"), or
// else a single object; whatever decodes goes into buildSnapshot(), with the
// pods (the policy annotations pick among them) and without. The bytes are
// also parsed as a label selector and matched against the decoded labels.
// Every item is decoded as an HTTPRoute, GRPCRoute, TCPRoute and
// ReferenceGrant too (agent/source/kube_routes.h), as an InferencePool and a
// pool member pod (kube_pools.h), and applyRoutes() runs on the snapshot
// built.
//
// Checks, besides crashes and sanitizer reports: nothing throws (the header
// promises "Nothing here throws on odd input"; an escaping exception aborts
// the run), errors have a message, and buildSnapshot() is deterministic with
// services sorted by key() and endpoints sorted by (address, port), unique.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <tuple>

#include <nlohmann/json.hpp>

#include "source/kube_objects.h"
#include "source/kube_pools.h"
#include "source/kube_routes.h"

namespace {

namespace kube = aimesh::kube;
using nlohmann::json;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_kube_objects: invariant failed: %s\n", what);
    std::abort();
  }
}

struct Store {
  std::map<std::string, kube::ServiceObj> services;
  std::map<std::string, kube::EndpointSliceObj> slices;
  std::map<std::string, kube::PodObj> pods;
  std::map<std::string, kube::RouteObj> http, grpc, tcp;
  std::map<std::string, kube::ReferenceGrantObj> grants;
  std::map<std::string, kube::InferencePoolObj> pools;
  std::map<std::string, kube::PodObj> poolPods;
  std::map<std::string, std::string> labels;  // of everything decoded, for the selector
};

void decodeOne(const json& obj, Store& st) {
  auto meta = kube::decodeMeta(obj);
  if (meta) {
    for (const auto& [k, v] : meta->labels) st.labels[k] = v;
  } else {
    check(!meta.error().message().empty(), "decodeMeta error has a message");
  }
  auto svc = kube::decodeService(obj);
  if (svc) {
    check(!svc->meta.name.empty(), "a decoded Service has a name");
    st.services[svc->meta.key()] = std::move(svc.value());
  } else {
    check(!svc.error().message().empty(), "decodeService error has a message");
  }
  auto slice = kube::decodeEndpointSlice(obj);
  if (slice) {
    st.slices[slice->meta.key()] = std::move(slice.value());
  } else {
    check(!slice.error().message().empty(), "decodeEndpointSlice error has a message");
  }
  auto pod = kube::decodePod(obj);
  if (pod) {
    check(!pod->meta.uid.empty(), "a decoded Pod has a uid");
    st.pods[pod->meta.key()] = std::move(pod.value());
  } else {
    check(!pod.error().message().empty(), "decodePod error has a message");
  }
  for (auto [decode, store] : {std::pair{&kube::decodeHttpRoute, &st.http}, {&kube::decodeGrpcRoute, &st.grpc},
                               {&kube::decodeTcpRoute, &st.tcp}}) {
    auto route = decode(obj);
    if (route) (*store)[route->meta.key()] = std::move(route.value());
    else check(!route.error().message().empty(), "a route's decode error has a message");
  }
  auto grant = kube::decodeReferenceGrant(obj);
  if (grant) st.grants[grant->meta.key()] = std::move(grant.value());
  else check(!grant.error().message().empty(), "decodeReferenceGrant error has a message");
  auto pool = kube::decodeInferencePool(obj);
  if (pool) {
    check(!pool->matchLabels.empty() && !pool->targetPorts.empty() &&
              pool->targetPorts.size() <= kube::kMaxPoolTargetPorts,
          "a decoded pool has labels and 1..8 target ports");
    st.pools[pool->meta.key()] = std::move(pool.value());
  } else {
    check(!pool.error().message().empty(), "decodeInferencePool error has a message");
  }
  auto member = kube::decodePoolPod(obj);
  if (member) st.poolPods[member->meta.key()] = std::move(member.value());
  else check(!member.error().message().empty(), "decodePoolPod error has a message");
}

// applyRoutes(): deterministic; splits have 1..16 backends and no endpoints,
// and name no split; services stay sorted; a pool's members are sorted and
// unique, and FailOpen takes standing-by members only with none ready.
void checkRoutes(const kube::BuildResult& built, const Store& st) {
  for (const auto& [key, pool] : st.pools) {
    kube::PoolMembers m = kube::poolMembers(pool, st.poolPods);
    for (size_t i = 1; i < m.endpoints.size(); ++i)
      check(std::tie(m.endpoints[i - 1].address, m.endpoints[i - 1].port) <
                std::tie(m.endpoints[i].address, m.endpoints[i].port),
            "pool members sorted by (address, port), unique");
    check(!m.failedOpen || (pool.failOpen && m.ready == 0), "only FailOpen with no ready member fails open");
  }
  kube::RouteStores stores{&st.http, &st.grpc, &st.tcp, &st.grants, &st.pools, &st.poolPods};
  kube::BuildResult a = built, b = built;
  kube::applyRoutes(a, st.services, stores);
  kube::applyRoutes(b, st.services, stores);
  check(a.snapshot == b.snapshot && a.warnings == b.warnings, "applyRoutes is deterministic");
  const auto& services = a.snapshot.services;
  check(services.size() == built.snapshot.services.size(), "routes change services, never add or drop one");
  check(services.sortedByKey(), "services stay sorted by key");
  for (const auto& s : services) {
    if (s.split.empty()) continue;
    check(s.split.size() <= aimesh::kMaxSplitBackends, "a split has at most 16 backends");
    check(s.endpoints.empty(), "a split has no endpoints of its own");
    for (const auto& be : s.split) {
      const auto* t = services.find(be.nameSpace.empty() ? s.nameSpace : be.nameSpace, be.service, true);
      check(t != nullptr && t->split.empty(), "a split's backend exists and is no split");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  Store st;
  json j = json::parse(text, nullptr, false);
  if (!j.is_discarded()) {
    if (j.is_object() && j.contains("items") && j["items"].is_array()) {
      for (const auto& item : j["items"]) decodeOne(item, st);
    } else if (j.is_object() && j.contains("object")) {
      decodeOne(j["object"], st);
    } else {
      decodeOne(j, st);
    }
  }

  kube::BuildResult a = kube::buildSnapshot(st.services, st.slices, &st.pods);
  kube::BuildResult b = kube::buildSnapshot(st.services, st.slices, &st.pods);
  check(a.snapshot == b.snapshot && a.warnings == b.warnings, "buildSnapshot is deterministic");
  kube::BuildResult noPods = kube::buildSnapshot(st.services, st.slices);
  check(noPods.snapshot.services.size() == a.snapshot.services.size(), "pods change policies, not services");
  for (const auto& s : noPods.snapshot.services)
    check(!s.policy || s.policy->allowPods.empty(), "without the node's pods a policy allows no pod");
  checkRoutes(a, st);
  const auto& services = a.snapshot.services;
  for (size_t i = 1; i < services.size(); ++i) {
    check(services[i - 1].key() < services[i].key(), "services sorted by key, unique");
  }
  for (const auto& s : services) {
    check(!s.vips.empty(), "a service has an address");
    check(s.ports.size() == 1, "one snapshot service per Service port");
    if (s.policy) {
      for (size_t i = 1; i < s.policy->allowPods.size(); ++i)
        check(s.policy->allowPods[i - 1] < s.policy->allowPods[i], "allowed pods sorted, unique");
    }
    for (size_t i = 1; i < s.endpoints.size(); ++i) {
      const auto& p = s.endpoints[i - 1];
      const auto& e = s.endpoints[i];
      check(std::tie(p.address, p.port) < std::tie(e.address, e.port), "endpoints sorted, unique");
    }
  }

  auto sel = kube::parseSelector(text);
  if (sel) {
    (void)kube::matches(*sel, st.labels);
    (void)kube::matches(*sel, {});
  } else {
    check(!sel.error().message().empty(), "parseSelector error has a message");
  }
  return 0;
}
