#include "telemetry/http_server.h"

#include <netdb.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <optional>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

#include "telemetry/http_head.h"
#include "util/host_port.h"
#include "util/unique_fd.h"

namespace aimesh {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kListenBacklog = 128;

const char* reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
  }
}

struct Response {
  int status = 200;
  std::string contentType = "text/plain; charset=utf-8";
  std::string body;
  bool close = false;
  bool allowHeader = false;  // 405: "Allow: GET, HEAD"
};

Response errorResponse(int status, std::string text) {
  Response r;
  r.status = status;
  r.body = std::move(text) + "\n";
  r.close = true;
  return r;
}

std::string render(const Response& r, bool headOnly) {
  std::string out = "HTTP/1.1 " + std::to_string(r.status) + " " + reason(r.status) + "\r\n";
  out += "Content-Type: " + r.contentType + "\r\n";
  out += "Content-Length: " + std::to_string(r.body.size()) + "\r\n";
  if (r.allowHeader) out += "Allow: GET, HEAD\r\n";
  out += r.close ? "Connection: close\r\n\r\n" : "Connection: keep-alive\r\n\r\n";
  if (!headOnly) out += r.body;
  return out;
}

using Request = HttpRequestHead;
std::string lower(std::string_view s) { return asciiLower(s); }
std::string_view trim(std::string_view s) { return trimSpace(s); }

// A request head in the connection's buffer: `end` is the offset just past
// it; `status`, if not 0, is the error to answer with before parsing it.
struct Head {
  std::size_t end = std::string::npos;
  int status = 0;
};

bool isBadRequest(int status) {
  return status == 400 || status == 405 || status == 413 || status == 414 || status == 431;
}

}  // namespace

// One connection of the event loop: reading a request head, sending an
// answer, or draining what a client still sends after an error answer.
struct Conn {
  enum class State { kHead, kWrite, kDrain };
  UniqueFd fd;
  uint64_t key = 0;  // accept order (the epoll key): the oldest waiting one is evicted first
  State state = State::kHead;
  uint32_t events = EPOLLIN;  // what epoll watches for now
  std::string in;             // bytes received and not yet answered
  std::size_t searched = 0;   // bytes of `in` already searched for the end of a head
  std::string out;            // the answer being sent
  std::size_t sent = 0;
  bool closeAfter = false;    // close (or drain) once `out` is sent
  bool drainAfter = false;    // an error answer: read and drop what follows, briefly
  std::size_t served = 0;     // requests answered on this connection
  std::size_t drained = 0;
  Clock::time_point deadline;  // of the head, the write or the drain
};

constexpr uint64_t kStopKey = ~uint64_t{0}, kListenKey = ~uint64_t{0} - 1;
constexpr std::size_t kMaxDrainBytes = 64 * 1024;
constexpr auto kDrainTime = std::chrono::milliseconds(250);

struct HttpServer::Impl {
  HttpHandlers handlers;
  HttpServerOptions opts;
  UniqueFd listenFd;
  UniqueFd stopFd;   // eventfd, written once by stop()
  UniqueFd epollFd;
  std::thread loop;  // the one thread: accepts, reads, answers, writes
  bool stopped = false;
  std::shared_ptr<HttpServerCounters> counters;  // never null (the options' or our own)
  std::map<uint64_t, std::unique_ptr<Conn>> conns;  // by key, so in accept order
  uint64_t nextKey = 0;
  std::optional<Clock::time_point> acceptPausedUntil;  // after EMFILE and friends

  ~Impl() { stop(); }

  void stop() {
    if (stopped) return;
    stopped = true;
    uint64_t one = 1;
    ssize_t n = ::write(stopFd.get(), &one, sizeof(one));
    (void)n;  // an eventfd write only fails when the counter would overflow
    if (loop.joinable()) loop.join();
    conns.clear();
    counters->open = 0;
    listenFd.reset();
  }

  void run();
  void acceptAll();
  void admit(UniqueFd fd);
  bool evictOldestWaiting();
  void reject(int fd);
  // Each returns false when it closed the connection (c is then gone).
  bool readHead(Conn& c);
  bool answerHead(Conn& c);
  bool startWrite(Conn& c, const Response& res, bool headOnly);
  bool writeSome(Conn& c);
  bool finishWrite(Conn& c);
  bool drainSome(Conn& c);
  void watch(Conn& c, uint32_t events);
  void close(Conn& c);
  void expire(Clock::time_point now);
  int waitMs(Clock::time_point now) const;
  // The answer to the head at the start of buf; fills req when it parses.
  Response answer(const std::string& buf, const Head& head, bool lastRequest, Request& req);
  // route(), with a handler's exception answered 500.
  Response routeOrFail(const Request& req);
  Response route(const Request& req);
};

