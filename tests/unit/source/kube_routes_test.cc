#include "source/kube_routes.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "model/service_rules.h"
#include "reconcile/split_resolver.h"

namespace aimesh::kube {
namespace {

using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// A ClusterIP Service with TCP ports (name, port); a single port is unnamed.
json serviceJson(const std::string& ns, const std::string& name, const std::string& ip,
                 std::vector<std::pair<std::string, int>> ports, json annotations = json::object()) {
  json p = json::array();
  for (auto& [pn, port] : ports) {
    json item = {{"port", port}, {"protocol", "TCP"}};
    if (!pn.empty()) item["name"] = pn;
    p.push_back(item);
  }
  return {{"metadata", {{"name", name}, {"namespace", ns}, {"annotations", annotations}}},
          {"spec", {{"clusterIP", ip}, {"ports", p}}}};
}

json backendRef(const std::string& name, int port, int weight) {
  return {{"name", name}, {"port", port}, {"weight", weight}};
}

// A GAMMA HTTPRoute: one rule, parent Service `parent`.
json httpRoute(const std::string& ns, const std::string& name, const std::string& parent, json backends,
               json extraRule = json::object(), const std::string& created = "2026-01-01T00:00:00Z") {
  json rule = {{"matches", json::array({{{"path", {{"type", "PathPrefix"}, {"value", "/"}}}}})},
               {"backendRefs", backends}};
  for (auto& [k, v] : extraRule.items()) rule[k] = v;
  return {{"metadata", {{"name", name}, {"namespace", ns}, {"creationTimestamp", created}}},
          {"spec", {{"parentRefs", json::array({{{"group", ""}, {"kind", "Service"}, {"name", parent}}})},
                    {"rules", json::array({rule})}}}};
}

struct World {
  std::map<std::string, ServiceObj> services;
  std::map<std::string, RouteObj> http, grpc, tcp;
  std::map<std::string, ReferenceGrantObj> grants;

