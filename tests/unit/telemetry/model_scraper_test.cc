// Unit tests of the model-server scraper: parseModelMetrics() on real vLLM,
// stand-in, SGLang and TGI expositions, label and value edge cases, and
// errors that name the line; ModelScraper against an httplib server on
// loopback (values, HTTP/parse/host errors, per-target deadlines, prompt
// shutdown, replacing targets, a netns that cannot be joined, many targets
// at once on the scraper's one thread).
#include "telemetry/model_scraper.h"

#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace aimesh {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// ---- parser -----------------------------------------------------------------

// Abridged from a vLLM v1 engine (0.10) with data parallelism 2: process and
// GC families, histograms with le="+Inf", _created samples, an info metric,
// a *_by_reason family whose name extends a known one, and both KV-cache
// names (the deprecated one with a different value: it must not be used).
constexpr const char* kVllmSample = R"(# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 12117.0
python_gc_objects_collected_total{generation="1"} 1602.0
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 2.187329536e+09
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 12.0
vllm:num_requests_running{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 9.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 4.0
vllm:num_requests_waiting{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.0
# HELP vllm:num_requests_waiting_by_reason Waiting requests by reason.
# TYPE vllm:num_requests_waiting_by_reason gauge
vllm:num_requests_waiting_by_reason{engine="0",reason="capacity"} 4.0
# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage. DEPRECATED.
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.99
vllm:gpu_cache_usage_perc{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.99
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.5
vllm:kv_cache_usage_perc{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.3
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 9.41e+08
# HELP vllm:prompt_tokens_created Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_created gauge
vllm:prompt_tokens_created{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 1.7390345678912e+09
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_sum{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 51.25
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.5",model_name="meta-llama/Llama-3.1-8B-Instruct"} 380.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="meta-llama/Llama-3.1-8B-Instruct"} 412.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 412.0
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",cache_dtype="auto",enable_prefix_caching="True",engine="0",num_gpu_blocks="27161"} 1.0
)";

TEST(ParseModelMetrics, RealVllmOutputSumsEnginesAndPrefersKvCacheName) {
  auto r = parseModelMetrics(kVllmSample);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_TRUE(r->hasWaiting);
  EXPECT_TRUE(r->hasRunning);
  EXPECT_TRUE(r->hasKvCache);
  EXPECT_DOUBLE_EQ(r->waiting, 7);  // 4 + 3; *_by_reason not counted
  EXPECT_DOUBLE_EQ(r->running, 21);
  EXPECT_DOUBLE_EQ(r->kvCacheUsage, 0.4);  // mean of kv_cache_usage_perc, not 0.99
}

// What bench/model_server.cc renders (renderMetrics) with 1 running, 2 queued
// and --max-concurrent 4.
TEST(ParseModelMetrics, StandInModelServerOutput) {
  const std::string body =
      "# HELP vllm:num_requests_running Number of requests currently running.\n"
      "# TYPE vllm:num_requests_running gauge\n"
      "vllm:num_requests_running{model_name=\"stand-in\"} 1\n"
      "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
      "# TYPE vllm:num_requests_waiting gauge\n"
      "vllm:num_requests_waiting{model_name=\"stand-in\"} 2\n"
      "# HELP vllm:kv_cache_usage_perc KV-cache usage; 1 means 100 percent (stand-in: running/max).\n"
      "# TYPE vllm:kv_cache_usage_perc gauge\n"
      "vllm:kv_cache_usage_perc{model_name=\"stand-in\"} 0.25\n"
      "# HELP vllm:request_success_total Count of successfully processed requests.\n"
      "# TYPE vllm:request_success_total counter\n"
      "vllm:request_success_total{finished_reason=\"stop\",model_name=\"stand-in\"} 3\n"
      "vllm:request_success_total{finished_reason=\"length\",model_name=\"stand-in\"} 0\n"
      "# HELP aimesh_model_server_max_concurrent Configured --max-concurrent.\n"
      "# TYPE aimesh_model_server_max_concurrent gauge\n"
      "aimesh_model_server_max_concurrent{model_name=\"stand-in\"} 4\n";
  auto r = parseModelMetrics(body);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_DOUBLE_EQ(r->running, 1);
  EXPECT_DOUBLE_EQ(r->waiting, 2);
  EXPECT_DOUBLE_EQ(r->kvCacheUsage, 0.25);
}

TEST(ParseModelMetrics, LabelValuesWithSpacesCommasEscapedQuotesAndBraces) {
  const std::string body =
      "vllm:num_requests_waiting{model_name=\"a, b} \\\"c\\\" \\\\ d\\n\",engine=\"0\"} 2\n"
      "vllm:num_requests_waiting{engine=\"1\",model_name=\"x=\\\"}\\\" 9\",} 3\n"  // trailing comma
      "vllm:num_requests_waiting{} 1\n"
      "vllm:num_requests_waiting 1\n"
      "vllm:num_requests_running { engine = \"0\" , model_name=\"{}\" } 5\n"  // blanks around tokens
      "vllm:num_requests_running{model_name=\"\"} 1\n";
  auto r = parseModelMetrics(body);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_DOUBLE_EQ(r->waiting, 7);
  EXPECT_DOUBLE_EQ(r->running, 6);
  EXPECT_FALSE(r->hasKvCache);
}

TEST(ParseModelMetrics, TimestampsNanInfExponentsAndCrlf) {
  const std::string body =
      "# HELP vllm:num_requests_running Running.\r\n"
      "# TYPE vllm:num_requests_running gauge\r\n"
      "vllm:num_requests_running{engine=\"0\"} 4 1712345678000\r\n"
      "vllm:num_requests_running{engine=\"1\"} NaN\r\n"  // no reading: skipped, not summed
      "vllm:num_requests_running{engine=\"2\"} 1.5e+01 -3\r\n"
      "\r\n"
      "\t  vllm:num_requests_waiting{engine=\"0\"}\t+Inf\r\n"
      "vllm:kv_cache_usage_perc{engine=\"0\"} 2.5E-1\r\n";
  auto r = parseModelMetrics(body);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_DOUBLE_EQ(r->running, 19);
  EXPECT_TRUE(std::isinf(r->waiting) && r->waiting > 0);
  EXPECT_DOUBLE_EQ(r->kvCacheUsage, 0.25);
}

TEST(ParseModelMetrics, OlderVllmGpuCacheUsageName) {
  auto r = parseModelMetrics(
      "vllm:num_requests_waiting{model_name=\"m\"} 0.0\n"
      "vllm:gpu_cache_usage_perc{model_name=\"m\"} 0.75\n");
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_TRUE(r->hasKvCache);
  EXPECT_DOUBLE_EQ(r->kvCacheUsage, 0.75);
  EXPECT_TRUE(r->hasWaiting);
  EXPECT_DOUBLE_EQ(r->waiting, 0);
  EXPECT_FALSE(r->hasRunning);
}

TEST(ParseModelMetrics, SglangNames) {
  auto r = parseModelMetrics(
      "# HELP sglang:num_queue_reqs The number of requests in the waiting queue.\n"
      "# TYPE sglang:num_queue_reqs gauge\n"
      "sglang:num_queue_reqs{model_name=\"qwen\",tp_rank=\"0\"} 6.0\n"
      "sglang:num_running_reqs{model_name=\"qwen\",tp_rank=\"0\"} 32.0\n"
      "sglang:token_usage{model_name=\"qwen\",tp_rank=\"0\"} 0.61\n"
      "sglang:gen_throughput{model_name=\"qwen\",tp_rank=\"0\"} 1234.5\n");
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_DOUBLE_EQ(r->waiting, 6);
  EXPECT_DOUBLE_EQ(r->running, 32);
  EXPECT_DOUBLE_EQ(r->kvCacheUsage, 0.61);
}

TEST(ParseModelMetrics, TgiNames) {
  auto r = parseModelMetrics(
      "# TYPE tgi_queue_size gauge\n"
      "tgi_queue_size 5\n"
      "# TYPE tgi_batch_current_size gauge\n"
      "tgi_batch_current_size 3\n"
      "tgi_request_count 100\n");
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_TRUE(r->hasWaiting);
  EXPECT_DOUBLE_EQ(r->waiting, 5);
  EXPECT_DOUBLE_EQ(r->running, 3);
  EXPECT_FALSE(r->hasKvCache);
}

TEST(ParseModelMetrics, NoKnownMetricsIsAnErrorSayingSo) {
  for (const char* body : {"", "\n\n", "# HELP x y\nprocess_cpu_seconds_total 1.5\nup 1\n",
                           "vllm:num_requests_waiting_total 3\nvllm:num_requests_running_sum 1\n"}) {
    SCOPED_TRACE(body);
    auto r = parseModelMetrics(body);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message().find("no known model-server metrics"), std::string::npos) << r.error().message();
    EXPECT_NE(r.error().message().find("vllm:num_requests_waiting"), std::string::npos);
  }
  auto r = parseModelMetrics("vllm:num_requests_waiting{engine=\"0\"} NaN\n");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("NaN"), std::string::npos) << r.error().message();
}

TEST(ParseModelMetrics, MalformedLinesAreErrorsNamingTheLine) {
  struct Case {
    std::string line;
    std::string what;
  };
  const std::vector<Case> cases = {
      {"vllm:num_requests_waiting{model_name=\"abc} 1", "unterminated label value"},
      {"vllm:num_requests_waiting{model_name=\"a\\tb\"} 1", "invalid escape"},
      {"vllm:num_requests_waiting{model_name=abc} 1", "double quotes"},
      {"vllm:num_requests_waiting{model_name=\"a\" engine=\"0\"} 1", "expected ',' or '}'"},
      {"vllm:num_requests_waiting{=\"a\"} 1", "expected a label name"},
      {"vllm:num_requests_waiting{model_name \"a\"} 1", "expected '='"},
      {"vllm:num_requests_waiting{model_name=\"a\"}", "missing value"},
      {"vllm:num_requests_waiting", "missing value"},
      {"vllm:num_requests_waiting one", "invalid value 'one'"},
      {"vllm:num_requests_waiting 1 1.5", "invalid timestamp '1.5'"},
      {"vllm:num_requests_waiting 1 17 extra", "unexpected text"},
      {"9lives 1", "expected a metric name"},
      {"vllm-num 1", "invalid character after metric name"},
      {"# TYPE vllm:num_requests_waiting gague", "unknown metric type 'gague'"},
      {"# TYPE", "needs a valid metric name"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.line);
    // Line 4, after CRLF lines, so the count is of lines, not of '\n's only.
    const std::string body = "# HELP vllm:num_requests_waiting Waiting.\r\n# TYPE vllm:num_requests_waiting gauge\r\n"
                             "vllm:num_requests_waiting 1\r\n" +
                             c.line + "\r\nvllm:num_requests_running 1\r\n";
    auto r = parseModelMetrics(body);
    ASSERT_FALSE(r.ok());
    const std::string msg = r.error().message();
    EXPECT_EQ(msg.rfind("line 4: ", 0), 0u) << msg;
    EXPECT_NE(msg.find(c.what), std::string::npos) << msg;
  }
  // A malformed unrelated family is still an error: the body is not trusted.
  auto r = parseModelMetrics("vllm:num_requests_waiting 1\n\nsome_other{a=\"x} 2\n");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message().rfind("line 3: ", 0), 0u) << r.error().message();
}

// ---- scraper ----------------------------------------------------------------

// What the sink saw, in order, with arrival times.
class Recorder {
 public:
  struct Record {
    uint32_t id;
    bool ok;
    ModelSignals signals;
    std::string error;
    Clock::time_point at;
  };

  ModelScraper::Sink sink(std::function<void(uint32_t)> also = {}) {
    return [this, also](uint32_t id, const Result<ModelSignals>& r) {
      {
        std::lock_guard g(mu_);
        records_.push_back(
            Record{id, r.ok(), r.ok() ? r.value() : ModelSignals{}, r.ok() ? "" : r.error().message(), Clock::now()});
      }
      cv_.notify_all();
      if (also) also(id);
    };
  }
  bool waitFor(const std::function<bool(const std::vector<Record>&)>& pred, std::chrono::milliseconds timeout) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, timeout, [&] { return pred(records_); });
  }
  std::vector<Record> of(uint32_t id) {
    std::lock_guard g(mu_);
    std::vector<Record> out;
    for (auto& r : records_)
      if (r.id == id) out.push_back(r);
    return out;
  }
  size_t count(uint32_t id) { return of(id).size(); }
  bool hasAtLeast(uint32_t id, size_t n) {
    return waitFor(
        [&](const std::vector<Record>& rs) {
          return static_cast<size_t>(std::count_if(rs.begin(), rs.end(), [&](auto& r) { return r.id == id; })) >= n;
        },
        3s);
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Record> records_;
};

// A metrics server on loopback: /m/<name> serves a settable body, /hold
// answers only when released (or when the test ends), /trickle sends headers
// and then a comment line every 20 ms, forever. httplib serves a connection
// on one thread until it closes, and the scraper keeps its connections open:
// `threads` must exceed the connections a test holds at once.
class FakeMetricsServer {
 public:
  explicit FakeMetricsServer(const std::string& host = "127.0.0.1", size_t threads = 8) {
    server_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
    server_.Get(R"(/m/(\w+))", [this](const httplib::Request& req, httplib::Response& res) {
      std::lock_guard g(mu_);
      auto it = bodies_.find(req.matches[1]);
      if (it == bodies_.end()) {
        res.status = 404;
        return;
      }
      res.set_content(it->second, "text/plain; version=0.0.4");
    });
    server_.Get("/hold", [this](const httplib::Request&, httplib::Response& res) {
      std::unique_lock lk(mu_);
      ++held_;
      cv_.notify_all();
      cv_.wait(lk, [&] { return released_; });
      res.set_content("vllm:num_requests_waiting 1\n", "text/plain");
    });
    server_.Get("/trickle", [this](const httplib::Request&, httplib::Response& res) {
      res.set_chunked_content_provider("text/plain", [this](size_t, httplib::DataSink& sink) {
        for (;;) {
          {
            std::unique_lock lk(mu_);
            if (cv_.wait_for(lk, 20ms, [&] { return released_; })) return false;
          }
          if (!sink.write("# x\n", 4)) return false;
        }
      });
    });
    // httplib listens with a backlog of 5, and a tick connects to all its
    // targets at once: a burst to one server would overflow that and wait
    // out a SYN retransmit (1 s). Model servers listen with far more
    // (uvicorn: 2048), so raise it as soon as the socket listens.
    server_.set_socket_options([this](int s) {
      httplib::default_socket_options(s);
      listenFd_ = s;
    });
    port_ = server_.bind_to_any_port(host);
    if (port_ > 0 && ::listen(listenFd_, SOMAXCONN) != 0) port_ = -1;
    if (port_ > 0) {
      thread_ = std::thread([this] { server_.listen_after_bind(); });
      for (int i = 0; i < 500 && !server_.is_running(); ++i) std::this_thread::sleep_for(2ms);
      // One answer: the accept loop, and so the worker pool, is running.
      httplib::Client(host, port_).Get("/m/");
    }
  }
  ~FakeMetricsServer() {
    release();
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }
  bool ok() const { return port_ > 0; }
  uint16_t port() const { return static_cast<uint16_t>(port_); }
  void setBody(const std::string& name, const std::string& body) {
    std::lock_guard g(mu_);
    bodies_[name] = body;
  }
  bool waitHeld(int n, std::chrono::milliseconds timeout) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, timeout, [&] { return held_ >= n; });
  }
  void release() {
    {
      std::lock_guard g(mu_);
      released_ = true;
    }
    cv_.notify_all();
  }

 private:
  httplib::Server server_;
  std::thread thread_;
  int port_ = -1;
  int listenFd_ = -1;  // httplib's; it closes it
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::string> bodies_;
  int held_ = 0;
  bool released_ = false;
};

