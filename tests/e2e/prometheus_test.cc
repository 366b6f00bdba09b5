// e2e: the agent's /metrics as Prometheus itself sees it. promtool checks the
// text exposition of a live agent that has measured real streamed
// completions; a real Prometheus server (Debian's `prometheus` package)
// scrapes the agent and answers histogram_quantile() over the kernel-measured
// TTFT histogram, in classic buckets and as native histograms (protobuf).
//
// Everything stays local: the agent's metrics listener and Prometheus bind
// 127.0.0.1; model traffic runs only inside the sandbox's namespaces.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <fstream>
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

constexpr const char* kPromtool = "/usr/bin/promtool";
constexpr const char* kPrometheus = "/usr/bin/prometheus";

// A free TCP port on 127.0.0.1 (bind port 0, read it back, close).
int freeLocalPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sa.sin_port = 0;
  socklen_t len = sizeof(sa);
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) == 0)
    port = ntohs(sa.sin_port);
  ::close(fd);
  return port;
}

std::string urlEncode(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

std::pair<std::string, int> splitAddr(const std::string& addr) {
  auto colon = addr.rfind(':');
  if (colon == std::string::npos) return {addr, 0};
  return {addr.substr(0, colon), std::stoi(addr.substr(colon + 1))};
}

// Prometheus's histogram_quantile() over one set of cumulative buckets
// (upper bound → count, +Inf included), as promql/quantile.go computes it.
double promQuantile(double q, const std::map<double, double>& buckets) {
  if (buckets.size() < 2 || !std::isinf(buckets.rbegin()->first)) return NAN;
  std::vector<std::pair<double, double>> b(buckets.begin(), buckets.end());
  double obs = b.back().second;
  if (obs == 0) return NAN;
  double rank = q * obs;
  size_t i = 0;
  while (i < b.size() - 1 && b[i].second < rank) ++i;
  if (i == b.size() - 1) return b[b.size() - 2].first;
  if (i == 0 && b[0].first <= 0) return b[0].first;
  double start = 0, end = b[i].first, count = b[i].second;
  if (i > 0) {
    start = b[i - 1].first;
    count -= b[i - 1].second;
    rank -= b[i - 1].second;
  }
  return start + (end - start) * (rank / count);
}

// The cumulative buckets of `family` summed over all series (sum by (le)).
std::map<double, double> bucketsFromText(const std::string& text, const std::string& family) {
  std::map<double, double> out;
  std::istringstream in(text);
  std::string line, prefix = family + "_bucket{";
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) != 0) continue;
    auto le = line.find("le=\"");
    auto close = line.rfind('}');
    if (le == std::string::npos || close == std::string::npos) continue;
    std::string v = line.substr(le + 4, line.find('"', le + 4) - le - 4);
    double bound = v == "+Inf" ? INFINITY : std::stod(v);
    out[bound] += std::stod(line.substr(close + 2));
  }
  return out;
}

class PrometheusE2e : public AgentE2e {
 protected:
  void SetUp() override {
    AgentE2e::SetUp();
    if (IsSkipped()) return;
    if (::access(kPromtool, X_OK) != 0 || ::access(kPrometheus, X_OK) != 0)
      GTEST_SKIP() << kPromtool << " or " << kPrometheus << " missing (Debian package `prometheus`)";
  }
  void TearDown() override {
    stopPrometheus();
    AgentE2e::TearDown();
  }

