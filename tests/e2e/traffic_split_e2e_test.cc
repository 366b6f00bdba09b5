// e2e: traffic splits (docs/traffic-management.md) with real connections
// through the real agent: a split holds its weights over many connects,
// a weight change under load loses no connect, and a backend service with
// no endpoint is passed over. Clients run in the sandbox cgroup and the
// client namespace. Needs root.
#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "client/api_client.h"
#include "fixtures/agent_e2e.h"
#include "fixtures/net_client.h"
#include "fixtures/sandbox.h"

namespace aimesh::testing {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

constexpr const char* kSplitVip = "10.96.0.70";

// llama-v1 (endpoints .2 and .3), llama-v2 (.4, or none), and the split
// llama at kSplitVip over them with weights w1 and w2.
std::string splitState(int w1, int w2, bool v2Endpoints = true, bool v1Endpoints = true) {
  std::ostringstream y;
  y << "services:\n"
    << "  - name: llama-v1\n    namespace: ml\n    vips: [10.96.0.71]\n    ports: [{port: 8000}]\n"
    << "    endpoints:" << (v1Endpoints ? "\n      - {address: 10.77.0.2}\n      - {address: 10.77.0.3}\n" : " []\n")
    << "  - name: llama-v2\n    namespace: ml\n    vips: [10.96.0.72]\n    ports: [{port: 8000}]\n"
    << "    endpoints:" << (v2Endpoints ? "\n      - {address: 10.77.0.4}\n" : " []\n")
    << "  - name: llama\n    namespace: ml\n    vips: [" << kSplitVip << "]\n    ports: [{port: 8000}]\n"
    << "    split:\n      - {service: llama-v1, weight: " << w1 << "}\n      - {service: llama-v2, weight: " << w2
    << "}\n";
  return y.str();
}

class SplitE2e : public AgentE2e {
 protected:
  // Name servers at the three versions' endpoints.
  void serveVersions() {
    for (const char* a : {"10.77.0.2", "10.77.0.3", "10.77.0.4"}) serve(a);
  }
  static void apply(const std::string& sock, const std::string& file, const std::string& y) {
    applyStateVia(sock, file, y);
  }
  json client(const std::function<json()>& fn) {
    std::string out = runClient([&] { return fn().dump(); });
    return json::parse(out.empty() ? "null" : out);
  }
};

// Answers by name over n connect-ask-close rounds to the split.
std::map<std::string, int> askSplit(int n) {
  std::map<std::string, int> m;
  for (int i = 0; i < n; ++i) {
    Reply r = tcpAsk(kSplitVip, 8000);
    m[r.err ? "error:" + std::to_string(r.err) : r.name]++;
  }
  return m;
}

// 10,000 fresh connections: each backend service's share is its weight's to
// within one percentage point, and inside llama-v1 its endpoints share
// evenly (its own algorithm, random).
TEST_F(SplitE2e, HoldsItsWeightsOverTenThousandConnects) {
  serveVersions();
  startAgent(splitState(90, 10));
  json r = client([] { return json(askSplit(10000)); });
  auto m = r.get<std::map<std::string, int>>();
  int v1 = m["10.77.0.2"] + m["10.77.0.3"], v2 = m["10.77.0.4"];
  EXPECT_EQ(v1 + v2, 10000) << r.dump();
  EXPECT_NEAR(v2 / 100.0, 10.0, 1.0) << r.dump();
  EXPECT_NEAR(m["10.77.0.2"], m["10.77.0.3"], 400) << r.dump();
  // The kernel counted what it sent where; meshctl routes shows it.
  json routes = api("routes");
  ASSERT_EQ(routes["routes"].size(), 1u) << routes.dump();
  json route = routes["routes"][0];
  EXPECT_EQ(route["name"], "llama");
  EXPECT_EQ(route["source"], "state file");
  ASSERT_EQ(route["backends"].size(), 2u);
  EXPECT_EQ(route["backends"][0]["service"], "ml/llama-v1");
  EXPECT_EQ(route["backends"][0]["connections"], v1) << route.dump();
  EXPECT_EQ(route["backends"][1]["connections"], v2) << route.dump();
  EXPECT_DOUBLE_EQ(route["backends"][1]["configured_share"].get<double>(), 10.0);
  auto [rc, out] = capture(std::string(AIMESH_BINARY_DIR) + "/meshctl --socket " + agent_->apiSocket() + " routes llama");
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("ml/llama-v2"), std::string::npos) << out;
}

