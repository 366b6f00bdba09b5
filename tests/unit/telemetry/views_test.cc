// Unit tests of the view builders (telemetry/views.h) on a hand-made id
// index and hand-made readings: what each API method answers, with no
// kernel. The e2e golden test (tests/e2e/golden_e2e_test.cc) checks the same
// answers byte for byte on a real data plane.
#include "telemetry/views.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <cstring>

namespace aimesh {
namespace {

IpAddr ip(const char* s) { return *IpAddr::parse(s); }

struct Fixture {
  IdIndex idx;
  Fixture() {
    ServiceInfo llm;
    llm.name = "llm";
    llm.nameSpace = "ml";
    llm.model = "m";
    llm.algorithm = Algorithm::kLeastConn;
    llm.port = PortSpec{8000, Protocol::kTcp};
    llm.frontends = {FrontendKey{ip("10.96.0.40"), 8000, Protocol::kTcp}};
    llm.backendIds = {1, 2};
    idx.services[1] = llm;
    ServiceInfo chat = llm;
    chat.name = "chat";
    chat.nameSpace = "prod";
    chat.backendIds = {3};
    PolicySpec pol;
    pol.allowCgroups = {"/sys/fs/cgroup/a", "/sys/fs/cgroup/b"};
    pol.allowPods = {AllowedPod{"prod/client", "uid-1", "/sys/fs/cgroup/pod"}};
    pol.allowCgroupIds = {11};
    chat.policy = pol;
    idx.services[2] = chat;
    idx.backends[1] = BackendInfo{1, Endpoint{ip("10.77.0.2"), 0, 1, EndpointState::kActive}, 8000};
    idx.backends[2] = BackendInfo{1, Endpoint{ip("fd77::3"), 0, 0, EndpointState::kActive}, 8000};
    idx.backends[3] = BackendInfo{2, Endpoint{ip("10.77.0.4"), 0, 1, EndpointState::kDraining}, 9000};
  }
};

// The join every per-endpoint view and /metrics start from: id order, the
// service and name of each endpoint, and only what was read.
TEST(ViewBuildersTest, EndpointRowsJoinServiceNameAndReadings) {
  Fixture f;
  DatapathStats st;
  st.backends[2] = BackendCounters{7, 0};
  TelemetryById tel;
  tel[3].active = 4;
  auto rows = endpointRows(f.idx, {}, &st, &tel);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].id, 1u);
  EXPECT_EQ(rows[0].service->name, "llm");
  EXPECT_EQ(rows[0].name, "10.77.0.2:8000");
  EXPECT_EQ(rows[0].counters, nullptr);
  EXPECT_EQ(rows[0].telemetry, nullptr);
  EXPECT_EQ(rows[1].name, "[fd77::3]:8000");
  ASSERT_NE(rows[1].counters, nullptr);
  EXPECT_EQ(rows[1].counters->connects, 7u);
  EXPECT_EQ(rows[2].service->name, "chat");
  EXPECT_EQ(rows[2].name, "10.77.0.4:9000");
  ASSERT_NE(rows[2].telemetry, nullptr);
  EXPECT_EQ(rows[2].telemetry->active, 4);
  // A filter keeps its services' endpoints; no readings, no pointers.
  rows = endpointRows(f.idx, ServiceFilter{"chat", ""}, nullptr, nullptr);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].id, 3u);
  EXPECT_EQ(rows[0].counters, nullptr);
  EXPECT_EQ(serviceCounters(nullptr, 1), nullptr);
  st.services[2] = ServiceCounters{1, 2, 3, 4};
  ASSERT_NE(serviceCounters(&st, 2), nullptr);
  EXPECT_EQ(serviceCounters(&st, 2)->denied, 4u);
  EXPECT_EQ(serviceCounters(&st, 1), nullptr);
}

