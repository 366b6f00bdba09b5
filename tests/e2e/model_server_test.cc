// End-to-end tests for the model-server stand-in (bench/model_server.cc):
// runs the built binary on 127.0.0.1 and talks to it with httplib::Client.
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace aimesh {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr const char* kModelServerPath = AIMESH_BINARY_DIR "/model-server";

// Sends GET /whoami on `fd` and reads one Content-Length response; returns
// its head (status line and headers), or "" if the connection was closed.
std::string whoamiOn(int fd) {
  const std::string req = "GET /whoami HTTP/1.1\r\nHost: test\r\n\r\n";
  if (send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) return "";
  std::string buf;
  size_t headEnd = std::string::npos;
  size_t need = 0;
  char chunk[4096];
  while (headEnd == std::string::npos || buf.size() < need) {
    const ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
    if (n <= 0) return "";
    buf.append(chunk, static_cast<size_t>(n));
    if (headEnd == std::string::npos && (headEnd = buf.find("\r\n\r\n")) != std::string::npos) {
      const size_t cl = buf.find("Content-Length: ");
      need = headEnd + 4 + (cl < headEnd ? std::stoul(buf.substr(cl + 16)) : 0);
    }
  }
  return buf.substr(0, headEnd);
}

// True once the peer has closed `fd` (recv returns 0), within the socket's
// receive timeout.
bool peerClosed(int fd) {
  char c;
  return recv(fd, &c, 1, 0) == 0;
}

double msSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

std::vector<std::string> splitWords(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> words;
  std::string w;
  while (in >> w) words.push_back(w);
  return words;
}

// Value of the first sample of `metric` in a Prometheus text exposition.
std::optional<double> metricValue(const std::string& text, const std::string& metric) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(metric + "{", 0) != 0 && line.rfind(metric + " ", 0) != 0) continue;
    return std::stod(line.substr(line.rfind(' ') + 1));
  }
  return std::nullopt;
}

class ModelServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/aimesh-model-server-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }

  void TearDown() override {
    stopChild(SIGKILL);
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }

  // Starts model-server with `extra` flags; returns false (with a failure) if
  // it does not publish its port within 5 s.
  bool start(const std::vector<std::string>& extra, const std::string& listen = "127.0.0.1") {
    if (!std::filesystem::exists(kModelServerPath)) {
      ADD_FAILURE() << kModelServerPath << " not built";
      return false;
    }
    const std::string portFile = dir_ + "/port";
    std::error_code ec;
    std::filesystem::remove(portFile, ec);  // a test may start a second server
    std::vector<std::string> args{kModelServerPath, "--listen", listen, "--port", "0", "--port-file", portFile};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);

    const pid_t parent = getpid();
    pid_ = fork();
    if (pid_ < 0) {
      ADD_FAILURE() << "fork failed";
      return false;
    }
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the test binary
      if (getppid() != parent) _exit(127);
      execv(argv[0], argv.data());
      _exit(127);
    }
    host_ = listen;
    const auto deadline = Clock::now() + std::chrono::seconds(5);
    while (Clock::now() < deadline) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        ADD_FAILURE() << "model-server exited early, status " << status;
        return false;
      }
      std::ifstream in(portFile);
      int port = 0;
      if (in >> port && port > 0) {
        port_ = port;
        return true;
      }
      std::this_thread::sleep_for(milliseconds(10));
    }
    ADD_FAILURE() << "model-server did not write " << portFile;
    return false;
  }

  // Sends `sig` and reaps the child; returns its wait status (or -1).
  int stopChild(int sig, milliseconds grace = milliseconds(3000)) {
    if (pid_ <= 0) return -1;
    kill(pid_, sig);
    int status = -1;
    const auto deadline = Clock::now() + grace;
    while (true) {
      const pid_t r = waitpid(pid_, &status, WNOHANG);
      if (r == pid_ || r < 0) break;
      if (Clock::now() >= deadline) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
        status = -1;  // did not stop in time
        break;
      }
      std::this_thread::sleep_for(milliseconds(5));
    }
    pid_ = -1;
    return status;
  }

  // A plain blocking TCP connection to the server, so a test controls which
  // requests share a connection (httplib::Client reconnects on its own).
  int connectRaw() const {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<uint16_t>(port_));
    inet_pton(AF_INET, host_.c_str(), &sa.sin_addr);
    timeval tv{5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
      close(fd);
      return -1;
    }
    return fd;
  }

  std::unique_ptr<httplib::Client> client() const {
    auto c = std::make_unique<httplib::Client>(host_, port_);
    c->set_connection_timeout(2, 0);
    c->set_read_timeout(10, 0);
    return c;
  }

  std::string dir_;
  std::string host_ = "127.0.0.1";
  pid_t pid_ = -1;
  int port_ = 0;
};

