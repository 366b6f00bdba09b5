// e2e: kernel-measured latency and connection lifecycle for model traffic.
// A model-server stand-in with known delays runs in the backend namespace;
// clients stream completions through a service address; the agent's API and
// /metrics must show what the client saw.
#include <gtest/gtest.h>
#include <httplib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <map>
#include <memory>
#include <set>
#include <nlohmann/json.hpp>
#include <thread>

#include "client/api_client.h"
#include "fixtures/agent_e2e.h"
#include "fixtures/metrics_doc.h"
#include "fixtures/net_client.h"
#include "fixtures/sandbox.h"
#include "lib/timed.h"

namespace aimesh::testing {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

double median(std::vector<double> v) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// The common fixture; its API calls wait up to 3 s (latency and top read
// every backend's per-CPU histograms).
class TelemetryE2e : public AgentE2e {
 protected:
  void SetUp() override {
    AgentE2e::SetUp();
    apiTimeout_ = 3000ms;
  }
};

// The shared one-service state file, plus ml/dead at 10.96.0.41:8000 whose
// endpoint (10.77.0.3) nothing listens on.
const std::string kState = std::string(kOneStandInService) + R"(  - name: dead
    namespace: ml
    vips: [10.96.0.41]
    ports: [{port: 8000}]
    endpoints:
      - {address: 10.77.0.3, port: 8000}
)";

TEST_F(TelemetryE2e, KernelMeasuredTtftAndGapsMatchTheModelServerAndTheClient) {
  const int ttftMs = 50, tpotMs = 10, tokens = 12, requests = 16;
  startModelServer("10.77.0.2", ttftMs, tpotMs, tokens);
  startAgent(kState);

  // The client measures what it sees: time to the first body bytes, and the
  // gaps between body reads (one SSE event per token, flushed one by one).
  json client = json::parse(runIn(sandbox_->cgroup().path(), sandbox_->client().name(), [&](int fd) {
    std::vector<double> ttft, gaps;
    int ok = 0;
    for (int i = 0; i < requests; ++i) {
      httplib::Client c("10.96.0.40", 8000);
      c.set_read_timeout(5, 0);
      auto t0 = std::chrono::steady_clock::now();
      auto last = t0;
      bool first = true;
      std::string body = R"({"prompt":"hi","stream":true,"max_tokens":)" + std::to_string(tokens) + "}";
      httplib::Request req;
      req.method = "POST";
      req.path = "/v1/completions";
      req.headers = {{"Content-Type", "application/json"}};
      req.body = body;
      req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) {
        auto now = std::chrono::steady_clock::now();
        if (first) ttft.push_back(std::chrono::duration<double>(now - t0).count());
        else gaps.push_back(std::chrono::duration<double>(now - last).count());
        first = false;
        last = now;
        return true;
      };
      auto res = c.send(req);
      ok += res && res->status == 200;
    }
    std::string out = json{{"ok", ok}, {"ttft_p50", median(ttft)}, {"gap_p50", median(gaps)}}.dump();
    (void)!::write(fd, out.data(), out.size());
    return 0;
  }));
  ASSERT_EQ(client["ok"], requests) << client.dump();

  // Close events are emitted at close; give the last one a moment.
  json lat;
  for (int i = 0; i < 50; ++i) {
    lat = api({{"method", "latency"}, {"service", "llm"}});
    if (lat["endpoints"][0]["metrics"]["duration"]["count"] == requests) break;
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_EQ(lat["endpoints"].size(), 1u) << lat.dump();
  json m = lat["endpoints"][0]["metrics"];
  EXPECT_EQ(m["ttft"]["count"], requests);
  EXPECT_EQ(m["connect"]["count"], requests);
  EXPECT_EQ(m["duration"]["count"], requests);
  double kTtft = m["ttft"]["p50"], kGap = m["gap"]["p50"];
  double cTtft = client["ttft_p50"], cGap = client["gap_p50"];
  RecordProperty("kernel_ttft_p50_ms", std::to_string(kTtft * 1e3));
  RecordProperty("kernel_gap_p50_ms", std::to_string(kGap * 1e3));
  std::cout << "TTFT p50: kernel " << kTtft * 1e3 << " ms, client " << cTtft * 1e3 << " ms, configured " << ttftMs
            << " ms\nchunk gap p50: kernel " << kGap * 1e3 << " ms, client " << cGap * 1e3 << " ms, configured "
            << tpotMs << " ms\n";
  EXPECT_NEAR(kTtft, ttftMs / 1e3, 0.10 * ttftMs / 1e3);
  EXPECT_NEAR(kGap, tpotMs / 1e3, 0.10 * tpotMs / 1e3);
  EXPECT_NEAR(kTtft, cTtft, 0.10 * cTtft);
  EXPECT_NEAR(kGap, cGap, 0.10 * cGap);
  // Response duration ≈ ttft + (tokens - 1) * tpot.
  EXPECT_NEAR(m["duration"]["p50"].get<double>(), (ttftMs + (tokens - 1) * tpotMs) / 1e3,
              0.15 * (ttftMs + (tokens - 1) * tpotMs) / 1e3);

  json top = api({{"method", "top"}});
  json ep;
  for (auto& e : top["endpoints"])
    if (e["service"] == "llm") ep = e;
  EXPECT_EQ(ep["opened"], requests);
  EXPECT_EQ(ep["requests"], requests);
  EXPECT_EQ(ep["responses"], requests);
  EXPECT_EQ(ep["active"], 0);
  EXPECT_EQ(ep["errors"], 0);

  // Events are drained on a timer (no wakeup per event): wait for the last.
  json flows;
  for (int i = 0; i < 100; ++i) {
    flows = api({{"method", "flows"}, {"since", 0}});
    if (flows["events"].size() >= 2u * requests) break;
    std::this_thread::sleep_for(20ms);
  }
  int opens = 0, closes = 0;
  for (auto& e : flows["events"]) {
    opens += e["type"] == "open";
    closes += e["type"] == "close";
    if (e["type"] == "close") {
      EXPECT_EQ(e["endpoint"], "10.77.0.2:8000");
      EXPECT_EQ(e["requests"], 1);
      EXPECT_GT(e["bytes_received"].get<int>(), 0);
    }
  }
  EXPECT_EQ(opens, requests);
  EXPECT_EQ(closes, requests);
}

