// e2e, faults under load (issue 7): the agent killed with SIGKILL and
// restarted every two seconds, and endpoints added, drained and removed every
// 100 ms, while clients connect through the service as fast as they can. No
// connection may fail and counters must keep counting. Bounded in time; the
// sandbox (cgroup, namespaces) is removed pass or fail. Needs root.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "fixtures/agent_e2e.h"
#include "fixtures/rate_client.h"
#include "fixtures/sandbox.h"

namespace aimesh::testing {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

struct Endpoint {
  std::string addr;
  uint16_t port;
};

// Eight endpoints: four backend addresses, two ports each.
std::vector<Endpoint> pool() {
  std::vector<Endpoint> p;
  for (uint16_t port : {8000, 8001})
    for (int i = 2; i <= 5; ++i) p.push_back(Endpoint{"10.77.0." + std::to_string(i), port});
  return p;
}

std::string yaml(const std::vector<std::pair<Endpoint, std::string>>& eps) {
  std::ostringstream y;
  y << "services:\n  - name: chat\n    namespace: ml\n    vips: [\"10.96.0.50\"]\n"
       "    ports: [{port: 9000, protocol: TCP}]\n    endpoints:";
  if (eps.empty()) y << " []";
  y << "\n";
  for (auto& [e, st] : eps)
    y << "      - {address: \"" << e.addr << "\", port: " << e.port << ", state: " << st << "}\n";
  return y.str();
}

class FaultsE2e : public AgentE2e {
 protected:
  void SetUp() override {
    AgentE2e::SetUp();
    if (IsSkipped()) return;
    for (auto& e : pool()) serve(e.addr, e.addr, e.port);
  }
  // A rate client in the test cgroup and client namespace, run in a thread.
  std::thread client(RateWorkload w, double seconds, RateSample& out) {
    return std::thread([this, w, seconds, &out] {
      std::string s = runClient([&] {
        RateSample r = runRateClient(w, "10.96.0.50", 9000, 0.2, seconds, nullptr, 1000000);
        return json{{"ops", r.ops}, {"warmup", r.warmupOps}, {"errors", r.errors}, {"errno", r.firstErrno}}.dump();
      });
      json j = json::parse(s.empty() ? "{}" : s);
      out.ops = j.value("ops", 0L);
      out.warmupOps = j.value("warmup", 0L);
      out.errors = j.value("errors", -1L);
      out.firstErrno = j.value("errno", 0);
    });
  }
};

TEST_F(FaultsE2e, KillNineAndRestartEveryTwoSecondsUnderLoadFailsNoConnection) {
  auto p = pool();
  startAgent(yaml({{p[0], "active"}, {p[1], "active"}}));

  RateSample cc, ka;
  // Each cycle is 2 s plus the agent's start, which a loaded machine makes
  // slower than a second: 20 s of load leaves room for the 4 restarts below
  // (the loop stops after them; the clients go on against the last agent).
  const double seconds = 20;
  std::thread t1 = client(RateWorkload::kConnectClose, seconds, cc);
  std::thread t2 = client(RateWorkload::kKeepAlive, seconds, ka);
  int restarts = 0;
  auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (restarts < 4 && std::chrono::steady_clock::now() + 2s < end) {
    std::this_thread::sleep_for(1s);
    agent_->kill9();
    std::this_thread::sleep_for(1s);  // a second with no agent at all
    agent_->start();
    ++restarts;
  }
  t1.join();
  t2.join();
  std::cerr << "restarts " << restarts << ", connect+close ops " << cc.ops << ", keep-alive ops " << ka.ops << "\n";
  EXPECT_GE(restarts, 4);
  EXPECT_EQ(cc.errors, 0) << "first errno " << cc.firstErrno;
  EXPECT_EQ(ka.errors, 0) << "first errno " << ka.firstErrno;
  EXPECT_GT(cc.ops, 1000);
  EXPECT_GT(ka.ops, 1000);
  // Counters live in pinned maps: every connection made through the dying
  // and restarting agents is counted, none twice, none lost. (The keep-alive
  // client connected once.)
  json svcs = api("services")["services"];
  ASSERT_EQ(svcs.size(), 1u);
  EXPECT_EQ(svcs[0]["connections"].get<long>(), cc.ops + cc.warmupOps + 1);
}

TEST_F(FaultsE2e, EndpointChurnEvery100msUnderLoadFailsNoConnectionAndDrainedOnesFinish) {
  auto p = pool();
  // Step k: endpoints k, k+1, k+2 (mod 8) active, k-1 draining, the rest
  // removed. Every endpoint is added, serves, drains and goes, again and again.
  auto step = [&](int k) {
    std::vector<std::pair<Endpoint, std::string>> eps;
    for (int i = 0; i < 3; ++i) eps.push_back({p[(k + i) % 8], "active"});
    eps.push_back({p[(k + 7) % 8], "draining"});
    return yaml(eps);
  };
  startAgent(step(0));
  long reconcilesBefore = api("status").value("reconciles", 0L);

  const double seconds = 30;
  RateSample cc, ka1, ka2;
  std::thread t1 = client(RateWorkload::kConnectClose, seconds, cc);
  // Long-lived connections: each lands on some endpoint, which is drained
  // and removed within a second; they must go on working to the end.
  std::thread t2 = client(RateWorkload::kKeepAlive, seconds, ka1);
  std::thread t3 = client(RateWorkload::kKeepAlive, seconds, ka2);
  // On a fixed 100 ms schedule (a late write does not push the next ones).
  auto start = std::chrono::steady_clock::now();
  auto end = start + std::chrono::duration<double>(seconds);
  int k = 0;
  while (std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_until(start + (k + 1) * 100ms);
    writeFile(state_, step(++k));
  }
  t1.join();
  t2.join();
  t3.join();
  long reconciles = api("status").value("reconciles", 0L) - reconcilesBefore;
  std::cerr << "state changes " << k << ", reconciles " << reconciles << ", connect+close ops " << cc.ops
            << ", keep-alive ops " << ka1.ops << " + " << ka2.ops << "\n";
  EXPECT_GE(k, 250);
  EXPECT_GE(reconciles, 100) << "the agent did not follow the churn";
  EXPECT_EQ(cc.errors, 0) << "first errno " << cc.firstErrno;
  EXPECT_EQ(ka1.errors, 0) << "first errno " << ka1.firstErrno;
  EXPECT_EQ(ka2.errors, 0) << "first errno " << ka2.firstErrno;
  EXPECT_GT(cc.ops, 1000);
  EXPECT_GT(ka1.ops, 1000);
  EXPECT_GT(ka2.ops, 1000);
  json st = api("status");
  EXPECT_EQ(st.value("reconcile_errors", -1), 0) << st.dump();
}

}  // namespace
}  // namespace aimesh::testing