TEST(ViewBuildersTest, ServicesCountActiveEndpointsAndDefaultMissingCountersToZero) {
  Fixture f;
  DatapathStats st;
  st.services[1] = ServiceCounters{5, 1, 2, 0};
  auto v = buildServices(f.idx, &st);
  ASSERT_EQ(v.services.size(), 2u);
  EXPECT_EQ(v.services[0].name, "llm");
  EXPECT_EQ(v.services[0].algorithm, "least_conn");
  EXPECT_EQ(v.services[0].endpoints, 2u);
  EXPECT_EQ(v.services[0].activeEndpoints, 1u) << "weight 0 is not active";
  EXPECT_EQ(v.services[0].connections, 5u);
  EXPECT_EQ(v.services[0].refused, 2u);
  EXPECT_EQ(v.services[0].frontends, std::vector<std::string>{"10.96.0.40:8000/TCP"});
  EXPECT_EQ(v.services[1].activeEndpoints, 0u) << "draining is not active";
  EXPECT_EQ(v.services[1].connections, 0u);
  EXPECT_TRUE(v.services[1].policy);
  EXPECT_EQ(buildServices(f.idx, nullptr).services[0].connections, 0u);
  // A fail-close service says so; the others leave the key out.
  EXPECT_FALSE(v.services[0].failClose);
  f.idx.services.begin()->second.failClose = true;
  auto j = nlohmann::json(buildServices(f.idx, nullptr));
  EXPECT_EQ(j["services"][0]["fail_close"], true);
  EXPECT_FALSE(j["services"][1].contains("fail_close"));
}

TEST(ViewBuildersTest, EndpointsFilterAndCarryTheKernelsLoad) {
  Fixture f;
  TelemetryById tel;
  tel[1].active = 3;
  tel[1].idle = 5;  // more idle than open: clamped
  tel[1].ewmaTtftNs = 2'500'000;
  tel[1].signal = aimesh_be_signal{4, 2, 500, 1};
  tel[2].active = -1;  // a racing decrement: never negative
  auto all = buildEndpoints(f.idx, {}, nullptr, &tel);
  ASSERT_EQ(all.endpoints.size(), 3u);
  const view::Endpoint& a = all.endpoints[0];
  EXPECT_EQ(a.address, "10.77.0.2");
  EXPECT_EQ(a.inFlight, 3);
  EXPECT_EQ(a.idleConnections, 3);
  EXPECT_DOUBLE_EQ(a.ttftEwmaMs, 2.5);
  EXPECT_EQ(a.queuedRequests, 4u);
  EXPECT_DOUBLE_EQ(a.kvCacheUsage.value_or(0), 0.5);
  EXPECT_EQ(all.endpoints[1].inFlight, 0);
  EXPECT_FALSE(all.endpoints[1].queuedRequests.has_value());
  EXPECT_EQ(all.endpoints[2].port, 9000);
  EXPECT_EQ(all.endpoints[2].state, "draining");

  EXPECT_EQ(buildEndpoints(f.idx, {"chat", ""}, nullptr, nullptr).endpoints.size(), 1u);
  EXPECT_EQ(buildEndpoints(f.idx, {"", "ml"}, nullptr, nullptr).endpoints.size(), 2u);
  EXPECT_EQ(buildEndpoints(f.idx, {"chat", "ml"}, nullptr, nullptr).endpoints.size(), 0u);
}

