#include "source/kube_pools.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "source/kube_routes.h"

namespace aimesh::kube {
namespace {

using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

json load(const std::string& name) {
  std::ifstream in(AIMESH_SOURCE_DIR "/tests/fixtures/kube/" + name);
  return json::parse(in, nullptr, false);
}

json poolJson(const std::string& ns, const std::string& name, json ports, const std::string& failureMode = "") {
  json spec = {{"selector", {{"matchLabels", {{"app", "vllm"}}}}}, {"targetPorts", json::array()}};
  for (int p : ports) spec["targetPorts"].push_back({{"number", p}});
  spec["endpointPickerRef"] = {{"name", name + "-epp"}, {"port", {{"number", 9002}}}};
  if (!failureMode.empty()) spec["endpointPickerRef"]["failureMode"] = failureMode;
  return {{"metadata", {{"name", name}, {"namespace", ns}}}, {"spec", spec}};
}

json podJson(const std::string& ns, const std::string& name, const std::string& ip, bool ready,
             const std::string& app = "vllm") {
  json status = {{"phase", "Running"},
                 {"conditions", json::array({{{"type", "Ready"}, {"status", ready ? "True" : "False"}}})}};
  if (!ip.empty()) status["podIPs"] = json::array({{{"ip", ip}}});
  return {{"metadata", {{"name", name}, {"namespace", ns}, {"uid", "uid-" + name}, {"labels", {{"app", app}}}}},
          {"spec", {{"nodeName", "node-a"}}},
          {"status", status}};
}

PodObj pod(const json& j) {
  auto p = decodePoolPod(j);
  EXPECT_TRUE(p.ok()) << p.error().message();
  return p.ok() ? *p : PodObj{};
}

InferencePoolObj pool(const json& j) {
  auto p = decodeInferencePool(j);
  EXPECT_TRUE(p.ok()) << p.error().message();
  return p.ok() ? *p : InferencePoolObj{};
}

Endpoint ep(const std::string& addr, uint16_t port, const std::string& pod,
            EndpointState st = EndpointState::kActive) {
  return Endpoint{*IpAddr::parse(addr), port, 1, st, pod};
}

TEST(KubePools, TheFixturesDecodeAsPublished) {
  const json pools = load("inferencepools.json"), pods = load("pods.json");
  ASSERT_EQ(pools["items"].size(), 1u);
  InferencePoolObj p = pool(pools["items"][0]);
  EXPECT_EQ(p.meta.key(), "ml/llama-pool");
  EXPECT_EQ(p.matchLabels, (std::map<std::string, std::string>{{"app", "vllm-llama"}}));
  EXPECT_THAT(p.targetPorts, ElementsAre(8000));
  EXPECT_TRUE(p.failOpen);
  EXPECT_EQ(p.picker, "llama-epp");
  std::map<std::string, PodObj> store;
  for (const json& item : pods["items"]) {
    PodObj o = pod(item);
    store[o.meta.key()] = o;
  }
  const PodObj& dual = store.at("ml/vllm-llama-7d9c5b6f8-4xk2p");
  EXPECT_THAT(dual.ips, ElementsAre("10.244.1.17", "fd00:10:244:1::17"));
  EXPECT_TRUE(dual.ready);
  EXPECT_FALSE(store.at("ml/vllm-llama-7d9c5b6f8-bm4tz").ready);
  EXPECT_TRUE(store.at("ml/vllm-llama-7d9c5b6f8-r8d2n").meta.deleting);
  // Two ready members (one dual-stack), one standing by, one terminating;
  // the mistral pod is not a member.
  PoolMembers m = poolMembers(p, store);
  EXPECT_EQ(m.ready, 2u);
  EXPECT_EQ(m.standby, 1u);
  EXPECT_EQ(m.draining, 1u);
  EXPECT_FALSE(m.failedOpen);
  EXPECT_THAT(m.endpoints, ElementsAre(ep("10.244.1.17", 8000, "vllm-llama-7d9c5b6f8-4xk2p"),
                                       ep("10.244.1.40", 8000, "vllm-llama-7d9c5b6f8-r8d2n", EndpointState::kDraining),
                                       ep("10.244.2.23", 8000, "vllm-llama-7d9c5b6f8-9hq7w"),
                                       ep("fd00:10:244:1::17", 8000, "vllm-llama-7d9c5b6f8-4xk2p")));
}

TEST(KubePools, DefaultsAndDecodeErrorsNameTheField) {
  json j = poolJson("ml", "p", {8000});
  EXPECT_FALSE(pool(j).failOpen) << "FailClose is the default";
  auto bad = [](json o) { return decodeInferencePool(o).error().message(); };
  json zero = poolJson("ml", "p", {8000, 0});
  EXPECT_EQ(bad(zero), "InferencePool ml/p: spec.targetPorts[1].number: must be 1..65535, got 0");
  EXPECT_EQ(bad(poolJson("ml", "p", {8000, 8000})), "InferencePool ml/p: spec.targetPorts[1].number: port 8000 is listed twice");
  EXPECT_EQ(bad(poolJson("ml", "p", {1, 2, 3, 4, 5, 6, 7, 8, 9})), "InferencePool ml/p: spec.targetPorts: must list 1 to 8 ports, got 9");
  EXPECT_EQ(bad(poolJson("ml", "p", json::array())), "InferencePool ml/p: spec.targetPorts: must list 1 to 8 ports, got 0");
  EXPECT_EQ(bad(poolJson("ml", "p", {8000}, "Open")),
            "InferencePool ml/p: spec.endpointPickerRef.failureMode: must be FailOpen or FailClose, got 'Open'");
  json noLabels = poolJson("ml", "p", {8000});
  noLabels["spec"]["selector"]["matchLabels"] = json::object();
  EXPECT_THAT(bad(noLabels), HasSubstr("spec.selector.matchLabels: must name at least one label"));
  json noSelector = poolJson("ml", "p", {8000});
  noSelector["spec"].erase("selector");
  EXPECT_EQ(bad(noSelector), "InferencePool ml/p: spec.selector: required field is missing");
  json badIp = podJson("ml", "a", "10.0.0.1", true);
  badIp["status"]["podIPs"][0]["ip"] = 7;
  EXPECT_THAT(decodePoolPod(badIp).error().message(), HasSubstr("status.podIPs[0].ip: must be a string"));
  // status.podIP alone (an older API server) is read too.
  json old = podJson("ml", "a", "", true);
  old["status"]["podIP"] = "10.0.0.9";
  EXPECT_THAT(pod(old).ips, ElementsAre("10.0.0.9"));
}

TEST(KubePools, MembersAreMatchingPodsOfThePoolNamespaceOnEveryTargetPort) {
  InferencePoolObj p = pool(poolJson("ml", "p", {8000, 8001}));
  std::map<std::string, PodObj> pods;
  auto add = [&](const json& j) {
    PodObj o = pod(j);
    pods[o.meta.key()] = o;
  };
  add(podJson("ml", "a", "10.0.0.2", true));
  add(podJson("ml", "b", "10.0.0.1", true));
  add(podJson("ml", "c", "10.0.0.3", true, "other"));  // another app
  add(podJson("other", "d", "10.0.0.4", true));        // another namespace
  add(podJson("ml", "e", "", true));                   // no address yet
  json done = podJson("ml", "f", "10.0.0.6", true);
  done["status"]["phase"] = "Succeeded";
  add(done);
  add(podJson("ml", "g", "10.0.0.7", false));          // standing by
  PoolMembers m = poolMembers(p, pods);
  EXPECT_THAT(m.endpoints, ElementsAre(ep("10.0.0.1", 8000, "b"), ep("10.0.0.1", 8001, "b"), ep("10.0.0.2", 8000, "a"),
                                       ep("10.0.0.2", 8001, "a")));
  EXPECT_EQ(m.ready, 2u);
  EXPECT_EQ(m.standby, 1u);
}

TEST(KubePools, FailOpenTakesTheNotReadyMembersOnlyWhenNoneIsReady) {
  std::map<std::string, PodObj> pods;
  for (const json& j : {podJson("ml", "a", "10.0.0.1", false), podJson("ml", "b", "10.0.0.2", false)}) {
    PodObj o = pod(j);
    pods[o.meta.key()] = o;
  }
  InferencePoolObj open = pool(poolJson("ml", "p", {8000}, "FailOpen"));
  InferencePoolObj close = pool(poolJson("ml", "p", {8000}, "FailClose"));
  PoolMembers mo = poolMembers(open, pods), mc = poolMembers(close, pods);
  EXPECT_TRUE(mo.failedOpen);
  EXPECT_THAT(mo.endpoints, ElementsAre(ep("10.0.0.1", 8000, "a"), ep("10.0.0.2", 8000, "b")));
  EXPECT_FALSE(mc.failedOpen);
  EXPECT_THAT(mc.endpoints, IsEmpty());
  // One ready member: FailOpen uses it alone.
  PodObj ready = pod(podJson("ml", "c", "10.0.0.3", true));
  pods[ready.meta.key()] = ready;
  mo = poolMembers(open, pods);
  EXPECT_FALSE(mo.failedOpen);
  EXPECT_THAT(mo.endpoints, ElementsAre(ep("10.0.0.3", 8000, "c")));
}

// ---- routes to a pool ------------------------------------------------------

json serviceJson(const std::string& ns, const std::string& name, const std::string& ip, int port,
                 json annotations = json::object()) {
  return {{"metadata", {{"name", name}, {"namespace", ns}, {"annotations", annotations}}},
          {"spec", {{"clusterIP", ip}, {"ports", json::array({{{"port", port}, {"protocol", "TCP"}}})}}}};
}

json poolRoute(const std::string& ns, const std::string& name, const std::string& parent, json backends) {
  return {{"metadata", {{"name", name}, {"namespace", ns}, {"creationTimestamp", "2026-01-01T00:00:00Z"}}},
          {"spec", {{"parentRefs", json::array({{{"group", ""}, {"kind", "Service"}, {"name", parent}}})},
                    {"rules", json::array({{{"backendRefs", backends}}})}}}};
}

json poolRef(const std::string& name, const std::string& ns = "") {
  json r = {{"group", kInferenceGroup}, {"kind", "InferencePool"}, {"name", name}};
  if (!ns.empty()) r["namespace"] = ns;
  return r;
}

struct World {
  std::map<std::string, ServiceObj> services;
  std::map<std::string, RouteObj> http, none;
  std::map<std::string, ReferenceGrantObj> grants;
  std::map<std::string, InferencePoolObj> pools;
  std::map<std::string, PodObj> pods;

