#include "telemetry/api_server.h"

#include <poll.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <thread>
#include <vector>

#include "client/api_client.h"

namespace aimesh {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

// A private temporary directory, removed with everything in it.
class ApiServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/aimesh-api-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/agent.sock";
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  static json echo(const json& request) { return json{{"echo", request}}; }

  std::string dir_;
  std::string path_;
};

// Raw client for what callAgent will not send: sends `bytes`, half-closes,
// returns everything the server wrote.
std::string rawExchange(const std::string& path, const std::string& bytes) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  EXPECT_GE(fd, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::copy(path.begin(), path.end(), addr.sun_path);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  timeval tv{3, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  std::size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::send(fd, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n <= 0) break;
    off += static_cast<std::size_t>(n);
  }
  ::shutdown(fd, SHUT_WR);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0) out.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  return out;
}

int connectRaw(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::copy(path.begin(), path.end(), addr.sun_path);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

TEST_F(ApiServerTest, RoundTrip) {
  auto server = ApiServer::create(path_, echo);
  ASSERT_TRUE(server.ok()) << server.error().message();
  EXPECT_EQ(server->path(), path_);
  json request = {{"method", "endpoints"}, {"service", "llama-chat"}, {"namespace", "ml"}};
  auto response = callAgent(path_, request, 2s);
  ASSERT_TRUE(response.ok()) << response.error().message();
  EXPECT_EQ(*response, json({{"echo", request}}));
}

TEST_F(ApiServerTest, WireFormatIsOneLineAndClose) {
  auto server = ApiServer::create(path_, [](const json&) { return json{{"ready", true}}; });
  ASSERT_TRUE(server.ok()) << server.error().message();
  EXPECT_EQ(rawExchange(path_, "{\"method\":\"status\"}\n"), "{\"ready\":true}\n");
  // A client that half-closes without the newline still gets its answer.
  EXPECT_EQ(rawExchange(path_, "{\"method\":\"status\"}"), "{\"ready\":true}\n");
}

TEST_F(ApiServerTest, SocketFileIsMode0600AndNewDirectory0700) {
  std::string nested = dir_ + "/run/aimesh/agent.sock";
  mode_t old = ::umask(0);  // the server must not rely on the caller's umask
  auto server = ApiServer::create(nested, echo);
  ::umask(old);
  ASSERT_TRUE(server.ok()) << server.error().message();
  struct stat st {};
  ASSERT_EQ(::stat(nested.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  ASSERT_EQ(::stat((dir_ + "/run/aimesh").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  ASSERT_EQ(::stat((dir_ + "/run").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  EXPECT_TRUE(callAgent(nested, json{{"method", "status"}}, 2s).ok());
}

TEST_F(ApiServerTest, HandlerExceptionBecomesErrorJson) {
  auto server = ApiServer::create(path_, [](const json& r) -> json {
    if (r.value("method", "") == "boom") throw std::runtime_error("no snapshot yet");
    return json{{"ok", true}};
  });
  ASSERT_TRUE(server.ok()) << server.error().message();
  auto response = callAgent(path_, json{{"method", "boom"}}, 2s);
  ASSERT_TRUE(response.ok()) << response.error().message();
  EXPECT_EQ(*response, json({{"error", "no snapshot yet"}}));
  // The server keeps serving after a throwing handler.
  auto next = callAgent(path_, json{{"method", "status"}}, 2s);
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(*next, json({{"ok", true}}));
}

TEST_F(ApiServerTest, OversizeRequestGetsError) {
  std::atomic<int> calls{0};
  auto server = ApiServer::create(path_, [&](const json&) {
    ++calls;
    return json{{"ok", true}};
  });
  ASSERT_TRUE(server.ok()) << server.error().message();
  json big = {{"method", "status"}, {"pad", std::string(100 * 1024, 'x')}};
  auto response = callAgent(path_, big, 3s);
  ASSERT_TRUE(response.ok()) << response.error().message();
  ASSERT_TRUE(response->contains("error"));
  EXPECT_NE((*response)["error"].get<std::string>().find("too large"), std::string::npos);
  EXPECT_EQ(calls.load(), 0);

  // Just under the limit is fine.
  json fits = {{"method", "status"}, {"pad", std::string(60 * 1024, 'x')}};
  auto ok = callAgent(path_, fits, 3s);
  ASSERT_TRUE(ok.ok()) << ok.error().message();
  EXPECT_EQ(*ok, json({{"ok", true}}));
}

TEST_F(ApiServerTest, NotJsonAndNotObjectGetErrors) {
  auto server = ApiServer::create(path_, echo);
  ASSERT_TRUE(server.ok()) << server.error().message();
  json notJson = json::parse(rawExchange(path_, "hello\n"));
  EXPECT_TRUE(notJson.contains("error"));
  json notObject = json::parse(rawExchange(path_, "[1,2]\n"));
  EXPECT_EQ(notObject, json({{"error", "request must be a JSON object"}}));
}

TEST_F(ApiServerTest, StopUnlinksSocketAndClientSaysNotRunning) {
  auto server = ApiServer::create(path_, echo);
  ASSERT_TRUE(server.ok()) << server.error().message();
  ASSERT_TRUE(std::filesystem::exists(path_));
  auto start = std::chrono::steady_clock::now();
  server->stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
  EXPECT_FALSE(std::filesystem::exists(path_));
  server->stop();  // idempotent

  auto response = callAgent(path_, json{{"method", "status"}}, 1s);
  ASSERT_FALSE(response.ok());
  std::string msg = response.error().message();
  EXPECT_NE(msg.find("not running at " + path_), std::string::npos) << msg;
  EXPECT_NE(msg.find("aimesh-agent"), std::string::npos) << msg;
}

TEST_F(ApiServerTest, DestructorUnlinksSocket) {
  {
    auto server = ApiServer::create(path_, echo);
    ASSERT_TRUE(server.ok()) << server.error().message();
    ApiServer moved = std::move(server.value());  // moving is safe with the thread running
    EXPECT_TRUE(callAgent(path_, json{{"method", "status"}}, 2s).ok());
  }
  EXPECT_FALSE(std::filesystem::exists(path_));
}

TEST_F(ApiServerTest, StopReturnsPromptlyWithIdleClientConnected) {
  auto server = ApiServer::create(path_, echo);
  ASSERT_TRUE(server.ok()) << server.error().message();
  int idle = connectRaw(path_);
  ASSERT_GE(idle, 0);
  std::this_thread::sleep_for(50ms);
  auto start = std::chrono::steady_clock::now();
  server->stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
  ::close(idle);
}

TEST_F(ApiServerTest, IdleClientDoesNotBlockOthers) {
  auto server = ApiServer::create(path_, echo);
  ASSERT_TRUE(server.ok()) << server.error().message();
  int idle = connectRaw(path_);  // connects, never sends
  ASSERT_GE(idle, 0);
  auto start = std::chrono::steady_clock::now();
  auto response = callAgent(path_, json{{"method", "status"}}, 2s);
  EXPECT_TRUE(response.ok()) << response.error().message();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
  ::close(idle);
}

TEST_F(ApiServerTest, ManyConcurrentClients) {
  std::atomic<int> calls{0};
  auto server = ApiServer::create(path_, [&](const json& r) {
    ++calls;
    return json{{"n", r["n"]}};
  });
  ASSERT_TRUE(server.ok()) << server.error().message();
  std::atomic<int> good{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        auto r = callAgent(path_, json{{"n", t * 100 + i}}, 5s);
        if (r.ok() && (*r)["n"] == t * 100 + i) ++good;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(good.load(), 200);
  EXPECT_EQ(calls.load(), 200);
}

TEST_F(ApiServerTest, RemovesStaleSocketFile) {
  // A socket file nobody listens on, as a killed agent leaves behind.
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::copy(path_.begin(), path_.end(), addr.sun_path);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ::close(fd);
  ASSERT_TRUE(std::filesystem::exists(path_));

  auto stale = callAgent(path_, json{{"method", "status"}}, 1s);
  ASSERT_FALSE(stale.ok());
  EXPECT_NE(stale.error().message().find("not running at " + path_), std::string::npos);

  auto server = ApiServer::create(path_, echo);
  ASSERT_TRUE(server.ok()) << server.error().message();
  EXPECT_TRUE(callAgent(path_, json{{"method", "status"}}, 2s).ok());
}

TEST_F(ApiServerTest, RefusesWhileAnotherServerIsRunning) {
  auto first = ApiServer::create(path_, [](const json&) { return json{{"who", 1}}; });
  ASSERT_TRUE(first.ok()) << first.error().message();
  auto second = ApiServer::create(path_, [](const json&) { return json{{"who", 2}}; });
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code, EADDRINUSE);
  auto r = callAgent(path_, json{{"method", "status"}}, 2s);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, json({{"who", 1}}));
}

TEST_F(ApiServerTest, RefusesToReplaceNonSocketFile) {
  { std::ofstream(path_) << "precious"; }
  auto server = ApiServer::create(path_, echo);
  ASSERT_FALSE(server.ok());
  std::ifstream in(path_);
  std::string content;
  in >> content;
  EXPECT_EQ(content, "precious");
}

TEST_F(ApiServerTest, StopDoesNotUnlinkAnotherServersSocket) {
  auto old = ApiServer::create(path_, echo);
  ASSERT_TRUE(old.ok());
  // Someone replaced the file (e.g. a new agent after removing ours).
  ASSERT_EQ(::unlink(path_.c_str()), 0);
  auto fresh = ApiServer::create(path_, echo);
  ASSERT_TRUE(fresh.ok()) << fresh.error().message();
  old->stop();
  EXPECT_TRUE(std::filesystem::exists(path_));
  EXPECT_TRUE(callAgent(path_, json{{"method", "status"}}, 2s).ok());
}

TEST_F(ApiServerTest, RejectsBadPaths) {
  EXPECT_FALSE(ApiServer::create("", echo).ok());
  EXPECT_FALSE(ApiServer::create(dir_ + "/" + std::string(200, 'a'), echo).ok());
  EXPECT_FALSE(ApiServer::create(path_, nullptr).ok());
}

TEST_F(ApiServerTest, ClientTimesOutOnSilentServer) {
  // Listens but never answers.
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::copy(path_.begin(), path_.end(), addr.sun_path);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd, 4), 0);
  auto start = std::chrono::steady_clock::now();
  auto r = callAgent(path_, json{{"method", "status"}}, 200ms);
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ETIMEDOUT);
  EXPECT_NE(r.error().message().find(path_), std::string::npos);
  EXPECT_GE(took, 150ms);
  EXPECT_LT(took, 2s);
  ::close(fd);
}

TEST_F(ApiServerTest, ClientErrorWhenNothingListens) {
  auto r = callAgent(dir_ + "/missing.sock", json{{"method", "status"}}, 1s);
  ASSERT_FALSE(r.ok());
  std::string msg = r.error().message();
  EXPECT_NE(msg.find("not running at " + dir_ + "/missing.sock"), std::string::npos) << msg;
  EXPECT_NE(msg.find("sudo aimesh-agent --api-socket"), std::string::npos) << msg;
}


// ---- limits (docs/security.md), each broken by a raw client ---------------

// Waits up to `limit` for the server to close fd; returns what it sent.
std::string readUntilClosed(int fd, std::chrono::milliseconds limit, bool* closed) {
  std::string out;
  auto deadline = std::chrono::steady_clock::now() + limit;
  *closed = false;
  while (!*closed) {
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
    char buf[4096];
    ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0) {
      out.append(buf, static_cast<std::size_t>(n));
    } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
      *closed = true;
    }
  }
  return out;
}

TEST_F(ApiServerTest, DefaultLimits) {
  ApiServerOptions o;
  EXPECT_EQ(o.maxRequestBytes, 64u * 1024);
  EXPECT_EQ(o.clientTimeout, 5000ms);
  EXPECT_EQ(o.maxClients, 16u);
}

TEST_F(ApiServerTest, SocketIsOwnedByTheAgentsUser) {
  auto server = ApiServer::create(path_, echo);
  ASSERT_TRUE(server.ok()) << server.error().message();
  struct stat st {};
  ASSERT_EQ(::lstat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, ::geteuid());
  EXPECT_EQ(st.st_mode & 07777, 0600u);
}

// A request that never ends is answered with an error as soon as it passes
// the limit, without waiting for the rest, and never buffered beyond it.
TEST_F(ApiServerTest, EndlessRequestIsCutAtTheSizeLimit) {
  std::atomic<int> calls{0};
  ApiServerOptions opts;
  opts.maxRequestBytes = 1024;
  auto server = ApiServer::create(path_, [&](const json&) {
    ++calls;
    return json{{"ok", true}};
  }, opts);
  ASSERT_TRUE(server.ok()) << server.error().message();
  int fd = connectRaw(path_);
  ASSERT_GE(fd, 0);
  auto t0 = std::chrono::steady_clock::now();
  std::string chunk(512, 'x');
  bool closed = false;
  std::string got;
  // Keep sending (no newline) until the server answers and closes; bounded.
  for (int i = 0; i < 200 && !closed; ++i) {
    ::send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    got += readUntilClosed(fd, 10ms, &closed);
  }
  ::close(fd);
  EXPECT_TRUE(closed);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_NE(got.find("request too large (limit 1024 bytes)"), std::string::npos) << got;
  EXPECT_EQ(calls.load(), 0);
  EXPECT_TRUE(callAgent(path_, json{{"method", "status"}}, 2s).ok());
}

// Slow client: one byte every 200 ms of a request that never ends. The
// deadline is fixed when the client connects, so the trickle does not move it.
TEST_F(ApiServerTest, SlowClientIsDroppedAtTheTimeout) {
  ApiServerOptions opts;
  opts.clientTimeout = 1000ms;
  auto server = ApiServer::create(path_, echo, opts);
  ASSERT_TRUE(server.ok()) << server.error().message();
  int fd = connectRaw(path_);
  ASSERT_GE(fd, 0);
  auto t0 = std::chrono::steady_clock::now();
  bool closed = false;
  for (int i = 0; i < 25 && !closed; ++i) {
    if (::send(fd, "{", 1, MSG_NOSIGNAL) != 1) break;
    readUntilClosed(fd, 200ms, &closed);
  }
  auto took = std::chrono::steady_clock::now() - t0;
  ::close(fd);
  EXPECT_TRUE(closed);
  EXPECT_GE(took, 800ms);
  EXPECT_LT(took, 2500ms);
  EXPECT_TRUE(callAgent(path_, json{{"method", "status"}}, 2s).ok());
}

// A client that sends a request and never reads the (large) answer is
// dropped at the timeout too, and does not hold up other clients meanwhile.
TEST_F(ApiServerTest, ClientThatDoesNotReadIsDropped) {
  ApiServerOptions opts;
  opts.clientTimeout = 1000ms;
  auto server = ApiServer::create(path_, [](const json& r) {
    if (r.value("method", "") == "big") return json{{"pad", std::string(4 << 20, 'x')}};
    return json{{"ok", true}};
  }, opts);
  ASSERT_TRUE(server.ok()) << server.error().message();
  int fd = connectRaw(path_);
  ASSERT_GE(fd, 0);
  std::string req = "{\"method\":\"big\"}\n";
  ASSERT_EQ(::send(fd, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
  std::this_thread::sleep_for(100ms);
  // Answered while the stalled client still holds its connection (< 1 s).
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(callAgent(path_, json{{"method", "status"}}, 2s).ok());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 800ms);
  // The stalled client's connection is closed at ~1 s: reading after that
  // gives the part of the answer that fit in the socket buffers, then the end.
  std::this_thread::sleep_for(1500ms);
  bool closed = false;
  std::size_t got = readUntilClosed(fd, 2s, &closed).size();
  ::close(fd);
  EXPECT_TRUE(closed);
  EXPECT_LT(got, std::size_t{4} << 20);
}

// Over the client limit with every client waiting for its request: the new
// client takes the place of the oldest (closed), the others keep theirs.
TEST_F(ApiServerTest, AFullTableClosesTheOldestWaitingClientForTheNext) {
  ApiServerOptions opts;
  opts.maxClients = 3;
  opts.clientTimeout = 3000ms;
  auto server = ApiServer::create(path_, echo, opts);
  ASSERT_TRUE(server.ok()) << server.error().message();
  std::vector<int> held;
  for (std::size_t i = 0; i < opts.maxClients; ++i) {
    held.push_back(connectRaw(path_));
    ASSERT_GE(held.back(), 0);
    std::this_thread::sleep_for(20ms);  // accepted in this order
  }
  auto t0 = std::chrono::steady_clock::now();
  auto viaClient = callAgent(path_, json{{"method", "status"}}, 2s);
  ASSERT_TRUE(viaClient.ok()) << viaClient.error().message();
  EXPECT_EQ(*viaClient, json({{"echo", {{"method", "status"}}}}));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 500ms);
  bool closed = false;
  EXPECT_EQ(readUntilClosed(held[0], 1s, &closed), "");
  EXPECT_TRUE(closed) << "the oldest waiting client made room";
  for (std::size_t i = 1; i < held.size(); ++i) {
    std::string req = "{\"method\":\"status\"}\n";
    ASSERT_EQ(::send(held[i], req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
    bool c = false;
    EXPECT_EQ(readUntilClosed(held[i], 2s, &c), "{\"echo\":{\"method\":\"status\"}}\n") << i;
  }
  for (int fd : held) ::close(fd);
}

// Over the limit with every client being answered (each stalls reading a
// large answer): the next gets a "busy" error at once, not a wait.
TEST_F(ApiServerTest, ClientsOverTheLimitGetBusyWhenAllAreBeingAnswered) {
  ApiServerOptions opts;
  opts.maxClients = 3;
  opts.clientTimeout = 3000ms;
  auto server = ApiServer::create(path_, [](const json& r) {
    if (r.value("method", "") == "big") return json{{"pad", std::string(4 << 20, 'x')}};
    return json{{"ok", true}};
  }, opts);
  ASSERT_TRUE(server.ok()) << server.error().message();
  std::vector<int> held;
  for (std::size_t i = 0; i < opts.maxClients; ++i) {
    held.push_back(connectRaw(path_));
    ASSERT_GE(held.back(), 0);
    std::string req = "{\"method\":\"big\"}\n";
    ASSERT_EQ(::send(held.back(), req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
  }
  std::this_thread::sleep_for(200ms);  // all three mid-answer
  auto t0 = std::chrono::steady_clock::now();
  int extra = connectRaw(path_);
  ASSERT_GE(extra, 0);
  bool extraClosed = false;
  std::string busy = readUntilClosed(extra, 1s, &extraClosed);
  ::close(extra);
  EXPECT_TRUE(extraClosed);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 500ms);
  EXPECT_NE(busy.find("agent busy: 3 API clients already connected"), std::string::npos) << busy;
  for (int fd : held) ::close(fd);
  // Served normally once the slots are free.
  std::this_thread::sleep_for(100ms);
  auto after = callAgent(path_, json{{"method", "status"}}, 2s);
  ASSERT_TRUE(after.ok()) << after.error().message();
  EXPECT_EQ(*after, json({{"ok", true}}));
}

// 1,000 local processes each holding a connection with half a request: a
// meshctl request is still answered within a second, at the default limits.
TEST_F(ApiServerTest, AThousandSlowClientsDoNotLockOutARequest) {
  rlimit lim{};
  ::getrlimit(RLIMIT_NOFILE, &lim);
  if (lim.rlim_cur < 1200) {
    lim.rlim_cur = std::min<rlim_t>(lim.rlim_max, 4096);
    ::setrlimit(RLIMIT_NOFILE, &lim);
  }
  if (lim.rlim_cur < 1200) GTEST_SKIP() << "needs 1,200 open files, the limit is " << lim.rlim_cur;
  auto server = ApiServer::create(path_, echo);
  ASSERT_TRUE(server.ok()) << server.error().message();
  std::vector<int> slow;
  for (int i = 0; i < 1000; ++i) {
    int fd = connectRaw(path_);
    ASSERT_GE(fd, 0) << i;
    ASSERT_EQ(::send(fd, "{\"method\":", 10, MSG_NOSIGNAL), 10) << i;
    slow.push_back(fd);
  }
  std::this_thread::sleep_for(100ms);
  auto t0 = std::chrono::steady_clock::now();
  auto r = callAgent(path_, json{{"method", "status"}}, 2s);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(*r, json({{"echo", {{"method", "status"}}}}));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  for (int fd : slow) ::close(fd);
}

// A flood of connections far over the limit: every one is answered or closed
// promptly and the server keeps serving.
TEST_F(ApiServerTest, ConnectionFloodIsShedPromptly) {
  ApiServerOptions opts;
  opts.maxClients = 4;
  opts.clientTimeout = 2000ms;
  auto server = ApiServer::create(path_, echo, opts);
  ASSERT_TRUE(server.ok()) << server.error().message();
  std::vector<int> fds;
  for (int i = 0; i < 100; ++i) {
    int fd = connectRaw(path_);
    if (fd >= 0) fds.push_back(fd);
  }
  // Each new connection took the place of an older one that had sent
  // nothing: all but the last maxClients are closed, promptly.
  auto t0 = std::chrono::steady_clock::now();
  int shed = 0;
  for (int fd : fds) {
    bool closed = false;
    readUntilClosed(fd, 300ms, &closed);
    if (closed) ++shed;
  }
  EXPECT_EQ(shed, static_cast<int>(fds.size() - opts.maxClients));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  for (int fd : fds) ::close(fd);
  EXPECT_TRUE(callAgent(path_, json{{"method", "status"}}, 2s).ok());
}

}  // namespace
}  // namespace aimesh
