#include "telemetry/model_scraper.h"

#include <arpa/inet.h>
#include <fcntl.h>
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
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "util/curl.h"
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

// Scrapes in flight at once. They all run on the scraper's one thread, so
// this bounds sockets, not threads: with more targets, the next one starts
// as each ends, and its timeout starts then.
constexpr size_t kMaxParallel = 32;
// Idle keep-alive connections kept between ticks; libcurl closes the least
// recently used beyond this. With more targets than this, connections turn
// over every tick, as they did before they were reused.
constexpr long kMaxKeptConnections = 64;
// vLLM's full exposition with histograms is a few hundred KiB; anything much
// larger is not a model server.
constexpr size_t kMaxBodyBytes = 8u << 20;
// The longest curl_multi_poll() waits. libcurl shortens it to its own next
// timeout and curl_multi_wakeup() ends it, so this is only a backstop.
constexpr int kMaxPollMs = 1000;

bool sameTarget(const ScrapeTarget& a, const ScrapeTarget& b) {
  return a.backendId == b.backendId && a.host == b.host && a.port == b.port && a.path == b.path;
}

// The bare literal, without brackets. Names are refused: a name would need
// getaddrinfo() (libcurl runs it on a thread of its own), and DNS inside a
// joined netns would use the agent's resolv.conf anyway.
Result<std::string> hostLiteral(const std::string& host) {
  std::string h = host;
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  in_addr a4{};
  in6_addr a6{};
  std::string noZone = h.substr(0, h.find('%'));
  if (::inet_pton(AF_INET, h.c_str(), &a4) == 1 || ::inet_pton(AF_INET6, noZone.c_str(), &a6) == 1) return h;
  return Error::fromCode(EINVAL, "scrape target host '" + host + "' is not an IP literal");
}

// The URL in messages.
std::string targetUrl(const ScrapeTarget& t) { return "http://" + formatHostPort(t.host, t.port) + t.path; }

// The URL libcurl fetches: an IPv6 zone's '%' is written "%25" (RFC 6874),
// the one spelling curl's URL parser cannot misread.
std::string fetchUrl(const std::string& literal, const ScrapeTarget& t) {
  std::string host = literal;
  if (auto pct = host.find('%'); pct != std::string::npos) host.replace(pct, 1, "%25");
  return "http://" + formatHostPort(host, t.port) + t.path;
}

Status joinNetns(const std::string& name) {
  if (name.empty()) return {};
  if (name.find('/') != std::string::npos || name == "." || name == "..")
    return Error::fromCode(EINVAL, "bad netns name '" + name + "' (a name under /var/run/netns)");
  const std::string path = "/var/run/netns/" + name;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Error::fromErrno("open netns " + path);
  // Only this thread moves; the agent stays put. Every socket the scraper
  // opens is opened by this thread, so every scrape goes from the netns.
  int rc = ::setns(fd, CLONE_NEWNET);
  int err = errno;
  ::close(fd);
  if (rc != 0) return Error::fromCode(err, "setns(CLONE_NEWNET) " + path);
  return {};
}

// One scrape in flight. libcurl's body callback writes here.
struct Transfer {
  size_t index = 0;  // into the tick's targets
  std::string url;   // targetUrl(), for messages
  CurlEasy easy;
  CurlMultiMember member;  // declared after easy: leaves the multi before easy is freed
  std::string body;
  long status = 0;
  bool tooLarge = false;
  std::array<char, CURL_ERROR_SIZE> err{};
};

size_t onBody(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t len = size * n;
  if (t->status == 0) curl_easy_getinfo(t->easy.get(), CURLINFO_RESPONSE_CODE, &t->status);
  if (t->status != 200) return 0;  // no need to read an error page (ends with CURLE_WRITE_ERROR)
  if (t->body.size() + len > kMaxBodyBytes) {
    t->tooLarge = true;
    return 0;
  }
  t->body.append(data, len);
  return len;
}

