#include "telemetry/api_server.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <exception>
#include <filesystem>
#include <list>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

#include "util/unique_fd.h"

namespace aimesh {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

Result<sockaddr_un> unixAddress(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty()) return Error::msg("API socket path is empty");
  // sun_path needs room for the terminating NUL.
  if (path.size() >= sizeof(addr.sun_path)) {
    return Error::fromCode(ENAMETOOLONG, "API socket path " + path);
  }
  std::copy(path.begin(), path.end(), addr.sun_path);
  return addr;
}

// mkdir -p for the socket's directory; directories we create are 0700 so only
// root reaches the socket even before its own mode is set. Existing
// directories (e.g. /tmp) are left alone.
Status makeParentDirs(const std::string& path) {
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (parent.empty()) return {};
  std::vector<std::filesystem::path> missing;
  for (auto p = parent; !p.empty(); p = p.parent_path()) {
    struct stat st {};
    if (::stat(p.c_str(), &st) == 0) {
      if (!S_ISDIR(st.st_mode)) {
        return Error::fromCode(ENOTDIR, "API socket directory " + p.string());
      }
      break;
    }
    if (errno != ENOENT) return Error::fromErrno("stat " + p.string());
    missing.push_back(p);
    if (p == p.parent_path()) break;
  }
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    if (::mkdir(it->c_str(), 0700) != 0 && errno != EEXIST) {
      return Error::fromErrno("mkdir " + it->string());
    }
    // mkdir's mode is filtered by the umask; make it exact.
    if (::chmod(it->c_str(), 0700) != 0) return Error::fromErrno("chmod 0700 " + it->string());
  }
  return {};
}

// A socket file left by an agent that died is removed; one that still
// answers belongs to a running agent and is left alone.
Status removeStaleSocket(const std::string& path, const sockaddr_un& addr) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return {};
    return Error::fromErrno("stat " + path);
  }
  if (!S_ISSOCK(st.st_mode)) {
    return Error::fromCode(EEXIST, path + " exists and is not a socket; not removing it");
  }
  UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!probe.valid()) return Error::fromErrno("socket(AF_UNIX)");
  if (::connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0 ||
      errno == EAGAIN) {  // EAGAIN: listening, backlog full
    return Error::fromCode(EADDRINUSE, "another process is serving the API at " + path);
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return Error::fromErrno("remove stale socket " + path);
  }
  return {};
}

json errorJson(const std::string& text) { return json{{"error", text}}; }

// The socket's own mode keeps other users out, but in a directory they can
// write to they could replace the socket file with their own and answer
// meshctl in the agent's name. Directories we create are 0700; for one the
// operator chose, say so.
void warnIfParentIsOpen(const std::string& path) {
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (parent.empty()) parent = ".";
  struct stat st {};
  if (::stat(parent.c_str(), &st) != 0) return;
  bool writableByOthers = (st.st_mode & (S_IWGRP | S_IWOTH)) != 0 && (st.st_mode & S_ISVTX) == 0;
  if (writableByOthers || (st.st_uid != 0 && st.st_uid != ::geteuid())) {
    spdlog::warn("api: directory {} of the API socket is writable by other users (mode {:o}, owner {}); "
                 "they could replace the socket. Use a root-owned directory such as /run/aimesh",
                 parent.string(), st.st_mode & 07777, st.st_uid);
  }
}

}  // namespace

struct ApiServer::Impl {
  struct Client {
    UniqueFd fd;
    std::string in;
    std::string out;
    std::size_t outOff = 0;
    bool responding = false;
    bool done = false;
    Clock::time_point deadline;
  };

  std::string path;
  Handler handler;
  ApiServerOptions opts;
  UniqueFd listenFd;
  UniqueFd stopFd;  // eventfd: written by stop() to wake the poll loop
  dev_t dev = 0;    // identity of the socket file we bound, so stop() never
  ino_t ino = 0;    // unlinks a newer agent's socket at the same path
  std::thread thread;
  bool stopped = false;

  void run();
  void acceptClients(std::list<Client>& clients);
  void rejectBusy(int fd);
  void readFrom(Client& c);
  void writeTo(Client& c);
  void respond(Client& c, const std::string& request);
  json dispatch(const std::string& request);
  void stop();
};

json ApiServer::Impl::dispatch(const std::string& request) {
  json parsed = json::parse(request, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) return errorJson("request is not valid JSON");
  if (!parsed.is_object()) return errorJson("request must be a JSON object");
  try {
    return handler(parsed);
  } catch (const std::exception& e) {
    spdlog::debug("api: handler failed: {}", e.what());
    return errorJson(e.what());
  } catch (...) {
    return errorJson("internal error");
  }
}

