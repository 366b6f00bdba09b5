// The metrics listener's bounds, each broken by a raw-socket client on
// loopback: method and path allow-list, request head size and header count,
// request bodies, slow senders (slowloris), slow readers, idle keep-alive
// connections and the connection limit; and ordinary GETs still answered
// afterwards. docs/security.md lists the bounds.
#include "telemetry/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace aimesh {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

long long msSince(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

// A raw TCP client to 127.0.0.1:port. Every wait is bounded.
class RawConn {
 public:
  explicit RawConn(int port, int rcvbuf = 0) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (rcvbuf > 0) ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons(static_cast<uint16_t>(port));
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0;
  }
  ~RawConn() {
    if (fd_ >= 0) ::close(fd_);
  }
  RawConn(const RawConn&) = delete;
  RawConn& operator=(const RawConn&) = delete;
  bool connected() const { return connected_; }

  // False once the peer has closed or reset (or 2 s pass without progress).
  bool send(const std::string& data) {
    std::size_t off = 0;
    while (off < data.size()) {
      pollfd p{fd_, POLLOUT, 0};
      if (::poll(&p, 1, 2000) <= 0) return false;
      ssize_t n = ::send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (n <= 0) return false;
      off += static_cast<std::size_t>(n);
    }
    return true;
  }

  // Reads until the peer closes (EOF or reset) or `limit` passes; `closed`
  // says which.
  std::string readUntilClosed(std::chrono::milliseconds limit, bool* closed = nullptr) {
    std::string out;
    auto deadline = Clock::now() + limit;
    bool eof = false;
    while (!eof) {
      auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) break;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left)) <= 0) break;
      char buf[16384];
      ssize_t n = ::recv(fd_, buf, sizeof(buf), MSG_DONTWAIT);
      if (n > 0) {
        out.append(buf, static_cast<std::size_t>(n));
      } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        eof = true;
      }
    }
    if (closed) *closed = eof;
    return out;
  }

  // Reads one response (head + Content-Length body, none for HEAD), or what
  // arrived within `limit`.
  std::string readResponse(std::chrono::milliseconds limit = 2000ms, bool head = false) {
    auto deadline = Clock::now() + limit;
    for (;;) {
      auto end = pending_.find("\r\n\r\n");
      if (end != std::string::npos) {
        std::size_t need = end + 4;
        auto cl = pending_.find("Content-Length: ");
        if (!head && cl != std::string::npos && cl < end) need += std::stoul(pending_.substr(cl + 16));
        if (pending_.size() >= need) {
          std::string r = pending_.substr(0, need);
          pending_.erase(0, need);
          return r;
        }
      }
      auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
      pollfd p{fd_, POLLIN, 0};
      if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) <= 0) break;
      char buf[16384];
      ssize_t n = ::recv(fd_, buf, sizeof(buf), MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) break;
      if (n > 0) pending_.append(buf, static_cast<std::size_t>(n));
    }
    return std::exchange(pending_, {});
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  std::string pending_;
};

int statusOf(const std::string& response) {
  if (response.rfind("HTTP/1.1 ", 0) != 0 || response.size() < 12) return 0;
  return std::stoi(response.substr(9, 3));
}

std::string bodyOf(const std::string& response) {
  auto end = response.find("\r\n\r\n");
  return end == std::string::npos ? std::string() : response.substr(end + 4);
}

std::string get(const std::string& path, const std::string& extra = "") {
  return "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra + "\r\n";
}

class HttpServerLimits : public ::testing::Test {
 protected:
  void start(HttpServerOptions opts = {}, std::function<std::string()> metrics = {}) {
    if (!metrics) metrics = [this] {
        ++scrapes_;
        return std::string("aimesh_services 2\n");
      };
    auto s = HttpServer::start("127.0.0.1:0",
                               HttpHandlers{metrics, [] { return true; },
                                            [] { return std::string("# EOF\n"); }},
                               opts);
    ASSERT_TRUE(s) << s.error().message();
    server_.emplace(std::move(s.value()));
  }
  int port() const { return server_->port(); }