// Completes TCP handshakes (the kernel's backlog) and never reads or answers:
// a backend that hangs.
class SilentListener {
 public:
  SilentListener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sa);
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&sa), len) != 0 || ::listen(fd_, 16) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&sa), &len) != 0)
      return;
    port_ = ntohs(sa.sin_port);
  }
  ~SilentListener() {
    if (fd_ >= 0) ::close(fd_);
  }
  SilentListener(const SilentListener&) = delete;
  SilentListener& operator=(const SilentListener&) = delete;
  uint16_t port() const { return port_; }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

// Threads of this process, from /proc/self/task.
size_t threadCount() {
  size_t n = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator("/proc/self/task")) ++n;
  return n;
}

double msBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

TEST(ModelScraper, ScrapesEveryTargetEveryIntervalAndCountsOk) {
  FakeMetricsServer srv;
  ASSERT_TRUE(srv.ok());
  srv.setBody("a", "vllm:num_requests_waiting 3\nvllm:num_requests_running 2\nvllm:kv_cache_usage_perc 0.5\n");
  srv.setBody("b", "sglang:num_queue_reqs 1\n");
  Recorder rec;
  ModelScraper scraper({.interval = 50ms, .timeout = 500ms, .netns = ""}, rec.sink());
  scraper.setTargets({{1, "127.0.0.1", srv.port(), "/m/a"}, {2, "127.0.0.1", srv.port(), "/m/b"}});
  ASSERT_TRUE(rec.hasAtLeast(1, 3));
  ASSERT_TRUE(rec.hasAtLeast(2, 3));
  for (auto& r : rec.of(1)) {
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_DOUBLE_EQ(r.signals.waiting, 3);
    EXPECT_DOUBLE_EQ(r.signals.running, 2);
    EXPECT_DOUBLE_EQ(r.signals.kvCacheUsage, 0.5);
  }
  auto b = rec.of(2);
  ASSERT_TRUE(b[0].ok) << b[0].error;
  EXPECT_TRUE(b[0].signals.hasWaiting);
  EXPECT_FALSE(b[0].signals.hasRunning);
  // Consecutive scrapes of one target are an interval apart, not back to back.
  auto a = rec.of(1);
  EXPECT_GE(msBetween(a[0].at, a[2].at), 80);
  EXPECT_GE(scraper.scrapesOk(), 6u);
  EXPECT_EQ(scraper.scrapesFailed(), 0u);

  // A new body shows up at the next scrape.
  srv.setBody("a", "vllm:num_requests_waiting 0\nvllm:num_requests_running 0\n");
  EXPECT_TRUE(rec.waitFor(
      [](auto& rs) {
        return !rs.empty() && rs.back().ok && rs.back().id == 1 && rs.back().signals.waiting == 0;
      },
      3s));
}

