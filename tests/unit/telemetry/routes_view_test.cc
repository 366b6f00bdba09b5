// buildRoutes(): a split's backend services with their weights, the
// connections the kernel counted, the observed share over the window, and
// the canary guard's view, from hand-made readings.
#include <gtest/gtest.h>

#include "telemetry/views.h"

namespace aimesh {
namespace {

IdIndex splitIndex() {
  IdIndex idx;
  ServiceInfo split;
  split.name = "llama";
  split.nameSpace = "ml";
  split.port = PortSpec{8000, Protocol::kTcp};
  split.split = {SplitTargetInfo{"ml/llama-v1", 8000, 90, 90, 1}, SplitTargetInfo{"ml/llama-v2", 8000, 10, 0, 2},
                 SplitTargetInfo{"ml/llama-v3", 8000, 0, 0, 0}};
  split.canaryGuard = CanaryGuardSpec{};
  idx.services[3] = split;
  ServiceInfo v1;
  v1.name = "llama-v1";
  v1.nameSpace = "ml";
  idx.services[1] = v1;
  return idx;
}

TEST(BuildRoutes, WeightsConnectionsObservedSharesAndGuard) {
  IdIndex idx = splitIndex();
  SplitStats before{{{3, 1}, {800, 0}}, {{3, 2}, {100, 0}}};
  SplitStats now{{{3, 1}, {1100, 0}}, {{3, 2}, {100, 0}}, {{9, 1}, {5, 0}}};
  std::map<std::string, std::map<std::string, GuardStatus>> guard;
  GuardStatus tripped;
  tripped.state = GuardState::kTripped;
  tripped.trips = 1;
  tripped.reason = "slow";
  tripped.weight = 0;
  guard["ml/llama"]["ml/llama-v2"] = tripped;
  view::Routes r = buildRoutes(idx, {}, RouteReadings{&now, &before, 60, &guard});
  ASSERT_EQ(r.routes.size(), 1u) << "the plain service is no route";
  const view::Route& route = r.routes[0];
  EXPECT_EQ(route.source, "state file");
  EXPECT_EQ(route.primary, "ml/llama-v1");
  EXPECT_EQ(route.guardMetric, "ttft_p99");
  ASSERT_EQ(route.backends.size(), 3u);
  const view::RouteBackend &v1 = route.backends[0], &v2 = route.backends[1], &v3 = route.backends[2];
  EXPECT_EQ(v1.connections, 1100u);
  EXPECT_DOUBLE_EQ(v1.configuredShare, 90);
  EXPECT_DOUBLE_EQ(*v1.observedShare, 100) << "300 of the 300 in the window";
  EXPECT_DOUBLE_EQ(*v2.observedShare, 0);
  EXPECT_EQ(v2.effectiveWeight, 0u);
  EXPECT_EQ(v2.guard, "tripped");
  EXPECT_EQ(v2.guardReason, "slow");
  EXPECT_FALSE(v1.guard) << "the primary has no guard state";
  EXPECT_FALSE(v3.resolved);
  EXPECT_FALSE(v3.observedShare);
  // No earlier reading: no observed share; a filter on another name: nothing.
  r = buildRoutes(idx, {}, RouteReadings{&now, nullptr, 0, nullptr});
  EXPECT_FALSE(r.routes[0].backends[0].observedShare);
  EXPECT_TRUE(buildRoutes(idx, ServiceFilter{"other", ""}, RouteReadings{&now}).routes.empty());
  // meshctl services names a split's algorithm "split" (its backend services' own apply).
  view::ServiceList services = buildServices(idx, nullptr);
  ASSERT_EQ(services.services.size(), 2u);
  EXPECT_EQ(services.services[0].algorithm, "random") << services.services[0].name;
  EXPECT_EQ(services.services[1].algorithm, "split") << services.services[1].name;
}

// From Kubernetes: the split's source is the route that made it, and every
// mesh route is listed with its state; a filter keeps the routes of that parent.
TEST(BuildRoutes, TheMeshRoutesAndTheSourceOfEachSplit) {
  IdIndex idx = splitIndex();
  std::vector<RouteNote> notes(2);
  notes[0].route = "HTTPRoute ml/by-header";
  notes[0].parents = {"ml/chat"};
  notes[0].state = RouteNote::State::kNotApplied;
  notes[0].notes = {"spec.rules[0].matches: ..."};
  notes[1].route = "HTTPRoute ml/llama-canary";
  notes[1].parents = {"ml/llama"};
  notes[1].splits = {"ml/llama"};
  RouteReadings in;
  in.routes = &notes;
  view::Routes r = buildRoutes(idx, {}, in);
  ASSERT_EQ(r.routes.size(), 1u);
  EXPECT_EQ(r.routes[0].source, "HTTPRoute ml/llama-canary");
  ASSERT_EQ(r.meshRoutes.size(), 2u);
  EXPECT_EQ(r.meshRoutes[0].state, "not_applied");
  EXPECT_EQ(r.meshRoutes[0].notes, notes[0].notes);
  EXPECT_EQ(r.meshRoutes[1].state, "applied");
  view::Routes chat = buildRoutes(idx, ServiceFilter{"chat", "ml"}, in);
  EXPECT_TRUE(chat.routes.empty());
  ASSERT_EQ(chat.meshRoutes.size(), 1u);
  EXPECT_EQ(chat.meshRoutes[0].route, "HTTPRoute ml/by-header");
  // A bare name, or a port's snapshot name, names the parent too; another namespace does not.
  EXPECT_EQ(buildRoutes(idx, ServiceFilter{"chat", ""}, in).meshRoutes.size(), 1u);
  EXPECT_EQ(buildRoutes(idx, ServiceFilter{"chat:http", ""}, in).meshRoutes.size(), 1u);
  EXPECT_TRUE(buildRoutes(idx, ServiceFilter{"chat", "other"}, in).meshRoutes.empty());
}

}  // namespace
}  // namespace aimesh
