// The agent's HTTP endpoint: /metrics (Prometheus or OpenMetrics text),
// /healthz, /readyz.
//
// A small HTTP/1.1 server of our own rather than cpp-httplib: the listener is
// reachable from the network (and from every pod on a hostNetwork node), and
// the installed cpp-httplib (0.11.4) bounds none of header count, total header
// bytes, time to receive a request head (a client sending one byte every
// 200 ms is kept forever) or concurrent connections (its thread pool queues
// accepted connections without limit). docs/security.md lists the bounds
// below and the tests that break each one.
//
// What is served: GET and HEAD of the three paths (query strings ignored);
// other paths 404, other methods 405, a request with a body 413, a head over
// the size or count limit 431. One thread serves every connection (epoll),
// answering one request at a time; at most maxConnections are open. A new
// connection over the limit closes the oldest one that has not sent a
// complete request (slow or idle clients cannot lock a scraper out), and
// gets a 503 only when every connection is busy being answered.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "util/result.h"

namespace aimesh {

struct HttpHandlers {
  std::function<std::string()> metrics;
  std::function<bool()> ready;
  // OpenMetrics text, served when the scraper's Accept header prefers
  // application/openmetrics-text; optional.
  std::function<std::string()> openMetrics = {};
  // Prometheus' protobuf format (delimited MetricFamily messages: native
  // histograms), served when the Accept header prefers it; optional.
  std::function<std::string()> protobuf = {};
};

// The /metrics formats, and which one an Accept header prefers: the
// acceptable one with the highest q (ties: the first listed), among those
// the server has. Protobuf must name proto=io.prometheus.client.MetricFamily
// and encoding=delimited, as Prometheus does. Anything else (no header,
// */*, text/plain) is the Prometheus text format.
enum class MetricsFormat { kText, kOpenMetrics, kProtobuf };
MetricsFormat negotiateMetricsFormat(std::string_view accept, bool openMetrics, bool protobuf);
const char* metricsContentType(MetricsFormat f);

// What the listener did, for /metrics (aimesh_agent_http_*). Shared with
// the owner so it can be read at any time, even while the server starts.
struct HttpServerCounters {
  std::atomic<uint64_t> accepted{0};      // connections taken and served
  std::atomic<uint64_t> open{0};          // being served now
  std::atomic<uint64_t> rejectedBusy{0};  // over maxConnections with every connection mid-answer: 503 and closed
  std::atomic<uint64_t> evicted{0};       // waiting for a request head when a new connection needed its place
  std::atomic<uint64_t> timedOut{0};      // no complete request head within requestTimeout (408, or closed)
  std::atomic<uint64_t> badRequests{0};   // answered 400, 405, 413, 414 or 431: not a request we serve
  std::atomic<uint64_t> requests{0};      // requests answered, any status
};

// Limits of the listener. The defaults are what the agent runs with
// (--metrics-max-connections and --metrics-request-timeout-ms change two);
// tests shorten the timeouts.
struct HttpServerOptions {
  static constexpr std::size_t kMaxHeaderBytes = 8 * 1024;
  static constexpr std::size_t kMaxHeaders = 100;
  static constexpr std::size_t kMaxConnections = 64;
  static constexpr std::chrono::milliseconds kRequestTimeout{5000};
  static constexpr std::chrono::milliseconds kWriteTimeout{10000};
  static constexpr std::size_t kMaxRequestsPerConnection = 100;

  // Request line + headers + the blank line, in bytes.
  std::size_t maxHeaderBytes = kMaxHeaderBytes;
  // Header fields per request.
  std::size_t maxHeaders = kMaxHeaders;
  // Connections open at once; one more closes the oldest that has not sent
  // a complete request (or, if all are mid-answer, is answered 503 and closed).
  std::size_t maxConnections = kMaxConnections;
  // A whole request head must arrive within this of the connection opening
  // (or of the previous response on a keep-alive connection, which also
  // bounds how long an idle keep-alive connection stays open).
  std::chrono::milliseconds requestTimeout = kRequestTimeout;
  // A response must be taken by the client within this.
  std::chrono::milliseconds writeTimeout = kWriteTimeout;
  // Keep-alive requests per connection; the last answer says Connection: close.
  std::size_t maxRequestsPerConnection = kMaxRequestsPerConnection;
  // Counted into, if set.
  std::shared_ptr<HttpServerCounters> counters;
};

class HttpServer {
 public:
  // addr is "HOST:PORT" ("[::1]:9464" for IPv6); port 0 picks a free port.
  // Returns once the listener accepts connections.
  static Result<HttpServer> start(const std::string& addr, HttpHandlers handlers,
                                  HttpServerOptions options = {});
  HttpServer(HttpServer&&) noexcept;
  HttpServer& operator=(HttpServer&&) noexcept;
  ~HttpServer();
  // Closes the listener and every open connection, waits for the thread
  // (a handler already running finishes first). Idempotent.
  void stop();
  int port() const { return port_; }
  const std::string& host() const { return host_; }
  std::string address() const;  // "host:port" as bound

 private:
  HttpServer();
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string host_;
  int port_ = 0;
};

// Splits "HOST:PORT" / "[V6]:PORT". Errors name the bad part.
Result<std::pair<std::string, int>> splitHostPort(const std::string& addr);

}  // namespace aimesh