// Every endpoint has histograms, not only the first 256 ids (before, samples
// of higher ids were dropped): one service of 300 endpoints, each reached at
// least once; each has its connect, TTFT and RTT histograms in /metrics and
// in the latency view, and no sample was dropped.
TEST_F(TelemetryE2e, ThreeHundredEndpointsOfOneServiceAllHaveHistograms) {
  const int n = 300;
  const uint16_t first = 9000;
  servers_.push_back(startPortsServer(sandbox_->backend().name(), "10.77.0.2", first, n));
  std::string yaml = "services:\n  - name: wide\n    namespace: ml\n    vips: [10.96.0.42]\n"
                     "    ports: [{port: 8000}]\n    endpoints:\n";
  for (int i = 0; i < n; ++i) yaml += "      - {address: 10.77.0.2, port: " + std::to_string(first + i) + "}\n";
  startAgent(yaml);

  // Random picks: connect, ask, close until every endpoint answered (about
  // 1,900 connections on average; bounded in count and time).
  std::string reached = runClient([&] {
    std::set<std::string> ports;
    auto deadline = std::chrono::steady_clock::now() + 60s;
    for (int i = 0; i < 30000 && ports.size() < size_t(n) && std::chrono::steady_clock::now() < deadline; ++i)
      if (Reply r = tcpAsk("10.96.0.42", 8000); r.err == 0) ports.insert(r.name);
    return std::to_string(ports.size());
  });
  ASSERT_EQ(reached, std::to_string(n));

  // The RTT sample is taken at close: wait until every endpoint has one.
  std::string addr = agent_->metricsUrlPath();
  auto colon = addr.rfind(':');
  httplib::Client c(addr.substr(0, colon), std::stoi(addr.substr(colon + 1)));
  std::map<std::string, std::map<std::string, uint64_t>> counts;  // family -> endpoint -> count
  std::string body;
  for (int attempt = 0; attempt < 50; ++attempt) {
    auto res = c.Get("/metrics");
    ASSERT_TRUE(res);
    body = res->body;
    counts.clear();
    std::istringstream in(body);
    for (std::string line; std::getline(in, line);) {
      const std::string needle = "destination_endpoint=\"";
      auto brace = line.find('{'), ep = line.find(needle);
      if (line.starts_with("#") || line.find("_seconds_count{") == std::string::npos || ep == std::string::npos) continue;
      ep += needle.size();
      auto epEnd = line.find('"', ep);
      counts[line.substr(0, brace)][line.substr(ep, epEnd - ep)] = std::stoull(line.substr(line.rfind(' ') + 1));
    }
    if (counts["aimesh_endpoint_rtt_seconds_count"].size() == size_t(n)) break;
    std::this_thread::sleep_for(100ms);
  }
  for (const char* fam : {"aimesh_endpoint_connect_seconds_count", "aimesh_endpoint_ttft_seconds_count",
                          "aimesh_endpoint_rtt_seconds_count"}) {
    EXPECT_EQ(counts[fam].size(), size_t(n)) << fam;
    for (int i = 0; i < n; ++i)
      EXPECT_GE(counts[fam]["10.77.0.2:" + std::to_string(first + i)], 1u) << fam << " of port " << first + i;
  }
  EXPECT_NE(body.find("aimesh_datapath_reasons_total{reason=\"hist_full\"} 0"), std::string::npos);

  json lat = api({{"method", "latency"}, {"service", "wide"}});
  ASSERT_EQ(lat["endpoints"].size(), size_t(n));
  uint32_t maxId = 0;
  for (auto& e : lat["endpoints"]) {
    maxId = std::max(maxId, e["backend_id"].get<uint32_t>());
    EXPECT_GE(e["metrics"]["connect"]["count"].get<uint64_t>(), 1u) << e["endpoint"];
  }
  EXPECT_GE(maxId, 256u) << "endpoint ids reach past the old 256 limit";
}

