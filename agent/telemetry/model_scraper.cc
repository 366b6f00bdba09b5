#include "telemetry/model_scraper.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <httplib.h>
#include <pthread.h>
#include <sched.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "util/host_port.h"

namespace aimesh {
namespace {

using Clock = std::chrono::steady_clock;

// ---- parser -----------------------------------------------------------------

// The metric families we read. Order inside each signal is precedence: vLLM
// 0.9+ prints kv_cache_usage_perc and the deprecated gpu_cache_usage_perc side
// by side, so only the first family present is used, never their sum.
enum Family : int {
  kVllmWaiting,
  kSglangWaiting,
  kTgiWaiting,
  kVllmRunning,
  kSglangRunning,
  kTgiRunning,
  kVllmKv,
  kVllmGpuKv,
  kSglangKv,
  kFamilyCount,
};

constexpr std::array<std::string_view, kFamilyCount> kFamilyNames = {
    "vllm:num_requests_waiting", "sglang:num_queue_reqs",    "tgi_queue_size",
    "vllm:num_requests_running", "sglang:num_running_reqs",  "tgi_batch_current_size",
    "vllm:kv_cache_usage_perc",  "vllm:gpu_cache_usage_perc", "sglang:token_usage",
};

constexpr std::array<Family, 3> kWaitingFamilies = {kVllmWaiting, kSglangWaiting, kTgiWaiting};
constexpr std::array<Family, 3> kRunningFamilies = {kVllmRunning, kSglangRunning, kTgiRunning};
constexpr std::array<Family, 3> kKvFamilies = {kVllmKv, kVllmGpuKv, kSglangKv};

struct Accumulator {
  double sum = 0;
  uint64_t samples = 0;  // non-NaN samples
  bool seen = false;     // any sample, NaN included
};

bool isBlank(char c) { return c == ' ' || c == '\t'; }
bool isAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool isDigit(char c) { return c >= '0' && c <= '9'; }
bool isMetricChar(char c, bool first) { return isAlpha(c) || c == '_' || c == ':' || (!first && isDigit(c)); }
bool isLabelChar(char c, bool first) { return isAlpha(c) || c == '_' || (!first && isDigit(c)); }

// Sample values are Go ParseFloat syntax: decimal/exponent, NaN, [+-]Inf
// (any case). from_chars takes all of that except a leading '+'.
std::optional<double> parseValue(std::string_view tok) {
  std::string_view body = tok;
  if (!body.empty() && body[0] == '+') body.remove_prefix(1);
  if (body.empty() || body[0] == '+') return std::nullopt;
  if (body[0] == '-' && body.size() > 1 && body[1] == '+') return std::nullopt;
  double v = 0;
  auto [end, ec] = std::from_chars(body.data(), body.data() + body.size(), v);
  if (ec != std::errc() || end != body.data() + body.size()) return std::nullopt;
  return v;
}

bool parseTimestamp(std::string_view tok) {
  if (!tok.empty() && (tok[0] == '+' || tok[0] == '-')) tok.remove_prefix(1);
  if (tok.empty()) return false;
  int64_t ts = 0;
  auto [end, ec] = std::from_chars(tok.data(), tok.data() + tok.size(), ts);
  return ec == std::errc() && end == tok.data() + tok.size();
}

// One line of the exposition, consumed left to right.
class LineCursor {
 public:
  explicit LineCursor(std::string_view s) : s_(s) {}
  bool atEnd() const { return i_ >= s_.size(); }
  char peek() const { return atEnd() ? '\0' : s_[i_]; }
  void skipBlanks() {
    while (!atEnd() && isBlank(s_[i_])) ++i_;
  }
  std::string_view token() {  // up to the next blank
    size_t start = i_;
    while (!atEnd() && !isBlank(s_[i_])) ++i_;
    return s_.substr(start, i_ - start);
  }
  template <typename Pred>
  std::string_view name(Pred isNameChar) {
    size_t start = i_;
    while (!atEnd() && isNameChar(s_[i_], i_ == start)) ++i_;
    return s_.substr(start, i_ - start);
  }
  bool consume(char c) {
    if (peek() != c) return false;
    ++i_;
    return true;
  }
  // A quoted label value; the opening quote is already consumed. Text format
  // 0.0.4 allows exactly three escapes: \\, \" and \n.
  std::string labelValue(std::string& err) {
    std::string out;
    while (!atEnd()) {
      char c = s_[i_++];
      if (c == '"') return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (atEnd()) break;
      char e = s_[i_++];
      if (e == '\\' || e == '"') {
        out += e;
      } else if (e == 'n') {
        out += '\n';
      } else {
        err = std::string("invalid escape '\\") + e + "' in label value";
        return out;
      }
    }
    err = "unterminated label value";
    return out;
  }