// What a finished transfer means.
Result<ModelSignals> outcome(const Transfer& t, CURLcode rc, std::chrono::milliseconds timeout) {
  long status = t.status;
  if (status == 0) curl_easy_getinfo(t.easy.get(), CURLINFO_RESPONSE_CODE, &status);
  if (status != 0 && status != 200) return Error::msg(t.url + ": HTTP status " + std::to_string(status));
  if (t.tooLarge) return Error::msg(t.url + ": body larger than " + std::to_string(kMaxBodyBytes) + " bytes");
  const std::string detail = t.err[0] ? t.err.data() : curl_easy_strerror(rc);
  switch (rc) {
    case CURLE_OK:
      break;
    case CURLE_OPERATION_TIMEDOUT:
      return Error::fromCode(ETIMEDOUT,
                             t.url + ": no complete answer within " + std::to_string(timeout.count()) + " ms");
    case CURLE_COULDNT_CONNECT: {
      long os = 0;  // ECONNREFUSED, ENETUNREACH...: more to the point than curl's text
      curl_easy_getinfo(t.easy.get(), CURLINFO_OS_ERRNO, &os);
      return Error::fromCode(static_cast<int>(os), t.url + ": cannot connect");
    }
    case CURLE_SEND_ERROR:
      return Error::msg(t.url + ": write failed: " + detail);
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
      return Error::msg(t.url + ": read failed: " + detail);
    default:
      return Error::msg(t.url + ": " + detail);
  }
  auto parsed = parseModelMetrics(t.body);
  if (!parsed) return Error::msg(t.url + ": " + parsed.error().message());
  return parsed;
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
  Options opts;
  Sink sink;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<ScrapeTarget> targets;  // guarded by mu
  bool stopping = false;              // guarded by mu
  std::atomic<uint64_t> ok{0}, failed{0};
  std::map<uint32_t, bool> healthy;  // scraper thread only: log on changes
  // libcurl's side, used by the scraper thread only, except that the
  // destructor calls curl_multi_wakeup() (the one multi call libcurl allows
  // from another thread). The multi handle holds the connection cache, so
  // keep-alive connections outlive a tick; spare easy handles keep their
  // options between scrapes. Declared in this order so the easy handles go
  // before the multi and the header list they point at.
  CurlSlist headers;
  CurlMulti multi;
  std::vector<CurlEasy> spare;
  std::thread thread;

  void run();
  void runTick(const std::vector<ScrapeTarget>& snap);
  Result<std::unique_ptr<Transfer>> start(const ScrapeTarget& t, size_t index);
  Result<CurlEasy> newHandle() const;
  void recycle(Transfer& t);
  bool stopRequested();
  void deliver(const ScrapeTarget& t, const Result<ModelSignals>& r);
};

void ModelScraper::Impl::run() {
  ::pthread_setname_np(::pthread_self(), "aimesh-scrape");
  // Before any socket: libcurl opens every one of them on this thread.
  Status ready = joinNetns(opts.netns);
  if (ready && !multi) ready = Error::msg("curl_multi_init failed");
  if (!ready) spdlog::error("model scraper: {}; every scrape will fail", ready.error().message());
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
    if (ready) {
      runTick(snap);
    } else {
      for (const auto& t : snap) deliver(t, ready.error());
    }
    // Fixed cadence from the tick's start; an overrun starts the next at once
    // rather than bursting to catch up.
    next = std::max(start + opts.interval, Clock::now());
    lk.lock();
  }
}

// One tick: every target's GET through the multi handle, up to kMaxParallel
// at a time, each result delivered as soon as it is in. libcurl enforces
// each transfer's timeout, so a dead or silent backend ends at its deadline
// while the others are read as they answer.
void ModelScraper::Impl::runTick(const std::vector<ScrapeTarget>& snap) {
  std::vector<std::unique_ptr<Transfer>> inFlight;
  size_t next = 0;
  for (;;) {
    // Returning drops what is in flight: the transfers leave the multi and
    // their connections close.
    if (stopRequested()) return;
    while (inFlight.size() < kMaxParallel && next < snap.size()) {
      const size_t i = next++;
      auto t = start(snap[i], i);
      if (t) {
        inFlight.push_back(std::move(*t));
      } else {
        deliver(snap[i], t.error());  // a bad target: reported without a request
      }
    }
    if (inFlight.empty()) return;

    int running = 0;
    CURLMcode mc = curl_multi_perform(multi.get(), &running);
    bool ended = false;
    int queued = 0;
    while (CURLMsg* m = curl_multi_info_read(multi.get(), &queued)) {
      if (m->msg != CURLMSG_DONE) continue;
      // *m is libcurl's until the handle leaves the multi: copy first.
      CURL* easy = m->easy_handle;
      const CURLcode rc = m->data.result;
      auto it = std::find_if(inFlight.begin(), inFlight.end(), [&](const auto& t) { return t->easy.get() == easy; });
      if (it == inFlight.end()) continue;
      std::unique_ptr<Transfer> t = std::move(*it);
      inFlight.erase(it);
      auto r = outcome(*t, rc, opts.timeout);
      recycle(*t);
      deliver(snap[t->index], r);
      ended = true;
    }
    if (mc == CURLM_OK && !ended) mc = curl_multi_poll(multi.get(), nullptr, 0, kMaxPollMs, nullptr);
    if (mc != CURLM_OK) {
      // The multi handle itself failed (out of memory): fail this tick's
      // scrapes rather than spin; the next tick tries again.
      const std::string why = std::string("libcurl: ") + curl_multi_strerror(mc);
      for (auto& t : inFlight) deliver(snap[t->index], Error::msg(t->url + ": " + why));
      inFlight.clear();
    }
  }
}