TEST(ModelScraper, ReportsHttpStatusParseErrorsAndBadTargets) {
  FakeMetricsServer srv;
  ASSERT_TRUE(srv.ok());
  srv.setBody("junk", "up 1\n");
  srv.setBody("bad", "vllm:num_requests_waiting 1\nvllm:num_requests_running{x=\"} 1\n");
  Recorder rec;
  ModelScraper scraper({.interval = 50ms, .timeout = 500ms, .netns = ""}, rec.sink());
  scraper.setTargets({
      {1, "127.0.0.1", srv.port(), "/m/missing"},
      {2, "127.0.0.1", srv.port(), "/m/junk"},
      {3, "127.0.0.1", srv.port(), "/m/bad"},
      {4, "localhost", srv.port(), "/m/junk"},
      {5, "127.0.0.1", srv.port(), "metrics"},
      {6, "127.0.0.1", 0, "/metrics"},
  });
  for (uint32_t id = 1; id <= 6; ++id) ASSERT_TRUE(rec.hasAtLeast(id, 1)) << id;
  const std::map<uint32_t, std::string> want = {
      {1, "http://127.0.0.1:" + std::to_string(srv.port()) + "/m/missing: HTTP status 404"},
      {2, "no known model-server metrics"},
      {3, "line 2: unterminated label value"},
      {4, "'localhost' is not an IP literal"},
      {5, "path 'metrics' must start with '/'"},
      {6, "port 0"},
  };
  for (auto& [id, text] : want) {
    auto r = rec.of(id).front();
    EXPECT_FALSE(r.ok) << id;
    EXPECT_NE(r.error.find(text), std::string::npos) << id << ": " << r.error;
  }
  EXPECT_EQ(scraper.scrapesOk(), 0u);
  EXPECT_GE(scraper.scrapesFailed(), 6u);
}

