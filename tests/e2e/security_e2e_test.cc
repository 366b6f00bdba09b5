// e2e: the local attack surface of the real agent binary (docs/security.md).
// The API socket is mode 0600 and root's; the pin dir and its subdirectories
// are 0700 and every pinned map, link and TC program 0600; the metrics
// listener answers only GET/HEAD of its paths and refuses oversized requests;
// the API socket refuses an oversized request; a pin dir owned by another
// user makes the agent refuse to start.
//
// The agent runs inside the sandbox's client namespace (its metrics listener
// binds 127.0.0.1 there) with the TC program on the namespace's own veth, so
// TC pins exist too; nothing touches a host interface.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <unistd.h>

#include <arpa/inet.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "client/api_client.h"
#include "fixtures/agent_e2e.h"
#include "fixtures/sandbox.h"

namespace aimesh::testing {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono_literals;

const char* kState = kOneStandInService;

// One raw exchange with 127.0.0.1:port in the calling process's namespace:
// sends `request` (as much as the server takes), returns what came back
// before the server closed or 3 s passed.
std::string httpExchange(int port, const std::string& request) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sa.sin_port = htons(static_cast<uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    ::close(fd);
    return "connect failed";
  }
  auto deadline = std::chrono::steady_clock::now() + 3s;
  std::size_t off = 0;
  std::string out;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, static_cast<short>(POLLIN | (off < request.size() ? POLLOUT : 0)), 0};
    if (::poll(&p, 1, 100) < 0) break;
    if (p.revents & POLLIN) {
      char buf[8192];
      ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
      if (n <= 0) break;
      out.append(buf, static_cast<std::size_t>(n));
    } else if ((p.revents & POLLOUT) && off < request.size()) {
      ssize_t n = ::send(fd, request.data() + off, request.size() - off, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n <= 0) break;
      off += static_cast<std::size_t>(n);
    } else if (p.revents & (POLLERR | POLLHUP)) {
      break;
    }
  }
  ::close(fd);
  return out;
}

int statusOf(const std::string& response) {
  if (response.rfind("HTTP/1.1 ", 0) != 0 || response.size() < 12) return 0;
  return std::stoi(response.substr(9, 3));
}

class SecurityE2e : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = tempDir();
    sandbox_ = std::make_unique<Sandbox>();
    writeFile(dir_ + "/state.yaml", kState);
    // The sandbox's client namespace holds veth <name>0 (see Sandbox).
    agent_ = std::make_unique<AgentProcess>(sandbox_->cgroup().path(), dir_ + "/state.yaml", dir_,
                                            std::vector<std::string>{"--tc-interfaces", sandbox_->client().name() + "0"});
    agent_->setNetns(sandbox_->client().name());
    agent_->start();
  }
  void TearDown() override {
    agent_.reset();
    sandbox_.reset();
    if (!dir_.empty()) removeTree(dir_);
  }
  int metricsPort() {
    std::string addr = agent_->metricsUrlPath();
    auto colon = addr.rfind(':');
    return colon == std::string::npos ? 0 : std::stoi(addr.substr(colon + 1));
  }

  std::string dir_;
  std::unique_ptr<Sandbox> sandbox_;
  std::unique_ptr<AgentProcess> agent_;
};

