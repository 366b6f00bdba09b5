// e2e: each load-balancing algorithm and the endpoint-health rules, checked
// with real connections through the real agent (docs/load-balancing.md).
// Clients run in the sandbox cgroup (or child cgroups of it, which inherit
// its programs) and the client namespace. Needs root.
#include <gtest/gtest.h>
#include <httplib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "client/api_client.h"
#include "fixtures/net_client.h"
#include "fixtures/agent_e2e.h"
#include "fixtures/sandbox.h"

namespace aimesh::testing {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

struct Ep {
  std::string addr;
  std::string state = "active";
  int weight = 1;
};

std::string yaml(const std::string& algorithm, const std::vector<Ep>& eps, const std::string& extra = "") {
  std::ostringstream y;
  y << "services:\n  - name: llm\n    namespace: ml\n    vips: [10.96.0.60]\n    ports: [{port: 8000}]\n"
    << "    algorithm: " << algorithm << "\n"
    << extra << "    endpoints:\n";
  for (auto& e : eps)
    y << "      - {address: " << e.addr << ", port: 8000, weight: " << e.weight << ", state: " << e.state << "}\n";
  return y.str();
}

// Child cgroups client0..client(n-1) of the sandbox cgroup (they inherit
// the agent's programs), removed when this goes out of scope.
struct ChildCgroups {
  std::vector<std::unique_ptr<ChildCgroup>> cgs;
  std::vector<std::string> paths;
  ChildCgroups(const std::string& parent, int n) {
    for (int i = 0; i < n; ++i) {
      cgs.push_back(std::make_unique<ChildCgroup>(parent + "/client" + std::to_string(i)));
      paths.push_back(cgs.back()->path());
    }
  }
};

class LbE2e : public AgentE2e {
 protected:
  // Rewrites the state file and waits until the agent has applied it.
  void applyState(const std::string& y) { applyStateFrom(agent_->apiSocket(), state_, y); }
  static void applyStateFrom(const std::string& sock, const std::string& file, const std::string& y) {
    applyStateVia(sock, file, y);
  }
  // Runs fn in `cgroup` and the client namespace; returns what it returned.
  json client(const std::string& cgroup, const std::function<json()>& fn) {
    std::string out = runClient([&] { return fn().dump(); }, cgroup);
    return json::parse(out.empty() ? "null" : out);
  }
  json client(const std::function<json()>& fn) { return client(sandbox_->cgroup().path(), fn); }
  json endpoint(const std::string& addr) {
    json all = api({{"method", "endpoints"}});
    for (auto& e : all["endpoints"])
      if (e["address"] == addr) return e;
    return json{};
  }

};

// Counts answers by name over n sequential connect-ask-close rounds.
std::map<std::string, int> askMany(int n) {
  std::map<std::string, int> m;
  for (int i = 0; i < n; ++i) {
    Reply r = tcpAsk("10.96.0.60", 8000);
    m[r.err ? "error:" + std::to_string(r.err) : r.name]++;
  }
  return m;
}

TEST_F(LbE2e, LeastConnAvoidsTheBackendHoldingTheMostConnections) {
  serve("10.77.0.2");
  serve("10.77.0.3");
  // .3 draining at first, so the held connections all land on .2.
  startAgent(yaml("least_conn", {{"10.77.0.2"}, {"10.77.0.3", "draining"}}));
  const std::string sock = agent_->apiSocket(), file = state_;
  const std::string both = yaml("least_conn", {{"10.77.0.2"}, {"10.77.0.3"}});
  json r = client([&] {
    std::vector<std::unique_ptr<TcpConn>> held;
    for (int i = 0; i < 6; ++i) held.push_back(std::make_unique<TcpConn>("10.96.0.60", 8000));
    json out;
    for (auto& c : held) out["held"].push_back(c->ask());
    applyStateFrom(sock, file, both);
    out["spread"] = askMany(40);
    int alive = 0;
    for (auto& c : held) alive += c->ask() == "10.77.0.2";
    out["held_alive"] = alive;
    return out;
  });
  for (auto& h : r["held"]) EXPECT_EQ(h, "10.77.0.2");
  EXPECT_EQ(r["held_alive"], 6) << "open connections to a backend must be untouched";
  auto spread = r["spread"].get<std::map<std::string, int>>();
  // Random would send half; two choices send to .2 only when both draws are
  // .2 (a few percent).
  EXPECT_GE(spread["10.77.0.3"], 36) << r.dump();
  EXPECT_EQ(spread.count("error:111"), 0u) << r.dump();
}

TEST_F(LbE2e, LatencyAvoidsABackendMadeSlower) {
  startModelServer("10.77.0.2", 2, 1, 1);
  startModelServer("10.77.0.3", 150, 1, 1);
  startAgent(yaml("latency", {{"10.77.0.2"}, {"10.77.0.3"}}));
  json r = client([&] {
    std::map<std::string, int> seen;
    for (int i = 0; i < 40; ++i) {
      httplib::Client c("10.96.0.60", 8000);
      c.set_read_timeout(5, 0);
      auto res = c.Post("/v1/completions", R"({"prompt":"hi","max_tokens":1})", "application/json");
      std::string who = res ? res->get_header_value("X-Aimesh-Backend") : "error";
      seen[i < 10 ? "warmup:" + who : who]++;
    }
    return json(seen);
  });
  auto seen = r.get<std::map<std::string, int>>();
  // After the warm-up both have a peak-EWMA; the slow one is 75x costlier.
  EXPECT_GE(seen["10.77.0.2"], 27) << r.dump();
  EXPECT_EQ(seen.count("error"), 0u) << r.dump();
  json fast = endpoint("10.77.0.2"), slow = endpoint("10.77.0.3");
  EXPECT_GT(slow["ttft_ewma_ms"].get<double>(), 100.0) << slow.dump();
  EXPECT_LT(fast["ttft_ewma_ms"].get<double>(), 50.0) << fast.dump();
}

// A server that accepts and never sends a token within the client's patience
// yields no TTFT sample; the time the abandoned request waited is fed in at
// close instead, so latency learns to avoid it.
TEST_F(LbE2e, LatencyLearnsFromRequestsAbandonedBeforeTheFirstToken) {
  startModelServer("10.77.0.2", 2, 1, 1);
  startModelServer("10.77.0.3", 1200, 1, 1);
  startAgent(yaml("latency", {{"10.77.0.2"}, {"10.77.0.3"}}));
  auto ask = [](int n, int timeoutMs) {
    std::map<std::string, int> seen;
    for (int i = 0; i < n; ++i) {
      httplib::Client c("10.96.0.60", 8000);
      c.set_read_timeout(0, timeoutMs * 1000);
      bool first = false;
      std::string who = "abandoned";
      httplib::Request req;
      req.method = "POST";
      req.path = "/v1/completions";
      req.headers = {{"Content-Type", "application/json"}};
      req.body = R"({"prompt":"hi","stream":true,"max_tokens":1})";
      req.response_handler = [&](const httplib::Response& r) {
        who = r.get_header_value("X-Aimesh-Backend");
        return true;
      };
      req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return first = true; };
      auto res = c.send(req);
      seen[res && first ? who : who + " (abandoned)"]++;
    }
    return seen;
  };
  // Warm-up: both get requests; the ones on .3 are given up after 200 ms.
  json warm = client([&] { return json(ask(8, 200)); });
  ASSERT_GT(warm.value("10.77.0.3 (abandoned)", 0), 0) << warm.dump();
  // The stalled server finishes its 1.2 s, writes to the closed socket, and
  // the client's socket closes: that is when the wait is sampled.
  json slow;
  for (int i = 0; i < 100; ++i) {
    slow = endpoint("10.77.0.3");
    if (slow["ttft_ewma_ms"].get<double>() >= 150) break;
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_GE(slow["ttft_ewma_ms"].get<double>(), 150.0) << slow.dump();
  json after = client([&] { return json(ask(20, 2000)); });
  EXPECT_GE(after.value("10.77.0.2", 0), 19) << after.dump();
}

TEST_F(LbE2e, MaglevKeepsEachClientCgroupOnOneBackendAndMovesFewWhenOneLeaves) {
  const std::vector<std::string> addrs = {"10.77.0.2", "10.77.0.3", "10.77.0.4", "10.77.0.5"};
  for (auto& a : addrs) serve(a);
  startAgent(yaml("maglev", {{addrs[0]}, {addrs[1]}, {addrs[2]}, {addrs[3]}}, "    hash_table_size: 65521\n"));
  ChildCgroups cgs(sandbox_->cgroup().path(), 12);
  auto where = [&] {
    std::vector<std::string> out;
    for (auto& cg : cgs.paths) {
      json m = client(cg, [] { return json(askMany(5)); });
      auto counts = m.get<std::map<std::string, int>>();
      EXPECT_EQ(counts.size(), 1u) << "one client cgroup, one backend: " << m.dump();
      out.push_back(counts.empty() ? "" : counts.begin()->first);
    }
    return out;
  };
  std::vector<std::string> before = where();
  std::set<std::string> used(before.begin(), before.end());
  EXPECT_GE(used.size(), 2u) << "12 clients should spread over several backends";

  // The backend with the most clients leaves.
  std::map<std::string, int> per;
  for (auto& b : before) per[b]++;
  std::string gone = std::max_element(per.begin(), per.end(), [](auto& a, auto& b) { return a.second < b.second; })->first;
  std::vector<Ep> rest;
  for (auto& a : addrs)
    if (a != gone) rest.push_back({a});
  applyState(yaml("maglev", rest, "    hash_table_size: 65521\n"));
  std::vector<std::string> after = where();
  int movedOthers = 0;
  for (size_t i = 0; i < before.size(); ++i) {
    EXPECT_NE(after[i], gone);
    if (before[i] != gone && after[i] != before[i]) ++movedOthers;
  }
  // Only the leaving backend's clients must move (Maglev moves ~1% more).
  EXPECT_LE(movedOthers, 1) << "clients of staying backends that moved";
}

TEST_F(LbE2e, BoundedHashSpillsPastAnOverloadedBackendWhereMaglevDoesNot) {
  serve("10.77.0.2");
  serve("10.77.0.3");
  auto holdEight = [&] {
    return client([] {
      std::vector<std::unique_ptr<TcpConn>> held;
      std::map<std::string, int> m;
      for (int i = 0; i < 8; ++i) {
        held.push_back(std::make_unique<TcpConn>("10.96.0.60", 8000));
        m[held.back()->ask()]++;
      }
      return json(m);
    }).get<std::map<std::string, int>>();
  };
  startAgent(yaml("maglev", {{"10.77.0.2"}, {"10.77.0.3"}}));
  auto maglev = holdEight();
  EXPECT_EQ(maglev.size(), 1u) << "one client, one hash: maglev sends all 8 to one backend";

  applyState(yaml("bounded_hash", {{"10.77.0.2"}, {"10.77.0.3"}}, "    hash_balance_factor: 1.25\n"));
  auto bounded = holdEight();
  // Bound: ceil(1.25 x (open + 1) / 2); with 8 open the hashed one holds <= 5.
  ASSERT_EQ(bounded.size(), 2u);
  for (auto& [name, n] : bounded) {
    EXPECT_LE(n, 5) << name;
    EXPECT_GE(n, 3) << name;
  }
}

TEST_F(LbE2e, RefusingBackendIsPenalizedThenSkippedForABackOffThenTriedAgain) {
  serve("10.77.0.2");  // nothing listens on .3: connects there are refused (RST)
  startAgent(yaml("random", {{"10.77.0.2"}, {"10.77.0.3"}}),
             {"--eject-after", "3", "--eject-base-seconds", "1.5", "--eject-max-seconds", "10"});
  json r = client([] { return json(askMany(40)); });
  auto m = r.get<std::map<std::string, int>>();
  // Three refusals start the back-off; then every connect goes to .2.
  EXPECT_EQ(m["error:111"], 3) << r.dump();
  EXPECT_EQ(m["10.77.0.2"], 37) << r.dump();
  json bad = endpoint("10.77.0.3");
  EXPECT_EQ(bad["ejected"], true) << bad.dump();
  EXPECT_EQ(bad["consecutive_failures"], 3);
  EXPECT_GT(bad["failure_penalty"].get<double>(), 0.0);

  // After the back-off it is tried again; one more refusal re-ejects it at once.
  std::this_thread::sleep_for(1600ms);
  EXPECT_EQ(endpoint("10.77.0.3")["ejected"], false);
  r = client([] { return json(askMany(40)); });
  m = r.get<std::map<std::string, int>>();
  EXPECT_EQ(m["error:111"], 1) << r.dump();
  bad = endpoint("10.77.0.3");
  EXPECT_EQ(bad["ejected"], true);
  EXPECT_GT(bad["ejected_for_seconds"].get<double>(), 1.6) << "the second back-off is twice the first";

  std::string metrics = httplib::Client(agent_->metricsUrlPath()).Get("/metrics")->body;
  EXPECT_NE(metrics.find("aimesh_endpoint_ejections_total{destination_service=\"llm\",destination_namespace=\"ml\""), std::string::npos);
  EXPECT_NE(metrics.find("aimesh_datapath_reasons_total{reason=\"ejected_skipped\"}"), std::string::npos);
}

TEST_F(LbE2e, EveryBackendEjectedFailsOpenInsteadOfRefusingEverything) {
  // Nothing listens anywhere: after the back-offs the data plane still picks
  // a backend (so the caller sees the backend's own refusal, not ours).
  startAgent(yaml("least_conn", {{"10.77.0.2"}, {"10.77.0.3"}}),
             {"--eject-after", "1", "--eject-base-seconds", "30"});
  json r = client([] { return json(askMany(10)); });
  auto m = r.get<std::map<std::string, int>>();
  EXPECT_EQ(m["error:111"], 10) << r.dump();
  json st = api({{"method", "status"}});
  std::string metrics = httplib::Client(agent_->metricsUrlPath()).Get("/metrics")->body;
  EXPECT_NE(metrics.find("aimesh_datapath_reasons_total{reason=\"ejected_fallback\"}"), std::string::npos);
  EXPECT_EQ(metrics.find("aimesh_datapath_reasons_total{reason=\"ejected_fallback\"} 0\n"), std::string::npos)
      << "fallback picks must be counted";
}

TEST_F(LbE2e, DrainingKeepsOpenConnectionsAndShowsTheirCountUntilZero) {
  serve("10.77.0.2");
  serve("10.77.0.3");
  startAgent(yaml("random", {{"10.77.0.2"}, {"10.77.0.3", "draining"}}));
  // Open two connections to .3 while it is active, then drain it.
  applyState(yaml("random", {{"10.77.0.3"}, {"10.77.0.2", "draining"}}));
  const std::string sock = agent_->apiSocket(), file = state_;
  const std::string drained = yaml("random", {{"10.77.0.2"}, {"10.77.0.3", "draining"}});
  json r = client([&] {
    TcpConn a("10.96.0.60", 8000), b("10.96.0.60", 8000);
    json out;
    out["first"] = {a.ask(), b.ask()};
    applyStateFrom(sock, file, drained);
    auto ep = callAgent(sock, {{"method", "endpoints"}}, 2000ms);
    for (auto& e : (*ep)["endpoints"])
      if (e["address"] == "10.77.0.3") out["in_flight_draining"] = e["in_flight"];
    out["new"] = askMany(20);
    out["still"] = {a.ask(), b.ask()};
    return out;
  });
  EXPECT_EQ(r["first"], json({"10.77.0.3", "10.77.0.3"}));
  EXPECT_EQ(r["in_flight_draining"], 2) << r.dump();
  EXPECT_EQ(r["new"], json({{"10.77.0.2", 20}})) << "no new connection to a draining endpoint";
  EXPECT_EQ(r["still"], json({"10.77.0.3", "10.77.0.3"})) << "open connections keep working";
  json e;
  for (int i = 0; i < 100; ++i) {
    e = endpoint("10.77.0.3");
    if (e["in_flight"] == 0) break;
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(e["in_flight"], 0) << "closed connections leave the count";
}

TEST_F(LbE2e, LeastConnCountsTheModelServersOwnQueue) {
  // Two stand-ins that run one request at a time and queue the rest.
  for (std::string addr : {"10.77.0.2", "10.77.0.3"}) {
    servers_.push_back(startIn(sandbox_->backend().name(),
                               {std::string(AIMESH_BINARY_DIR) + "/model-server", "--listen", addr, "--port", "8000",
                                "--name", addr, "--ttft-ms", "20", "--tpot-ms", "50", "--tokens", "16",
                                "--max-concurrent", "1"},
                               dir_ + "/model-" + addr + ".log"));
  }
  for (int i = 0; i < 100 && client([] { return json(tcpAsk("10.77.0.3", 8000, 200).err); }) != 0; ++i)
    std::this_thread::sleep_for(50ms);
  startAgent(yaml("least_conn", {{"10.77.0.2"}, {"10.77.0.3"}}, "    model_metrics: {port: 8000}\n"),
             {"--scrape-netns", sandbox_->client().name(), "--scrape-interval-ms", "100"});
  const std::string sock = agent_->apiSocket();
  json r = client([&] {
    // Four streams straight to .3 (not through the service, so the kernel
    // does not count them): one runs, three wait in its queue.
    std::vector<std::thread> direct;
    for (int i = 0; i < 4; ++i)
      direct.emplace_back([] {
        httplib::Client c("10.77.0.3", 8000);
        c.set_read_timeout(20, 0);
        c.Post("/v1/completions", R"({"prompt":"hi","stream":true})", "application/json");
      });
    json out;
    for (int i = 0; i < 100; ++i) {
      auto eps = callAgent(sock, {{"method", "endpoints"}}, 2000ms);
      for (auto& e : (*eps)["endpoints"])
        if (e["address"] == "10.77.0.3") out["queued"] = e.value("queued_requests", -1);
      if (out["queued"] >= 2) break;
      std::this_thread::sleep_for(50ms);
    }
    std::map<std::string, int> seen;
    for (int i = 0; i < 20; ++i) {
      httplib::Client c("10.96.0.60", 8000);
      auto res = c.Get("/whoami");
      seen[res ? res->get_header_value("X-Aimesh-Backend") : "error"]++;
    }
    out["seen"] = seen;
    for (auto& t : direct) t.join();
    return out;
  });
  ASSERT_GE(r["queued"].get<int>(), 2) << "the scraped queue never showed up: " << r.dump();
  // .3: 0 connections + 3 queued; .2: idle. Random would split 10/10.
  EXPECT_GE(r["seen"].value("10.77.0.2", 0), 18) << r.dump();
  std::string metrics = httplib::Client(agent_->metricsUrlPath()).Get("/metrics")->body;
  EXPECT_NE(metrics.find("aimesh_agent_model_scrapes_total{result=\"ok\"}"), std::string::npos);
  EXPECT_NE(metrics.find("aimesh_endpoint_queued_requests{destination_service=\"llm\""), std::string::npos);
}

}  // namespace
}  // namespace aimesh::testing