 private:
  std::string_view s_;
  size_t i_ = 0;
};

struct Sample {
  std::string_view name;
  double value = 0;
};

// Empty string on success, else what is wrong with the line.
std::string parseSample(std::string_view line, Sample& out) {
  LineCursor c(line);
  c.skipBlanks();
  out.name = c.name(isMetricChar);
  if (out.name.empty()) return "expected a metric name";
  bool hadBlank = isBlank(c.peek());
  c.skipBlanks();
  if (c.consume('{')) {
    for (;;) {
      c.skipBlanks();
      if (c.consume('}')) break;  // "{}" and a trailing comma are legal
      if (c.name(isLabelChar).empty()) return "expected a label name";
      c.skipBlanks();
      if (!c.consume('=')) return "expected '=' after label name";
      c.skipBlanks();
      if (!c.consume('"')) return "label value must be in double quotes";
      std::string err;
      c.labelValue(err);
      if (!err.empty()) return err;
      c.skipBlanks();
      if (c.consume(',')) continue;
      if (c.consume('}')) break;
      return "expected ',' or '}' after label value";
    }
    hadBlank = true;  // "name{...}1" is accepted, as Prometheus does
    c.skipBlanks();
  }
  if (c.atEnd()) return "missing value";
  if (!hadBlank) return "invalid character after metric name";
  std::string_view valueTok = c.token();
  auto v = parseValue(valueTok);
  if (!v) return "invalid value '" + std::string(valueTok) + "'";
  out.value = *v;
  c.skipBlanks();
  if (c.atEnd()) return "";
  std::string_view tsTok = c.token();
  if (!parseTimestamp(tsTok)) return "invalid timestamp '" + std::string(tsTok) + "'";
  c.skipBlanks();
  if (!c.atEnd()) return "unexpected text after timestamp";
  return "";
}

// "# HELP name ..." and "# TYPE name type" are checked; other '#' lines are
// comments. OpenMetrics type names are allowed in case a server ignores our
// Accept header.
std::string parseComment(std::string_view line) {
  LineCursor c(line);
  c.skipBlanks();
  c.consume('#');
  c.skipBlanks();
  std::string_view keyword = c.token();
  if (keyword != "HELP" && keyword != "TYPE") return "";
  c.skipBlanks();
  if (c.name(isMetricChar).empty() || !(c.atEnd() || isBlank(c.peek())))
    return "# " + std::string(keyword) + " needs a valid metric name";
  if (keyword == "HELP") return "";
  c.skipBlanks();
  std::string_view type = c.token();
  static constexpr std::array<std::string_view, 9> kTypes = {
      "counter", "gauge", "histogram", "summary", "untyped", "unknown", "info", "stateset", "gaugehistogram"};
  if (std::find(kTypes.begin(), kTypes.end(), type) == kTypes.end())
    return "unknown metric type '" + std::string(type) + "'";
  c.skipBlanks();
  if (!c.atEnd()) return "unexpected text after metric type";
  return "";
}

std::string excerpt(std::string_view line) {
  constexpr size_t kMax = 120;
  if (line.size() <= kMax) return std::string(line);
  return std::string(line.substr(0, kMax)) + "...";
}

// ---- scraper helpers --------------------------------------------------------

constexpr size_t kMaxParallel = 32;
// vLLM's full exposition with histograms is a few hundred KiB; anything much
// larger is not a model server.
constexpr size_t kMaxBodyBytes = 8u << 20;

bool sameTarget(const ScrapeTarget& a, const ScrapeTarget& b) {
  return a.backendId == b.backendId && a.host == b.host && a.port == b.port && a.path == b.path;
}

// The bare literal for httplib (it brackets IPv6 itself in the Host header).
// Names are refused: getaddrinfo() has no timeout, and DNS inside a joined
// netns would use the agent's resolv.conf anyway.
Result<std::string> hostLiteral(const std::string& host) {
  std::string h = host;
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  in_addr a4{};
  in6_addr a6{};
  std::string noZone = h.substr(0, h.find('%'));
  if (::inet_pton(AF_INET, h.c_str(), &a4) == 1 || ::inet_pton(AF_INET6, noZone.c_str(), &a6) == 1) return h;
  return Error::fromCode(EINVAL, "scrape target host '" + host + "' is not an IP literal");
}

std::string targetUrl(const ScrapeTarget& t) { return "http://" + formatHostPort(t.host, t.port) + t.path; }

std::string describe(httplib::Error e) {
  switch (e) {
    case httplib::Error::Connection:
      return "cannot connect";
    case httplib::Error::ConnectionTimeout:
      return "connect timed out";
    case httplib::Error::Read:
      return "read failed";
    case httplib::Error::Write:
      return "write failed";
    default:
      return httplib::to_string(e);
  }
}

Status joinNetns(const std::string& name) {
  if (name.empty()) return {};
  if (name.find('/') != std::string::npos || name == "." || name == "..")
    return Error::fromCode(EINVAL, "bad netns name '" + name + "' (a name under /var/run/netns)");
  const std::string path = "/var/run/netns/" + name;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Error::fromErrno("open netns " + path);
  // Only this thread (and threads it creates) moves; the agent stays put.
  int rc = ::setns(fd, CLONE_NEWNET);
  int err = errno;
  ::close(fd);
  if (rc != 0) return Error::fromCode(err, "setns(CLONE_NEWNET) " + path);
  return {};
}

}  // namespace

Result<ModelSignals> parseModelMetrics(std::string_view text) {
  std::array<Accumulator, kFamilyCount> acc{};
  size_t lineNo = 0;
  for (size_t pos = 0; pos <= text.size();) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    std::string_view line = text.substr(pos, nl - pos);
    pos = nl + 1;
    ++lineNo;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    size_t first = line.find_first_not_of(" \t");
    if (first == std::string_view::npos) continue;
    std::string err;
    if (line[first] == '#') {
      err = parseComment(line);
    } else {
      Sample s;
      err = parseSample(line, s);
      if (err.empty()) {
        auto it = std::find(kFamilyNames.begin(), kFamilyNames.end(), s.name);
        if (it != kFamilyNames.end()) {
          auto& a = acc[it - kFamilyNames.begin()];
          a.seen = true;
          if (!std::isnan(s.value)) {
            a.sum += s.value;
            ++a.samples;
          }
        }
      }
    }
    if (!err.empty()) return Error::msg("line " + std::to_string(lineNo) + ": " + err + ": " + excerpt(line));
  }