  // Streams `n` completions, one connection each, through the service
  // address from the client namespace. Returns {"ok", "ttft_p50"} as the
  // client saw them.
  json streamCompletions(int n, int tokens) {
    std::string out = runIn(sandbox_->cgroup().path(), sandbox_->client().name(), [&](int fd) {
      std::vector<double> ttft;
      int ok = 0;
      for (int i = 0; i < n; ++i) {
        httplib::Client c("10.96.0.40", 8000);
        c.set_read_timeout(5, 0);
        auto t0 = std::chrono::steady_clock::now();
        bool first = true;
        httplib::Request req;
        req.method = "POST";
        req.path = "/v1/completions";
        req.headers = {{"Content-Type", "application/json"}};
        req.body = R"({"prompt":"hi","stream":true,"max_tokens":)" + std::to_string(tokens) + "}";
        req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) {
          if (first) ttft.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
          first = false;
          return true;
        };
        auto res = c.send(req);
        ok += res && res->status == 200;
      }
      std::sort(ttft.begin(), ttft.end());
      double p50 = ttft.empty() ? -1 : ttft[ttft.size() / 2];
      std::string s = json{{"ok", ok}, {"ttft_p50", p50}}.dump();
      (void)!::write(fd, s.data(), s.size());
      return 0;
    });
    try {
      return json::parse(out);
    } catch (...) {
      return json{{"ok", -1}, {"raw", out}};
    }
  }

  httplib::Result getMetrics(bool openMetrics) {
    auto [host, port] = splitAddr(agent_->metricsUrlPath());
    httplib::Client c(host, port);
    c.set_read_timeout(5, 0);
    if (openMetrics) return c.Get("/metrics", {{"Accept", "application/openmetrics-text; version=1.0.0"}});
    return c.Get("/metrics");
  }

  // Prometheus as a child process: its own process group, dies with us
  // (PR_SET_PDEATHSIG), stopped by pid with SIGTERM, then SIGKILL.
  void startPrometheus(const std::string& config, int port, const char* feature = nullptr) {
    std::string log = dir_ + "/prometheus.log";
    std::string cfg = "--config.file=" + config, data = "--storage.tsdb.path=" + dir_ + "/data",
                web = "--web.listen-address=127.0.0.1:" + std::to_string(port);
    pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) _exit(126);
      if (::chdir(dir_.c_str()) != 0) _exit(125);
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      ::execl(kPrometheus, kPrometheus, cfg.c_str(), data.c_str(), web.c_str(), feature, static_cast<char*>(nullptr));
      _exit(127);
    }
    promPid_ = pid;
    promPort_ = port;
  }
  void stopPrometheus() {
    if (promPid_ <= 0) return;
    ::kill(promPid_, SIGTERM);
    bool gone = false;
    for (int i = 0; i < 100 && !gone; ++i) {  // up to 5 s
      gone = ::waitpid(promPid_, nullptr, WNOHANG) == promPid_;
      if (!gone) std::this_thread::sleep_for(50ms);
    }
    if (!gone) {
      ::kill(promPid_, SIGKILL);
      ::waitpid(promPid_, nullptr, 0);
    }
    promPid_ = -1;
  }
  bool prometheusRunning() { return promPid_ > 0 && ::waitpid(promPid_, nullptr, WNOHANG) == 0; }

  // GET /api/v1/query; returns the "data" object, or null on any failure.
  json promQuery(const std::string& q) {
    httplib::Client c("127.0.0.1", promPort_);
    c.set_read_timeout(3, 0);
    auto r = c.Get("/api/v1/query?query=" + urlEncode(q));
    if (!r || r->status != 200) return nullptr;
    try {
      json j = json::parse(r->body);
      if (j.value("status", "") != "success") return nullptr;
      return j["data"];
    } catch (...) {
      return nullptr;
    }
  }
  // The value of a one-element vector (or scalar) result; NaN if none.
  double promValue(const std::string& q) {
    json d = promQuery(q);
    if (d.is_null()) return NAN;
    json v;
    if (d["resultType"] == "vector") {
      if (d["result"].size() != 1) return NAN;
      v = d["result"][0]["value"];
    } else if (d["resultType"] == "scalar") {
      v = d["result"];
    } else {
      return NAN;
    }
    try {
      return std::stod(v[1].get<std::string>());
    } catch (...) {
      return NAN;
    }
  }

  // Prometheus scraping `target` every second (with `feature` enabled, if
  // any); its port once ready, 0 if it did not come up within 15 s.
  int startScrapingPrometheus(const std::string& target, const char* feature = nullptr) {
    std::string config = dir_ + "/prometheus.yml";
    writeFile(config, "global:\n"
                      "  scrape_interval: 1s\n"
                      "  scrape_timeout: 1s\n"
                      "  evaluation_interval: 1s\n"
                      "scrape_configs:\n"
                      "  - job_name: aimesh\n"
                      "    metrics_path: /metrics\n"
                      "    static_configs:\n"
                      "      - targets: ['" +
                          target + "']\n");
    int port = freeLocalPort();
    if (port <= 0) return 0;
    startPrometheus(config, port, feature);
    for (int i = 0; i < 150 && prometheusRunning(); ++i) {  // up to 15 s
      httplib::Client c("127.0.0.1", port);
      c.set_connection_timeout(0, 200000);
      auto r = c.Get("/-/ready");
      if (r && r->status == 200) return port;
      std::this_thread::sleep_for(100ms);
    }
    return 0;
  }

  pid_t promPid_ = -1;
  int promPort_ = 0;
};

