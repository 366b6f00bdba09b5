// Golden outputs of the read side: every JSON API method and /metrics (both
// text formats) on a fixed state file and a fixed amount of traffic, compared
// with files under tests/e2e/golden/. They pin what the agent serves today so
// that restructuring how it is built (issue 14: one view layer for the API,
// meshctl and /metrics) can be shown to change nothing.
//
// What a run cannot reproduce is replaced before the comparison, and only
// that: times (latency values, uptime, durations), process facts (pid,
// memory, kernel program and link ids), the sandbox's own names (temp dir,
// cgroup, pin dir, metrics port) and the kernel version. Counts, names,
// labels, the set of series and their order stay exact.
//
// AIMESH_UPDATE_GOLDEN=1 rewrites the files instead of comparing (review the
// diff: it is the change in what users see).
#include <gtest/gtest.h>
#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "fixtures/agent_e2e.h"
#include "fixtures/net_client.h"

namespace aimesh::testing {
namespace {

using nlohmann::json;

// Two services over the sandbox's backend addresses: one least_conn service
// with a single endpoint that the test sends traffic to, one Maglev service
// (v4 and v6 VIPs, a TCP and a UDP port, a weighted, a draining and an IPv6
// endpoint, a connection rule and a policy) that gets none.
constexpr const char* kState = R"(services:
  - name: llm
    namespace: ml
    model: stand-in
    algorithm: least_conn
    vips: [10.96.0.40]
    ports: [{port: 8000}]
    endpoints:
      - {address: 10.77.0.2, port: 8000}
  - name: chat
    namespace: prod
    model: chat-v2
    algorithm: maglev
    hash_table_size: 251
    vips: [10.96.0.41, "fd96::41"]
    ports: [{port: 8000}, {port: 9000, protocol: UDP}]
    connections: {max_requests: 100, drain_timeout: 30s}
    policy: {allow_cgroups: [/sys/fs/cgroup/aimesh-golden-nonexistent]}
    endpoints:
      - {address: 10.77.0.3, port: 8000, weight: 2}
      - {address: 10.77.0.4, port: 8000, state: draining}
      - {address: "fd77::3", port: 8000}
)";

constexpr int kRequests = 5;

std::string goldenDir() { return std::string(AIMESH_SOURCE_DIR) + "/tests/e2e/golden"; }

bool updating() {
  const char* u = std::getenv("AIMESH_UPDATE_GOLDEN");
  return u && std::string(u) == "1";
}

// Replaces every occurrence of `from` in s.
std::string replaceAll(std::string s, const std::string& from, const std::string& to) {
  if (from.empty()) return s;
  for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size())) s.replace(p, from.size(), to);
  return s;
}

class GoldenE2e : public AgentE2e {
 protected:
  // The sandbox's own names, as placeholders.
  std::string scrub(std::string s) const {
    s = replaceAll(s, agent_->pinDir(), "<pin_dir>");
    s = replaceAll(s, dir_, "<dir>");
    s = replaceAll(s, sandbox_->cgroup().path(), "<cgroup>");
    s = replaceAll(s, agent_->metricsUrlPath(), "<metrics_addr>");
    return s;
  }

  // Values no run reproduces, by key, anywhere in the document: times and
  // latencies (keys ending in _seconds or _ms, or starting with ttft_ or
  // gap_), process and kernel object ids, and the lifecycle's pass counts
  // (a pass runs every 5 s); of a latency histogram, the buckets and
  // quantiles (its count stays exact). Flow events arrive in an order that interleaves
  // connections differently each run: they are compared as a sorted set.
  static bool volatileKey(const std::string& k) {
    static const std::set<std::string> keys = {"pid", "link_id", "prog_id", "seq", "passes", "kernel",
                                               "p50",  "p90",     "p99",     "buckets"};
    auto ends = [&](const char* suf) {
      std::string s(suf);
      return k.size() >= s.size() && k.compare(k.size() - s.size(), s.size(), s) == 0;
    };
    return keys.count(k) || ends("_seconds") || ends("_ms") || k.rfind("ttft_", 0) == 0 || k.rfind("gap_", 0) == 0;
  }

  json normalize(const json& j) const {
    if (j.is_object()) {
      json out = json::object();
      for (auto& [k, v] : j.items()) {
        if (volatileKey(k) && !v.is_null() && !v.is_object())
          out[k] = "<v>";
        else
          out[k] = normalize(v);
      }
      if (out.contains("events") && out["events"].is_array()) {
        std::vector<std::string> ev;
        for (auto& e : out["events"]) ev.push_back(e.dump());
        std::sort(ev.begin(), ev.end());
        out["events"] = json::array();
        for (auto& e : ev) out["events"].push_back(json::parse(e));
      }
      return out;
    }
    if (j.is_array()) {
      json out = json::array();
      for (auto& v : j) out.push_back(normalize(v));
      return out;
    }
    if (j.is_string()) return scrub(j.get<std::string>());
    return j;
  }