// Telemetry sampling: a quarter of the connections are timed; every one is
// counted. 400 connections, each one request: connection counts are exact,
// histogram samples and request counts are about 100 (binomial, sd 8.7).
TEST_F(TelemetryE2e, SampledTelemetryTimesAShareAndCountsEveryConnection) {
  const int n = 400;
  serve("10.77.0.2");
  startAgent(R"(services:
  - name: sampled
    namespace: ml
    vips: [10.96.0.43]
    ports: [{port: 8000}]
    telemetry: {sample: 0.25}
    endpoints:
      - {address: 10.77.0.2, port: 8000}
)");
  std::string ok = runClient([&] {
    int good = 0;
    for (int i = 0; i < n; ++i) good += tcpAsk("10.96.0.43", 8000).err == 0;
    return std::to_string(good);
  });
  ASSERT_EQ(ok, std::to_string(n));

  std::string addr = agent_->metricsUrlPath();
  auto colon = addr.rfind(':');
  httplib::Client c(addr.substr(0, colon), std::stoi(addr.substr(colon + 1)));
  auto value = [](const std::string& body, const std::string& family) -> long {
    auto at = body.find("\n" + family + "{");
    if (at == std::string::npos) return -1;
    auto eol = body.find('\n', at + 1);
    return std::stol(body.substr(body.rfind(' ', eol) + 1, eol - body.rfind(' ', eol) - 1));
  };
  std::string body;
  for (int attempt = 0; attempt < 50; ++attempt) {  // the last closes are counted by sock_ops
    auto res = c.Get("/metrics");
    ASSERT_TRUE(res);
    body = res->body;
    if (value(body, "aimesh_endpoint_connections_closed_total") == n) break;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(value(body, "aimesh_service_connections_total"), n);
  EXPECT_EQ(value(body, "aimesh_endpoint_connections_opened_total"), n);
  EXPECT_EQ(value(body, "aimesh_endpoint_connections_closed_total"), n);
  long timed = value(body, "aimesh_endpoint_connect_seconds_count");
  EXPECT_GE(timed, 60) << body;
  EXPECT_LE(timed, 140) << body;
  EXPECT_EQ(value(body, "aimesh_endpoint_ttft_seconds_count"), timed);  // one request per timed connection
  EXPECT_EQ(value(body, "aimesh_endpoint_requests_total"), timed);
}

// The payload programs look at a socket's segments only while sock_ops has
// counted it into its aimesh_timed slot (bpf/lib/timed.h): established and
// sampled, over IPv4 and IPv6, out again at close; an unsampled socket never.
// A wrong slot on either side would leave a sampled request untimed.
TEST_F(TelemetryE2e, TimedSocketsAreCountedInTheirTupleSlotWhileOpen) {
  serve("10.77.0.2");
  serve("fd77::2");
  startAgent(R"(services:
  - name: timed4
    namespace: ml
    vips: [10.96.0.43]
    ports: [{port: 8000}]
    endpoints:
      - {address: 10.77.0.2, port: 8000}
  - name: timed6
    namespace: ml
    vips: ["fd96::43"]
    ports: [{port: 8000}]
    endpoints:
      - {address: "fd77::2", port: 8000}
  - name: untimed
    namespace: ml
    vips: [10.96.0.44]
    ports: [{port: 8000}]
    telemetry: {sample: 0.00001}
    endpoints:
      - {address: 10.77.0.2, port: 8000}
)");
  std::string pin = agent_->pinDir() + "/aimesh_timed";
  json r = json::parse(runClient([&] {
    int map = bpf_obj_get(pin.c_str());
    auto slots = [&] {  // slot -> count, the non-zero ones
      std::map<uint32_t, uint32_t> out;
      for (uint32_t k = 0; map >= 0 && k < AIMESH_TIMED_SLOTS; ++k) {
        uint32_t v = 0;
        if (bpf_map_lookup_elem(map, &k, &v) == 0 && v) out[k] = v;
      }
      return out;
    };
    // One connection per service, a request and its answer on each.
    std::vector<int> fds;
    json expected = json::array();
    for (auto [vip, backend] : {std::pair{"10.96.0.43", "10.77.0.2"}, {"fd96::43", "fd77::2"}, {"10.96.0.44", ""}}) {
      bool v6 = std::string(vip).find(':') != std::string::npos;
      sockaddr_storage ss{};
      socklen_t len = makeAddr(vip, 8000, ss);
      int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
      char buf[64];
      if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::write(fd, "hi\n", 3) != 3 ||
          ::read(fd, buf, sizeof(buf)) <= 0)
        return std::string("{\"error\":\"ask ") + vip + "\"}";
      fds.push_back(fd);
      if (!*backend) continue;  // the unsampled one: no slot to expect
      sockaddr_storage local{};
      socklen_t llen = sizeof(local);
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &llen);
      uint16_t lport = ntohs(v6 ? reinterpret_cast<sockaddr_in6*>(&local)->sin6_port
                                : reinterpret_cast<sockaddr_in*>(&local)->sin_port);
      uint8_t addr[16] = {};
      ::inet_pton(v6 ? AF_INET6 : AF_INET, backend, addr);
      uint32_t word = 0;
      std::memcpy(&word, addr + (v6 ? 12 : 0), 4);
      expected.push_back(timed_slot(lport, 8000, word));
    }
    auto open = slots();
    for (int fd : fds) ::close(fd);
    std::map<uint32_t, uint32_t> closed = slots();
    for (int i = 0; i < 50 && !closed.empty(); ++i) {  // counted out when sock_ops sees TCP_CLOSE
      std::this_thread::sleep_for(100ms);
      closed = slots();
    }
    json o = json::object(), c = json::object();
    for (auto [k, v] : open) o[std::to_string(k)] = v;
    for (auto [k, v] : closed) c[std::to_string(k)] = v;
    if (map >= 0) ::close(map);
    return json{{"map", map >= 0}, {"expected", expected}, {"open", o}, {"closed", c}}.dump();
  }));
  ASSERT_FALSE(r.contains("error")) << r.dump();
  ASSERT_TRUE(r["map"].get<bool>()) << pin;
  ASSERT_EQ(r["expected"].size(), 2u);
  json want = json::object();
  for (auto& k : r["expected"]) want[std::to_string(k.get<uint32_t>())] = want.value(std::to_string(k.get<uint32_t>()), 0) + 1;
  EXPECT_EQ(r["open"], want) << "the two sampled sockets, in the slots of their tuples; the unsampled one in none";
  EXPECT_EQ(r["closed"], json::object());

  // Both sampled requests were timed (the filter let their segments through).
  std::string addr = agent_->metricsUrlPath();
  auto colon = addr.rfind(':');
  httplib::Client c(addr.substr(0, colon), std::stoi(addr.substr(colon + 1)));
  auto res = c.Get("/metrics");
  ASSERT_TRUE(res);
  for (auto [svc, want] : {std::pair{"timed4", " 1"}, {"timed6", " 1"}, {"untimed", " 0"}}) {
    auto at = res->body.find(std::string("\naimesh_endpoint_requests_total{destination_service=\"") + svc + "\"");
    ASSERT_NE(at, std::string::npos) << svc;
    auto eol = res->body.find('\n', at + 1);
    EXPECT_EQ(res->body.substr(eol - 2, 2), want) << res->body.substr(at, eol - at);
  }
}

