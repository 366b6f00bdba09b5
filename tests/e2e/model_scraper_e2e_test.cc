// e2e: ModelScraper run from the test process but inside the sandbox's client
// namespace (Options.netns), against the model-server stand-in in the backend
// namespace. Streams from the client namespace fill the stand-in's single
// slot so requests queue; the scraper must report that queue, then zero once
// the load is gone. Dead and silent backends must fail within the timeout
// without holding up the live ones, all on the scraper's one thread.
// Everything lives in the sandbox.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "fixtures/sandbox.h"
#include "telemetry/model_scraper.h"

namespace aimesh::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Threads of this process, from /proc/self/task.
size_t threadCount() {
  size_t n = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator("/proc/self/task")) ++n;
  return n;
}

double msBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// A thread that has joined network namespace `ns` before running fn; threads
// it starts inherit the namespace, the rest of the test process stays put.
std::thread threadIn(const std::string& ns, std::function<void()> fn) {
  return std::thread([ns, fn = std::move(fn)] {
    int fd = ::open(("/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
    bool joined = fd >= 0 && ::setns(fd, CLONE_NEWNET) == 0;
    if (fd >= 0) ::close(fd);
    if (!joined) {
      ADD_FAILURE() << "cannot join netns " << ns;
      return;
    }
    fn();
  });
}

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// What the sink saw, in order, with arrival times.
class Recorder {
 public:
  struct Record {
    uint32_t id;
    bool ok;
    ModelSignals signals;
    std::string error;
    Clock::time_point at;
  };
  ModelScraper::Sink sink() {
    return [this](uint32_t id, const Result<ModelSignals>& r) {
      {
        std::lock_guard g(mu_);
        records_.push_back(
            Record{id, r.ok(), r.ok() ? r.value() : ModelSignals{}, r.ok() ? "" : r.error().message(), Clock::now()});
      }
      cv_.notify_all();
    };
  }
  // The first record of `id` at or after `after` that satisfies pred.
  std::optional<Record> waitFor(uint32_t id, Clock::time_point after, const std::function<bool(const Record&)>& pred,
                                std::chrono::milliseconds timeout) {
    std::unique_lock lk(mu_);
    std::optional<Record> found;
    cv_.wait_for(lk, timeout, [&] {
      for (auto& r : records_)
        if (r.id == id && r.at >= after && pred(r)) {
          found = r;
          return true;
        }
      return false;
    });
    return found;
  }
  std::optional<Record> first(uint32_t id, std::chrono::milliseconds timeout) {
    return waitFor(id, Clock::time_point::min(), [](const Record&) { return true; }, timeout);
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Record> records_;
};

class ModelScraperE2e : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    dir_ = tempDir();
    sandbox_ = std::make_unique<Sandbox>();
  }
  void TearDown() override {
    // The scraper's threads hold the client netns; end them before the
    // sandbox deletes it, so the veth goes with it.
    scraper_.reset();
    silent_.reset();
    procs_.clear();
    sandbox_.reset();
    if (!dir_.empty()) removeTree(dir_);
  }

  // The stand-in on addr:8000 in the backend netns with --max-concurrent;
  // returns once /health answers from the client netns.
  void startModelServer(const std::string& addr, std::vector<std::string> extra) {
    std::vector<std::string> argv{std::string(AIMESH_BINARY_DIR) + "/model-server", "--listen", addr, "--port", "8000",
                                  "--name", addr};
    argv.insert(argv.end(), extra.begin(), extra.end());
    procs_.push_back(startIn(sandbox_->backend().name(), argv, dir_ + "/model-" + addr + ".log"));
    bool up = false;
    threadIn(sandbox_->client().name(), [&] {
      httplib::Client c(addr, 8000);
      c.set_connection_timeout(200ms);
      for (int i = 0; i < 100 && !up; ++i) {
        auto res = c.Get("/health");
        up = res && res->status == 200;
        if (!up) std::this_thread::sleep_for(50ms);
      }
    }).join();
    ASSERT_TRUE(up) << "model-server on " << addr << " did not answer; log in " << dir_;
  }

  std::string dir_;
  std::unique_ptr<Sandbox> sandbox_;
  std::vector<Child> procs_;
  std::unique_ptr<Fd> silent_;
  std::unique_ptr<ModelScraper> scraper_;
};

TEST_F(ModelScraperE2e, ReportsQueueUnderLoadThenZeroFromTheClientNetns) {
  // One slot; each streamed request holds it for 100 + 15 * 40 = 700 ms.
  ASSERT_NO_FATAL_FAILURE(startModelServer(
      "10.77.0.2", {"--max-concurrent", "1", "--ttft-ms", "100", "--tpot-ms", "40", "--tokens", "16"}));
  Recorder rec;
  scraper_ = std::make_unique<ModelScraper>(
      ModelScraper::Options{.interval = 100ms, .timeout = 300ms, .netns = sandbox_->client().name()}, rec.sink());
  scraper_->setTargets({{7, "10.77.0.2", 8000, "/metrics"}});

  // Idle first: the stand-in is reachable only from inside the sandbox, so a
  // good answer also shows the scraper thread is in the client namespace.
  auto idle = rec.first(7, 3s);
  ASSERT_TRUE(idle.has_value());
  ASSERT_TRUE(idle->ok) << idle->error;
  EXPECT_TRUE(idle->signals.hasWaiting && idle->signals.hasRunning && idle->signals.hasKvCache);
  EXPECT_EQ(idle->signals.waiting, 0);
  EXPECT_EQ(idle->signals.running, 0);

  constexpr int kStreams = 3;
  std::vector<int> status(kStreams, 0);
  std::vector<int> events(kStreams, 0);
  const auto loadStart = Clock::now();
  std::thread load = threadIn(sandbox_->client().name(), [&] {
    std::vector<std::thread> streams;
    for (int i = 0; i < kStreams; ++i)
      streams.emplace_back([&, i] {
        httplib::Client c("10.77.0.2", 8000);
        c.set_read_timeout(10s);
        httplib::Request req;
        req.method = "POST";
        req.path = "/v1/completions";
        req.body = R"({"prompt":"queue me","stream":true})";
        req.set_header("Content-Type", "application/json");
        req.content_receiver = [&, i](const char* data, size_t len, uint64_t, uint64_t) {
          for (size_t k = 0; k + 1 < len; ++k)
            if (data[k] == '\n' && data[k + 1] == '\n') ++events[i];
          return true;
        };
        auto res = c.send(req);
        status[i] = res ? res->status : -1;
      });
    for (auto& s : streams) s.join();
  });

  auto queued = rec.waitFor(
      7, loadStart, [](const Recorder::Record& r) { return r.ok && r.signals.waiting > 0 && r.signals.running > 0; },
      3s);
  load.join();
  const auto loadEnd = Clock::now();
  ASSERT_TRUE(queued.has_value()) << "never saw waiting > 0 and running > 0 under load";
  EXPECT_EQ(queued->signals.running, 1);  // --max-concurrent 1
  EXPECT_LE(queued->signals.waiting, kStreams - 1);
  EXPECT_DOUBLE_EQ(queued->signals.kvCacheUsage, 1.0);  // stand-in: running / max
  for (int i = 0; i < kStreams; ++i) {
    EXPECT_EQ(status[i], 200) << i;
    EXPECT_EQ(events[i], 16 + 1) << i;  // 16 tokens and [DONE]
  }

  auto drained = rec.waitFor(
      7, loadEnd,
      [](const Recorder::Record& r) {
        return r.ok && r.signals.waiting == 0 && r.signals.running == 0 && r.signals.kvCacheUsage == 0;
      },
      3s);
  EXPECT_TRUE(drained.has_value()) << "queue never read zero after the load ended";
  EXPECT_EQ(scraper_->scrapesFailed(), 0u);
  EXPECT_GE(scraper_->scrapesOk(), 3u);
}

TEST_F(ModelScraperE2e, DeadAndSilentBackendsFailWithinTimeoutWithoutHoldingUpLiveOnes) {
  ASSERT_NO_FATAL_FAILURE(startModelServer("10.77.0.2", {"--ttft-ms", "1", "--tpot-ms", "1"}));
  ASSERT_NO_FATAL_FAILURE(startModelServer("fd77::3", {"--ttft-ms", "1", "--tpot-ms", "1"}));
  // 10.77.0.4:8000 completes handshakes (listen, never accept) and never
  // answers; nothing listens on 10.77.0.5:8000, so that one is refused.
  silent_ = std::make_unique<Fd>();
  threadIn(sandbox_->backend().name(), [&] {
    silent_->fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(8000);
    ::inet_pton(AF_INET, "10.77.0.4", &sa.sin_addr);
    if (::bind(silent_->fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 || ::listen(silent_->fd, 16) != 0)
      ADD_FAILURE() << "silent listener: " << std::strerror(errno);
  }).join();

  Recorder rec;
  const size_t threadsBefore = threadCount();
  // A long interval: every result below comes from the first tick, which
  // starts as soon as the idle scraper is given targets.
  scraper_ = std::make_unique<ModelScraper>(
      ModelScraper::Options{.interval = 2s, .timeout = 300ms, .netns = sandbox_->client().name()}, rec.sink());
  const auto t0 = Clock::now();
  scraper_->setTargets({{1, "10.77.0.2", 8000, "/metrics"},
                        {2, "10.77.0.5", 8000, "/metrics"},
                        {3, "10.77.0.4", 8000, "/metrics"},
                        {4, "fd77::3", 8000, "/metrics"}});
  auto live = rec.first(1, 3s), refused = rec.first(2, 3s), silent = rec.first(3, 3s), v6 = rec.first(4, 3s);
  ASSERT_TRUE(live && refused && silent && v6);
  ASSERT_TRUE(live->ok) << live->error;
  ASSERT_TRUE(v6->ok) << v6->error;
  EXPECT_EQ(v6->signals.waiting, 0);
  EXPECT_FALSE(refused->ok);
  EXPECT_NE(refused->error.find("http://10.77.0.5:8000/metrics: cannot connect"), std::string::npos)
      << refused->error;
  EXPECT_FALSE(silent->ok);
  EXPECT_NE(silent->error.find("http://10.77.0.4:8000/metrics: no complete answer within 300 ms"), std::string::npos)
      << silent->error;

  // Live backends answer at once, not after the silent one's timeout; the
  // refusal is immediate; the silent one ends at its deadline.
  EXPECT_LT(live->at, silent->at);
  EXPECT_LT(v6->at, silent->at);
  EXPECT_LT(msBetween(t0, live->at), 200);
  EXPECT_LT(msBetween(t0, refused->at), 200);
  EXPECT_GE(msBetween(t0, silent->at), 250);
  EXPECT_LT(msBetween(t0, silent->at), 300 + 400);
  EXPECT_GE(scraper_->scrapesOk(), 2u);
  EXPECT_GE(scraper_->scrapesFailed(), 2u);

  // Next tick, 2 s on: once the live answer is in, the silent scrape is in
  // flight; shutting down cuts it rather than waiting for its deadline, and
  // it is not reported.
  ASSERT_TRUE(rec.waitFor(1, live->at + 1ms, [](const Recorder::Record&) { return true; }, 4s).has_value());
  // Mid-tick, four scrapes made and one in flight: one thread is the
  // scraper, none is per target.
  EXPECT_EQ(threadCount(), threadsBefore + 1);
  const auto t1 = Clock::now();
  scraper_.reset();
  EXPECT_LT(msBetween(t1, Clock::now()), 250);
  EXPECT_FALSE(rec.waitFor(3, silent->at + 1ms, [](const Recorder::Record&) { return true; }, 0ms).has_value());
}

}  // namespace
}  // namespace aimesh::testing