// Weights change while a client connects without pause: no connect fails,
// and each new weight takes hold.
TEST_F(SplitE2e, WeightChangesUnderLoadLoseNoConnect) {
  serveVersions();
  startAgent(splitState(90, 10));
  const std::string sock = agent_->apiSocket(), file = state_;
  json r = client([&] {
    std::atomic<bool> stop{false};
    std::atomic<int> failed{0}, total{0};
    std::thread load([&] {
      while (!stop.load()) {
        Reply x = tcpAsk(kSplitVip, 8000);
        total++;
        if (x.err || x.name.empty()) failed++;
      }
    });
    json out;
    for (int round = 0; round < 6; ++round) {
      bool toV2 = round % 2 == 0;
      apply(sock, file, splitState(toV2 ? 10 : 90, toV2 ? 90 : 10));
      auto m = askSplit(400);
      out["v2_share"].push_back((m["10.77.0.4"] * 100) / 400);
    }
    stop = true;
    load.join();
    out["failed"] = failed.load();
    out["total"] = total.load();
    return out;
  });
  EXPECT_EQ(r["failed"], 0) << r.dump();
  EXPECT_GT(r["total"].get<int>(), 500) << r.dump();
  for (size_t i = 0; i < r["v2_share"].size(); ++i) {
    int share = r["v2_share"][i];
    if (i % 2 == 0) EXPECT_GE(share, 80) << "round " << i << ": " << r.dump();
    else EXPECT_LE(share, 20) << "round " << i << ": " << r.dump();
  }
}

// A backend service with no endpoint is passed over: every connect goes to
// the other one, none fails; with neither, the connect is refused.
TEST_F(SplitE2e, FailsOverWhenOneSideHasNoEndpoints) {
  serveVersions();
  startAgent(splitState(10, 90, /*v2Endpoints=*/false));
  json r = client([] { return json(askSplit(300)); });
  auto m = r.get<std::map<std::string, int>>();
  EXPECT_EQ(m["10.77.0.2"] + m["10.77.0.3"], 300) << r.dump();
  const std::string sock = agent_->apiSocket(), file = state_;
  json none = client([&] {
    apply(sock, file, splitState(10, 90, false, false));
    return json(askSplit(5));
  });
  EXPECT_EQ(none.value("error:" + std::to_string(ECONNREFUSED), 0), 5) << none.dump();
}