TEST_F(TelemetryE2e, ActiveConnectionsAndRefusedConnectsAreCounted) {
  startModelServer("10.77.0.2", 1, 1, 1);
  startAgent(kState);
  json r = json::parse(runIn(sandbox_->cgroup().path(), sandbox_->client().name(), [&](int fd) {
    // Three connections held open while the agent is asked, then closed.
    auto held = std::make_unique<std::vector<std::unique_ptr<TcpConn>>>();
    for (int i = 0; i < 3; ++i) held->push_back(std::make_unique<TcpConn>("10.96.0.40", 8000));
    std::this_thread::sleep_for(100ms);
    auto top = callAgent(agent_->apiSocket(), {{"method", "top"}}, 2000ms);
    int active = -1;
    if (top)
      for (auto& e : (*top)["endpoints"])
        if (e["service"] == "llm") active = e["active"];
    held.reset();
    // Nothing listens on 10.77.0.3:8000: the backend's kernel answers RST.
    int err = tcpAsk("10.96.0.41", 8000).err;
    std::string out = json{{"active", active}, {"refused_err", err}}.dump();
    (void)!::write(fd, out.data(), out.size());
    return 0;
  }));
  EXPECT_EQ(r["active"], 3);
  EXPECT_EQ(r["refused_err"], ECONNREFUSED);
  json ep, flows;
  for (int i = 0; i < 50; ++i) {
    json top = api({{"method", "top"}});
    for (auto& e : top["endpoints"])
      if (e["service"] == "dead") ep = e;
    json llm;
    for (auto& e : top["endpoints"])
      if (e["service"] == "llm") llm = e;
    if (ep["errors"] == 1 && llm["active"] == 0) break;
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(ep["errors"], 1);
  int refused = 0;
  for (int i = 0; i < 100 && refused == 0; ++i) {
    flows = api({{"method", "flows"}, {"since", 0}});
    for (auto& e : flows["events"]) refused += e["type"] == "refused";
    if (refused == 0) std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(refused, 1) << flows.dump();

  // /metrics carries the failure with its reason label.
  std::string addr = agent_->metricsUrlPath();
  auto colon = addr.rfind(':');
  httplib::Client c(addr.substr(0, colon), std::stoi(addr.substr(colon + 1)));
  auto res = c.Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_NE(res->body.find("aimesh_endpoint_connection_failures_total{destination_service=\"dead\",destination_namespace=\"ml\",model=\"\","
                           "port=\"8000\",protocol=\"TCP\",destination_endpoint=\"10.77.0.3:8000\",reason=\"refused\"} 1"),
            std::string::npos);

  // docs/metrics.md and the live exposition list the same families and types.
  std::ifstream docFile(std::string(AIMESH_SOURCE_DIR) + "/docs/metrics.md");
  std::stringstream doc;
  doc << docFile.rdbuf();
  std::vector<std::string> dups;
  EXPECT_EQ(documentedFamilies(doc.str(), dups), declaredFamilies(res->body));
  EXPECT_TRUE(dups.empty());
}

}  // namespace
}  // namespace aimesh::testing

