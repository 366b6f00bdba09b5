#include "telemetry/http_server.h"

#include <httplib.h>

#include <sys/socket.h>

#include <chrono>
#include <thread>

namespace aimesh {

struct HttpServer::Impl {
  httplib::Server server;
  std::thread thread;
  ~Impl() {
    server.stop();
    if (thread.joinable()) thread.join();
  }
};

HttpServer::HttpServer() = default;
HttpServer::HttpServer(HttpServer&&) noexcept = default;
HttpServer& HttpServer::operator=(HttpServer&&) noexcept = default;
HttpServer::~HttpServer() = default;

void HttpServer::stop() { impl_.reset(); }

std::string HttpServer::address() const {
  return (host_.find(':') != std::string::npos ? "[" + host_ + "]" : host_) + ":" + std::to_string(port_);
}

Result<std::pair<std::string, int>> splitHostPort(const std::string& addr) {
  std::string host, port;
  if (!addr.empty() && addr[0] == '[') {
    auto close = addr.find(']');
    if (close == std::string::npos || close + 1 >= addr.size() || addr[close + 1] != ':')
      return Error::msg("bad address '" + addr + "': expected [IPv6]:PORT");
    host = addr.substr(1, close - 1);
    port = addr.substr(close + 2);
  } else {
    auto colon = addr.rfind(':');
    if (colon == std::string::npos) return Error::msg("bad address '" + addr + "': expected HOST:PORT");
    host = addr.substr(0, colon);
    port = addr.substr(colon + 1);
  }
  int p = -1;
  try {
    size_t used = 0;
    p = std::stoi(port, &used);
    if (used != port.size()) p = -1;
  } catch (...) {
  }
  if (p < 0 || p > 65535) return Error::msg("bad port '" + port + "' in address '" + addr + "'");
  return std::make_pair(host.empty() ? std::string("0.0.0.0") : host, p);
}

Result<HttpServer> HttpServer::start(const std::string& addr, HttpHandlers h) {
  auto hp = splitHostPort(addr);
  if (!hp) return hp.error();
  HttpServer s;
  s.impl_ = std::make_unique<Impl>();
  auto& srv = s.impl_->server;
  // httplib's default sets SO_REUSEPORT, which would let a second agent bind
  // the same port and silently split scrapes; plain SO_REUSEADDR only.
  srv.set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  srv.set_payload_max_length(8 * 1024);
  srv.set_read_timeout(5, 0);
  srv.set_write_timeout(5, 0);
  srv.Get("/metrics", [h](const httplib::Request& req, httplib::Response& res) {
    if (h.openMetrics && req.get_header_value("Accept").find("application/openmetrics-text") != std::string::npos) {
      res.set_content(h.openMetrics(), "application/openmetrics-text; version=1.0.0; charset=utf-8");
      return;
    }
    res.set_content(h.metrics(), "text/plain; version=0.0.4; charset=utf-8");
  });
  srv.Get("/healthz", [](const httplib::Request&, httplib::Response& res) { res.set_content("ok\n", "text/plain"); });
  srv.Get("/readyz", [h](const httplib::Request&, httplib::Response& res) {
    bool ok = h.ready();
    res.status = ok ? 200 : 503;
    res.set_content(ok ? "ready\n" : "not ready: no state applied yet\n", "text/plain");
  });
  s.host_ = hp->first;
  if (hp->second == 0) {
    s.port_ = srv.bind_to_any_port(s.host_.c_str());
    if (s.port_ <= 0) return Error::fromErrno("bind metrics listener " + addr);
  } else {
    if (!srv.bind_to_port(s.host_.c_str(), hp->second)) return Error::fromErrno("bind metrics listener " + addr);
    s.port_ = hp->second;
  }
  s.impl_->thread = std::thread([&srv] { srv.listen_after_bind(); });
  // httplib's stop() is a no-op until the listener loop runs; wait for it so
  // that stopping right after start() cannot leave the thread in accept().
  for (int i = 0; i < 500 && !srv.is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  if (!srv.is_running()) return Error::msg("metrics listener on " + addr + " did not start");
  return s;
}

}  // namespace aimesh
