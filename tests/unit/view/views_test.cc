// Unit tests of the API's types (view/views.h): the JSON each field list
// produces, that parsing it back gives the same value, that an optional
// member is left out when empty, that a missing key keeps the default (an
// older agent's answer), and that parseView names what is wrong.
#include "view/views.h"

#include <gtest/gtest.h>

namespace aimesh::view {
namespace {

using json = nlohmann::json;

template <class T>
T roundTrip(const T& v) {
  return json::parse(json(v).dump()).get<T>();
}

TEST(ViewsTest, KeysAreTheApisSnakeCaseNames) {
  Endpoint e{.service = "llm", .nameSpace = "ml", .address = "10.0.0.1", .port = 8000, .protocol = "TCP",
             .weight = 2, .state = "active", .backendId = 7, .connections = 3, .datagrams = 0, .inFlight = 1};
  json j = e;
  EXPECT_EQ(j.at("namespace"), "ml");
  EXPECT_EQ(j.at("backend_id"), 7);
  EXPECT_EQ(j.at("in_flight"), 1);
  EXPECT_EQ(j.at("ttft_ewma_ms").dump(), "0.0") << "a double stays a double in JSON";
  EXPECT_FALSE(j.contains("queued_requests")) << "empty optionals are left out";
  EXPECT_EQ(j.at("pod"), "") << "an unknown pod is an empty string";
  EXPECT_EQ(j.size(), 18u);
}

TEST(ViewsTest, EveryViewRoundTrips) {
  Status st{.version = "1.2.3", .pid = 42, .ready = true, .uptimeSeconds = 1.5, .source = "file",
            .programs = {Program{.name = "connect4", .attachTo = "/sys/fs/cgroup/x", .linkId = 3, .progId = 9}},
            .limits = {1, 2, 3}};
  st.connectionLifecycle = LifecycleStatus{.available = true, .passes = 4};
  Status st2 = roundTrip(st);
  EXPECT_EQ(json(st2), json(st));
  EXPECT_TRUE(st2.connectionLifecycle.has_value());
  EXPECT_FALSE(st2.kubernetes.has_value());

  Endpoint e{.service = "llm", .inFlight = -1};
  e.queuedRequests = 5;
  e.kvCacheUsage = 0.25;
  Endpoint e2 = roundTrip(e);
  EXPECT_EQ(e2.queuedRequests, 5u);
  EXPECT_EQ(e2.kvCacheUsage, 0.25);
  EXPECT_FALSE(e2.runningRequests.has_value());
  EXPECT_EQ(e2.inFlight, -1);

  Latency l{.endpoints = {EndpointLatency{.service = "llm", .endpoint = "[fd00::1]:80", .backendId = 2}}};
  l.endpoints[0].metrics["ttft"] = Histogram{.count = 3, .p50 = 0.1, .buckets = {{0.096, 0.112, 3}}};
  json lj = l;
  EXPECT_EQ(lj["endpoints"][0]["metrics"]["ttft"]["buckets"].dump(), "[[0.096,0.112,3]]");
  EXPECT_EQ(json(roundTrip(l)), lj);

  Policy p{.services = {ServicePolicy{.name = "chat", .enforced = true,
                                      .allow = {PolicyAllow{.cgroup = "/a", .resolved = false, .reason = "gone"},
                                                PolicyAllow{.pod = "ml/c", .uid = "u", .resolved = true}},
                                      .allowedCgroupIds = std::vector<uint64_t>{}}}};
  json pj = p;
  EXPECT_EQ(pj["services"][0]["allowed_cgroup_ids"], json::array()) << "an empty list that is set is printed";
  EXPECT_FALSE(pj["services"][0]["allow"][1].contains("reason"));
  EXPECT_EQ(json(roundTrip(p)), pj);

  Connections c{.available = true, .namespacesWalked = 2,
                .endpoints = {EndpointConnections{.endpoint = "10.0.0.1:80", .closed = {{"removed", 1}}, .open = 1,
                                                  .connections = {Connection{.cookie = 9, .state = "idle",
                                                                             .idleSeconds = 0.5}}}}};
  EXPECT_EQ(json(roundTrip(c)), json(c));
  Connections off{.available = false, .reason = "kernel too old"};
  EXPECT_FALSE(json(off).contains("namespaces_walked"));

  Flows f{.next = 5, .dropped = 1, .events = {Flow{.seq = 4, .type = "close", .requests = 2}}};
  EXPECT_EQ(json(roundTrip(f)), json(f));
  Top t{.timeSeconds = 12.5, .endpoints = {TopEndpoint{.endpoint = "a:1", .active = 2, .ttftP99 = 0.3}}};
  EXPECT_EQ(json(roundTrip(t)), json(t));
  ServiceList s{.services = {Service{.name = "llm", .frontends = {"10.96.0.1:80/TCP"}, .activeEndpoints = 1}}};
  EXPECT_EQ(json(roundTrip(s)), json(s));
}

TEST(ViewsTest, MissingKeysKeepTheDefaults) {
  auto e = json{{"service", "llm"}, {"in_flight", nullptr}}.get<Endpoint>();
  EXPECT_EQ(e.service, "llm");
  EXPECT_EQ(e.inFlight, 0);
  EXPECT_EQ(e.state, "");
  EXPECT_FALSE(e.queuedRequests.has_value());
}

TEST(ViewsTest, ParseViewNamesTheAgentsErrorOrTheBadKey) {
  auto err = parseView<Latency>(json{{"error", "unknown service 'x'"}});
  ASSERT_FALSE(err);
  EXPECT_EQ(err.error().message(), "unknown service 'x'");

  auto bad = parseView<ServiceList>(json{{"services", {{{"name", 5}}}}});
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("unexpected response from the agent"), std::string::npos)
      << bad.error().message();

  auto notObject = parseView<Top>(json::array());
  EXPECT_FALSE(notObject);
  auto badBucket = parseView<Histogram>(json{{"buckets", {{1, 2}}}});
  EXPECT_FALSE(badBucket);

  auto ok = parseView<Flows>(json{{"next", 3}, {"events", json::array()}});
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->next, 3u);
}

}  // namespace
}  // namespace aimesh::view