const char* kState = kOneStandInService;

TEST_F(PrometheusE2e, PromtoolAcceptsLiveMetrics) {
  const int requests = 10, tokens = 5;
  startModelServer("10.77.0.2", 20, 5, tokens);
  startAgent(kState);
  json client = streamCompletions(requests, tokens);
  ASSERT_EQ(client["ok"], requests) << client.dump();

  // Wait for the last close so every family has its final values.
  for (int i = 0; i < 50; ++i) {
    auto r = getMetrics(false);
    if (r && r->body.find("aimesh_endpoint_connections_closed_total{service=\"llm\",namespace=\"ml\",model=\"stand-"
                          "in\",port=\"8000\",protocol=\"TCP\",endpoint=\"10.77.0.2:8000\",reason=\"other\"} " +
                          std::to_string(requests) + "\n") != std::string::npos)
      break;
    std::this_thread::sleep_for(20ms);
  }

  auto res = getMetrics(false);
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  // The histograms carry samples: promtool sees buckets with counts, not just
  // TYPE lines.
  EXPECT_NE(res->body.find("aimesh_endpoint_ttft_seconds_count{"), std::string::npos);
  writeFile(dir_ + "/metrics.txt", res->body);
  std::string cmd = std::string(kPromtool) + " check metrics < " + dir_ + "/metrics.txt > " + dir_ +
                    "/promtool.out 2>&1";
  int rc = sh(cmd);
  std::string out = readFile(dir_ + "/promtool.out");
  std::cout << "promtool check metrics: exit " << rc << (out.empty() ? ", no output\n" : ", output:\n" + out);
  EXPECT_EQ(rc, 0) << "promtool check metrics exited " << rc << " on " << res->body.size()
                   << " bytes of /metrics; its output:\n"
                   << out;

  // OpenMetrics when the scraper asks for it.
  auto om = getMetrics(true);
  ASSERT_TRUE(om);
  ASSERT_EQ(om->status, 200);
  std::string ct = om->get_header_value("Content-Type");
  EXPECT_EQ(ct.rfind("application/openmetrics-text", 0), 0u) << ct;
  const std::string& body = om->body;
  ASSERT_GE(body.size(), 6u);
  EXPECT_EQ(body.substr(body.size() - 6), "# EOF\n");
  EXPECT_EQ(body.find("# EOF"), body.size() - 6) << "# EOF must be the last line and appear once";
  std::istringstream in(body);
  std::string line;
  int counters = 0;
  while (std::getline(in, line)) {
    if (line.rfind("# TYPE ", 0) != 0 || !line.ends_with(" counter")) continue;
    ++counters;
    std::string name = line.substr(7, line.size() - 7 - 8);
    EXPECT_FALSE(name.ends_with("_total")) << "OpenMetrics counter family keeps _total: " << line;
    // The samples keep the suffix (a family may have none: the split
    // families without splits).
    EXPECT_EQ(body.find("\n" + name + "{"), std::string::npos) << "a " << name << " sample without _total";
    EXPECT_EQ(body.find("\n" + name + " "), std::string::npos) << "a " << name << " sample without _total";
    if (name.rfind("aimesh_split_", 0) != 0) {
      EXPECT_NE(body.find("\n" + name + "_total"), std::string::npos) << "no " << name << "_total samples";
    }
  }
  EXPECT_GT(counters, 10);
}