  void service(const json& j) {
    auto s = decodeService(j);
    ASSERT_TRUE(s.ok()) << s.error().message();
    services[s->meta.key()] = *s;
  }
  void route(const json& j, RouteKind kind = RouteKind::kHttp) {
    auto r = kind == RouteKind::kHttp ? decodeHttpRoute(j) : kind == RouteKind::kGrpc ? decodeGrpcRoute(j)
                                                                                       : decodeTcpRoute(j);
    ASSERT_TRUE(r.ok()) << r.error().message();
    (kind == RouteKind::kHttp ? http : kind == RouteKind::kGrpc ? grpc : tcp)[r->meta.key()] = *r;
  }
  BuildResult build() {
    BuildResult b = buildSnapshot(services, {});
    applyRoutes(b, services, RouteStores{&http, &grpc, &tcp, &grants});
    return b;
  }
};

// The llama canary setup: parent llama, backends llama-v1 and llama-v2.
World canaryWorld() {
  World w;
  w.service(serviceJson("ml", "llama", "10.96.0.10", {{"", 8000}}));
  w.service(serviceJson("ml", "llama-v1", "10.96.0.11", {{"", 8000}}));
  w.service(serviceJson("ml", "llama-v2", "10.96.0.12", {{"", 8000}}));
  return w;
}

const Service& find(const BuildResult& b, const std::string& ns, const std::string& name) {
  const Service* s = b.snapshot.services.find(ns, name, true);
  EXPECT_NE(s, nullptr) << ns << "/" << name;
  static const Service kNone;
  return s ? *s : kNone;
}

const RouteNote& onlyNote(const BuildResult& b) {
  EXPECT_TRUE(b.snapshot.routes);
  EXPECT_EQ(b.snapshot.routes->size(), 1u);
  return b.snapshot.routes->front();
}

TEST(KubeRoutes, TwoWeightedBackendRefsMakeTheParentASplit) {
  World w = canaryWorld();
  w.route(httpRoute("ml", "llama-canary", "llama", json::array({backendRef("llama-v1", 8000, 90),
                                                                 backendRef("llama-v2", 8000, 10)})));
  BuildResult b = w.build();
  const Service& s = find(b, "ml", "llama");
  ASSERT_EQ(s.split.size(), 2u);
  EXPECT_EQ(s.split[0].service, "llama-v1");
  EXPECT_EQ(s.split[0].weight, 90u);
  EXPECT_EQ(s.split[0].port, 8000);
  EXPECT_EQ(s.split[0].nameSpace, "");
  EXPECT_EQ(s.split[1].service, "llama-v2");
  EXPECT_EQ(s.split[1].weight, 10u);
  EXPECT_TRUE(s.endpoints.empty());
  EXPECT_EQ(s.vips, find(buildSnapshot(w.services, {}), "ml", "llama").vips);
  const RouteNote& n = onlyNote(b);
  EXPECT_EQ(n.route, "HTTPRoute ml/llama-canary");
  EXPECT_EQ(n.state, RouteNote::State::kApplied);
  EXPECT_THAT(n.splits, ElementsAre("ml/llama"));
  EXPECT_THAT(b.warnings, IsEmpty());
  // What the agent does next resolves every backend.
  EXPECT_THAT(resolveSplits(b.snapshot), IsEmpty());
}

TEST(KubeRoutes, TimeoutsAndHostnamesAreAppliedAndReportedAsIgnored) {
  World w = canaryWorld();
  json r = httpRoute("ml", "llama-canary", "llama", json::array({backendRef("llama-v1", 8000, 1)}),
                     {{"timeouts", {{"request", "30s"}}}});
  r["spec"]["hostnames"] = json::array({"llama.ml.svc.cluster.local"});
  w.route(r);
  BuildResult b = w.build();
  EXPECT_EQ(find(b, "ml", "llama").split.size(), 1u);
  const RouteNote& n = onlyNote(b);
  EXPECT_EQ(n.state, RouteNote::State::kPartial);
  EXPECT_THAT(n.notes, ElementsAre(HasSubstr("spec.rules[0].timeouts ignored"), HasSubstr("spec.hostnames ignored")));
  ASSERT_EQ(b.warnings.size(), 2u);
  EXPECT_THAT(b.warnings[0], HasSubstr("HTTPRoute ml/llama-canary: applied in part"));
}

TEST(KubeRoutes, ARouteWithMatchesOrFiltersOrSeveralRulesIsNotAppliedAtAll) {
  World w = canaryWorld();
  json match = httpRoute("ml", "by-header", "llama", json::array({backendRef("llama-v2", 8000, 1)}));
  match["spec"]["rules"][0]["matches"] = json::array({{{"headers", json::array({{{"name", "x-v"}, {"value", "2"}}})}}});
  w.route(match);
  BuildResult b = w.build();
  const BuildResult plain = buildSnapshot(w.services, {});
  EXPECT_EQ(find(b, "ml", "llama"), find(plain, "ml", "llama"));  // untouched: its own endpoints
  const RouteNote& n = onlyNote(b);
  EXPECT_EQ(n.state, RouteNote::State::kNotApplied);
  EXPECT_THAT(n.notes, ElementsAre(HasSubstr("spec.rules[0].matches: only a rule for every request")));
  EXPECT_THAT(n.splits, IsEmpty());
  EXPECT_THAT(b.warnings, ElementsAre(HasSubstr("HTTPRoute ml/by-header: not applied: spec.rules[0].matches")));

  World w2 = canaryWorld();
  json filt = httpRoute("ml", "f", "llama", json::array({backendRef("llama-v2", 8000, 1)}),
                        {{"filters", json::array({{{"type", "RequestHeaderModifier"}}})}});
  json two = httpRoute("ml", "two", "llama", json::array({backendRef("llama-v2", 8000, 1)}));
  two["spec"]["rules"].push_back(two["spec"]["rules"][0]);
  w2.route(filt);
  w2.route(two);
  BuildResult b2 = w2.build();
  ASSERT_TRUE(b2.snapshot.routes);
  ASSERT_EQ(b2.snapshot.routes->size(), 2u);
  EXPECT_THAT((*b2.snapshot.routes)[0].notes, ElementsAre(HasSubstr("spec.rules[0].filters")));
  EXPECT_THAT((*b2.snapshot.routes)[1].notes, ElementsAre(HasSubstr("has 2 rules")));
  EXPECT_TRUE(find(b2, "ml", "llama").split.empty());
}

TEST(KubeRoutes, ABackendInAnotherNamespaceNeedsAReferenceGrantThere) {
  World w = canaryWorld();
  w.service(serviceJson("models", "llama-v3", "10.96.0.20", {{"", 8000}}));
  json ref = backendRef("llama-v3", 8000, 5);
  ref["namespace"] = "models";
  w.route(httpRoute("ml", "r", "llama", json::array({backendRef("llama-v1", 8000, 95), ref})));
  BuildResult b = w.build();
  EXPECT_TRUE(find(b, "ml", "llama").split.empty());
  EXPECT_THAT(onlyNote(b).notes, ElementsAre(HasSubstr("backendRefs[1]: Service models/llama-v3 is in another "
                                                       "namespace, and no ReferenceGrant there allows it")));

  auto g = decodeReferenceGrant(json{
      {"metadata", {{"name", "allow-ml"}, {"namespace", "models"}}},
      {"spec", {{"from", json::array({{{"group", kGatewayGroup}, {"kind", "HTTPRoute"}, {"namespace", "ml"}}})},
                {"to", json::array({{{"group", ""}, {"kind", "Service"}}})}}}});
  ASSERT_TRUE(g.ok()) << g.error().message();
  w.grants[g->meta.key()] = *g;
  b = w.build();
  const Service& s = find(b, "ml", "llama");
  ASSERT_EQ(s.split.size(), 2u);
  EXPECT_EQ(s.split[1].nameSpace, "models");
  EXPECT_EQ(onlyNote(b).state, RouteNote::State::kApplied);
  EXPECT_THAT(resolveSplits(b.snapshot), IsEmpty());
}

TEST(KubeRoutes, TheOlderOfTwoRoutesForOneParentWins) {
  World w = canaryWorld();
  w.route(httpRoute("ml", "b-older", "llama", json::array({backendRef("llama-v1", 8000, 1)}), json::object(),
                    "2025-01-01T00:00:00Z"));
  w.route(httpRoute("ml", "a-newer", "llama", json::array({backendRef("llama-v2", 8000, 1)}), json::object(),
                    "2026-01-01T00:00:00Z"));
  BuildResult b = w.build();
  const Service& s = find(b, "ml", "llama");
  ASSERT_EQ(s.split.size(), 1u);
  EXPECT_EQ(s.split[0].service, "llama-v1");
  ASSERT_EQ(b.snapshot.routes->size(), 2u);
  const RouteNote& loser = (*b.snapshot.routes)[0];  // sorted by route: a-newer first
  EXPECT_EQ(loser.route, "HTTPRoute ml/a-newer");
  EXPECT_EQ(loser.state, RouteNote::State::kNotApplied);
  EXPECT_THAT(loser.notes, ElementsAre(HasSubstr("already split by HTTPRoute ml/b-older")));
}

TEST(KubeRoutes, AMultiPortParentIsSplitOnEachPortOrTheOneNamed) {
  World w;
  w.service(serviceJson("ml", "llama", "10.96.0.10", {{"http", 8000}, {"metrics", 9090}}));
  w.service(serviceJson("ml", "llama-v1", "10.96.0.11", {{"http", 8000}, {"metrics", 9090}}));
  w.service(serviceJson("ml", "llama-v2", "10.96.0.12", {{"http", 8000}, {"metrics", 9090}}));
  json all = httpRoute("ml", "all", "llama",
                       json::array({json{{"name", "llama-v1"}, {"weight", 3}}, json{{"name", "llama-v2"}, {"weight", 1}}}));
  w.route(all);
  BuildResult b = w.build();
  for (const char* port : {"llama:http", "llama:metrics"}) {
    const Service& s = find(b, "ml", port);
    ASSERT_EQ(s.split.size(), 2u) << port;
    EXPECT_EQ(s.split[0].service, std::string("llama-v1") + (port + 5));  // the same port of the backend
    EXPECT_EQ(s.split[0].port, s.ports[0].port);
  }
  EXPECT_THAT(onlyNote(b).splits, ElementsAre("ml/llama:http", "ml/llama:metrics"));
  EXPECT_THAT(resolveSplits(b.snapshot), IsEmpty());

  w.http.clear();
  json one = httpRoute("ml", "one", "llama", json::array({backendRef("llama-v2", 8000, 1)}));
  one["spec"]["parentRefs"][0]["port"] = 8000;
  w.route(one);
  b = w.build();
  EXPECT_EQ(find(b, "ml", "llama:http").split.size(), 1u);
  EXPECT_TRUE(find(b, "ml", "llama:metrics").split.empty());
}

TEST(KubeRoutes, UnresolvableBackendsStopTheRouteUnlessTheirWeightIsZero) {
  World w = canaryWorld();
  w.route(httpRoute("ml", "self", "llama", json::array({backendRef("llama", 8000, 50), backendRef("llama-v2", 8000, 50)})));
  BuildResult b = w.build();
  EXPECT_TRUE(find(b, "ml", "llama").split.empty());
  EXPECT_THAT(onlyNote(b).notes, ElementsAre(HasSubstr("names the parent Service itself")));

  w.http.clear();
  w.route(httpRoute("ml", "gone", "llama", json::array({backendRef("llama-v1", 8000, 100), backendRef("llama-v9", 8000, 0)})));
  b = w.build();
  ASSERT_EQ(find(b, "ml", "llama").split.size(), 1u);
  EXPECT_EQ(onlyNote(b).state, RouteNote::State::kPartial);
  EXPECT_THAT(onlyNote(b).notes, ElementsAre(HasSubstr("backendRefs[1] (weight 0) dropped: Service ml/llama-v9 does not exist")));

  w.http.clear();
  w.route(httpRoute("ml", "port", "llama", json::array({backendRef("llama-v1", 8001, 1)})));
  b = w.build();
  EXPECT_THAT(onlyNote(b).notes, ElementsAre(HasSubstr("Service ml/llama-v1 has no TCP port 8001")));

  w.http.clear();
  json pool = backendRef("llama-pool", 8000, 1);
  pool["group"] = "inference.networking.k8s.io";
  pool["kind"] = "InferencePool";
  w.route(httpRoute("ml", "pool", "llama", json::array({pool})));
  b = w.build();
  EXPECT_THAT(onlyNote(b).notes, ElementsAre(HasSubstr("InferencePool ml/llama-pool does not exist")));

  w.http.clear();
  json import = backendRef("llama-v1", 8000, 1);
  import["group"] = "multicluster.x-k8s.io";
  import["kind"] = "ServiceImport";
  w.route(httpRoute("ml", "import", "llama", json::array({import})));
  b = w.build();
  EXPECT_THAT(onlyNote(b).notes, ElementsAre(HasSubstr("kind multicluster.x-k8s.io/ServiceImport is not supported "
                                                       "(Services, or one InferencePool)")));
}

TEST(KubeRoutes, ConsumerRoutesGatewayParentsAndSplitsOfSplits) {
  World w = canaryWorld();
  w.service(serviceJson("other", "app", "10.96.1.1", {{"", 8000}}));
  json consumer = httpRoute("other", "consumer", "llama", json::array({backendRef("app", 8000, 1)}));
  consumer["spec"]["parentRefs"][0]["namespace"] = "ml";
  w.route(consumer);
  json gw = httpRoute("ml", "gw", "web", json::array({backendRef("llama-v1", 8000, 1)}));
  gw["spec"]["parentRefs"] = json::array({{{"name", "web"}}});  // a Gateway: Gateway API's default kind
  w.route(gw);
  BuildResult b = w.build();
  ASSERT_EQ(b.snapshot.routes->size(), 1u);  // the Gateway route is not the mesh's
  EXPECT_THAT(onlyNote(b).notes, ElementsAre(HasSubstr("is in another namespace (consumer routes")));

  World s = canaryWorld();
  s.route(httpRoute("ml", "a", "llama", json::array({backendRef("llama-v1", 8000, 1)})), RouteKind::kHttp);
  s.route(httpRoute("ml", "b", "llama-v1", json::array({backendRef("llama-v2", 8000, 1)}), json::object(),
                    "2027-01-01T00:00:00Z"));
  b = s.build();
  ASSERT_EQ(b.snapshot.routes->size(), 2u);
  EXPECT_EQ((*b.snapshot.routes)[0].state, RouteNote::State::kApplied);
  EXPECT_THAT((*b.snapshot.routes)[1].notes, ElementsAre(HasSubstr("is a backend of the split HTTPRoute ml/a made")));
  EXPECT_THAT(resolveSplits(b.snapshot), IsEmpty());
}

TEST(KubeRoutes, TheCanaryGuardAnnotationOnTheRouteOrTheParent) {
  World w = canaryWorld();
  json r = httpRoute("ml", "c", "llama", json::array({backendRef("llama-v1", 8000, 90), backendRef("llama-v2", 8000, 10)}));
  r["metadata"]["annotations"] = {{kCanaryGuardAnnotation, "metric=ttft_p50, max_ratio=2, window=30s, primary=llama-v1"}};
  w.route(r);
  BuildResult b = w.build();
  const Service& s = find(b, "ml", "llama");
  ASSERT_TRUE(s.canaryGuard);
  EXPECT_EQ(s.canaryGuard->metric, GuardMetric::kTtftP50);
  EXPECT_EQ(s.canaryGuard->maxRatio, 2);
  EXPECT_EQ(s.canaryGuard->windowMs, 30000u);
  EXPECT_EQ(s.canaryGuard->primary, "llama-v1");
  EXPECT_EQ(checkCanaryGuard(s), std::nullopt);

  World p = canaryWorld();
  p.service(serviceJson("ml", "llama", "10.96.0.10", {{"", 8000}}, {{kCanaryGuardAnnotation, "max_ratio=0.5"}}));
  p.route(httpRoute("ml", "c", "llama", json::array({backendRef("llama-v1", 8000, 90), backendRef("llama-v2", 8000, 10)})));
  b = p.build();
  EXPECT_FALSE(find(b, "ml", "llama").canaryGuard);
  EXPECT_EQ(onlyNote(b).state, RouteNote::State::kPartial);
  EXPECT_THAT(onlyNote(b).notes, ElementsAre(HasSubstr("the parent Service's aimesh.io/canary-guard 'max_ratio=0.5' "
                                                       "ignored: max_ratio: must be 1..100, got 0.5")));
}

TEST(KubeRoutes, GrpcAndTcpRoutes) {
  World w = canaryWorld();
  json g = httpRoute("ml", "g", "llama", json::array({backendRef("llama-v2", 8000, 1)}));
  g["spec"]["rules"][0]["matches"] = json::array({json::object()});
  w.route(g, RouteKind::kGrpc);
  BuildResult b = w.build();
  EXPECT_EQ(onlyNote(b).route, "GRPCRoute ml/g");
  EXPECT_EQ(find(b, "ml", "llama").split.size(), 1u);

  World t = canaryWorld();
  json tcp = httpRoute("ml", "t", "llama", json::array({backendRef("llama-v1", 8000, 1), backendRef("llama-v2", 8000, 3)}));
  tcp["spec"]["rules"][0].erase("matches");
  t.route(tcp, RouteKind::kTcp);
  b = t.build();
  EXPECT_EQ(onlyNote(b).route, "TCPRoute ml/t");
  EXPECT_EQ(find(b, "ml", "llama").split.at(1).weight, 3u);
}

TEST(KubeRoutes, DecodeErrorsNameTheField) {
  json r = httpRoute("ml", "bad", "llama", json::array({backendRef("llama-v1", 8000, 1)}));
  r["spec"]["rules"][0]["backendRefs"][0]["weight"] = 1000001;
  auto d = decodeHttpRoute(r);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.error().message(), "HTTPRoute ml/bad: spec.rules[0].backendRefs[0].weight: must be 0..1000000, got 1000001");
  r["spec"]["parentRefs"][0].erase("name");
  EXPECT_THAT(decodeHttpRoute(r).error().message(), HasSubstr("spec.parentRefs[0].name: required field is missing"));
  EXPECT_THAT(decodeGrpcRoute(json{{"kind", "HTTPRoute"}}).error().message(), HasSubstr("kind: must be GRPCRoute"));
  // Odd types inside a match are not the default match, and nothing throws.
  json odd = httpRoute("ml", "odd", "llama", json::array({backendRef("llama-v1", 8000, 1)}));
  odd["spec"]["rules"][0]["matches"][0]["path"]["type"] = 5;
  auto o = decodeHttpRoute(odd);
  ASSERT_TRUE(o.ok()) << o.error().message();
  EXPECT_THAT(o->rules[0].unsupported, ElementsAre("spec.rules[0].matches"));
}

// The fixtures shaped like the published CRDs decode, and map as the rules say.
TEST(KubeRoutes, FixturesShapedLikeRealObjects) {
  auto load = [](const std::string& name) {
    std::ifstream in(AIMESH_SOURCE_DIR "/tests/fixtures/kube/" + name);
    return json::parse(in, nullptr, false);
  };
  World w = canaryWorld();
  w.service(serviceJson("ml", "llama-chat", "10.96.0.13", {{"", 8000}}));
  w.service(serviceJson("ml", "llama-chat-v2", "10.96.0.14", {{"", 8000}}));
  const json http = load("httproutes.json"), grpc = load("grpcroutes.json"), tcp = load("tcproutes.json"),
             grants = load("referencegrants.json");
  for (const json& item : http["items"]) w.route(item, RouteKind::kHttp);
  for (const json& item : grpc["items"]) w.route(item, RouteKind::kGrpc);
  for (const json& item : tcp["items"]) w.route(item, RouteKind::kTcp);
  for (const json& item : grants["items"]) {
    auto g = decodeReferenceGrant(item);
    ASSERT_TRUE(g.ok()) << g.error().message();
    EXPECT_EQ(g->from.at(0).kind, "HTTPRoute");
  }
  ASSERT_EQ(w.http.size(), 3u);
  const RouteObj& canary = w.http.at("ml/llama-canary");
  EXPECT_FALSE(canary.created.empty());
  ASSERT_EQ(canary.rules.size(), 1u);
  EXPECT_THAT(canary.rules[0].ignored, ElementsAre("spec.rules[0].timeouts"));
  EXPECT_THAT(canary.rules[0].unsupported, IsEmpty());
  EXPECT_THAT(w.http.at("ml/llama-header-route").rules[0].unsupported, ElementsAre("spec.rules[0].matches"));
  EXPECT_FALSE(w.http.at("ml/web-gateway-route").parents.at(0).isService());
  BuildResult b = w.build();
  const Service& llama = find(b, "ml", "llama");
  ASSERT_EQ(llama.split.size(), 2u);
  EXPECT_EQ(llama.split[1].weight, 10u);
  ASSERT_TRUE(llama.canaryGuard);
  EXPECT_EQ(llama.canaryGuard->windowMs, 60000u);
  // llama-canary (partial: its timeout), llama-header-route (not applied), and
  // the GRPC and TCP routes (not applied: their parents are not in this world).
  ASSERT_TRUE(b.snapshot.routes);
  std::map<std::string, RouteNote::State> states;
  for (const RouteNote& n : *b.snapshot.routes) states[n.route] = n.state;
  EXPECT_EQ(states["HTTPRoute ml/llama-canary"], RouteNote::State::kPartial);
  EXPECT_EQ(states["HTTPRoute ml/llama-header-route"], RouteNote::State::kNotApplied);
  EXPECT_EQ(states.count("HTTPRoute ml/web-gateway-route"), 0u);
  EXPECT_EQ(states.size(), 4u);
  EXPECT_TRUE(find(b, "ml", "llama-chat").split.empty());
}

TEST(CanaryGuardText, ReadsTheStateFileKeys) {
  auto g = parseCanaryGuardText("metric=ttft_p99,max_ratio=1.5,min_samples=200,window=60s,cooldown=2m,"
                                "probe_percent=5,max_failure_rate=0.05,primary=llama-v1");
  ASSERT_TRUE(g.ok()) << g.error().message();
  EXPECT_EQ(g->cooldownMs, 120000u);
  EXPECT_EQ(g->probePercent, 5);
  EXPECT_EQ(g->maxFailureRate, 0.05);
  EXPECT_EQ(g->primary, "llama-v1");
  EXPECT_EQ(parseCanaryGuardText("true").value(), CanaryGuardSpec{});
  EXPECT_EQ(parseCanaryGuardText("").value(), CanaryGuardSpec{});
  EXPECT_EQ(parseCanaryGuardText("max_failure_rate=0")->maxFailureRate, 0.0);
  EXPECT_EQ(parseCanaryGuardText("window=100ms").error().message(), "window: must be 1s..1h, got 100ms");
  EXPECT_EQ(parseCanaryGuardText("speed=3").error().message().substr(0, 18), "speed: unknown key");
  EXPECT_EQ(parseCanaryGuardText("max_ratio").error().message(), "'max_ratio': expected key=value, e.g. max_ratio=1.5");
  EXPECT_EQ(parseCanaryGuardText("min_samples=1.5").error().message(), "min_samples: must be an integer 1..1000000, got 1.5");
  EXPECT_EQ(parseCanaryGuardText("metric=p90").error().message(), "metric: must be ttft_p99 or ttft_p50, got 'p90'");
}

}  // namespace
}  // namespace aimesh::kube