TEST_F(ModelServerTest, NonStreamingCompletionReturnsTokensAfterModelledLatency) {
  ASSERT_TRUE(start({"--name", "backend-a", "--ttft-ms", "100", "--tpot-ms", "20", "--tokens", "4"}));
  auto c = client();

  // max_tokens overrides --tokens.
  const json body{{"model", "stand-in"}, {"prompt", "hello there world"}, {"max_tokens", 10}};
  auto t0 = Clock::now();
  auto res = c->Post("/v1/completions", body.dump(), "application/json");
  const double elapsed = msSince(t0);
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  ASSERT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(res->get_header_value("X-Aimesh-Backend"), "backend-a");
  const json doc = json::parse(res->body);
  EXPECT_EQ(doc["object"], "text_completion");
  EXPECT_EQ(doc["backend"], "backend-a");
  const auto words = splitWords(doc["choices"][0]["text"].get<std::string>());
  ASSERT_EQ(words.size(), 10u);
  EXPECT_EQ(words.front(), "tok0");
  EXPECT_EQ(words.back(), "tok9");
  EXPECT_EQ(doc["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(doc["usage"]["completion_tokens"], 10);
  EXPECT_EQ(doc["usage"]["prompt_tokens"], 3);
  EXPECT_EQ(doc["usage"]["total_tokens"], 13);
  const double expected = 100 + 9 * 20;
  EXPECT_GE(elapsed, expected);
  EXPECT_LT(elapsed, 3 * expected);

  // Chat endpoint without max_tokens: --tokens applies.
  const json chat{{"model", "stand-in"}, {"messages", {{{"role", "user"}, {"content", "hi"}}}}};
  t0 = Clock::now();
  res = c->Post("/v1/chat/completions", chat.dump(), "application/json");
  const double chatElapsed = msSince(t0);
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  ASSERT_EQ(res->status, 200) << res->body;
  const json chatDoc = json::parse(res->body);
  EXPECT_EQ(chatDoc["object"], "chat.completion");
  EXPECT_EQ(chatDoc["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(chatDoc["choices"][0]["message"]["content"], "tok0 tok1 tok2 tok3");
  EXPECT_EQ(chatDoc["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(chatDoc["usage"]["completion_tokens"], 4);
  EXPECT_GE(chatElapsed, 100 + 3 * 20);
  EXPECT_LT(chatElapsed, 3 * (100 + 3 * 20));

  // Served counters show up on /metrics.
  res = c->Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_NE(res->body.find("vllm:request_success_total{finished_reason=\"length\",model_name=\"stand-in\"} 1"),
            std::string::npos)
      << res->body;
  EXPECT_EQ(metricValue(res->body, "vllm:generation_tokens_total"), 14.0);
}

TEST_F(ModelServerTest, StreamingSendsOneSseEventPerTokenThenDone) {
  constexpr int kTokens = 6;
  constexpr double kTtft = 200;
  constexpr double kTpot = 30;
  ASSERT_TRUE(start({"--ttft-ms", "200", "--tpot-ms", "30"}));
  auto c = client();

  for (const char* path : {"/v1/completions", "/v1/chat/completions"}) {
    SCOPED_TRACE(path);
    json body{{"model", "stand-in"}, {"max_tokens", kTokens}, {"stream", true}};
    if (std::string(path) == "/v1/completions") {
      body["prompt"] = "stream me";
    } else {
      body["messages"] = json::array({{{"role", "user"}, {"content", "stream me"}}});
    }
    httplib::Request req;
    req.method = "POST";
    req.path = path;
    req.body = body.dump();
    req.set_header("Content-Type", "application/json");

    std::string buffer;
    std::vector<std::string> events;
    std::vector<double> eventMs;
    int receiverCalls = 0;
    const auto t0 = Clock::now();
    req.content_receiver = [&](const char* data, size_t len, uint64_t, uint64_t) {
      ++receiverCalls;
      buffer.append(data, len);
      for (size_t end; (end = buffer.find("\n\n")) != std::string::npos;) {
        events.push_back(buffer.substr(0, end));
        eventMs.push_back(msSince(t0));
        buffer.erase(0, end + 2);
      }
      return true;
    };
    auto res = c->send(req);
    const double total = msSince(t0);
    ASSERT_TRUE(res) << httplib::to_string(res.error());
    ASSERT_EQ(res->status, 200);
    EXPECT_EQ(res->get_header_value("Content-Type"), "text/event-stream");
    EXPECT_EQ(res->get_header_value("Transfer-Encoding"), "chunked");
    EXPECT_TRUE(buffer.empty()) << buffer;

    ASSERT_EQ(events.size(), static_cast<size_t>(kTokens + 1));
    EXPECT_EQ(events.back(), "data: [DONE]");
    std::string text;
    for (int i = 0; i < kTokens; ++i) {
      ASSERT_EQ(events[i].rfind("data: ", 0), 0u) << events[i];
      const json chunk = json::parse(events[i].substr(6));
      const json& choice = chunk["choices"][0];
      text += std::string(path) == "/v1/completions" ? choice["text"].get<std::string>()
                                                      : choice["delta"]["content"].get<std::string>();
      EXPECT_EQ(choice["finish_reason"].is_null(), i + 1 < kTokens);
    }
    EXPECT_EQ(text, "tok0 tok1 tok2 tok3 tok4 tok5");
    // Tokens are flushed as they are produced, not in one burst at the end.
    EXPECT_GE(receiverCalls, kTokens);
    EXPECT_GE(eventMs.front(), kTtft);
    EXPECT_LT(eventMs.front(), 3 * kTtft);
    EXPECT_GE(eventMs[kTokens - 1] - eventMs.front(), (kTokens - 1) * kTpot * 0.8);
    EXPECT_GE(total, kTtft + (kTokens - 1) * kTpot);
    EXPECT_LT(total, 3 * (kTtft + (kTokens - 1) * kTpot));
  }
}

TEST_F(ModelServerTest, RequestsBeyondMaxConcurrentWaitAndShowOnMetrics) {
  constexpr int kTtft = 600;
  ASSERT_TRUE(start({"--max-concurrent", "1", "--ttft-ms", "600", "--tpot-ms", "0", "--tokens", "1",
                     "--model", "m1"}));
  const json body{{"model", "m1"}, {"prompt", "x"}};
  const auto t0 = Clock::now();
  std::vector<double> doneMs(2, -1);
  std::vector<int> status(2, 0);
  std::vector<std::thread> clients;
  for (int i = 0; i < 2; ++i) {
    clients.emplace_back([&, i] {
      auto c = client();
      auto res = c->Post("/v1/completions", body.dump(), "application/json");
      doneMs[i] = msSince(t0);
      status[i] = res ? res->status : -1;
    });
  }

  auto c = client();
  bool sawQueued = false;
  std::string lastMetrics;
  while (msSince(t0) < kTtft - 100 && !sawQueued) {
    auto res = c->Get("/metrics");
    ASSERT_TRUE(res);
    lastMetrics = res->body;
    sawQueued = metricValue(res->body, "vllm:num_requests_waiting") == 1.0 &&
                metricValue(res->body, "vllm:num_requests_running") == 1.0;
    if (!sawQueued) std::this_thread::sleep_for(milliseconds(10));
  }
  EXPECT_TRUE(sawQueued) << lastMetrics;
  EXPECT_NE(lastMetrics.find("vllm:num_requests_waiting{model_name=\"m1\"} 1"), std::string::npos) << lastMetrics;
  EXPECT_EQ(metricValue(lastMetrics, "vllm:kv_cache_usage_perc"), 1.0);

  for (auto& t : clients) t.join();
  EXPECT_EQ(status[0], 200);
  EXPECT_EQ(status[1], 200);
  const double first = std::min(doneMs[0], doneMs[1]);
  const double second = std::max(doneMs[0], doneMs[1]);
  EXPECT_GE(first, kTtft);
  EXPECT_GE(second, 2 * kTtft);  // served one after the other
  EXPECT_LT(second, 3 * 2 * kTtft);

  auto res = c->Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_EQ(metricValue(res->body, "vllm:num_requests_waiting"), 0.0);
  EXPECT_EQ(metricValue(res->body, "vllm:num_requests_running"), 0.0);
  EXPECT_EQ(metricValue(res->body, "vllm:kv_cache_usage_perc"), 0.0);
}

TEST_F(ModelServerTest, WhoamiHealthAndBadRequests) {
  ASSERT_TRUE(start({"--name", "backend-b", "--ttft-ms", "1", "--tpot-ms", "1"}));
  auto c = client();

  auto res = c->Get("/whoami");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "backend-b");
  EXPECT_EQ(res->get_header_value("X-Aimesh-Backend"), "backend-b");

  res = c->Get("/health");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "ok");

  res = c->Post("/v1/completions", "{not json", "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  json err = json::parse(res->body);
  EXPECT_TRUE(err["error"]["message"].is_string());
  EXPECT_EQ(err["error"]["type"], "invalid_request_error");

  res = c->Post("/v1/chat/completions", R"({"model":"stand-in","prompt":"no messages"})", "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  err = json::parse(res->body);
  EXPECT_EQ(err["error"]["param"], "messages");

  res = c->Post("/v1/completions", R"({"prompt":"x","max_tokens":0})", "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);

  res = c->Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_EQ(metricValue(res->body, "aimesh_model_server_bad_requests_total"), 3.0);
}

TEST_F(ModelServerTest, SigtermStopsPromptlyWithStreamInFlight) {
  ASSERT_TRUE(start({"--ttft-ms", "10", "--tpot-ms", "100", "--tokens", "200"}));
  std::atomic<bool> gotData{false};
  std::thread streamer([&] {
    auto c = client();
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.body = R"({"prompt":"long","stream":true})";
    req.set_header("Content-Type", "application/json");
    req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) {
      gotData = true;
      return true;
    };
    c->send(req);  // cut short by the shutdown
  });
  const auto waitStart = Clock::now();
  while (!gotData && msSince(waitStart) < 2000) std::this_thread::sleep_for(milliseconds(5));
  EXPECT_TRUE(gotData.load());

  const auto t0 = Clock::now();
  const int status = stopChild(SIGTERM, milliseconds(3000));
  const double stopMs = msSince(t0);
  streamer.join();
  ASSERT_NE(status, -1) << "model-server did not exit within 3 s of SIGTERM";
  EXPECT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_LT(stopMs, 1500);
}

TEST_F(ModelServerTest, KeepAliveIsUnlimitedByDefaultAndBoundedByTheFlags) {
  // Default: like uvicorn, no per-connection request limit.
  ASSERT_TRUE(start({"--name", "ka", "--ttft-ms", "1", "--tpot-ms", "1"}));
  int fd = connectRaw();
  ASSERT_GE(fd, 0);
  for (int i = 0; i < 8; ++i) {
    const std::string head = whoamiOn(fd);
    ASSERT_NE(head, "") << "request " << i << " found the connection closed";
    EXPECT_EQ(head.find("Connection: close"), std::string::npos) << head;
  }
  close(fd);
  stopChild(SIGKILL);

  // --keep-alive-max 2: the second response says close, and the server does.
  ASSERT_TRUE(start({"--name", "ka", "--keep-alive-max", "2", "--keep-alive-timeout", "1"}));
  fd = connectRaw();
  ASSERT_GE(fd, 0);
  std::string head = whoamiOn(fd);
  EXPECT_EQ(head.find("Connection: close"), std::string::npos) << head;
  head = whoamiOn(fd);
  EXPECT_NE(head.find("Connection: close"), std::string::npos) << head;
  EXPECT_TRUE(peerClosed(fd));
  close(fd);

  // --keep-alive-timeout 1: an idle connection is closed after about 1 s.
  fd = connectRaw();
  ASSERT_GE(fd, 0);
  ASSERT_NE(whoamiOn(fd), "");
  const auto idleStart = Clock::now();
  EXPECT_TRUE(peerClosed(fd));
  const double idleMs = msSince(idleStart);
  EXPECT_GE(idleMs, 900);
  EXPECT_LT(idleMs, 3000);
  close(fd);
}

TEST_F(ModelServerTest, ListensOnIpv6Loopback) {
  if (!std::ifstream("/proc/net/if_inet6")) GTEST_SKIP() << "no IPv6 in this environment";
  ASSERT_TRUE(start({"--name", "v6", "--ttft-ms", "1", "--tpot-ms", "1"}, "::1"));
  auto c = client();
  auto res = c->Get("/whoami");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->body, "v6");
}

}  // namespace
}  // namespace aimesh