TEST_F(PrometheusE2e, RealPrometheusScrapesAndAnswersHistogramQuantile) {
  const int ttftMs = 50, tpotMs = 10, tokens = 5, requests = 30;
  auto t0 = std::chrono::steady_clock::now();
  startModelServer("10.77.0.2", ttftMs, tpotMs, tokens);
  startAgent(kState);
  std::string target = agent_->metricsUrlPath();
  ASSERT_FALSE(target.empty());

  int port = startScrapingPrometheus(target);
  ASSERT_GT(port, 0) << "prometheus did not become ready; log:\n" << readFile(dir_ + "/prometheus.log");
  // A few seconds of streamed completions while Prometheus scrapes.
  json client = streamCompletions(requests, tokens);
  ASSERT_EQ(client["ok"], requests) << client.dump();

  // Wait until the target is up, has been scraped at least twice, and a scrape
  // after the last request has been ingested.
  double up = NAN, scrapes = NAN, reqs = NAN;
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < deadline) {
    up = promValue("up{job=\"aimesh\"}");
    scrapes = promValue("count_over_time(up{job=\"aimesh\"}[5m])");
    reqs = promValue("sum(aimesh_endpoint_requests_total{service=\"llm\"})");
    if (up == 1 && scrapes >= 2 && reqs == requests) break;
    std::this_thread::sleep_for(250ms);
  }
  json targets;  // for the failure message: the scrape error, if any
  {
    httplib::Client c("127.0.0.1", port);
    auto r = c.Get("/api/v1/targets");
    if (r) targets = json::parse(r->body, nullptr, false);
  }
  ASSERT_EQ(up, 1) << "target not up; /api/v1/targets: " << targets.dump();
  EXPECT_GE(scrapes, 2);
  EXPECT_EQ(reqs, requests) << "aimesh_endpoint_requests_total in Prometheus";

  const std::string q = "histogram_quantile(0.5, sum by (le) (aimesh_endpoint_ttft_seconds_bucket))";
  double p50 = promValue(q);
  // The same interpolation over the agent's own buckets: Prometheus must have
  // ingested exactly what the agent serves.
  auto om = getMetrics(false);
  ASSERT_TRUE(om);
  auto buckets = bucketsFromText(om->body, "aimesh_endpoint_ttft_seconds");
  double local = promQuantile(0.5, buckets);
  auto latRes = callAgent(agent_->apiSocket(), {{"method", "latency"}, {"service", "llm"}}, 3000ms);
  json lat = latRes ? *latRes : json{};
  double kernelP50 = NAN;
  try {
    kernelP50 = lat["endpoints"][0]["metrics"]["ttft"]["p50"].get<double>();
  } catch (...) {
  }
  // Where the kernel's p50 sits among the exported le bounds.
  double lo = 0, hi = INFINITY;
  for (auto& [b, c] : buckets) {
    if (b < kernelP50) lo = b;
    else if (b < hi) hi = b;
  }
  std::string spread;  // the non-empty le buckets: where the samples are
  double prev = 0, prevBound = 0;
  for (auto& [b, c] : buckets) {
    if (c > prev) spread += " (" + std::to_string(prevBound * 1e3) + ", " + std::to_string(b * 1e3) + "] ms: " +
                            std::to_string(static_cast<int>(c - prev)) + ";";
    prev = c;
    prevBound = b;
  }
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "requests sent " << requests << ", aimesh_endpoint_requests_total in Prometheus " << reqs
            << ", up " << up << ", scrapes " << scrapes << "\n"
            << "TTFT p50: Prometheus histogram_quantile " << p50 * 1e3 << " ms, same interpolation over /metrics "
            << local * 1e3 << " ms, kernel (meshctl latency) " << kernelP50 * 1e3 << " ms, client "
            << client["ttft_p50"].get<double>() * 1e3 << " ms, configured " << ttftMs << " ms\n"
            << "kernel p50 lies in le bucket (" << lo * 1e3 << ", " << hi * 1e3 << "] ms; test took " << elapsed
            << " s\nTTFT samples per le bucket:" << spread << "\n";
  RecordProperty("prometheus_ttft_p50_ms", std::to_string(p50 * 1e3));
  RecordProperty("kernel_ttft_p50_ms", std::to_string(kernelP50 * 1e3));
  ASSERT_FALSE(std::isnan(p50)) << q << " gave no number: " << promQuery(q).dump();
  EXPECT_NEAR(p50, local, 1e-9 + 1e-9 * local) << "Prometheus and the agent's buckets disagree";
  // Tolerance: histogram_quantile interpolates linearly inside the le bucket
  // that holds the median, so with every sample in one bucket it answers that
  // bucket's midpoint. A 50 ms TTFT measures 50.1-51 ms and straddles the
  // bound 1.5*2^25 ns = 50.33 ms: all samples in (33.55, 50.33] ms give
  // 41.9 ms (-16%), all in (50.33, 67.11] ms give 58.7 ms (+17.4%). 15% is
  // therefore flaky (measured: 58.1 and 58.4 ms with 29/30 samples above
  // 50.33 ms, 56.6 ms with 24/30); 20% covers the worst case of these bounds.
  EXPECT_NEAR(p50, ttftMs / 1e3, 0.20 * ttftMs / 1e3);
}