  ModelSignals out;
  auto pick = [&](const auto& families, double& value, bool& has, bool mean) {
    for (Family f : families) {
      if (acc[f].samples == 0) continue;
      value = mean ? acc[f].sum / static_cast<double>(acc[f].samples) : acc[f].sum;
      has = true;
      return;
    }
  };
  pick(kWaitingFamilies, out.waiting, out.hasWaiting, false);
  pick(kRunningFamilies, out.running, out.hasRunning, false);
  // A fraction per engine: the mean keeps it a fraction of the whole server.
  pick(kKvFamilies, out.kvCacheUsage, out.hasKvCache, true);
  if (out.hasWaiting || out.hasRunning || out.hasKvCache) return out;

  bool seen = std::any_of(acc.begin(), acc.end(), [](const Accumulator& a) { return a.seen; });
  if (seen) return Error::msg("known model-server metrics present but every sample is NaN");
  std::string names;
  for (auto n : kFamilyNames) names += (names.empty() ? "" : ", ") + std::string(n);
  return Error::msg("no known model-server metrics in the body (looked for " + names + ")");
}

// ---- ModelScraper -----------------------------------------------------------

struct ModelScraper::Impl {
  // One tick's bookkeeping, shared by the scraper thread and its workers
  // under `mu`.
  struct InFlight {
    std::shared_ptr<httplib::Client> client;  // set while its request runs
    Clock::time_point deadline;
    bool cut = false;  // stop() called on it
  };
  struct Tick {
    explicit Tick(size_t n) : slots(n) {}
    std::vector<InFlight> slots;
    std::deque<std::pair<size_t, Result<ModelSignals>>> done;
    std::atomic<size_t> next{0};
  };

  Options opts;
  Sink sink;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<ScrapeTarget> targets;  // guarded by mu
  bool stopping = false;              // guarded by mu
  std::atomic<uint64_t> ok{0}, failed{0};
  std::map<uint32_t, bool> healthy;  // scraper thread only: log on changes
  std::thread thread;

