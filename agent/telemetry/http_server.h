// The agent's HTTP endpoint: /metrics (Prometheus text), /healthz, /readyz.
// cpp-httplib on its own thread; GET only, bounded request size.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "util/result.h"

namespace httplib {
class Server;
}

namespace aimesh {

struct HttpHandlers {
  std::function<std::string()> metrics;
  std::function<bool()> ready;
  // OpenMetrics text, served when the scraper's Accept header asks for
  // application/openmetrics-text; optional.
  std::function<std::string()> openMetrics = {};
};

class HttpServer {
 public:
  // addr is "HOST:PORT" ("[::1]:9464" for IPv6); port 0 picks a free port.
  static Result<HttpServer> start(const std::string& addr, HttpHandlers handlers);
  HttpServer(HttpServer&&) noexcept;
  HttpServer& operator=(HttpServer&&) noexcept;
  ~HttpServer();
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