  // /metrics: series whose value is a time or depends on timing get <v>:
  // process facts, the latency histograms' buckets and sums (their _count,
  // the number of samples, stays exact), the EWMA, durations and start
  // times, OpenMetrics' _created, and the agent's own HTTP counters (the
  // ready check polls them).
  std::string normalizeMetrics(const std::string& text) const {
    static const std::regex volatileSeries(
        "^(process_[a-z_]*|aimesh_endpoint_[a-z_]*_seconds_(bucket|sum)|[a-z_]*_created|"
        "aimesh_endpoint_ttft_peak_ewma_seconds|aimesh_endpoint_connection_seconds_total|"
        "aimesh_agent_(connection_pass_seconds_total|connection_passes_total|http_connections_total|"
        "http_connections_open|http_requests_total|last_reconcile_duration_seconds|"
        "reconcile_duration_seconds_total|start_time_seconds))[{ ]");
    std::istringstream in(scrub(text));
    std::string line, out;
    while (std::getline(in, line)) {
      if (!line.empty() && line[0] != '#' && std::regex_search(line, volatileSeries)) {
        size_t sp = line.rfind(' ');
        if (sp != std::string::npos) line = line.substr(0, sp) + " <v>";
      }
      out += line + "\n";
    }
    return out;
  }

  void check(const std::string& name, const std::string& actual) {
    std::string path = goldenDir() + "/" + name;
    if (updating()) {
      std::ofstream(path) << actual;
      return;
    }
    std::string want = readFile(path);
    ASSERT_FALSE(want.empty()) << path << " is missing: run with AIMESH_UPDATE_GOLDEN=1 and review it";
    if (want == actual) return;
    // The first differing line, for a readable failure.
    std::istringstream a(actual), w(want);
    std::string la, lw;
    int n = 1;
    while (true) {
      bool ga = static_cast<bool>(std::getline(a, la)), gw = static_cast<bool>(std::getline(w, lw));
      if (!ga && !gw) break;
      if (!ga || !gw || la != lw) {
        ADD_FAILURE() << name << " differs from " << path << " at line " << n << ":\n  golden: " << (gw ? lw : "<end>")
                      << "\n  actual: " << (ga ? la : "<end>")
                      << "\n(AIMESH_UPDATE_GOLDEN=1 rewrites the golden files; review the diff)";
        return;
      }
      ++n;
    }
  }

  std::string metrics(bool openMetrics) {
    std::string hp = agent_->metricsUrlPath();
    httplib::Client c(hp);
    httplib::Headers h;
    if (openMetrics) h.emplace("Accept", "application/openmetrics-text; version=1.0.0");
    auto r = c.Get("/metrics", h);
    EXPECT_TRUE(r && r->status == 200);
    return r ? r->body : "";
  }
};

TEST_F(GoldenE2e, ApiAndMetricsMatchTheGoldenFiles) {
  serve("10.77.0.2", "llm-0");
  startAgent(kState);

  // A fixed amount of traffic to one single-endpoint service: every count is
  // exact, only its timing varies.
  std::string out = runClient([&] {
    int ok = 0;
    for (int i = 0; i < kRequests; ++i) ok += tcpAsk("10.96.0.40", 8000).name == "llm-0";
    return std::to_string(ok);
  });
  ASSERT_EQ(out, std::to_string(kRequests));
  // Close events reach the agent through the ring buffer: wait until every
  // connection's close is in, then a little longer for the last counters.
  for (int i = 0; i < 50; ++i) {
    json flows = api("flows");
    int closes = 0;
    for (auto& e : flows.value("events", json::array())) closes += e.value("type", "") == "close";
    if (closes == kRequests) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));

  std::vector<std::pair<std::string, json>> calls = {
      {"status", json{{"method", "status"}}},
      {"services", json{{"method", "services"}}},
      {"endpoints", json{{"method", "endpoints"}}},
      {"endpoints_llm", json{{"method", "endpoints"}, {"service", "llm"}, {"namespace", "ml"}}},
      {"latency_llm", json{{"method", "latency"}, {"service", "llm"}, {"namespace", "ml"}}},
      {"latency_chat", json{{"method", "latency"}, {"service", "chat"}, {"namespace", "prod"}}},
      {"latency_unknown", json{{"method", "latency"}, {"service", "nope"}}},
      {"top", json{{"method", "top"}}},
      {"flows", json{{"method", "flows"}}},
      {"policy", json{{"method", "policy"}}},
      {"connections", json{{"method", "connections"}}},
      {"unknown", json{{"method", "nope"}}},
  };
  for (auto& [name, req] : calls) check("api_" + name + ".json", normalize(api(req)).dump(2) + "\n");
  check("metrics.txt", normalizeMetrics(metrics(false)));
  check("metrics.openmetrics.txt", normalizeMetrics(metrics(true)));
}

}  // namespace
}  // namespace aimesh::testing