MetricsFormat negotiateMetricsFormat(std::string_view accept, bool openMetrics, bool protobuf) {
  MetricsFormat best = MetricsFormat::kText;
  double bestQ = -1;
  while (!accept.empty()) {
    size_t comma = accept.find(',');
    std::string_view item = accept.substr(0, comma);
    accept = comma == std::string_view::npos ? std::string_view{} : accept.substr(comma + 1);
    size_t semi = item.find(';');
    std::string_view type = trim(item.substr(0, semi));
    double q = 1;
    bool delimited = false, familyProto = false;
    for (std::string_view params = semi == std::string_view::npos ? "" : item.substr(semi + 1); !params.empty();) {
      size_t next = params.find(';');
      std::string_view p = trim(params.substr(0, next));
      params = next == std::string_view::npos ? std::string_view{} : params.substr(next + 1);
      size_t eq = p.find('=');
      if (eq == std::string_view::npos) continue;
      std::string_view key = trim(p.substr(0, eq)), value = trim(p.substr(eq + 1));
      if (lower(key) == "q") q = std::strtod(std::string(value).c_str(), nullptr);
      else if (lower(key) == "encoding") delimited = value == "delimited";
      else if (lower(key) == "proto") familyProto = value == "io.prometheus.client.MetricFamily";
    }
    MetricsFormat f;
    std::string media = lower(type);
    if (protobuf && media == "application/vnd.google.protobuf" && delimited && familyProto)
      f = MetricsFormat::kProtobuf;
    else if (openMetrics && media == "application/openmetrics-text")
      f = MetricsFormat::kOpenMetrics;
    else if (media == "text/plain" || media == "*/*" || media == "text/*")
      f = MetricsFormat::kText;
    else
      continue;
    if (q > 0 && q > bestQ) {
      best = f;
      bestQ = q;
    }
  }
  return best;
}

const char* metricsContentType(MetricsFormat f) {
  switch (f) {
    case MetricsFormat::kProtobuf:
      return "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";
    case MetricsFormat::kOpenMetrics:
      return "application/openmetrics-text; version=1.0.0; charset=utf-8";
    case MetricsFormat::kText:
      break;
  }
  return "text/plain; version=0.0.4; charset=utf-8";
}

Response HttpServer::Impl::route(const Request& req) {
  Response r;
  if (req.path == "/metrics") {
    MetricsFormat f = negotiateMetricsFormat(req.accept, bool(handlers.openMetrics), bool(handlers.protobuf));
    r.body = f == MetricsFormat::kProtobuf      ? handlers.protobuf()
             : f == MetricsFormat::kOpenMetrics ? handlers.openMetrics()
                                                : handlers.metrics();
    r.contentType = metricsContentType(f);
  } else if (req.path == "/healthz") {
    r.body = "ok\n";
    r.contentType = "text/plain";
  } else if (req.path == "/readyz") {
    bool ok = handlers.ready();
    r.status = ok ? 200 : 503;
    r.body = ok ? "ready\n" : "not ready: no state applied yet\n";
    r.contentType = "text/plain";
  } else {
    r.status = 404;
    r.body = "not found\n";
  }
  return r;
}

Response HttpServer::Impl::answer(const std::string& buf, const Head& head, bool lastRequest, Request& req) {
  int status =
      head.status != 0 ? head.status : parseHttpHead(std::string_view(buf).substr(0, head.end), opts.maxHeaders, req);
  if (status == 431) {
    return errorResponse(431, "request head over " + std::to_string(opts.maxHeaderBytes) + " bytes or " +
                                  std::to_string(opts.maxHeaders) + " header fields");
  }
  if (status != 0) return errorResponse(status, reason(status));
  if (req.method != "GET" && req.method != "HEAD") {
    Response res = errorResponse(405, "only GET and HEAD");
    res.allowHeader = true;
    return res;
  }
  if (req.hasBody) return errorResponse(413, "request bodies are not accepted");
  Response res = routeOrFail(req);
  bool http10 = req.version == "HTTP/1.0";
  bool wantsClose = req.connection.find("close") != std::string::npos ||
                    (http10 && req.connection.find("keep-alive") == std::string::npos);
  if (wantsClose || lastRequest) res.close = true;
  return res;
}