TEST(ModelScraper, SlowTargetsTimeOutWithoutDelayingOthers) {
  FakeMetricsServer srv;
  ASSERT_TRUE(srv.ok());
  srv.setBody("a", "vllm:num_requests_waiting 1\n");
  Recorder rec;
  ModelScraper scraper({.interval = 400ms, .timeout = 200ms, .netns = ""}, rec.sink());
  scraper.setTargets({{1, "127.0.0.1", srv.port(), "/hold"},
                      {2, "127.0.0.1", srv.port(), "/trickle"},
                      {3, "127.0.0.1", srv.port(), "/m/a"}});
  ASSERT_TRUE(rec.hasAtLeast(1, 2));
  ASSERT_TRUE(rec.hasAtLeast(2, 2));
  ASSERT_TRUE(rec.hasAtLeast(3, 2));
  // The first tick with targets: the fast answer comes at once, the other two
  // at their deadline, and the next tick keeps the interval's cadence.
  auto hold = rec.of(1), trickle = rec.of(2), fast = rec.of(3);
  EXPECT_TRUE(fast[0].ok) << fast[0].error;
  EXPECT_FALSE(hold[0].ok);
  EXPECT_FALSE(trickle[0].ok);
  EXPECT_NE(hold[0].error.find("no complete answer within 200 ms"), std::string::npos) << hold[0].error;
  // The trickle keeps the connection busy; only the deadline cuts it.
  EXPECT_NE(trickle[0].error.find("no complete answer within 200 ms"), std::string::npos) << trickle[0].error;
  EXPECT_LT(fast[0].at, hold[0].at);
  EXPECT_GE(msBetween(fast[0].at, hold[0].at), 150);
  EXPECT_LT(msBetween(fast[0].at, hold[0].at), 200 + 300);
  EXPECT_LT(msBetween(fast[0].at, trickle[0].at), 200 + 300);
  EXPECT_GE(msBetween(fast[0].at, fast[1].at), 350);
  EXPECT_LT(msBetween(fast[0].at, fast[1].at), 400 + 300);
}