  // One GET on a fresh connection that asks to close; the whole response.
  std::string fetch(const std::string& path) {
    RawConn c(port());
    if (!c.send(get(path, "Connection: close\r\n"))) return {};
    return c.readUntilClosed(2000ms);
  }
  // Ordinary GETs still work (retries for up to 2 s while connection
  // threads of an earlier test step wind down).
  bool stillServes() {
    auto until = Clock::now() + 2s;
    while (Clock::now() < until) {
      std::string r = fetch("/healthz");
      if (statusOf(r) == 200 && bodyOf(r) == "ok\n") return true;
      std::this_thread::sleep_for(20ms);
    }
    return false;
  }

  std::atomic<int> scrapes_{0};
  std::optional<HttpServer> server_;
};

// Which /metrics format an Accept header gets: the highest q among those
// the server has (ties: the first listed), protobuf only with Prometheus'
// parameters, the text format for anything else.
TEST(MetricsNegotiation, HighestQualityAmongWhatTheServerHas) {
  using F = MetricsFormat;
  // Prometheus 2.42 with --enable-feature=native-histograms, and without.
  const char* nativeProm =
      "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,"
      "text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
  const char* classicProm =
      "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
      "text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
  EXPECT_EQ(negotiateMetricsFormat(nativeProm, true, true), F::kProtobuf);
  EXPECT_EQ(negotiateMetricsFormat(nativeProm, true, false), F::kText);
  EXPECT_EQ(negotiateMetricsFormat(classicProm, true, true), F::kOpenMetrics);
  EXPECT_EQ(negotiateMetricsFormat(classicProm, false, true), F::kText);
  EXPECT_EQ(negotiateMetricsFormat("", true, true), F::kText);
  EXPECT_EQ(negotiateMetricsFormat("*/*", true, true), F::kText);
  // Protobuf needs the MetricFamily and delimited parameters.
  EXPECT_EQ(negotiateMetricsFormat("application/vnd.google.protobuf", true, true), F::kText);
  EXPECT_EQ(negotiateMetricsFormat("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
                                   "encoding=text",
                                   true, true),
            F::kText);
  // q decides, then the order; q=0 is "not acceptable".
  EXPECT_EQ(negotiateMetricsFormat("text/plain;q=0.9, application/openmetrics-text;q=0.5", true, true), F::kText);
  EXPECT_EQ(negotiateMetricsFormat("application/openmetrics-text;q=0, text/plain;q=0.1", true, true), F::kText);
  EXPECT_EQ(negotiateMetricsFormat("Application/OpenMetrics-Text ; Q=1", true, true), F::kOpenMetrics);
  EXPECT_STREQ(metricsContentType(F::kProtobuf),
               "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited");
}