TEST(ViewBuildersTest, PolicySaysWhichAllowedClientsResolved) {
  Fixture f;
  DatapathStats st;
  st.services[2].denied = 7;
  std::vector<UnresolvedCgroup> missing = {{"prod/chat", "/sys/fs/cgroup/b", "no such cgroup"}};
  auto v = buildPolicy(f.idx, &st, missing);
  ASSERT_EQ(v.services.size(), 2u);
  EXPECT_FALSE(v.services[0].enforced);
  EXPECT_FALSE(v.services[0].allowedCgroupIds.has_value());
  const view::ServicePolicy& chat = v.services[1];
  EXPECT_TRUE(chat.enforced);
  EXPECT_EQ(chat.denied, 7u);
  ASSERT_EQ(chat.allow.size(), 3u);
  EXPECT_TRUE(chat.allow[0].resolved);
  EXPECT_FALSE(chat.allow[1].resolved);
  EXPECT_EQ(chat.allow[1].reason, "no such cgroup");
  EXPECT_EQ(chat.allow[2].pod, "prod/client");
  EXPECT_EQ(chat.allow[2].cgroup, "/sys/fs/cgroup/pod");
  EXPECT_EQ(chat.allowedCgroupIds, std::vector<uint64_t>{11});
}

TEST(ViewBuildersTest, LatencyNeedsAKnownServiceAndListsItsEndpoints) {
  Fixture f;
  auto unknown = latencyBackends(f.idx, {"nope", ""});
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().message(), "unknown service 'nope'");
  EXPECT_FALSE(latencyBackends(f.idx, {"llm", "prod"}));
  auto ids = latencyBackends(f.idx, {"llm", ""});
  ASSERT_TRUE(ids);
  EXPECT_EQ(*ids, (std::vector<uint32_t>{1, 2}));

  TelemetryById tel;
  tel[1].hist[AIMESH_M_TTFT].record(100'000'000);
  tel[2] = BackendTelemetry{};  // no sample yet
  auto v = buildLatency(f.idx, *ids, tel);
  ASSERT_EQ(v.endpoints.size(), 2u);
  EXPECT_EQ(v.endpoints[1].endpoint, "[fd77::3]:8000");
  EXPECT_EQ(v.endpoints[1].metrics.at("ttft").count, 0u);
  const view::Histogram& ttft = v.endpoints[0].metrics.at("ttft");
  EXPECT_EQ(ttft.count, 1u);
  ASSERT_EQ(ttft.buckets.size(), 1u);
  EXPECT_LE(ttft.buckets[0].lower, 0.1);
  EXPECT_GT(ttft.buckets[0].upper, 0.1);
  EXPECT_NEAR(ttft.p50, 0.1, 0.1 * 0.15);
}

TEST(ViewBuildersTest, TopAndFlowsNameTheirEndpoints) {
  Fixture f;
  TelemetryById tel;
  tel[3].counters.failed_refused = 1;
  tel[3].counters.reset = 2;
  auto top = buildTop(f.idx, tel, 42.5);
  EXPECT_EQ(top.timeSeconds, 42.5);
  ASSERT_EQ(top.endpoints.size(), 3u);
  EXPECT_EQ(top.endpoints[2].errors, 3u);
  EXPECT_EQ(top.endpoints[2].endpoint, "10.77.0.4:9000");

  FlowEvent known{.seq = 1}, gone{.seq = 2};
  known.ev.service_id = 2;
  known.ev.backend_id = 3;
  gone.ev.service_id = 99;
  gone.ev.backend_id = 77;
  auto flows = buildFlows(f.idx, {known, gone}, 3, 1);
  EXPECT_EQ(flows.next, 3u);
  EXPECT_EQ(flows.dropped, 1u);
  EXPECT_EQ(flows.events[0].service, "chat");
  EXPECT_EQ(flows.events[0].endpoint, "10.77.0.4:9000");
  EXPECT_EQ(flows.events[1].service, "");
  EXPECT_EQ(flows.events[1].endpoint, "backend#77");
  EXPECT_FALSE(flows.events[0].reason);

  // The agent's own event (a canary guard's transition) is shown as it was logged.
  FlowEvent guard{.seq = 3};
  guard.ev.ts_ns = 5'000'000'000;
  guard.agent = std::make_shared<const AgentEvent>(AgentEvent{"guard_tripped", "llama", "ml", "ml/llama-v2", "slow"});
  auto withGuard = buildFlows(f.idx, {guard}, 4, 0);
  ASSERT_EQ(withGuard.events.size(), 1u);
  const view::Flow& g = withGuard.events[0];
  EXPECT_EQ(g.type, "guard_tripped");
  EXPECT_EQ(g.service, "llama");
  EXPECT_EQ(g.nameSpace, "ml");
  EXPECT_EQ(g.endpoint, "ml/llama-v2");
  EXPECT_EQ(g.reason, "slow");
  EXPECT_DOUBLE_EQ(g.timeSeconds, 5.0);
}