TEST(ModelScraper, DestructorCutsAnInFlightScrapeAndReportsNothing) {
  FakeMetricsServer srv;
  ASSERT_TRUE(srv.ok());
  Recorder rec;
  auto scraper = std::make_unique<ModelScraper>(ModelScraper::Options{.interval = 20ms, .timeout = 5s, .netns = ""},
                                                rec.sink());
  scraper->setTargets({{1, "127.0.0.1", srv.port(), "/hold"}});
  ASSERT_TRUE(srv.waitHeld(1, 3s));
  const auto t0 = Clock::now();
  scraper.reset();
  EXPECT_LT(msBetween(t0, Clock::now()), 1000);  // not the 5 s timeout
  EXPECT_EQ(rec.count(1), 0u);

  // And with nothing in flight and a long interval, it does not wait it out.
  auto idle = std::make_unique<ModelScraper>(ModelScraper::Options{.interval = 10s, .timeout = 1s, .netns = ""},
                                             rec.sink());
  std::this_thread::sleep_for(20ms);
  const auto t1 = Clock::now();
  idle.reset();
  EXPECT_LT(msBetween(t1, Clock::now()), 500);
}

TEST(ModelScraper, SetTargetsReplacesTheSetAndDropsResultsOfRemovedTargets) {
  FakeMetricsServer srv;
  ASSERT_TRUE(srv.ok());
  srv.setBody("a", "vllm:num_requests_waiting 1\n");
  srv.setBody("b", "vllm:num_requests_waiting 2\n");
  Recorder rec;
  ModelScraper scraper({.interval = 30ms, .timeout = 3s, .netns = ""}, rec.sink());
  scraper.setTargets({{1, "127.0.0.1", srv.port(), "/m/a"}, {9, "127.0.0.1", srv.port(), "/hold"}});
  ASSERT_TRUE(rec.hasAtLeast(1, 1));
  ASSERT_TRUE(srv.waitHeld(1, 3s));
  // Target 9 is in flight; removing it means its late answer is not reported.
  scraper.setTargets({{2, "127.0.0.1", srv.port(), "/m/b"}});
  srv.release();
  ASSERT_TRUE(rec.hasAtLeast(2, 3));
  const size_t ones = rec.count(1);
  ASSERT_TRUE(rec.hasAtLeast(2, 6));
  EXPECT_EQ(rec.count(1), ones);
  EXPECT_EQ(rec.count(9), 0u);
  for (auto& r : rec.of(2)) EXPECT_DOUBLE_EQ(r.signals.waiting, 2);
}