Response HttpServer::Impl::routeOrFail(const Request& req) {
  try {
    return route(req);
  } catch (const std::exception& e) {
    spdlog::warn("metrics listener: {} {}: {}", req.method, req.path, e.what());
  } catch (...) {
  }
  return errorResponse(500, "internal error");
}

void HttpServer::Impl::run() {
  epoll_event events[64];
  for (;;) {
    int n = ::epoll_wait(epollFd.get(), events, 64, waitMs(Clock::now()));
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::error("metrics listener: epoll_wait: {}", std::strerror(errno));
      return;
    }
    for (int i = 0; i < n; ++i) {
      uint64_t key = events[i].data.u64;
      if (key == kStopKey) return;
      if (key == kListenKey) {
        acceptAll();
        continue;
      }
      // A connection closed earlier in this batch (evicted) is gone: its
      // key is never reused, so a late event for it finds nothing.
      auto it = conns.find(key);
      if (it == conns.end()) continue;
      Conn& c = *it->second;
      switch (c.state) {
        case Conn::State::kHead: readHead(c); break;
        case Conn::State::kWrite: writeSome(c); break;
        case Conn::State::kDrain: drainSome(c); break;
      }
    }
    expire(Clock::now());
  }
}

void HttpServer::Impl::acceptAll() {
  for (;;) {
    int fd = ::accept4(listenFd.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd >= 0) {
      admit(UniqueFd(fd));
      continue;
    }
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    // EMFILE and friends: stop watching the listener for a while, or the
    // level-triggered wait would report it again at once, forever.
    spdlog::warn("metrics listener: accept: {}", std::strerror(errno));
    ::epoll_ctl(epollFd.get(), EPOLL_CTL_DEL, listenFd.get(), nullptr);
    acceptPausedUntil = Clock::now() + std::chrono::milliseconds(100);
    return;
  }
}

// A full table makes room by closing the oldest connection that has not
// sent a complete request (a slow or idle client) rather than refusing the
// new one: a scraper is never locked out by clients that hold connections
// open. Only when every connection is busy answering is the new one refused.
void HttpServer::Impl::admit(UniqueFd fd) {
  if (conns.size() >= opts.maxConnections && !evictOldestWaiting()) {
    reject(fd.release());
    counters->rejectedBusy++;
    return;
  }
  auto c = std::make_unique<Conn>();
  c->key = nextKey++;
  c->fd = std::move(fd);
  c->deadline = Clock::now() + opts.requestTimeout;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = c->key;
  if (::epoll_ctl(epollFd.get(), EPOLL_CTL_ADD, c->fd.get(), &ev) != 0) {
    spdlog::warn("metrics listener: epoll_ctl: {}", std::strerror(errno));
    return;
  }
  counters->accepted++;
  conns.emplace(c->key, std::move(c));
  counters->open = conns.size();
}

bool HttpServer::Impl::evictOldestWaiting() {
  for (auto& [key, c] : conns) {
    if (c->state == Conn::State::kWrite) continue;
    if (c->state == Conn::State::kHead) counters->evicted++;
    close(*c);
    return true;
  }
  return false;
}