  World() {
    service(serviceJson("ml", "llama", "10.96.0.10", 80));
    pools["ml/llama-pool"] = pool(poolJson("ml", "llama-pool", {8000}));
    for (const json& j : {podJson("ml", "a", "10.0.0.1", true), podJson("ml", "b", "10.0.0.2", false)}) {
      PodObj o = pod(j);
      pods[o.meta.key()] = o;
    }
  }
  void service(const json& j) {
    auto s = decodeService(j);
    ASSERT_TRUE(s.ok()) << s.error().message();
    services[s->meta.key()] = *s;
  }
  void route(const json& j) {
    auto r = decodeHttpRoute(j);
    ASSERT_TRUE(r.ok()) << r.error().message();
    http[r->meta.key()] = *r;
  }
  BuildResult build() {
    BuildResult b = buildSnapshot(services, {});
    applyRoutes(b, services, RouteStores{&http, &none, &none, &grants, &pools, &pods});
    return b;
  }
};

const Service& llama(const BuildResult& b) {
  const Service* s = b.snapshot.services.find("ml", "llama", true);
  EXPECT_NE(s, nullptr);
  static const Service kNone;
  return s ? *s : kNone;
}

TEST(KubePools, ARouteToAPoolMakesTheParentBalanceItsReadyMembers) {
  World w;
  w.route(poolRoute("ml", "llama-route", "llama", json::array({poolRef("llama-pool")})));
  BuildResult b = w.build();
  const Service& s = llama(b);
  EXPECT_THAT(s.endpoints, ElementsAre(ep("10.0.0.1", 8000, "a")));
  EXPECT_TRUE(s.split.empty());
  EXPECT_EQ(s.algorithm, Algorithm::kLatency);
  ASSERT_TRUE(s.modelMetrics);
  EXPECT_EQ(s.modelMetrics->port, 8000);
  EXPECT_EQ(s.modelMetrics->path, "/metrics");
  EXPECT_TRUE(s.failClose);
  ASSERT_TRUE(b.snapshot.routes);
  const RouteNote& n = b.snapshot.routes->front();
  EXPECT_EQ(n.state, RouteNote::State::kApplied);
  EXPECT_EQ(n.pool, "ml/llama-pool");
  EXPECT_THAT(n.pooled, ElementsAre("ml/llama"));
  EXPECT_THAT(n.splits, IsEmpty());
  EXPECT_THAT(b.warnings, IsEmpty());

  // FailOpen, and no ready member: the not-ready one takes connections.
  w.pools["ml/llama-pool"].failOpen = true;
  w.pods["ml/a"].ready = false;
  b = w.build();
  EXPECT_THAT(llama(b).endpoints, ElementsAre(ep("10.0.0.1", 8000, "a"), ep("10.0.0.2", 8000, "b")));
  EXPECT_FALSE(llama(b).failClose);

  // The parent's own annotations win over the pool defaults.
  w.service(serviceJson("ml", "llama", "10.96.0.10", 80,
                        {{"aimesh.io/lb-algorithm", "least_conn"}, {"aimesh.io/model-metrics-port", "9100"}}));
  b = w.build();
  EXPECT_EQ(llama(b).algorithm, Algorithm::kLeastConn);
  EXPECT_EQ(llama(b).modelMetrics->port, 9100);
}

TEST(KubePools, PoolRoutesThatCannotBeAppliedAreReported) {
  auto notes = [](World& w) {
    BuildResult b = w.build();
    EXPECT_TRUE(llama(b).endpoints.empty()) << "the parent keeps its own (no) endpoints";
    EXPECT_TRUE(b.snapshot.routes && b.snapshot.routes->front().state == RouteNote::State::kNotApplied);
    return b.snapshot.routes ? b.snapshot.routes->front().notes : std::vector<std::string>{};
  };
  {
    World w;
    w.service(serviceJson("ml", "llama-v1", "10.96.0.11", 8000));
    json backends = json::array({poolRef("llama-pool"), {{"name", "llama-v1"}, {"port", 8000}}});
    w.route(poolRoute("ml", "mixed", "llama", backends));
    EXPECT_THAT(notes(w), ElementsAre(HasSubstr("spec.rules[0].backendRefs[0]: an InferencePool must be the rule's "
                                                "only backendRef")));
  }
  {
    World w;
    w.route(poolRoute("ml", "missing", "llama", json::array({poolRef("nope")})));
    EXPECT_THAT(notes(w), ElementsAre("spec.rules[0].backendRefs[0]: InferencePool ml/nope does not exist"));
  }
  {
    World w;
    w.pools["serving/shared"] = pool(poolJson("serving", "shared", {8000}));
    w.route(poolRoute("ml", "across", "llama", json::array({poolRef("shared", "serving")})));
    EXPECT_THAT(notes(w), ElementsAre(HasSubstr("InferencePool serving/shared is in another namespace, and no "
                                                "ReferenceGrant there allows it")));
    // A grant for InferencePools there lets it through (one for Services does not).
    auto grant = [&](const std::string& group, const std::string& kind) {
      json g = {{"metadata", {{"name", "g"}, {"namespace", "serving"}}},
                {"spec", {{"from", json::array({{{"group", kGatewayGroup}, {"kind", "HTTPRoute"}, {"namespace", "ml"}}})},
                          {"to", json::array({{{"group", group}, {"kind", kind}}})}}}};
      w.grants["serving/g"] = *decodeReferenceGrant(g);
    };
    grant("", "Service");
    notes(w);
    grant(kInferenceGroup, "InferencePool");
    PodObj o = pod(podJson("serving", "s", "10.0.1.1", true));
    w.pods[o.meta.key()] = o;
    BuildResult b = w.build();
    EXPECT_THAT(llama(b).endpoints, ElementsAre(ep("10.0.1.1", 8000, "s")));
  }
  {
    World w;
    json ref = poolRef("llama-pool");
    ref["weight"] = 0;
    w.route(poolRoute("ml", "zero", "llama", json::array({ref})));
    EXPECT_THAT(notes(w), ElementsAre(HasSubstr("has weight 0")));
  }
}

}  // namespace
}  // namespace aimesh::kube