  void run();
  void runTick(const std::vector<ScrapeTarget>& snap);
  void work(const std::vector<ScrapeTarget>& snap, Tick& tick);
  Result<ModelSignals> scrape(const ScrapeTarget& t, InFlight& slot);
  void deliver(const ScrapeTarget& t, const Result<ModelSignals>& r);
};

void ModelScraper::Impl::run() {
  ::pthread_setname_np(::pthread_self(), "aimesh-scrape");
  // Before any socket: workers created below inherit this thread's netns.
  Status ns = joinNetns(opts.netns);
  if (!ns) spdlog::error("model scraper: {}; every scrape will fail", ns.error().message());
  auto next = Clock::now();
  bool idle = true;  // the last tick had no targets
  std::unique_lock lk(mu);
  for (;;) {
    // An idle scraper starts as soon as it is given targets (the agent sets
    // them right after construction); otherwise keep the cadence.
    cv.wait_until(lk, next, [&] { return stopping || (idle && !targets.empty()); });
    if (stopping) return;
    std::vector<ScrapeTarget> snap = targets;
    idle = snap.empty();
    lk.unlock();
    std::erase_if(healthy, [&](const auto& kv) {
      return std::none_of(snap.begin(), snap.end(), [&](const ScrapeTarget& t) { return t.backendId == kv.first; });
    });
    const auto start = Clock::now();
    if (ns) {
      runTick(snap);
    } else {
      for (const auto& t : snap) deliver(t, ns.error());
    }
    // Fixed cadence from the tick's start; an overrun starts the next at once
    // rather than bursting to catch up.
    next = std::max(start + opts.interval, Clock::now());
    lk.lock();
  }
}

void ModelScraper::Impl::runTick(const std::vector<ScrapeTarget>& snap) {
  const size_t n = snap.size();
  if (n == 0) return;
  Tick tick(n);
  std::vector<std::thread> workers;
  try {
    for (size_t i = 0; i < std::min(n, kMaxParallel); ++i) workers.emplace_back([&] { work(snap, tick); });
  } catch (const std::system_error& e) {
    spdlog::warn("model scraper: cannot start worker thread: {}", e.what());
  }
  if (workers.empty()) work(snap, tick);  // sequential, still bounded per target

  size_t delivered = 0;
  std::unique_lock lk(mu);
  while (delivered < n && !stopping) {
    if (!tick.done.empty()) {
      auto [i, r] = std::move(tick.done.front());
      tick.done.pop_front();
      lk.unlock();
      deliver(snap[i], r);
      ++delivered;
      lk.lock();
      continue;
    }
    // httplib's own timeouts apply per connect and per read; cut a request
    // at its deadline so a server trickling bytes cannot hold it longer.
    const auto now = Clock::now();
    auto wake = Clock::time_point::max();
    std::vector<std::shared_ptr<httplib::Client>> overdue;
    for (auto& s : tick.slots) {
      if (!s.client || s.cut) continue;
      if (s.deadline <= now) {
        s.cut = true;
        overdue.push_back(s.client);
      } else {
        wake = std::min(wake, s.deadline);
      }
    }
    if (!overdue.empty()) {
      lk.unlock();  // stop() can wait for a connect() in progress
      for (auto& c : overdue) c->stop();
      lk.lock();
      continue;
    }
    if (wake == Clock::time_point::max()) {
      cv.wait(lk);
    } else {
      cv.wait_until(lk, wake);
    }
  }
  if (stopping) {
    std::vector<std::shared_ptr<httplib::Client>> live;
    for (auto& s : tick.slots)
      if (s.client) {
        s.cut = true;
        live.push_back(s.client);
      }
    lk.unlock();
    for (auto& c : live) c->stop();
  } else {
    lk.unlock();
  }
  for (auto& w : workers) w.join();
}

void ModelScraper::Impl::work(const std::vector<ScrapeTarget>& snap, Tick& tick) {
  for (;;) {
    const size_t i = tick.next.fetch_add(1);
    if (i >= snap.size()) return;
    auto r = scrape(snap[i], tick.slots[i]);
    {
      std::lock_guard g(mu);
      tick.done.emplace_back(i, std::move(r));
    }
    cv.notify_all();
  }
}