ConnectionSeen conn(uint32_t service, uint32_t backend, const char* daddr, uint8_t state, bool gone) {
  ConnectionSeen c;
  c.rec.service_id = service;
  c.rec.backend_id = backend;
  c.rec.state = state;
  c.rec.gone = gone;
  c.rec.requests = 2;
  c.rec.age_ns = 3'000'000'000;
  c.rec.idle_ns = 500'000'000;
  c.rec.dport = htons(8000);
  in_addr a{};
  inet_pton(AF_INET, daddr, &a);
  c.rec.daddr[10] = c.rec.daddr[11] = 0xff;  // IPv4-mapped
  std::memcpy(c.rec.daddr + 12, &a, 4);
  c.netns = 4026531840;
  return c;
}

TEST(ViewBuildersTest, ConnectionsPerEndpointWithRemovedOnesLast) {
  Fixture f;
  std::vector<ConnectionSeen> seen = {conn(1, 1, "10.77.0.2", AIMESH_CS_IDLE, false),
                                      conn(1, 1, "10.77.0.2", AIMESH_CS_BUSY, false),
                                      conn(1, 9, "10.77.0.9", AIMESH_CS_BUSY, true),
                                      conn(55, 8, "10.77.0.8", AIMESH_CS_IDLE, true)};
  ClosedSeries cs{.service = "llm", .nameSpace = "ml", .port = PortSpec{8000, Protocol::kTcp},
                  .endpoint = "10.77.0.2:8000"};
  cs.byReason[AIMESH_CLOSE_REBALANCED] = 4;
  auto v = buildConnections(f.idx, {}, seen, {cs}, nullptr, 2);
  EXPECT_TRUE(v.available);
  EXPECT_EQ(v.namespacesWalked, 2u);
  ASSERT_EQ(v.endpoints.size(), 5u) << "three in the state, then two removed";
  const view::EndpointConnections& a = v.endpoints[0];
  EXPECT_EQ(a.open, 2);
  EXPECT_EQ(a.idle, 1);
  EXPECT_EQ(a.busy, 1);
  EXPECT_EQ(a.requests, 4);
  EXPECT_DOUBLE_EQ(a.oldestSeconds, 3.0);
  EXPECT_EQ(a.closed.at("rebalanced"), 4u);
  EXPECT_EQ(a.closed.at("removed"), 0u);
  ASSERT_EQ(a.connections.size(), 2u);
  EXPECT_EQ(a.connections[0].idleSeconds, 0.5);
  EXPECT_FALSE(a.connections[1].idleSeconds.has_value());
  EXPECT_EQ(v.endpoints[1].open, 0) << "endpoints without connections are listed";
  EXPECT_EQ(v.endpoints[3].state, "removed");
  EXPECT_EQ(v.endpoints[3].service, "llm");
  EXPECT_EQ(v.endpoints[3].endpoint, "10.77.0.9:8000");
  EXPECT_EQ(v.endpoints[4].service, "service#55");
  EXPECT_TRUE(v.endpoints[4].closed.empty());

  auto chatOnly = buildConnections(f.idx, {"chat", ""}, seen, {}, nullptr, 1);
  ASSERT_EQ(chatOnly.endpoints.size(), 1u) << "a removed endpoint of an unknown service is not chat's";
  EXPECT_EQ(chatOnly.endpoints[0].endpoint, "10.77.0.4:9000");
}

}  // namespace
}  // namespace aimesh