TEST_F(SecurityE2e, ApiSocketIsRootOnly0600) {
  struct stat st {};
  ASSERT_EQ(::lstat(agent_->apiSocket().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_gid, 0u);
}

TEST_F(SecurityE2e, PinDirIs0700AndEveryPinIs0600) {
  const std::string& pinDir = agent_->pinDir();
  struct stat st {};
  ASSERT_EQ(::lstat(pinDir.c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  EXPECT_EQ(st.st_uid, 0u);
  int pins = 0, dirs = 0, tcPins = 0, linkPins = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(pinDir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    std::string p = it->path().string();
    ASSERT_EQ(::lstat(p.c_str(), &st), 0) << p;
    EXPECT_EQ(st.st_uid, 0u) << p;
    if (S_ISDIR(st.st_mode)) {
      ++dirs;
      EXPECT_EQ(st.st_mode & 07777, 0700u) << p;
    } else {
      ++pins;
      EXPECT_TRUE(S_ISREG(st.st_mode)) << p << " is neither a pin nor a directory";
      EXPECT_EQ(st.st_mode & 07777, 0600u) << p;
      if (p.find("/tc/") != std::string::npos) ++tcPins;
      if (p.find("/links/") != std::string::npos) ++linkPins;
    }
  }
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_GE(dirs, 2);     // links/ and tc/
  EXPECT_GE(linkPins, 4);  // the cgroup socket hooks
  EXPECT_EQ(tcPins, 1);   // the one veth
  EXPECT_GE(pins - linkPins - tcPins, 5);  // the maps
}

TEST_F(SecurityE2e, MetricsListenerRejectsPostUnknownPathsAndOversizedRequests) {
  int port = metricsPort();
  ASSERT_GT(port, 0);
  // The listener is inside the client namespace: talk to it from there.
  int status = -1;
  std::string out = runIn("", sandbox_->client().name(), [&](int fd) {
    std::string pad(20 * 1024, 'p');
    json r{
        {"post", statusOf(httpExchange(port, "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"))},
        {"put", statusOf(httpExchange(port, "PUT /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"))},
        {"unknown", statusOf(httpExchange(port, "GET /debug HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))},
        {"long_line", statusOf(httpExchange(port, "GET /metrics?" + pad + " HTTP/1.1\r\n\r\n"))},
        {"big_head", statusOf(httpExchange(port, "GET /metrics HTTP/1.1\r\nX-Pad: " + pad + "\r\n\r\n"))},
        {"get", httpExchange(port, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")}};
    std::string s = r.dump();
    return ::write(fd, s.data(), s.size()) == static_cast<ssize_t>(s.size()) ? 0 : 1;
  }, &status);
  ASSERT_EQ(status, 0) << out;
  json r = json::parse(out);
  EXPECT_EQ(r["post"], 405);
  EXPECT_EQ(r["put"], 405);
  EXPECT_EQ(r["unknown"], 404);
  EXPECT_EQ(r["long_line"], 414);
  EXPECT_EQ(r["big_head"], 431);
  // And an ordinary scrape still works.
  std::string get = r["get"];
  EXPECT_EQ(statusOf(get), 200) << get.substr(0, 200);
  EXPECT_NE(get.find("aimesh_"), std::string::npos);
  // Each refusal above was counted (the 404 is an answer, not a refusal).
  EXPECT_NE(get.find("aimesh_agent_http_rejected_total{reason=\"bad_request\"} 4\n"), std::string::npos)
      << get.substr(get.find("aimesh_agent_http_"), 600);
}

// 1,000 local clients that each opened a connection to the metrics port
// and sent half a request line do not lock a scraper out: the agent keeps
// at most --metrics-max-connections of them (the oldest waiting one makes
// room for each new connection), and a well-formed scrape is answered
// within a second.
TEST_F(SecurityE2e, AThousandSlowClientsDoNotLockOutAScrape) {
  int port = metricsPort();
  ASSERT_GT(port, 0);
  int status = -1;
  std::string out = runIn("", sandbox_->client().name(), [&](int fd) {
    rlimit lim{};
    ::getrlimit(RLIMIT_NOFILE, &lim);
    lim.rlim_cur = std::max<rlim_t>(lim.rlim_cur, std::min<rlim_t>(lim.rlim_max, 4096));
    ::setrlimit(RLIMIT_NOFILE, &lim);
    std::vector<int> slow;
    for (int i = 0; i < 1000; ++i) {
      int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in sa{};
      sa.sin_family = AF_INET;
      sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      sa.sin_port = htons(static_cast<uint16_t>(port));
      if (s < 0 || ::connect(s, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 ||
          ::send(s, "GET /metr", 9, MSG_NOSIGNAL) != 9)
        break;
      slow.push_back(s);
    }
    auto t0 = std::chrono::steady_clock::now();
    std::string get = httpExchange(port, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    long ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
    for (int s : slow) ::close(s);
    std::string r = json{{"opened", slow.size()}, {"ms", ms}, {"get", get}}.dump();
    return ::write(fd, r.data(), r.size()) == static_cast<ssize_t>(r.size()) ? 0 : 1;
  }, &status);
  ASSERT_EQ(status, 0) << out;
  json r = json::parse(out);
  EXPECT_EQ(r["opened"], 1000);
  std::string get = r["get"];
  EXPECT_EQ(statusOf(get), 200) << get.substr(0, 200);
  EXPECT_LT(r["ms"].get<long>(), 1000);
  auto at = get.find("aimesh_agent_http_rejected_total{reason=\"evicted\"} ");
  ASSERT_NE(at, std::string::npos);
  EXPECT_GE(std::stol(get.substr(at + 51)), 1000 - 64) << get.substr(at, 80);
}

// The same for the API socket: 1,000 local connections with half a request
// each, and meshctl's request is still answered within a second (the agent
// keeps 16 clients; each new one takes the place of the oldest waiting).
TEST_F(SecurityE2e, AThousandSlowClientsDoNotLockOutTheApi) {
  rlimit lim{};
  ::getrlimit(RLIMIT_NOFILE, &lim);
  lim.rlim_cur = std::max<rlim_t>(lim.rlim_cur, std::min<rlim_t>(lim.rlim_max, 4096));
  ::setrlimit(RLIMIT_NOFILE, &lim);
  if (lim.rlim_cur < 1200) GTEST_SKIP() << "needs 1,200 open files, the limit is " << lim.rlim_cur;
  std::vector<int> slow;
  for (int i = 0; i < 1000; ++i) {
    int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::string path = agent_->apiSocket();
    ASSERT_LT(path.size(), sizeof(sa.sun_path));
    std::copy(path.begin(), path.end(), sa.sun_path);
    if (s < 0 || ::connect(s, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 ||
        ::send(s, "{\"method\":", 10, MSG_NOSIGNAL) != 10) {
      if (s >= 0) ::close(s);
      break;
    }
    slow.push_back(s);
  }
  EXPECT_EQ(slow.size(), 1000u);
  auto t0 = std::chrono::steady_clock::now();
  auto st = callAgent(agent_->apiSocket(), json{{"method", "status"}}, 3s);
  auto took = std::chrono::steady_clock::now() - t0;
  for (int s : slow) ::close(s);
  ASSERT_TRUE(st.ok()) << st.error().message();
  EXPECT_TRUE(st->contains("version")) << st->dump();
  EXPECT_LT(took, 1s);
}

TEST_F(SecurityE2e, ApiSocketRefusesOversizedRequest) {
  auto big = callAgent(agent_->apiSocket(), json{{"method", "status"}, {"pad", std::string(100 * 1024, 'x')}}, 3s);
  ASSERT_TRUE(big.ok()) << big.error().message();
  ASSERT_TRUE(big->contains("error")) << big->dump();
  EXPECT_NE((*big)["error"].get<std::string>().find("too large"), std::string::npos);
  auto ok = callAgent(agent_->apiSocket(), json{{"method", "status"}}, 3s);
  ASSERT_TRUE(ok.ok()) << ok.error().message();
  EXPECT_TRUE(ok->value("ready", false));
}


// A pin dir someone else made first (bpffs is world-writable unless mounted
// mode=0700) could hold pins they control: the agent refuses to start.
TEST(SecurityE2eStart, RefusesAPinDirOwnedByAnotherUser) {
  std::string dir = tempDir();
  writeFile(dir + "/state.yaml", kState);
  {
    TestCgroup cgroup;
    AgentProcess agent(cgroup.path(), dir + "/state.yaml", dir);
    ASSERT_EQ(::mkdir(agent.pinDir().c_str(), 0777), 0) << agent.pinDir();
    ASSERT_EQ(::chown(agent.pinDir().c_str(), 65534, 65534), 0);
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_THROW(agent.start(), std::runtime_error);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
    struct stat st {};
    ASSERT_EQ(::lstat(agent.pinDir().c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 65534u);  // left as it was: nothing pinned into it
    std::error_code ec;
    EXPECT_TRUE(fs::is_empty(agent.pinDir(), ec));
    EXPECT_FALSE(fs::exists(agent.apiSocket()));
  }  // ~AgentProcess removes the (empty) pin dir
  removeTree(dir);
}

}  // namespace
}  // namespace aimesh::testing