Result<ModelSignals> ModelScraper::Impl::scrape(const ScrapeTarget& t, InFlight& slot) {
  const std::string url = targetUrl(t);
  auto host = hostLiteral(t.host);
  if (!host) return host.error();
  if (t.port == 0) return Error::fromCode(EINVAL, url + ": port 0");
  if (t.path.empty() || t.path[0] != '/')
    return Error::fromCode(EINVAL, "scrape target path '" + t.path + "' must start with '/'");

  auto cli = std::make_shared<httplib::Client>(*host, t.port);
  cli->set_connection_timeout(opts.timeout);
  cli->set_read_timeout(opts.timeout);
  cli->set_write_timeout(opts.timeout);
  cli->set_keep_alive(false);
  cli->set_follow_location(false);
  const auto deadline = Clock::now() + opts.timeout;
  {
    std::lock_guard g(mu);
    if (stopping) return Error::msg(url + ": scraper stopping");
    slot.client = cli;
    slot.deadline = deadline;
  }
  cv.notify_all();  // the scraper thread now has a deadline to watch

  // Ask for 0.0.4 text explicitly: prometheus_client would otherwise be free
  // to answer in OpenMetrics.
  const httplib::Headers headers{{"Accept", "text/plain;version=0.0.4;q=1.0,*/*;q=0.1"},
                                 {"User-Agent", "aimesh-agent/" AIMESH_VERSION}};
  int status = 0;
  bool tooLarge = false;
  std::string body;
  auto res = cli->Get(
      t.path, headers,
      [&](const httplib::Response& r) {
        status = r.status;
        return r.status == 200;  // no need to read an error page
      },
      [&](const char* data, size_t len) {
        if (body.size() + len > kMaxBodyBytes) {
          tooLarge = true;
          return false;
        }
        body.append(data, len);
        return Clock::now() < deadline;
      });
  bool cut = false;
  {
    std::lock_guard g(mu);
    slot.client.reset();
    cut = slot.cut;
  }
  if (!res) {
    if (status != 0 && status != 200) return Error::msg(url + ": HTTP status " + std::to_string(status));
    if (tooLarge) return Error::msg(url + ": body larger than " + std::to_string(kMaxBodyBytes) + " bytes");
    if (cut || Clock::now() >= deadline)
      return Error::fromCode(ETIMEDOUT, url + ": no complete answer within " + std::to_string(opts.timeout.count()) +
                                            " ms");
    return Error::msg(url + ": " + describe(res.error()));
  }
  auto parsed = parseModelMetrics(body);
  if (!parsed) return Error::msg(url + ": " + parsed.error().message());
  return parsed;
}

void ModelScraper::Impl::deliver(const ScrapeTarget& t, const Result<ModelSignals>& r) {
  {
    std::lock_guard g(mu);
    if (stopping) return;
    (r.ok() ? ok : failed).fetch_add(1, std::memory_order_relaxed);
    // A backend removed while its scrape was in flight gets no result: the
    // sink must not bring back state the agent has just dropped.
    if (std::none_of(targets.begin(), targets.end(), [&](const ScrapeTarget& c) { return sameTarget(c, t); }))
      return;
  }
  auto [it, fresh] = healthy.try_emplace(t.backendId, true);
  if (!r.ok() && (it->second || fresh)) {
    spdlog::warn("model scraper: backend {}: {}", t.backendId, r.error().message());
  } else if (r.ok() && !it->second) {
    spdlog::info("model scraper: backend {}: {} answers again", t.backendId, targetUrl(t));
  }
  it->second = r.ok();
  if (sink) sink(t.backendId, r);
}

ModelScraper::ModelScraper(Options opts, Sink sink) : impl_(std::make_unique<Impl>()) {
  using std::chrono::milliseconds;
  opts.interval = std::max(opts.interval, milliseconds(10));
  opts.timeout = std::max(opts.timeout, milliseconds(1));
  impl_->opts = std::move(opts);
  impl_->sink = std::move(sink);
  impl_->thread = std::thread([impl = impl_.get()] { impl->run(); });
}

ModelScraper::~ModelScraper() {
  {
    std::lock_guard g(impl_->mu);
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
}

void ModelScraper::setTargets(std::vector<ScrapeTarget> targets) {
  {
    std::lock_guard g(impl_->mu);
    impl_->targets = std::move(targets);
  }
  impl_->cv.notify_all();
}

uint64_t ModelScraper::scrapesOk() const { return impl_->ok.load(std::memory_order_relaxed); }
uint64_t ModelScraper::scrapesFailed() const { return impl_->failed.load(std::memory_order_relaxed); }

}  // namespace aimesh