// Native histograms: a Prometheus with --enable-feature=native-histograms
// asks for the protobuf format and gets the kernel's own schema-3 buckets.
// Its histogram_quantile() must then agree with the kernel's percentiles
// (meshctl latency) within 5%, for time to first token and the gaps between
// streamed tokens, at the stand-in's setting.
class PrometheusNativeE2e : public PrometheusE2e {
 protected:
  void expectNativeQuantilesMatchTheKernel(int ttftMs, int gapMs, int tokens, int requests) {
    startModelServer("10.77.0.2", ttftMs, gapMs, tokens);
    startAgent(kState);
    int port = startScrapingPrometheus(agent_->metricsUrlPath(), "--enable-feature=native-histograms");
    ASSERT_GT(port, 0) << "prometheus did not become ready; log:\n" << readFile(dir_ + "/prometheus.log");
    json client = streamCompletions(requests, tokens);
    ASSERT_EQ(client["ok"], requests) << client.dump();
    auto lat = callAgent(agent_->apiSocket(), {{"method", "latency"}, {"service", "llm"}}, 3000ms);
    ASSERT_TRUE(lat);
    json metrics = (*lat)["endpoints"][0]["metrics"];
    // Wait until Prometheus holds a scrape with every sample the kernel has.
    const std::map<std::string, std::string> families = {{"ttft", "aimesh_endpoint_ttft_seconds"},
                                                         {"gap", "aimesh_endpoint_chunk_gap_seconds"}};
    auto deadline = std::chrono::steady_clock::now() + 20s;
    bool caughtUp = false;
    while (!caughtUp && std::chrono::steady_clock::now() < deadline) {
      caughtUp = true;
      for (auto& [m, family] : families)
        caughtUp &= promValue("histogram_count(" + family + "{service=\"llm\"})") == metrics[m]["count"].get<double>();
      if (!caughtUp) std::this_thread::sleep_for(250ms);
    }
    ASSERT_TRUE(caughtUp) << "Prometheus never saw the kernel's counts " << metrics.dump() << "; log:\n"
                          << readFile(dir_ + "/prometheus.log");
    json classic = promQuery("aimesh_endpoint_ttft_seconds_bucket");
    EXPECT_TRUE(!classic.is_null() && classic["result"].empty()) << "the scrape was not protobuf: " << classic.dump();
    for (auto& [m, family] : families) {
      for (auto [q, key] : {std::pair{0.5, "p50"}, {0.99, "p99"}}) {
        double kernel = metrics[m][key].get<double>();
        double prom = promValue("histogram_quantile(" + std::to_string(q) + ", " + family + "{service=\"llm\"})");
        std::cout << m << " " << key << ": Prometheus " << prom * 1e3 << " ms, kernel " << kernel * 1e3
                  << " ms, configured " << (m == "ttft" ? ttftMs : gapMs) << " ms\n";
        RecordProperty(m + "_" + key + "_prometheus_ms", std::to_string(prom * 1e3));
        EXPECT_NEAR(prom, kernel, 0.05 * kernel) << m << " " << key;
      }
    }
  }
};

TEST_F(PrometheusNativeE2e, QuantilesWithinFivePercentOfTheKernelAt20ms) {
  expectNativeQuantilesMatchTheKernel(20, 20, 6, 20);
}

TEST_F(PrometheusNativeE2e, QuantilesWithinFivePercentOfTheKernelAt400ms) {
  expectNativeQuantilesMatchTheKernel(400, 400, 3, 6);
}

}  // namespace
}  // namespace aimesh::testing
