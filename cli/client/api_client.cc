#include "client/api_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <thread>
#include <utility>

#include "util/unique_fd.h"

namespace aimesh {
namespace {

using Clock = std::chrono::steady_clock;

// Responses are small (a few hundred bytes per endpoint); this only guards
// against a runaway peer.
constexpr std::size_t kMaxResponseBytes = 64u << 20;

Error notRunning(const std::string& path, const char* why) {
  return Error::msg("aimesh agent is not running at " + path + " (" + why +
                    ").\n  Start it with: sudo aimesh-agent --api-socket " + path +
                    "\n  or point meshctl at its socket with --socket PATH or AIMESH_SOCKET=PATH");
}

// Milliseconds left until `deadline`, for poll(); 0 when past.
int msLeft(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return static_cast<int>(std::clamp<long long>(left.count(), 0, 24 * 3600 * 1000));
}

// Waits for `events` on fd; false on timeout (errno = ETIMEDOUT) or error.
bool waitFor(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    int ms = msLeft(deadline);
    if (ms == 0) {
      errno = ETIMEDOUT;
      return false;
    }
    pollfd p{fd, events, 0};
    int rc = ::poll(&p, 1, ms);
    if (rc > 0) return true;  // POLLERR/POLLHUP: the next send/recv says why
    if (rc == 0) {
      errno = ETIMEDOUT;
      return false;
    }
    if (errno != EINTR) return false;
  }
}

// Connects to the agent's socket (non-blocking), saying what to do when
// nothing is there.
Result<UniqueFd> connectTo(const std::string& socketPath, Clock::time_point deadline) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socketPath.empty()) return Error::msg("agent socket path is empty");
  if (socketPath.size() >= sizeof(addr.sun_path)) {
    return Error::fromCode(ENAMETOOLONG, "agent socket path " + socketPath);
  }
  std::copy(socketPath.begin(), socketPath.end(), addr.sun_path);

  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return Error::fromErrno("socket(AF_UNIX)");

  // A non-blocking AF_UNIX connect either completes at once or fails with
  // EAGAIN when the listen backlog is full (it never returns EINPROGRESS).
  for (;;) {
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0) return fd;
    switch (errno) {
      case EINTR:
        continue;
      case ENOENT:
        return notRunning(socketPath, "no such socket file");
      case ECONNREFUSED:
        return notRunning(socketPath, "connection refused: nothing listens on the socket");
      case EACCES:
      case EPERM:
        return Error::fromErrno("connect " + socketPath +
                                " (the agent socket is mode 0600: run meshctl as the agent's user, "
                                "usually root)");
      case EAGAIN:
        if (msLeft(deadline) == 0) {
          return Error::fromCode(ETIMEDOUT, "connect " + socketPath + " (agent is busy)");
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        continue;
      default:
        return Error::fromErrno("connect " + socketPath);
    }
  }
}

// Sends the whole request line.
Status sendLine(int fd, const std::string& out, const std::string& socketPath, Clock::time_point deadline) {
  std::size_t off = 0;
  while (off < out.size()) {
    ssize_t n = ::send(fd, out.data() + off, out.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) {
      off += static_cast<std::size_t>(n);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!waitFor(fd, POLLOUT, deadline)) return Error::fromErrno("send request to agent at " + socketPath);
      continue;
    }
    // EPIPE/ECONNRESET: the agent answered early (e.g. request too large) and
    // closed; its answer may still be waiting to be read.
    if (errno == EPIPE || errno == ECONNRESET) break;
    return Error::fromErrno("send request to agent at " + socketPath);
  }
  return {};
}

// Reads up to the first newline (or the close), at most kMaxResponseBytes.
Result<std::string> readLine(int fd, const std::string& socketPath, Clock::time_point deadline,
                             std::chrono::milliseconds timeout) {
  std::string in;
  char buf[16384];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0) {
      in.append(buf, static_cast<std::size_t>(n));
      if (in.find('\n') != std::string::npos) break;
      if (in.size() > kMaxResponseBytes) return Error::msg("response from agent at " + socketPath + " is too large");
      continue;
    }
    if (n == 0) break;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (waitFor(fd, POLLIN, deadline)) continue;
      if (errno == ETIMEDOUT) {
        return Error::fromCode(ETIMEDOUT, "no response from the aimesh agent at " + socketPath + " within " +
                                              std::to_string(timeout.count()) + " ms");
      }
    }
    return Error::fromErrno("read response from agent at " + socketPath);
  }
  if (auto nl = in.find('\n'); nl != std::string::npos) in.resize(nl);
  return in;
}

}  // namespace

Result<nlohmann::json> callAgent(const std::string& socketPath, const nlohmann::json& request,
                                 std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  auto fd = connectTo(socketPath, deadline);
  if (!fd) return fd.error();
  std::string out = request.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  out.push_back('\n');
  if (auto sent = sendLine(fd->get(), out, socketPath, deadline); !sent) return sent.error();
  auto in = readLine(fd->get(), socketPath, deadline, timeout);
  if (!in) return in.error();
  if (in->empty()) {
    return Error::msg("the aimesh agent at " + socketPath + " closed the connection without a response");
  }
  auto parsed = nlohmann::json::parse(*in, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) {
    return Error::msg("the aimesh agent at " + socketPath + " sent a response that is not JSON");
  }
  return parsed;
}

}  // namespace aimesh
