// e2e: traffic splits (docs/traffic-management.md) with real connections
// through the real agent: a split holds its weights over many connects,
// a weight change under load loses no connect, and a backend service with
// no endpoint is passed over. Clients run in the sandbox cgroup and the
// client namespace. Needs root.
#include <gtest/gtest.h>

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
  void SetUp() override {
    AgentE2e::SetUp();
    if (IsSkipped()) return;
    for (const char* a : {"10.77.0.2", "10.77.0.3", "10.77.0.4"}) serve(a);
  }
  // Rewrites the state file and waits until the agent has applied it.
  static void apply(const std::string& sock, const std::string& file, const std::string& y) {
    auto before = callAgent(sock, {{"method", "status"}}, 2000ms);
    uint64_t n = before ? before->value("reconciles", 0ULL) : 0;
    writeFile(file, y);
    for (int i = 0; i < 200; ++i) {
      auto st = callAgent(sock, {{"method", "status"}}, 2000ms);
      if (st && st->value("reconciles", 0ULL) > n) return;
      std::this_thread::sleep_for(20ms);
    }
    ADD_FAILURE() << "the agent did not apply the new state";
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
  startAgent(splitState(90, 10));
  json r = client([] { return json(askSplit(10000)); });
  auto m = r.get<std::map<std::string, int>>();
  int v1 = m["10.77.0.2"] + m["10.77.0.3"], v2 = m["10.77.0.4"];
  EXPECT_EQ(v1 + v2, 10000) << r.dump();
  EXPECT_NEAR(v2 / 100.0, 10.0, 1.0) << r.dump();
  EXPECT_NEAR(m["10.77.0.2"], m["10.77.0.3"], 400) << r.dump();
}

// Weights change while a client connects without pause: no connect fails,
// and each new weight takes hold.
TEST_F(SplitE2e, WeightChangesUnderLoadLoseNoConnect) {
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

}  // namespace
}  // namespace aimesh::testing