void ApiServer::Impl::respond(Client& c, const std::string& request) {
  json response = dispatch(request);
  // replace: a stray non-UTF-8 byte in a name must not kill the response.
  c.out = response.dump(-1, ' ', false, json::error_handler_t::replace);
  c.out.push_back('\n');
  c.outOff = 0;
  c.responding = true;
  c.in.clear();
  c.deadline = Clock::now() + opts.clientTimeout;
  writeTo(c);
}

void ApiServer::Impl::readFrom(Client& c) {
  char buf[8192];
  for (;;) {
    ssize_t n = ::recv(c.fd.get(), buf, sizeof(buf), MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) c.done = true;
      return;
    }
    if (n == 0) {
      // Peer closed its side; accept a request without the final newline.
      if (c.in.empty()) {
        c.done = true;
      } else {
        std::string request = std::move(c.in);
        respond(c, request);
      }
      return;
    }
    std::size_t scanFrom = c.in.size();
    c.in.append(buf, static_cast<std::size_t>(n));
    std::size_t nl = c.in.find('\n', scanFrom);
    if (nl != std::string::npos && nl <= opts.maxRequestBytes) {
      std::string request = c.in.substr(0, nl);
      respond(c, request);
      return;
    }
    if (c.in.size() > opts.maxRequestBytes) {
      c.in.clear();
      c.out.clear();
      json response = errorJson("request too large (limit " + std::to_string(opts.maxRequestBytes) +
                                 " bytes)");
      c.out = response.dump() + "\n";
      c.outOff = 0;
      c.responding = true;
      c.deadline = Clock::now() + opts.clientTimeout;
      writeTo(c);
      return;
    }
  }
}

void ApiServer::Impl::writeTo(Client& c) {
  while (c.outOff < c.out.size()) {
    ssize_t n = ::send(c.fd.get(), c.out.data() + c.outOff, c.out.size() - c.outOff,
                       MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) c.done = true;
      return;
    }
    c.outOff += static_cast<std::size_t>(n);
  }
  ::shutdown(c.fd.get(), SHUT_WR);
  c.done = true;
}

// Over the client limit: answer at once (never blocks: the reply fits in an
// empty socket buffer) and close, rather than leave the caller queued.
void ApiServer::Impl::rejectBusy(int fd) {
  std::string busy = errorJson("agent busy: " + std::to_string(opts.maxClients) +
                               " API clients already connected; try again")
                         .dump() +
                     "\n";
  ssize_t n = ::send(fd, busy.data(), busy.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  (void)n;
  ::shutdown(fd, SHUT_WR);
  ::close(fd);
}

void ApiServer::Impl::acceptClients(std::list<Client>& clients) {
  // Bounded per wake-up so a flood of connects cannot starve the clients.
  for (int round = 0; round < 64; ++round) {
    int fd = ::accept4(listenFd.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        spdlog::warn("api: accept on {}: {}", path, std::strerror(errno));
        // EMFILE and friends: back off so the loop does not spin.
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      return;
    }
    if (clients.size() >= opts.maxClients) {
      // Full: the new client takes the place of one that is finished, or of
      // the oldest that has not sent a whole request (clients holding
      // connections open cannot lock meshctl out). Only when every client
      // is being answered is the new one told "busy".
      auto victim = std::find_if(clients.begin(), clients.end(), [](const Client& c) { return c.done; });
      if (victim == clients.end())
        victim = std::find_if(clients.begin(), clients.end(), [](const Client& c) { return !c.responding; });
      if (victim == clients.end()) {
        rejectBusy(fd);
        continue;
      }
      clients.erase(victim);  // closes it
    }
    Client c;
    c.fd = UniqueFd(fd);
    // Fixed at accept: a client trickling bytes does not move it.
    c.deadline = Clock::now() + opts.clientTimeout;
    clients.push_back(std::move(c));
    // A client that wrote its request before we took it (meshctl does) is
    // answered now, before a later connection could take its place.
    readFrom(clients.back());
  }
}

void ApiServer::Impl::run() {
  std::list<Client> clients;
  std::vector<pollfd> fds;
  for (;;) {
    fds.clear();
    fds.push_back({stopFd.get(), POLLIN, 0});
    fds.push_back({listenFd.get(), POLLIN, 0});
    auto now = Clock::now();
    auto next = now + std::chrono::hours(1);
    for (const Client& c : clients) {
      fds.push_back({c.fd.get(), static_cast<short>(c.responding ? POLLOUT : POLLIN), 0});
      next = std::min(next, c.deadline);
    }
    auto waitMs = std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count();
    int timeout = static_cast<int>(std::clamp<long long>(waitMs + 1, 0, 3600 * 1000));
    int rc = ::poll(fds.data(), fds.size(), timeout);
    if (rc < 0) {
      if (errno == EINTR) continue;
      spdlog::error("api: poll: {}", std::strerror(errno));
      return;
    }
    if (fds[0].revents != 0) return;  // stop() called

    std::size_t i = 2;
    for (Client& c : clients) {
      short revents = fds[i++].revents;
      if (revents == 0) continue;
      if (c.responding) {
        if (revents & (POLLOUT | POLLERR | POLLHUP)) writeTo(c);
      } else if (revents & (POLLIN | POLLERR | POLLHUP)) {
        readFrom(c);
      }
    }
    now = Clock::now();
    clients.remove_if([now](const Client& c) { return c.done || c.deadline <= now; });
    if (fds[1].revents & POLLIN) acceptClients(clients);
  }
}

void ApiServer::Impl::stop() {
  if (stopped) return;
  stopped = true;
  if (thread.joinable()) {
    uint64_t one = 1;
    ssize_t n = ::write(stopFd.get(), &one, sizeof(one));
    (void)n;  // an eventfd write only fails when the counter would overflow
    thread.join();
  }
  listenFd.reset();
  stopFd.reset();
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0 && st.st_dev == dev && st.st_ino == ino) {
    ::unlink(path.c_str());
  }
}