TEST(ModelScraper, SinkMayCallSetTargets) {
  FakeMetricsServer srv;
  ASSERT_TRUE(srv.ok());
  srv.setBody("a", "vllm:num_requests_waiting 1\n");
  Recorder rec;
  ModelScraper* self = nullptr;
  std::atomic<int> calls{0};
  ModelScraper scraper({.interval = 20ms, .timeout = 1s, .netns = ""}, rec.sink([&](uint32_t) {
    if (++calls == 2) self->setTargets({});
  }));
  self = &scraper;
  scraper.setTargets({{1, "127.0.0.1", srv.port(), "/m/a"}});
  ASSERT_TRUE(rec.hasAtLeast(1, 2));
  std::this_thread::sleep_for(150ms);
  EXPECT_EQ(rec.count(1), 2u);  // the sink runs on the scraper thread, between ticks
}

TEST(ModelScraper, UnjoinableNetnsFailsEveryScrapeWithTheReason) {
  for (const std::string& ns : {std::string("aimesh-no-such-netns-4242"), std::string("../etc")}) {
    SCOPED_TRACE(ns);
    Recorder rec;
    ModelScraper scraper({.interval = 20ms, .timeout = 100ms, .netns = ns}, rec.sink());
    scraper.setTargets({{1, "127.0.0.1", 9, "/metrics"}, {2, "::1", 9, "/metrics"}});
    ASSERT_TRUE(rec.hasAtLeast(1, 2));
    ASSERT_TRUE(rec.hasAtLeast(2, 2));
    for (uint32_t id : {1u, 2u}) {
      auto r = rec.of(id).front();
      EXPECT_FALSE(r.ok);
      EXPECT_NE(r.error.find(ns), std::string::npos) << r.error;
      EXPECT_NE(r.error.find("netns"), std::string::npos) << r.error;
    }
    EXPECT_EQ(scraper.scrapesOk(), 0u);
    EXPECT_GE(scraper.scrapesFailed(), 4u);
  }
}