namespace aimesh::testing {
namespace {


// HTTP/2 with prior knowledge (as gRPC clients speak it): the preface,
// SETTINGS and WINDOW_UPDATE frames are neither requests nor responses;
// HEADERS starts a request, the first DATA frame is the first body byte.
TEST_F(TelemetryE2e, Http2RequestsAreTimedFromHeadersToTheFirstDataFrame) {
  if (::access("/usr/sbin/nghttpd", X_OK) != 0) GTEST_SKIP() << "nghttpd (Debian nghttp2-server) not installed";
  std::string docroot = dir_ + "/www";
  ::mkdir(docroot.c_str(), 0755);
  writeFile(docroot + "/model.json", std::string(200'000, 'x'));
  servers_.push_back(startIn(sandbox_->backend().name(),
                           {"/usr/sbin/nghttpd", "--no-tls", "-a", "10.77.0.2", "-d", docroot, "8000"},
                           dir_ + "/nghttpd.log"));
  for (int i = 0; i < 100; ++i) {
    int st = 0;
    runIn("", sandbox_->backend().name(), [&](int) { return tcpAsk("10.77.0.2", 8000, 200).err == ECONNREFUSED; },
          &st);
    if (st == 0) break;
    std::this_thread::sleep_for(50ms);
  }
  startAgent(kState);
  const int requests = 5;
  int st = 0;
  std::string out = runIn(sandbox_->cgroup().path(), sandbox_->client().name(), [&](int fd) {
    int ok = 0;
    for (int i = 0; i < requests; ++i) {
      auto [rc, body] = capture("curl -s --http2-prior-knowledge -o /dev/null -w '%{http_version} %{http_code}\\n' "
                                "--max-time 5 http://10.96.0.40:8000/model.json");
      ok += rc == 0 && body == "2 200\n";
    }
    std::string o = std::to_string(ok);
    (void)!::write(fd, o.data(), o.size());
    return 0;
  }, &st);
  ASSERT_EQ(out, std::to_string(requests)) << "HTTP/2 requests that succeeded";
  json lat;
  for (int i = 0; i < 50; ++i) {
    lat = api({{"method", "latency"}, {"service", "llm"}});
    if (lat["endpoints"][0]["metrics"]["duration"]["count"] == requests) break;
    std::this_thread::sleep_for(20ms);
  }
  json m = lat["endpoints"][0]["metrics"];
  EXPECT_EQ(m["ttfb"]["count"], requests) << m.dump();
  EXPECT_EQ(m["ttft"]["count"], requests) << "one first DATA frame per request";
  EXPECT_EQ(m["duration"]["count"], requests);
  EXPECT_GE(m["ttft"]["p50"].get<double>(), m["ttfb"]["p50"].get<double>());
  json top = api({{"method", "top"}});
  for (auto& e : top["endpoints"])
    if (e["service"] == "llm") {
      EXPECT_EQ(e["requests"], requests) << "preface/SETTINGS/WINDOW_UPDATE must not count as requests";
      EXPECT_EQ(e["responses"], requests);
    }
}

// The real meshctl binary against the real agent after streamed traffic.
TEST_F(TelemetryE2e, MeshctlLatencyTopAndFlowsShowTheTraffic) {
  startModelServer("10.77.0.2", 20, 5, 6);
  startAgent(kState);
  int st = 0;
  runIn(sandbox_->cgroup().path(), sandbox_->client().name(), [&](int) {
    for (int i = 0; i < 4; ++i) {
      httplib::Client c("10.96.0.40", 8000);
      auto r = c.Post("/v1/completions", R"({"prompt":"x","stream":true,"max_tokens":6})", "application/json");
      if (!r || r->status != 200) return 1;
    }
    return 0;
  }, &st);
  ASSERT_EQ(st, 0);
  std::string meshctl = std::string(AIMESH_BINARY_DIR) + "/meshctl --socket " + agent_->apiSocket();
  json lat;
  for (int i = 0; i < 50; ++i) {
    auto [rc, out] = capture(meshctl + " -o json latency llm");
    ASSERT_EQ(rc, 0) << out;
    lat = json::parse(out);
    if (lat["endpoints"][0]["metrics"]["duration"]["count"] == 4) break;
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(lat["endpoints"][0]["metrics"]["ttft"]["count"], 4);
  auto [rc, text] = capture(meshctl + " latency llm");
  EXPECT_EQ(rc, 0);
  EXPECT_NE(text.find("ttft"), std::string::npos) << text;
  EXPECT_NE(text.find("p99="), std::string::npos) << text;
  std::tie(rc, text) = capture(meshctl + " top --iterations 1");
  EXPECT_EQ(rc, 0) << text;
  EXPECT_NE(text.find("10.77.0.2:8000"), std::string::npos) << text;
  for (int i = 0; i < 100; ++i) {  // events are drained on a timer
    std::tie(rc, text) = capture(meshctl + " flows");
    if (text.find("close") != std::string::npos) break;
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(rc, 0) << text;
  EXPECT_NE(text.find("open"), std::string::npos) << text;
  EXPECT_NE(text.find("close"), std::string::npos) << text;
  std::tie(rc, text) = capture(meshctl + " latency no-such-service 2>&1");
  EXPECT_EQ(rc, 1) << text;
}

}  // namespace
}  // namespace aimesh::testing

namespace aimesh::testing {
namespace {

// A connect that is never answered (the backend's replies are blackholed) and
// that the client abandons counts as a timeout, not as refused.
TEST_F(TelemetryE2e, UnansweredConnectCountsAsTimeout) {
  startAgent(kState);
  ASSERT_EQ(sh("ip -n " + sandbox_->backend().name() + " route add blackhole 10.77.0.1/32"), 0);
  int st = 0;
  runIn(sandbox_->cgroup().path(), sandbox_->client().name(), [&](int) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(8000);
    inet_pton(AF_INET, "10.96.0.41", &sa.sin_addr);
    int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
    if (rc == 0 || errno != EINPROGRESS) return 1;
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, 300) != 0) return 2;  // must still be waiting
    ::close(fd);                             // give up: SYN_SENT -> CLOSE, no RST
    return 0;
  }, &st);
  ASSERT_EQ(st, 0);
  json ep, flows;
  int timeouts = 0;
  for (int i = 0; i < 100 && timeouts == 0; ++i) {
    flows = api({{"method", "flows"}, {"since", 0}});
    for (auto& e : flows["events"]) timeouts += e["type"] == "timeout";
    if (timeouts == 0) std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(timeouts, 1) << flows.dump();
  json top = api({{"method", "top"}});
  for (auto& e : top["endpoints"])
    if (e["service"] == "dead") ep = e;
  EXPECT_EQ(ep["errors"], 1);
  EXPECT_EQ(ep["opened"], 0);
}

}  // namespace
}  // namespace aimesh::testing