Result<ApiServer> ApiServer::create(const std::string& path, Handler handler, ApiServerOptions options) {
  if (!handler) return Error::msg("API server needs a handler");
  if (options.maxClients == 0 || options.maxRequestBytes == 0) return Error::msg("API server limits must be positive");
  auto addr = unixAddress(path);
  if (!addr) return addr.error();
  if (auto st = makeParentDirs(path); !st) return st.error();
  if (auto st = removeStaleSocket(path, *addr); !st) return st.error();

  auto impl = std::make_unique<Impl>();
  impl->path = path;
  impl->handler = std::move(handler);
  impl->opts = options;
  impl->listenFd = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!impl->listenFd.valid()) return Error::fromErrno("socket(AF_UNIX)");
  // Linux creates the socket file with the socket inode's mode minus the
  // umask, so fchmod before bind means the file is never more open than 0600
  // (no process-wide umask games with other threads running).
  if (::fchmod(impl->listenFd.get(), 0600) != 0) return Error::fromErrno("fchmod API socket");
  if (::bind(impl->listenFd.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr)) != 0) {
    return Error::fromErrno("bind " + path);
  }
  auto fail = [&](Error err) -> Result<ApiServer> {
    ::unlink(path.c_str());
    return err;
  };
  if (::chmod(path.c_str(), 0600) != 0) return fail(Error::fromErrno("chmod 0600 " + path));
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return fail(Error::fromErrno("stat " + path));
  if (!S_ISSOCK(st.st_mode) || (st.st_mode & 07777) != 0600 || st.st_uid != ::geteuid()) {
    return fail(Error::msg("API socket " + path + " did not get mode 0600 and our owner"));
  }
  warnIfParentIsOpen(path);
  impl->dev = st.st_dev;
  impl->ino = st.st_ino;
  if (::listen(impl->listenFd.get(), 64) != 0) return fail(Error::fromErrno("listen " + path));
  impl->stopFd = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!impl->stopFd.valid()) return fail(Error::fromErrno("eventfd"));

  Impl* raw = impl.get();
  try {
    impl->thread = std::thread([raw] { raw->run(); });
  } catch (const std::system_error& e) {
    return fail(Error::fromCode(e.code().value(), "start API server thread"));
  }
  return ApiServer(std::move(impl));
}

ApiServer::ApiServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ApiServer::ApiServer(ApiServer&&) noexcept = default;
ApiServer& ApiServer::operator=(ApiServer&& other) noexcept {
  if (this != &other) {
    stop();
    impl_ = std::move(other.impl_);
  }
  return *this;
}
ApiServer::~ApiServer() { stop(); }

void ApiServer::stop() {
  if (impl_) impl_->stop();
}

const std::string& ApiServer::path() const {
  static const std::string kEmpty;
  return impl_ ? impl_->path : kEmpty;
}

}  // namespace aimesh