void HttpServer::Impl::reject(int fd) {
  // Best effort, never blocks: the loop must not wait on a client.
  static const std::string kBusy = render(errorResponse(503, "too many connections"), false);
  ssize_t n = ::send(fd, kBusy.data(), kBusy.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  (void)n;
  ::shutdown(fd, SHUT_WR);
  ::close(fd);
}

bool HttpServer::Impl::readHead(Conn& c) {
  char chunk[4096];
  for (;;) {
    // Never hold more than the limit (+ the bytes that show it was passed).
    std::size_t room = opts.maxHeaderBytes + 4 - std::min(c.in.size(), opts.maxHeaderBytes + 3);
    ssize_t n = ::recv(c.fd.get(), chunk, std::min(sizeof(chunk), room), MSG_DONTWAIT);
    if (n == 0) {
      close(c);  // the client is gone (or half-closed without a request)
      return false;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      close(c);
      return false;
    }
    c.in.append(chunk, static_cast<std::size_t>(n));
    if (static_cast<std::size_t>(n) >= room) break;
  }
  return answerHead(c);
}

// Answers the complete head at the start of `in`, if there is one, or the
// error of a head over the limit. The deadline covers the whole head, so
// trickling bytes does not extend it.
bool HttpServer::Impl::answerHead(Conn& c) {
  Head head;
  head.end = httpHeadEnd(c.in, c.searched);
  if (head.end == std::string::npos) {
    c.searched = c.in.size();
    if (c.in.size() <= opts.maxHeaderBytes) return true;  // wait for more
    head.status = c.in.find('\n') == std::string::npos ? 414 : 431;
    head.end = c.in.size();
  } else if (head.end > opts.maxHeaderBytes) {
    head.status = 431;
  }
  Request req;
  Response res = answer(c.in, head, c.served + 1 == opts.maxRequestsPerConnection, req);
  c.in.erase(0, head.end);
  c.searched = 0;
  c.served++;
  return startWrite(c, res, req.method == "HEAD");
}

bool HttpServer::Impl::startWrite(Conn& c, const Response& res, bool headOnly) {
  counters->requests++;
  if (isBadRequest(res.status)) counters->badRequests++;
  c.out = render(res, headOnly);
  c.sent = 0;
  c.closeAfter = res.close;
  // Closing with unread request bytes makes the kernel send a reset, which
  // can destroy the error answer before the client reads it; so after an
  // error, read and drop what the client still sends, for a bounded time
  // and amount ("lingering close", as nginx does).
  c.drainAfter = res.status >= 400;
  c.state = Conn::State::kWrite;
  c.deadline = Clock::now() + opts.writeTimeout;  // a response must be taken within this
  return writeSome(c);
}

bool HttpServer::Impl::writeSome(Conn& c) {
  while (c.sent < c.out.size()) {
    ssize_t n = ::send(c.fd.get(), c.out.data() + c.sent, c.out.size() - c.sent, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      c.sent += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      watch(c, EPOLLOUT);
      return true;
    }
    close(c);
    return false;
  }
  return finishWrite(c);
}

bool HttpServer::Impl::finishWrite(Conn& c) {
  std::string().swap(c.out);  // a /metrics answer can be large: do not keep it
  if (c.closeAfter) {
    ::shutdown(c.fd.get(), SHUT_WR);
    if (!c.drainAfter) {
      close(c);
      return false;
    }
    c.state = Conn::State::kDrain;
    c.deadline = Clock::now() + kDrainTime;
    watch(c, EPOLLIN);
    return true;
  }
  c.state = Conn::State::kHead;
  c.deadline = Clock::now() + opts.requestTimeout;  // also how long an idle keep-alive connection stays
  watch(c, EPOLLIN);
  return answerHead(c);  // a pipelined request may be waiting in `in` already
}

bool HttpServer::Impl::drainSome(Conn& c) {
  char chunk[4096];
  for (;;) {
    ssize_t n = ::recv(c.fd.get(), chunk, sizeof(chunk), MSG_DONTWAIT);
    if (n > 0) {
      c.drained += static_cast<std::size_t>(n);
      if (c.drained < kMaxDrainBytes) continue;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return true;
    }
    close(c);
    return false;
  }
}

void HttpServer::Impl::watch(Conn& c, uint32_t events) {
  if (c.events == events) return;
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = c.key;
  if (::epoll_ctl(epollFd.get(), EPOLL_CTL_MOD, c.fd.get(), &ev) == 0) c.events = events;
}

void HttpServer::Impl::close(Conn& c) {
  ::epoll_ctl(epollFd.get(), EPOLL_CTL_DEL, c.fd.get(), nullptr);
  conns.erase(c.key);  // closes the socket; c is gone
  counters->open = conns.size();
}

void HttpServer::Impl::expire(Clock::time_point now) {
  if (acceptPausedUntil && now >= *acceptPausedUntil) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kListenKey;
    ::epoll_ctl(epollFd.get(), EPOLL_CTL_ADD, listenFd.get(), &ev);
    acceptPausedUntil.reset();
  }
  for (auto it = conns.begin(); it != conns.end();) {
    Conn& c = *it->second;
    ++it;  // c may be erased below
    if (now < c.deadline) continue;
    if (c.state == Conn::State::kHead) {
      if (!c.in.empty()) {  // best effort, never blocks
        std::string t = render(errorResponse(408, "request head not received in time"), false);
        ssize_t n = ::send(c.fd.get(), t.data(), t.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
        (void)n;
      }
      // An idle keep-alive connection ending is normal; a connection that
      // never sent a request, or stopped midway, is a slow client.
      if (c.served == 0 || !c.in.empty()) counters->timedOut++;
    }
    close(c);
  }
}

int HttpServer::Impl::waitMs(Clock::time_point now) const {
  std::optional<Clock::time_point> next = acceptPausedUntil;
  for (auto& [key, c] : conns)
    if (!next || c->deadline < *next) next = c->deadline;
  if (!next) return -1;
  // Rounded up, so a wake-up for a deadline finds it passed.
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(*next - now).count();
  return static_cast<int>(std::clamp<long long>(ms, 0, 60'000));
}

HttpServer::HttpServer() = default;
HttpServer::HttpServer(HttpServer&&) noexcept = default;
HttpServer& HttpServer::operator=(HttpServer&&) noexcept = default;
HttpServer::~HttpServer() = default;

void HttpServer::stop() { impl_.reset(); }

std::string HttpServer::address() const { return formatHostPort(host_, static_cast<uint16_t>(port_)); }

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

Result<HttpServer> HttpServer::start(const std::string& addr, HttpHandlers h, HttpServerOptions options) {
  auto hp = splitHostPort(addr);
  if (!hp) return hp.error();
  if (!h.metrics || !h.ready) return Error::msg("metrics listener needs metrics and ready handlers");
  if (options.maxConnections == 0 || options.maxRequestsPerConnection == 0 || options.maxHeaderBytes == 0) {
    return Error::msg("metrics listener limits must be positive");
  }

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  std::string portText = std::to_string(hp->second);
  if (int rc = ::getaddrinfo(hp->first.c_str(), portText.c_str(), &hints, &found); rc != 0) {
    return Error::msg("bind metrics listener " + addr + ": " + ::gai_strerror(rc));
  }
  UniqueFd listenFd;
  int bindErrno = EADDRNOTAVAIL;
  for (addrinfo* ai = found; ai != nullptr && !listenFd.valid(); ai = ai->ai_next) {
    UniqueFd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol));
    if (!fd.valid()) {
      bindErrno = errno;
      continue;
    }
    // SO_REUSEADDR only: SO_REUSEPORT would let a second agent bind the same
    // port and silently split scrapes.
    int yes = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    // Finished handshakes wait here only until the acceptor takes them,
    // which it does at once (serving or answering 503), so a backlog larger
    // than the connection limit costs nothing and lets a burst be shed
    // instead of having its SYNs dropped and retried for seconds.
    if (::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(fd.get(), kListenBacklog) != 0) {
      bindErrno = errno;
      continue;
    }
    listenFd = std::move(fd);
  }
  ::freeaddrinfo(found);
  if (!listenFd.valid()) return Error::fromCode(bindErrno, "bind metrics listener " + addr);

  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  if (::getsockname(listenFd.get(), reinterpret_cast<sockaddr*>(&bound), &len) != 0) {
    return Error::fromErrno("getsockname metrics listener " + addr);
  }
  int port = bound.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
                                         : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);

  HttpServer s;
  s.impl_ = std::make_unique<Impl>();
  Impl* impl = s.impl_.get();
  impl->handlers = std::move(h);
  impl->opts = options;
  impl->counters = options.counters ? options.counters : std::make_shared<HttpServerCounters>();
  impl->listenFd = std::move(listenFd);
  impl->stopFd = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!impl->stopFd.valid()) return Error::fromErrno("eventfd");
  impl->epollFd = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
  if (!impl->epollFd.valid()) return Error::fromErrno("epoll_create1");
  for (auto [fd, key] : {std::pair{impl->stopFd.get(), kStopKey}, {impl->listenFd.get(), kListenKey}}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = key;
    if (::epoll_ctl(impl->epollFd.get(), EPOLL_CTL_ADD, fd, &ev) != 0) return Error::fromErrno("epoll_ctl");
  }
  s.host_ = hp->first;
  s.port_ = port;
  try {
    impl->loop = std::thread([impl] { impl->run(); });
  } catch (const std::system_error& e) {
    return Error::fromCode(e.code().value(), "start metrics listener thread");
  }
  return s;
}

}  // namespace aimesh