Result<std::unique_ptr<Transfer>> ModelScraper::Impl::start(const ScrapeTarget& t, size_t index) {
  auto tr = std::make_unique<Transfer>();
  tr->index = index;
  tr->url = targetUrl(t);
  auto host = hostLiteral(t.host);
  if (!host) return host.error();
  if (t.port == 0) return Error::fromCode(EINVAL, tr->url + ": port 0");
  if (t.path.empty() || t.path[0] != '/')
    return Error::fromCode(EINVAL, "scrape target path '" + t.path + "' must start with '/'");

  if (spare.empty()) {
    auto h = newHandle();
    if (!h) return Error::msg(tr->url + ": " + h.error().message());
    spare.push_back(std::move(*h));
  }
  tr->easy = std::move(spare.back());
  spare.pop_back();
  CURL* h = tr->easy.get();
  curl_easy_setopt(h, CURLOPT_URL, fetchUrl(*host, t).c_str());  // libcurl copies it
  curl_easy_setopt(h, CURLOPT_WRITEDATA, tr.get());
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, tr->err.data());
  auto member = CurlMultiMember::add(multi.get(), h);
  if (!member) {
    recycle(*tr);
    return Error::msg(tr->url + ": " + member.error().message());
  }
  tr->member = std::move(*member);
  return tr;
}

// The options every scrape shares, set once per handle.
Result<CurlEasy> ModelScraper::Impl::newHandle() const {
  CurlEasy e(curl_easy_init());
  if (!e) return Error::msg("curl_easy_init failed");
  CURL* h = e.get();
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  // The whole scrape: connect, request and body. A server trickling bytes
  // cannot stretch it.
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(opts.timeout.count()));
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, onBody);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(h, CURLOPT_USERAGENT, "aimesh-agent/" AIMESH_VERSION);
  curl_easy_setopt(h, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1));
  curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L);  // the path as configured
  // Targets are pod addresses: an http_proxy in the agent's environment
  // must not send scrapes elsewhere. "" turns proxies off whatever it says.
  curl_easy_setopt(h, CURLOPT_PROXY, "");
  // Reuse a connection from the last tick or the one before, no older: one
  // to a backend that has left the set is closed soon after.
  const auto twoTicks = std::chrono::ceil<std::chrono::seconds>(2 * opts.interval);
  curl_easy_setopt(h, CURLOPT_MAXAGE_CONN, static_cast<long>(std::max<int64_t>(1, twoTicks.count())));
  return e;
}

// Takes t's handle out of the multi (its connection goes back to the cache,
// or is closed if the transfer failed) and keeps it for the next scrape.
void ModelScraper::Impl::recycle(Transfer& t) {
  t.member = {};
  if (!t.easy) return;
  curl_easy_setopt(t.easy.get(), CURLOPT_WRITEDATA, nullptr);
  curl_easy_setopt(t.easy.get(), CURLOPT_ERRORBUFFER, nullptr);
  spare.push_back(std::move(t.easy));
}

bool ModelScraper::Impl::stopRequested() {
  std::lock_guard g(mu);
  return stopping;
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
  curlGlobalInit();
  // Ask for 0.0.4 text explicitly: prometheus_client would otherwise be free
  // to answer in OpenMetrics.
  impl_->headers.reset(curl_slist_append(nullptr, "Accept: text/plain;version=0.0.4;q=1.0,*/*;q=0.1"));
  impl_->multi.reset(curl_multi_init());
  if (impl_->multi) curl_multi_setopt(impl_->multi.get(), CURLMOPT_MAXCONNECTS, kMaxKeptConnections);
  impl_->thread = std::thread([impl = impl_.get()] { impl->run(); });
}

ModelScraper::~ModelScraper() {
  {
    std::lock_guard g(impl_->mu);
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  // Ends a curl_multi_poll() in progress, or the next one at once.
  if (impl_->multi) curl_multi_wakeup(impl_->multi.get());
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