// The canary guard: a canary three times slower in time to first token is
// tripped within its window (its weight on this node drops to 0 while the
// primary keeps serving everything), and once a healthy canary replaces it
// it is probed and gets its weight back.
TEST_F(SplitE2e, GuardTripsASlowCanaryAndGivesItsShareBackWhenHealthy) {
  // Model-server stand-ins: the primary at .2 (20 ms to the first token),
  // the canary at .3 (60 ms).
  startModelServer("10.77.0.2", 20, 1, 1);
  startModelServer("10.77.0.3", 60, 1, 1);
  const std::string state =
      "services:\n"
      "  - {name: llama-v1, namespace: ml, vips: [10.96.0.71], ports: [{port: 8000}], endpoints: [{address: 10.77.0.2}]}\n"
      "  - {name: llama-v2, namespace: ml, vips: [10.96.0.72], ports: [{port: 8000}], endpoints: [{address: 10.77.0.3}]}\n"
      "  - name: llama\n    namespace: ml\n    vips: [10.96.0.70]\n    ports: [{port: 8000}]\n"
      "    split: [{service: llama-v1, weight: 50}, {service: llama-v2, weight: 50}]\n"
      "    canary_guard: {max_ratio: 1.5, min_samples: 30, window: 10s, cooldown: 3s, probe_percent: 20}\n";
  startAgent(state);
  auto canary = [&] {
    json routes = api("routes");
    for (auto& b : routes["routes"][0]["backends"])
      if (b["service"] == "ml/llama-v2") return b;
    return json::object();
  };
  // Requests from four client threads until `done` says stop (at most 60 s);
  // returns who answered, and errors.
  auto load = [&](const std::function<bool()>& done) {
    return client([&] {
      std::atomic<bool> stop{false};
      std::mutex mu;
      std::map<std::string, int> seen;
      std::vector<std::thread> threads;
      for (int t = 0; t < 4; ++t)
        threads.emplace_back([&] {
          while (!stop.load()) {
            httplib::Client c(kSplitVip, 8000);
            c.set_read_timeout(5, 0);
            auto res = c.Post("/v1/completions", R"({"prompt":"hi","max_tokens":1})", "application/json");
            std::lock_guard lk(mu);
            seen[res ? res->get_header_value("X-Aimesh-Backend") : "error"]++;
          }
        });
      auto until = std::chrono::steady_clock::now() + 60s;
      while (!done() && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(200ms);
      stop = true;
      for (auto& t : threads) t.join();
      return json(seen);
    });
  };
  const std::string sock = agent_->apiSocket();
  auto guardIs = [sock](const std::string& state) {
    return [sock, state] {
      auto r = callAgent(sock, {{"method", "routes"}}, 2000ms);
      if (!r) return false;
      for (auto& b : (*r)["routes"][0]["backends"])
        if (b["service"] == "ml/llama-v2") return b.value("guard", "") == state;
      return false;
    };
  };
  // The guard's events in the flow log since the last call (paged with `since`).
  uint64_t since = 0;
  std::vector<std::string> flowTypes, page;
  auto guardFlows = [&]() -> const std::vector<std::string>& {
    page.clear();
    for (int i = 0; i < 100; ++i) {
      json flows = api(json{{"method", "flows"}, {"since", since}});
      if (!flows.contains("events") || flows["events"].empty()) break;
      for (auto& e : flows["events"])
        if (e["type"].get<std::string>().rfind("guard_", 0) == 0) {
          page.push_back(e["type"]);
          EXPECT_EQ(e["service"], "llama") << e.dump();
          EXPECT_EQ(e["endpoint"], "ml/llama-v2") << e.dump();
        }
      since = flows["next"].get<uint64_t>();
    }
    return page;
  };
  json slow = load(guardIs("tripped"));
  flowTypes = guardFlows();
  // meshctl top marks the canary's endpoint with the guard's state; the primary's has none.
  bool canarySeen = false;
  json top;
  for (int i = 0; i < 20 && !(top.contains("endpoints") && top["endpoints"].size() >= 2); ++i) {
    if (i > 0) std::this_thread::sleep_for(100ms);
    auto r = callAgent(sock, {{"method", "top"}}, 2000ms);
    if (r) top = *r;
  }
  for (auto& e : top["endpoints"]) {
    if (e["endpoint"] == "10.77.0.3:8000") {
      canarySeen = true;
      EXPECT_EQ(e.value("guard", ""), "tripped") << e.dump();
    }
    if (e["endpoint"] == "10.77.0.2:8000") {
      EXPECT_FALSE(e.contains("guard") && !e["guard"].is_null()) << e.dump();
    }
  }
  EXPECT_TRUE(canarySeen) << top.dump();
  json c = canary();
  ASSERT_EQ(c.value("guard", ""), "tripped") << c.dump() << " " << slow.dump();
  EXPECT_EQ(c["effective_weight"], 0);
  EXPECT_NE(c["guard_reason"].get<std::string>().find("ttft_p99"), std::string::npos) << c.dump();
  EXPECT_EQ(slow.value("error", 0), 0) << slow.dump();
  // Tripped: everything goes to the primary (until the cooldown's probe).
  json after = client([] {
    std::map<std::string, int> seen;
    for (int i = 0; i < 20; ++i) {
      httplib::Client cl(kSplitVip, 8000);
      cl.set_read_timeout(5, 0);
      auto res = cl.Post("/v1/completions", R"({"prompt":"hi","max_tokens":1})", "application/json");
      seen[res ? res->get_header_value("X-Aimesh-Backend") : "error"]++;
    }
    return json(seen);
  });
  EXPECT_GE(after.value("10.77.0.2", 0), 16) << after.dump();
  EXPECT_EQ(after.value("error", 0), 0) << after.dump();
  // A healthy canary in its place: probed, then given its weight back.
  servers_.back().kill();
  servers_.pop_back();
  startModelServer("10.77.0.3", 20, 1, 1);
  json healthy = load(guardIs("ok"));
  c = canary();
  EXPECT_EQ(c.value("guard", ""), "ok") << c.dump() << " " << healthy.dump();
  EXPECT_EQ(c["effective_weight"], 50) << c.dump();
  EXPECT_EQ(c["guard_trips"], 1) << c.dump();
  json events = api("routes")["guard_events"];
  ASSERT_GE(events.size(), 3u) << events.dump();
  EXPECT_EQ(events[0]["to"], "tripped");
  EXPECT_EQ(events[1]["to"], "probing");
  EXPECT_EQ(events[2]["to"], "ok");
  // The same transitions in the flow log, in order, among the kernel's events
  // (read as it went, before the kernel's events could push them out).
  std::vector<std::string> later = guardFlows();
  flowTypes.insert(flowTypes.end(), later.begin(), later.end());
  ASSERT_GE(flowTypes.size(), 3u);
  EXPECT_EQ(flowTypes[0], "guard_tripped");
  EXPECT_EQ(flowTypes[1], "guard_probing");
  EXPECT_EQ(flowTypes[2], "guard_ok");
  // /metrics has the guard's state and trips.
  httplib::Client m(agent_->metricsUrlPath());
  auto res = m.Get("/metrics");
  ASSERT_TRUE(res && res->status == 200);
  EXPECT_NE(res->body.find("aimesh_split_guard_trips_total{destination_service=\"llama\",destination_namespace=\"ml\",port=\"8000\",protocol="
                      "\"TCP\",backend_service=\"ml/llama-v2\"} 1"),
            std::string::npos);
}

}  // namespace
}  // namespace aimesh::testing