TEST(ModelScraper, Ipv6LiteralTargetsPlainAndBracketed) {
  if (!std::ifstream("/proc/net/if_inet6")) GTEST_SKIP() << "no IPv6 in this environment";
  FakeMetricsServer srv("::1");
  if (!srv.ok()) GTEST_SKIP() << "cannot bind ::1";
  srv.setBody("a", "vllm:num_requests_running 4\n");
  Recorder rec;
  ModelScraper scraper({.interval = 30ms, .timeout = 1s, .netns = ""}, rec.sink());
  scraper.setTargets({{1, "::1", srv.port(), "/m/a"}, {2, "[::1]", srv.port(), "/m/a"}});
  ASSERT_TRUE(rec.hasAtLeast(1, 1));
  ASSERT_TRUE(rec.hasAtLeast(2, 1));
  for (uint32_t id : {1u, 2u}) {
    auto r = rec.of(id).front();
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_DOUBLE_EQ(r.signals.running, 4);
  }
}

// 32 targets, all at the server at the same moment, and the process has one
// thread more than before the scraper: its own. No thread per target.
TEST(ModelScraper, ScrapesManyTargetsAtOnceOnItsOneThread) {
  constexpr uint32_t kTargets = 32;
  FakeMetricsServer srv("127.0.0.1", kTargets + 8);
  ASSERT_TRUE(srv.ok());
  const size_t before = threadCount();
  Recorder rec;
  ModelScraper scraper({.interval = 10s, .timeout = 5s, .netns = ""}, rec.sink());
  std::vector<ScrapeTarget> targets;
  for (uint32_t id = 1; id <= kTargets; ++id) targets.push_back({id, "127.0.0.1", srv.port(), "/hold"});
  scraper.setTargets(targets);
  ASSERT_TRUE(srv.waitHeld(kTargets, 3s)) << "the 32 requests never were in flight together";
  EXPECT_EQ(threadCount(), before + 1);
  srv.release();
  for (uint32_t id = 1; id <= kTargets; ++id) {
    ASSERT_TRUE(rec.hasAtLeast(id, 1)) << id;
    auto r = rec.of(id).front();
    EXPECT_TRUE(r.ok) << id << ": " << r.error;
    EXPECT_DOUBLE_EQ(r.signals.waiting, 1);
  }
  EXPECT_EQ(scraper.scrapesOk(), kTargets);
  EXPECT_EQ(threadCount(), before + 1);
}