TEST_F(HttpServerLimits, GetAndHeadOfTheThreePaths) {
  start();
  std::string m = fetch("/metrics?x=1");  // query strings are ignored
  EXPECT_EQ(statusOf(m), 200) << m;
  EXPECT_EQ(bodyOf(m), "aimesh_services 2\n");
  EXPECT_NE(m.find("Content-Type: text/plain; version=0.0.4"), std::string::npos) << m;
  EXPECT_EQ(statusOf(fetch("/healthz")), 200);
  EXPECT_EQ(statusOf(fetch("/readyz")), 200);

  RawConn om(port());
  ASSERT_TRUE(om.send(get("/metrics", "Accept: application/openmetrics-text; version=1.0.0\r\n")));
  std::string r = om.readResponse();
  EXPECT_EQ(statusOf(r), 200) << r;
  EXPECT_EQ(bodyOf(r), "# EOF\n");

  // HEAD: the GET's headers, no body.
  RawConn h(port());
  ASSERT_TRUE(h.send("HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
  std::string head = h.readUntilClosed(2000ms);
  EXPECT_EQ(statusOf(head), 200) << head;
  EXPECT_NE(head.find("Content-Length: 18\r\n"), std::string::npos) << head;
  EXPECT_EQ(bodyOf(head), "");
}

TEST_F(HttpServerLimits, UnknownPathIs404) {
  start();
  for (const char* path : {"/", "/metrics/", "/debug/pprof", "/../etc/passwd", "/healthzz"}) {
    std::string r = fetch(path);
    EXPECT_EQ(statusOf(r), 404) << path << ": " << r;
  }
  EXPECT_EQ(scrapes_.load(), 0);
}

TEST_F(HttpServerLimits, OtherMethodsAre405AndClose) {
  start();
  for (const char* method : {"POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"}) {
    RawConn c(port());
    ASSERT_TRUE(c.send(std::string(method) + " /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcd"));
    bool closed = false;
    std::string r = c.readUntilClosed(2000ms, &closed);
    EXPECT_EQ(statusOf(r), 405) << method << ": " << r;
    EXPECT_NE(r.find("Allow: GET, HEAD\r\n"), std::string::npos) << r;
    EXPECT_TRUE(closed) << method;
  }
  EXPECT_EQ(scrapes_.load(), 0);
  EXPECT_TRUE(stillServes());
}

TEST_F(HttpServerLimits, RequestBodyIs413) {
  start();
  for (const char* framing : {"Content-Length: 5\r\n", "Transfer-Encoding: chunked\r\n"}) {
    RawConn c(port());
    ASSERT_TRUE(c.send(get("/metrics", framing) + "hello"));
    bool closed = false;
    std::string r = c.readUntilClosed(2000ms, &closed);
    EXPECT_EQ(statusOf(r), 413) << framing << r;
    EXPECT_TRUE(closed);
  }
  EXPECT_EQ(scrapes_.load(), 0);
  // Content-Length: 0 is no body.
  RawConn ok(port());
  ASSERT_TRUE(ok.send(get("/healthz", "Content-Length: 0\r\n")));
  EXPECT_EQ(statusOf(ok.readResponse()), 200);
}

TEST_F(HttpServerLimits, OversizedRequestLineIs414) {
  start();
  RawConn c(port());
  auto t0 = Clock::now();
  // 20 KiB of URL, no end of line: the server answers once it holds 8 KiB.
  c.send("GET /metrics?" + std::string(20 * 1024, 'a'));
  bool closed = false;
  std::string r = c.readUntilClosed(2000ms, &closed);
  EXPECT_EQ(statusOf(r), 414) << r.substr(0, 200);
  EXPECT_TRUE(closed);
  EXPECT_LT(msSince(t0), 1500);
  EXPECT_EQ(scrapes_.load(), 0);
  EXPECT_TRUE(stillServes());
}

TEST_F(HttpServerLimits, OversizedHeadersAre431) {
  start();
  RawConn c(port());
  std::string req = "GET /metrics HTTP/1.1\r\nHost: x\r\n";
  for (int i = 0; req.size() <= HttpServerOptions::kMaxHeaderBytes; ++i) {
    req += "X-Pad-" + std::to_string(i) + ": " + std::string(500, 'p') + "\r\n";
  }
  req += "\r\n";
  c.send(req);
  bool closed = false;
  std::string r = c.readUntilClosed(2000ms, &closed);
  EXPECT_EQ(statusOf(r), 431) << r.substr(0, 200);
  EXPECT_TRUE(closed);
  EXPECT_EQ(scrapes_.load(), 0);

  // A head just under the limit is served.
  RawConn fits(port());
  std::string small = "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: ";
  small += std::string(HttpServerOptions::kMaxHeaderBytes - small.size() - 4, 'p') + "\r\n\r\n";
  ASSERT_EQ(small.size(), HttpServerOptions::kMaxHeaderBytes);
  ASSERT_TRUE(fits.send(small));
  EXPECT_EQ(statusOf(fits.readResponse()), 200);
}

TEST_F(HttpServerLimits, TooManyHeadersAre431) {
  start();
  auto withHeaders = [](std::size_t n) {
    std::string req = "GET /metrics HTTP/1.1\r\n";
    for (std::size_t i = 0; i < n; ++i) req += "a" + std::to_string(i) + ":b\r\n";
    return req + "\r\n";
  };
  RawConn over(port());
  ASSERT_TRUE(over.send(withHeaders(HttpServerOptions::kMaxHeaders + 1)));
  bool closed = false;
  std::string r = over.readUntilClosed(2000ms, &closed);
  EXPECT_EQ(statusOf(r), 431) << r;
  EXPECT_TRUE(closed);
  EXPECT_EQ(scrapes_.load(), 0);

  RawConn at(port());
  ASSERT_TRUE(at.send(withHeaders(HttpServerOptions::kMaxHeaders)));
  EXPECT_EQ(statusOf(at.readResponse()), 200);
}

TEST_F(HttpServerLimits, MalformedRequestsAre400Or505) {
  start();
  struct Case {
    std::string request;
    int status;
  };
  for (const Case& c : {Case{"garbage\r\n\r\n", 400}, Case{"GET\r\n\r\n", 400},
                        Case{"GET  /metrics HTTP/1.1\r\n\r\n", 400}, Case{"GET metrics HTTP/1.1\r\n\r\n", 400},
                        Case{"GET /metrics HTTP/1.1\r\nno colon\r\n\r\n", 400},
                        Case{"GET /metrics HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 400},
                        Case{"GET /metrics HTTP/2.0\r\n\r\n", 505}}) {
    RawConn conn(port());
    ASSERT_TRUE(conn.send(c.request));
    std::string r = conn.readUntilClosed(2000ms);
    EXPECT_EQ(statusOf(r), c.status) << c.request << " -> " << r;
  }
  EXPECT_EQ(scrapes_.load(), 0);
  EXPECT_TRUE(stillServes());
}

// Slowloris: a header line that never ends, one byte every 200 ms. The
// timeout covers the whole head, so the trickle does not extend it.
TEST_F(HttpServerLimits, SlowlorisIsCutAtTheRequestTimeout) {
  HttpServerOptions opts;
  opts.requestTimeout = 1000ms;
  start(opts);
  RawConn c(port());
  ASSERT_TRUE(c.connected());
  auto t0 = Clock::now();
  ASSERT_TRUE(c.send("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: "));
  bool closed = false;
  std::string got;
  while (!closed && msSince(t0) < 5000) {
    std::this_thread::sleep_for(200ms);
    bool sent = c.send("a");  // fails once the server has closed
    got += c.readUntilClosed(10ms, &closed);
    closed = closed || !sent;
  }
  long long took = msSince(t0);
  EXPECT_TRUE(closed) << "still open after " << took << " ms";
  EXPECT_GE(took, 800);
  EXPECT_LT(took, 2500);
  if (!got.empty()) {
    EXPECT_EQ(statusOf(got), 408) << got;
  }
  EXPECT_EQ(scrapes_.load(), 0);
  EXPECT_TRUE(stillServes());
}

TEST_F(HttpServerLimits, SilentAndIdleKeepAliveConnectionsAreClosed) {
  HttpServerOptions opts;
  opts.requestTimeout = 1000ms;
  start(opts);
  // Connects and never sends.
  RawConn silent(port());
  // One request on a keep-alive connection, then idle.
  RawConn idle(port());
  ASSERT_TRUE(idle.send(get("/healthz")));
  std::string r = idle.readResponse();
  ASSERT_EQ(statusOf(r), 200) << r;
  EXPECT_NE(r.find("Connection: keep-alive"), std::string::npos) << r;
  auto t0 = Clock::now();
  bool closedSilent = false, closedIdle = false;
  silent.readUntilClosed(3000ms, &closedSilent);
  idle.readUntilClosed(3000ms, &closedIdle);
  EXPECT_TRUE(closedSilent);
  EXPECT_TRUE(closedIdle);
  EXPECT_LT(msSince(t0), 2500);
}

TEST_F(HttpServerLimits, KeepAliveServesPipelinedRequestsUpToTheLimit) {
  HttpServerOptions opts;
  opts.maxRequestsPerConnection = 3;
  start(opts);
  RawConn c(port());
  ASSERT_TRUE(c.send(get("/healthz") + get("/metrics") + get("/readyz") + get("/healthz")));
  std::string a = c.readResponse(), b = c.readResponse(), d = c.readResponse();
  EXPECT_EQ(statusOf(a), 200);
  EXPECT_EQ(bodyOf(b), "aimesh_services 2\n");
  EXPECT_EQ(statusOf(d), 200);
  EXPECT_NE(d.find("Connection: close"), std::string::npos) << d;
  bool closed = false;
  EXPECT_EQ(c.readUntilClosed(2000ms, &closed), "");  // the 4th is not answered
  EXPECT_TRUE(closed);
}

// Each way a client is turned away is counted once, under its reason, and
// ordinary traffic (an idle keep-alive connection ending included) is not.
TEST_F(HttpServerLimits, CountersSayWhoWasServedAndWhoWasTurnedAwayAndWhy) {
  HttpServerOptions opts;
  opts.maxConnections = 2;
  opts.requestTimeout = 600ms;
  opts.counters = std::make_shared<HttpServerCounters>();
  start(opts);
  const HttpServerCounters& c = *opts.counters;
  auto waitUntil = [](const std::function<bool()>& f) {
    for (auto until = Clock::now() + 3s; Clock::now() < until && !f();) std::this_thread::sleep_for(10ms);
    return f();
  };

  // With 2 slots, each step waits for the previous connection's thread to
  // end (an error answer lingers up to 250 ms to drain the client).
  auto settle = [&] { EXPECT_TRUE(waitUntil([&] { return c.open.load() == 0; })); };
  EXPECT_EQ(statusOf(fetch("/metrics")), 200);
  settle();
  EXPECT_EQ(statusOf(fetch("/nope")), 404);  // a normal answer, not a rejection
  settle();
  {
    RawConn idle(port());  // one request, then idle until the server closes it
    ASSERT_TRUE(idle.send(get("/healthz")));
    EXPECT_EQ(statusOf(idle.readResponse()), 200);
    bool closed = false;
    idle.readUntilClosed(2000ms, &closed);
    EXPECT_TRUE(closed);
  }
  EXPECT_TRUE(waitUntil([&] { return c.open.load() == 0; }));
  EXPECT_EQ(c.requests.load(), 3u);
  EXPECT_EQ(c.accepted.load(), 3u);
  EXPECT_EQ(c.timedOut.load() + c.badRequests.load() + c.rejectedBusy.load(), 0u);

  // Bad requests: a POST (405), a broken request line (400), a head too big (431).
  {
    RawConn post(port());
    ASSERT_TRUE(post.send("POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n"));
    EXPECT_EQ(statusOf(post.readUntilClosed(2000ms)), 405);
  }
  settle();
  {
    RawConn broken(port());
    ASSERT_TRUE(broken.send("GARBAGE\r\n\r\n"));
    EXPECT_EQ(statusOf(broken.readUntilClosed(2000ms)), 400);
  }
  settle();
  {
    RawConn big(port());
    ASSERT_TRUE(big.send("GET /metrics HTTP/1.1\r\nX: " + std::string(HttpServerOptions::kMaxHeaderBytes, 'a') +
                         "\r\n\r\n"));
    EXPECT_EQ(statusOf(big.readUntilClosed(2000ms)), 431);
  }
  EXPECT_TRUE(waitUntil([&] { return c.badRequests.load() == 3; })) << c.badRequests.load();
  settle();

  // Slow clients: one silent, one stopping midway; both held, so a third
  // connection takes the place of the oldest (the silent one).
  RawConn silent(port());
  ASSERT_TRUE(waitUntil([&] { return c.open.load() == 1; }));
  RawConn midway(port());
  ASSERT_TRUE(midway.send("GET /metrics HTTP/1.1\r\nHost"));
  EXPECT_TRUE(waitUntil([&] { return c.open.load() == 2; }));
  RawConn extra(port());
  bool closed = false;
  silent.readUntilClosed(1000ms, &closed);
  EXPECT_TRUE(closed) << "the oldest waiting connection was not closed for the new one";
  EXPECT_TRUE(waitUntil([&] { return c.evicted.load() == 1; }));
  // The midway one and the new one (silent too) time out.
  EXPECT_TRUE(waitUntil([&] { return c.timedOut.load() == 2; })) << c.timedOut.load();
  EXPECT_TRUE(waitUntil([&] { return c.open.load() == 0; }));
  EXPECT_EQ(c.evicted.load(), 1u);
  EXPECT_EQ(c.rejectedBusy.load(), 0u);
  EXPECT_EQ(c.badRequests.load(), 3u);
}

// With the table full, a new connection closes the oldest one that has not
// sent a request, at once, and is served; the others are served too.
TEST_F(HttpServerLimits, ConnectionLimitClosesTheOldestWaitingConnectionForTheNext) {
  HttpServerOptions opts;
  opts.maxConnections = 4;
  opts.requestTimeout = 3000ms;
  opts.counters = std::make_shared<HttpServerCounters>();
  start(opts);
  std::vector<std::unique_ptr<RawConn>> held;
  for (std::size_t i = 0; i < opts.maxConnections; ++i) {
    held.push_back(std::make_unique<RawConn>(port()));
    ASSERT_TRUE(held.back()->connected());
    std::this_thread::sleep_for(20ms);  // accepted in this order
  }
  auto t0 = Clock::now();
  RawConn extra(port());
  bool closed = false;
  held[0]->readUntilClosed(1000ms, &closed);
  EXPECT_TRUE(closed) << "the oldest waiting connection stayed open";
  EXPECT_LT(msSince(t0), 500);
  ASSERT_TRUE(extra.send(get("/metrics", "Connection: close\r\n")));
  EXPECT_EQ(statusOf(extra.readUntilClosed(2000ms)), 200);
  for (std::size_t i = 1; i < held.size(); ++i) {
    ASSERT_TRUE(held[i]->send(get("/metrics", "Connection: close\r\n")));
    std::string ok = held[i]->readUntilClosed(2000ms);
    EXPECT_EQ(statusOf(ok), 200) << i << ": " << ok;
  }
  EXPECT_EQ(opts.counters->evicted.load(), 1u);
  EXPECT_EQ(opts.counters->rejectedBusy.load(), 0u);
}

// Many more connections than the limit at once: the oldest are closed
// promptly, the newest are kept and served, nothing queues.
TEST_F(HttpServerLimits, ConnectionFloodClosesTheOldestPromptly) {
  HttpServerOptions opts;
  opts.maxConnections = 8;
  opts.requestTimeout = 2000ms;
  start(opts);
  std::vector<std::unique_ptr<RawConn>> conns;
  for (int i = 0; i < 100; ++i) conns.push_back(std::make_unique<RawConn>(port()));
  std::this_thread::sleep_for(200ms);  // all accepted
  auto t0 = Clock::now();
  int closedCount = 0;
  for (auto& c : conns) {
    bool closed = false;
    c->readUntilClosed(20ms, &closed);
    closedCount += closed;
  }
  EXPECT_EQ(closedCount, 100 - static_cast<int>(opts.maxConnections));
  EXPECT_LT(msSince(t0), 3000);
  for (std::size_t i = conns.size() - opts.maxConnections; i < conns.size(); ++i) {
    ASSERT_TRUE(conns[i]->send(get("/healthz", "Connection: close\r\n")));
    EXPECT_EQ(statusOf(conns[i]->readUntilClosed(2000ms)), 200) << i;
  }
  conns.clear();
  EXPECT_TRUE(stillServes());
}

// 1,000 slow clients (each sent half a request line and stopped) against
// the default limits: a well-formed scrape still gets its answer within a
// second, and the server holds at most maxConnections of them.
TEST_F(HttpServerLimits, AThousandSlowClientsDoNotLockOutAScrape) {
  rlimit fds{};
  ::getrlimit(RLIMIT_NOFILE, &fds);
  if (fds.rlim_cur < 1200) {
    fds.rlim_cur = std::min<rlim_t>(fds.rlim_max, 4096);
    ::setrlimit(RLIMIT_NOFILE, &fds);
  }
  if (fds.rlim_cur < 1200) GTEST_SKIP() << "needs 1,200 open files, the limit is " << fds.rlim_cur;
  HttpServerOptions opts;
  opts.counters = std::make_shared<HttpServerCounters>();
  start(opts);
  std::vector<std::unique_ptr<RawConn>> slow;
  for (int i = 0; i < 1000; ++i) {
    slow.push_back(std::make_unique<RawConn>(port()));
    ASSERT_TRUE(slow.back()->connected()) << i;
    ASSERT_TRUE(slow.back()->send("GET /metr")) << i;
  }
  std::this_thread::sleep_for(100ms);
  auto t0 = Clock::now();
  std::string r = fetch("/metrics");
  EXPECT_EQ(statusOf(r), 200) << r;
  EXPECT_EQ(bodyOf(r), "aimesh_services 2\n");
  EXPECT_LT(msSince(t0), 1000);
  EXPECT_LE(opts.counters->open.load(), opts.maxConnections);
  EXPECT_GE(opts.counters->evicted.load(), 1000u - opts.maxConnections);
}

// A client that asks for a large response and never reads it holds its
// connection only for the write timeout.
TEST_F(HttpServerLimits, SlowReaderIsCutAtTheWriteTimeout) {
  HttpServerOptions opts;
  opts.maxConnections = 1;
  opts.writeTimeout = 500ms;
  start(opts, [] { return std::string(32 << 20, 'x'); });
  RawConn reader(port(), 4096);
  ASSERT_TRUE(reader.send(get("/metrics")));
  std::this_thread::sleep_for(100ms);
  {
    RawConn busy(port());  // the one slot is taken
    std::string r = busy.readUntilClosed(1000ms);
    if (!r.empty()) {
      EXPECT_EQ(statusOf(r), 503) << r.substr(0, 100);
    }
  }
  auto t0 = Clock::now();
  EXPECT_TRUE(stillServes());
  EXPECT_LT(msSince(t0), 1500);
}

TEST_F(HttpServerLimits, StopClosesOpenConnectionsPromptly) {
  start();
  RawConn slow(port());
  ASSERT_TRUE(slow.send("GET /metrics HTTP/1.1\r\n"));
  std::this_thread::sleep_for(50ms);
  auto t0 = Clock::now();
  server_->stop();
  EXPECT_LT(msSince(t0), 1000);
  bool closed = false;
  slow.readUntilClosed(1000ms, &closed);
  EXPECT_TRUE(closed);
}

TEST(HttpServerOptionsTest, DefaultsAreTheDocumentedLimits) {
  HttpServerOptions o;
  EXPECT_EQ(o.maxHeaderBytes, 8192u);
  EXPECT_EQ(o.maxHeaders, 100u);
  EXPECT_EQ(o.maxConnections, 64u);
  EXPECT_EQ(o.requestTimeout, 5000ms);
  EXPECT_EQ(o.writeTimeout, 10000ms);
  EXPECT_EQ(o.maxRequestsPerConnection, 100u);
}

TEST(HttpServerOptionsTest, ServesOnIpv6Loopback) {
  auto s = HttpServer::start("[::1]:0", HttpHandlers{[] { return std::string("m\n"); }, [] { return true; }});
  if (!s) GTEST_SKIP() << "no IPv6 loopback: " << s.error().message();
  EXPECT_EQ(s->host(), "::1");
  EXPECT_EQ(s->address(), "[::1]:" + std::to_string(s->port()));
  int fd = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in6 sa{};
  sa.sin6_family = AF_INET6;
  sa.sin6_addr = in6addr_loopback;
  sa.sin6_port = htons(static_cast<uint16_t>(s->port()));
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
  std::string req = "GET /healthz HTTP/1.0\r\n\r\n";
  ASSERT_EQ(::send(fd, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
  timeval tv{2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  std::string out;
  char buf[1024];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0) out.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  EXPECT_EQ(statusOf(out), 200) << out;
  EXPECT_NE(out.find("Connection: close"), std::string::npos) << out;  // HTTP/1.0 default
}

}  // namespace
}  // namespace aimesh