// One silent backend among 31 live ones: the live answers are all in well
// before the timeout, the silent one fails at it, not later.
TEST(ModelScraper, SilentTargetFailsAtItsDeadlineWithoutDelayingThirtyOneOthers) {
  constexpr uint32_t kLive = 31;
  FakeMetricsServer srv("127.0.0.1", kLive + 8);
  ASSERT_TRUE(srv.ok());
  srv.setBody("a", "vllm:num_requests_waiting 2\n");
  SilentListener silent;
  ASSERT_NE(silent.port(), 0);
  Recorder rec;
  ModelScraper scraper({.interval = 10s, .timeout = 500ms, .netns = ""}, rec.sink());
  std::vector<ScrapeTarget> targets{{100, "127.0.0.1", silent.port(), "/metrics"}};
  for (uint32_t id = 1; id <= kLive; ++id) targets.push_back({id, "127.0.0.1", srv.port(), "/m/a"});
  const auto t0 = Clock::now();
  scraper.setTargets(targets);
  ASSERT_TRUE(rec.hasAtLeast(100, 1));
  auto hung = rec.of(100).front();
  EXPECT_FALSE(hung.ok);
  EXPECT_NE(hung.error.find("http://127.0.0.1:" + std::to_string(silent.port()) +
                            "/metrics: no complete answer within 500 ms"),
            std::string::npos)
      << hung.error;
  EXPECT_GE(msBetween(t0, hung.at), 450);
  EXPECT_LT(msBetween(t0, hung.at), 500 + 400);
  for (uint32_t id = 1; id <= kLive; ++id) {
    ASSERT_TRUE(rec.hasAtLeast(id, 1)) << id;
    auto r = rec.of(id).front();
    EXPECT_TRUE(r.ok) << id << ": " << r.error;
    EXPECT_LT(r.at, hung.at) << id;
    EXPECT_LT(msBetween(t0, r.at), 250) << id;  // half the timeout
  }
  EXPECT_EQ(scraper.scrapesOk(), kLive);
  EXPECT_EQ(scraper.scrapesFailed(), 1u);
}

}  // namespace
}  // namespace aimesh
