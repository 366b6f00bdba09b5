// lb-compare: load balancers for streamed inference requests, in one run.
// N model-server stand-ins (bench/model_server.cc) in the backend namespace,
// one of them slow; open-loop Poisson arrivals at a fraction of the pool's
// capacity, a new TCP connection per OpenAI-style streaming request; the
// same arrival schedule through each balancer:
//   - aimesh (the agent, one row per `algorithm:`), clients connect to a VIP;
//   - HAProxy (mode tcp, roundrobin / leastconn) in the client namespace;
//   - two reference pickers inside the load generator itself, clients
//     connecting straight to the chosen backend: join-shortest-queue and
//     shortest-expected-delay. They see every in-flight request and (SED) the
//     true speeds, so they bound what a connection-level balancer can do.
// --slow-backend: eleven stand-ins, one stalling 2 s before its first token,
// and a 1 s TTFT client timeout: the success rate per balancer.
// See docs/benchmarks.md.
//
// The client is K worker processes, each in its own child cgroup of the
// sandbox cgroup (where the agent attaches) and in the client namespace;
// arrival i goes to worker i mod K. aimesh's hash algorithms key on the
// connecting cgroup, so K cgroups give them K client identities; every row
// uses the same K-process client so the rows are comparable.
//
// Everything runs in a sandbox of its own (tests/fixtures/sandbox.h); the
// stand-ins, HAProxy, the agent, the workers, the child cgroups and the work
// dir are removed at exit, on error and on SIGINT/SIGTERM. The children get
// PR_SET_PDEATHSIG, so even a SIGKILLed lb-compare leaves no process behind.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fmt/format.h>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "client/api_client.h"
#include "fixtures/bench_run.h"
#include "fixtures/machine_facts.h"
#include "fixtures/sandbox.h"

namespace aimesh {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
using testing::AgentProcess;
using testing::Child;
using testing::Sandbox;

volatile sig_atomic_t& gInterrupted = testing::gBenchInterrupted;
using testing::checkInterrupted;
using testing::Interrupted;

constexpr const char* kVip = "10.96.0.50";
constexpr uint16_t kPort = 8000;
constexpr const char* kHaproxyAddr = "127.0.0.1";  // in the client namespace
constexpr uint16_t kHaproxyPort = 9000;
constexpr const char* kHaproxyBin = "/usr/sbin/haproxy";
constexpr int kMaxServers = 64;
constexpr double kInf = std::numeric_limits<double>::infinity();

int64_t monoNs() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// ---- configuration --------------------------------------------------------------

struct ServerSpec {
  std::string addr;
  int ttftMs = 0, tpotMs = 0;
  bool slow = false;
};

struct Config {
  bool slowBackend = false;
  int servers = 4;
  int ttftMs = 100, tpotMs = 10, tokens = 32;
  int slowFactor = 4;      // default mode: the slow stand-in's TTFT and TPOT multiplier
  int stallMs = 2000;      // --slow-backend: the stalling stand-in's TTFT
  int maxConcurrent = 4;
  // The stand-in's own default. A queued request holds an HTTP thread; with
  // fewer threads than queued requests the excess waits unseen in httplib's
  // queue: not in vllm:num_requests_waiting, and without response headers
  // (X-Aimesh-Backend), so the client cannot tell where it went.
  int serverThreads = 64;
  double load = 0.7;
  double seconds = 60;
  uint64_t seed = 1;
  int clients = 16;
  double timeoutS = 20;      // whole request
  double ttftTimeoutS = 0;   // 0: none (default mode); --slow-backend: 1 s
  bool wantJson = false;
  // Opt-in: the service gets `model_metrics:` and the agent --scrape-netns
  // (the backend namespace), so least_conn/latency also see the stand-ins'
  // queues. Off by default: the agent runs with its default flags.
  bool scrape = false;
  std::vector<std::string> rows;

  std::vector<ServerSpec> specs;
  double serviceS(const ServerSpec& s) const { return (s.ttftMs + double(s.tpotMs) * (tokens - 1)) / 1000.0; }
  double capacity() const {
    double c = 0;
    for (auto& s : specs) c += maxConcurrent / serviceS(s);
    return c;
  }
};

void buildSpecs(Config& c) {
  c.specs.clear();
  for (int i = 0; i < c.servers; ++i) {
    ServerSpec s{fmt::format("10.77.0.{}", 2 + i), c.ttftMs, c.tpotMs, false};
    if (i == c.servers - 1) {  // the last one is the odd one out
      s.slow = true;
      if (c.slowBackend) {
        s.ttftMs = c.stallMs;
      } else {
        s.ttftMs *= c.slowFactor;
        s.tpotMs *= c.slowFactor;
      }
    }
    c.specs.push_back(s);
  }
}

enum class Kind { Agent, Haproxy, Jsq, Sed };

struct RowDef {
  std::string key;
  std::string label;
  Kind kind;
  std::string param;  // agent algorithm or HAProxy balance
};

const std::vector<RowDef>& allRows() {
  static const std::vector<RowDef> rows{
      {"random", "aimesh random", Kind::Agent, "random"},
      {"least_conn", "aimesh least_conn", Kind::Agent, "least_conn"},
      {"latency", "aimesh latency", Kind::Agent, "latency"},
      {"maglev", "aimesh maglev", Kind::Agent, "maglev"},
      {"bounded_hash", "aimesh bounded_hash", Kind::Agent, "bounded_hash"},
      {"haproxy_rr", "HAProxy roundrobin", Kind::Haproxy, "roundrobin"},
      {"haproxy_lc", "HAProxy leastconn", Kind::Haproxy, "leastconn"},
      {"jsq", "ideal JSQ (loadgen)", Kind::Jsq, ""},
      {"sed", "ideal SED (loadgen)", Kind::Sed, ""},
  };
  return rows;
}

// ---- the client: worker processes ---------------------------------------------

enum Outcome : uint8_t {
  kNotRun = 0,
  kOk,
  kRefused,      // connect: ECONNREFUSED
  kConnectFail,  // connect: any other error
  kReset,        // ECONNRESET/EPIPE after connecting
  kClosed,       // EOF before data: [DONE]
  kHttpError,    // status != 200
  kShort,        // [DONE] with fewer token events than asked for
  kTimeout,      // whole-request timeout
  kTtftTimeout,  // no token within the TTFT timeout
  kOutcomes
};
const char* outcomeKey(int o) {
  static const char* k[] = {"not_run", "ok",   "refused", "connect_failed", "reset",
                            "closed",  "http", "short",   "timeout",        "ttft_timeout"};
  return k[o];
}

// One record per arrival, in memory shared with the workers.
struct Rec {
  int64_t ttftNs;  // -1: no token
  int64_t e2eNs;   // -1: not completed
  int64_t endNs;   // when it ended, from the schedule's start
  int32_t tokens;
  int16_t backend;  // index into the specs; -1 unknown
  uint8_t outcome;
  uint8_t pad;
};

struct SharedState {
  std::atomic<int32_t> inflight[kMaxServers];  // JSQ/SED: the loadgen's own in-flight requests per backend
  std::atomic<int64_t> maxLagNs;               // worst lateness of a connect() behind its arrival time
};

// An anonymous shared mapping: SharedState, then one Rec per arrival.
class SharedMem {
 public:
  explicit SharedMem(size_t nRecs) {
    size_ = sizeof(SharedState) + nRecs * sizeof(Rec);
    void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error(fmt::format("mmap: {}", std::strerror(errno)));
    base_ = static_cast<char*>(p);
    n_ = nRecs;
  }
  ~SharedMem() { ::munmap(base_, size_); }
  SharedMem(const SharedMem&) = delete;
  SharedMem& operator=(const SharedMem&) = delete;
  void reset() {
    std::memset(base_, 0, size_);
    for (size_t i = 0; i < n_; ++i) recs()[i] = Rec{-1, -1, -1, 0, -1, kNotRun, 0};
  }
  SharedState* state() { return reinterpret_cast<SharedState*>(base_); }
  Rec* recs() { return reinterpret_cast<Rec*>(base_ + sizeof(SharedState)); }

 private:
  char* base_ = nullptr;
  size_t size_ = 0, n_ = 0;
};

// What a worker needs; set up in the parent, inherited by fork().
struct WorkerPlan {
  Kind kind = Kind::Agent;
  std::string fixedAddr;  // VIP or HAProxy
  uint16_t fixedPort = kPort;
  std::vector<std::string> backends;  // JSQ/SED targets, and the names in X-Aimesh-Backend
  std::vector<double> serviceS;       // SED: true service time per backend
  const std::vector<int64_t>* arrivals = nullptr;
  int64_t startNs = 0;
  int64_t hardEndNs = 0;
  int workers = 1;
  int tokens = 0;
  int64_t timeoutNs = 0, ttftTimeoutNs = 0;
  uint64_t seed = 1;
  pid_t parent = 0;
  SharedState* shared = nullptr;
  Rec* recs = nullptr;
};

sockaddr_in makeAddr(const std::string& addr, uint16_t port) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  ::inet_pton(AF_INET, addr.c_str(), &sa.sin_addr);
  return sa;
}

// One worker: an epoll loop that opens a connection at each of its arrival
// times, sends one streaming completion request and reads the SSE stream.
class Worker {
 public:
  Worker(const WorkerPlan& p, int index) : p_(p), index_(index), rng_(p.seed * 7919 + index) {
    for (size_t i = 0; i < p.backends.size(); ++i) byName_[p.backends[i]] = int(i);
  }

  int run() {
    ep_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (ep_ < 0) return 4;
    const auto& arr = *p_.arrivals;
    size_t next = index_;
    epoll_event evs[64];
    for (;;) {
      int64_t now = monoNs();
      if (gInterrupted || ::getppid() != p_.parent || now > p_.hardEndNs) break;
      while (next < arr.size() && p_.startNs + arr[next] <= now) {
        startRequest(int(next), now);
        next += p_.workers;
      }
      expire(now);
      if (next >= arr.size() && active_ == 0) break;
      int64_t waitNs = 5'000'000;  // also the resolution of the timeouts
      if (next < arr.size()) waitNs = std::clamp<int64_t>(p_.startNs + arr[next] - now, 0, waitNs);
      timespec ts{0, long(waitNs)};
      int n = ::epoll_pwait2(ep_, evs, 64, &ts, nullptr);
      for (int i = 0; i < n; ++i) onEvent(evs[i].data.u32, evs[i].events);
    }
    // Interrupted or out of time: whatever is still open did not finish.
    for (size_t i = 0; i < reqs_.size(); ++i)
      if (reqs_[i].fd >= 0) finish(int(i), kTimeout);
    ::close(ep_);
    return 0;
  }

 private:
  enum class St { Free, Connecting, Reading };
  struct Req {
    int fd = -1;
    St st = St::Free;
    int idx = -1;
    int backend = -1;
    bool picked = false;  // counted in shared->inflight
    int64_t t0 = 0;       // scheduled arrival, monotonic ns
    int64_t ttft = -1;
    bool headersDone = false;
    int status = 0;
    std::string buf;
    size_t scan = 0;
    int tokens = 0;
  };

  int pickBackend() {
    const int n = int(p_.backends.size());
    double best = kInf;
    int chosen = 0, ties = 0;
    for (int b = 0; b < n; ++b) {
      double load = p_.shared->inflight[b].load(std::memory_order_relaxed);
      double score = p_.kind == Kind::Jsq ? load : (load + 1) * p_.serviceS[b];
      if (score < best - 1e-12) {
        best = score;
        chosen = b;
        ties = 1;
      } else if (std::abs(score - best) <= 1e-12 && std::uniform_int_distribution<int>(0, ties++)(rng_) == 0) {
        chosen = b;  // reservoir sampling: a uniformly random one of the ties
      }
    }
    return chosen;
  }

  int allocSlot() {
    if (!free_.empty()) {
      int s = free_.back();
      free_.pop_back();
      return s;
    }
    reqs_.emplace_back();
    return int(reqs_.size()) - 1;
  }

  void startRequest(int idx, int64_t now) {
    int s = allocSlot();
    Req& r = reqs_[s];
    r = Req{};
    r.idx = idx;
    r.t0 = p_.startNs + (*p_.arrivals)[idx];
    int64_t lag = now - r.t0;
    int64_t prev = p_.shared->maxLagNs.load();
    while (lag > prev && !p_.shared->maxLagNs.compare_exchange_weak(prev, lag)) {
    }
    sockaddr_in sa;
    if (p_.kind == Kind::Jsq || p_.kind == Kind::Sed) {
      r.backend = pickBackend();
      r.picked = true;
      p_.shared->inflight[r.backend].fetch_add(1);
      sa = makeAddr(p_.backends[r.backend], kPort);
    } else {
      sa = makeAddr(p_.fixedAddr, p_.fixedPort);
    }
    ++active_;
    r.st = St::Connecting;
    r.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (r.fd < 0) return finish(s, kConnectFail);
    int one = 1;
    ::setsockopt(r.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (::connect(r.fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 && errno != EINPROGRESS)
      return finish(s, errno == ECONNREFUSED ? kRefused : kConnectFail);
    epoll_event ev{};
    ev.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP;
    ev.data.u32 = uint32_t(s);
    if (::epoll_ctl(ep_, EPOLL_CTL_ADD, r.fd, &ev) != 0) return finish(s, kConnectFail);
  }

  void expire(int64_t now) {
    for (size_t i = 0; i < reqs_.size(); ++i) {
      Req& r = reqs_[i];
      if (r.fd < 0) continue;
      if (now - r.t0 > p_.timeoutNs)
        finish(int(i), kTimeout);
      else if (p_.ttftTimeoutNs > 0 && r.ttft < 0 && now - r.t0 > p_.ttftTimeoutNs)
        finish(int(i), kTtftTimeout);
    }
  }

  std::string request() const {
    static const std::string body = R"({"model":"stand-in","prompt":"Say hello","stream":true})";
    return fmt::format(
        "POST /v1/completions HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\n"
        "Accept: text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        kVip, kPort, body.size(), body);
  }

  void onEvent(uint32_t s, uint32_t events) {
    if (s >= reqs_.size() || reqs_[s].fd < 0) return;
    Req& r = reqs_[s];
    if (r.st == St::Connecting) {
      int err = 0;
      socklen_t len = sizeof(err);
      ::getsockopt(r.fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err) return finish(int(s), err == ECONNREFUSED ? kRefused : kConnectFail);
      if (!(events & EPOLLOUT)) return;
      static const std::string req = request();
      // A few hundred bytes into an empty send buffer: one send does it.
      if (::send(r.fd, req.data(), req.size(), MSG_NOSIGNAL) != ssize_t(req.size())) return finish(int(s), kReset);
      r.st = St::Reading;
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLRDHUP;
      ev.data.u32 = s;
      ::epoll_ctl(ep_, EPOLL_CTL_MOD, r.fd, &ev);
      return;
    }
    char buf[16384];
    for (;;) {
      ssize_t n = ::recv(r.fd, buf, sizeof(buf), 0);
      if (n > 0) {
        r.buf.append(buf, size_t(n));
        if (int o = parse(r); o != kNotRun) return finish(int(s), Outcome(o));
        continue;
      }
      if (n == 0) return finish(int(s), kClosed);
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == EINTR) continue;
      return finish(int(s), kReset);
    }
  }

  // Returns an outcome once the request is over, kNotRun while it goes on.
  // The stand-in writes each SSE event (`data: {...}\n\n`) as one HTTP chunk,
  // so "data: " never straddles a chunk header; TCP may split it, hence the
  // rescans from `scan`.
  int parse(Req& r) {
    if (!r.headersDone) {
      size_t e = r.buf.find("\r\n\r\n");
      if (e == std::string::npos) return r.buf.size() > 65536 ? kHttpError : kNotRun;
      r.headersDone = true;
      if (r.buf.compare(0, 9, "HTTP/1.1 ") == 0 || r.buf.compare(0, 9, "HTTP/1.0 ") == 0)
        r.status = std::atoi(r.buf.c_str() + 9);
      std::string head = r.buf.substr(0, e);
      if (size_t h = head.find("\r\nX-Aimesh-Backend: "); h != std::string::npos) {
        size_t v = h + 20, end = head.find("\r\n", v);
        auto it = byName_.find(head.substr(v, end == std::string::npos ? std::string::npos : end - v));
        if (it != byName_.end()) r.backend = it->second;
      }
      if (r.status != 200) return kHttpError;
      r.scan = e + 4;
    }
    for (;;) {
      size_t d = r.buf.find("data: ", r.scan);
      if (d == std::string::npos) {
        r.scan = r.buf.size() > 5 ? r.buf.size() - 5 : r.scan;
        return kNotRun;
      }
      if (r.buf.size() < d + 12) {
        r.scan = d;
        return kNotRun;
      }
      if (r.buf[d + 6] == '{') {
        if (r.tokens++ == 0) r.ttft = monoNs() - r.t0;
      } else if (r.buf.compare(d + 6, 6, "[DONE]") == 0) {
        return r.tokens >= p_.tokens ? kOk : kShort;
      }
      r.scan = d + 6;
    }
  }

  void finish(int s, Outcome o) {
    Req& r = reqs_[s];
    int64_t now = monoNs();
    if (r.fd >= 0) {
      ::close(r.fd);  // also leaves the epoll set
      r.fd = -1;
    }
    if (r.picked) p_.shared->inflight[r.backend].fetch_sub(1);
    Rec& rec = p_.recs[r.idx];
    rec.ttftNs = r.ttft;
    rec.e2eNs = o == kOk ? now - r.t0 : -1;
    rec.endNs = now - p_.startNs;
    rec.tokens = r.tokens;
    rec.backend = int16_t(r.backend);
    rec.outcome = o;
    r = Req{};
    free_.push_back(s);
    --active_;
  }

  const WorkerPlan& p_;
  int index_;
  std::mt19937_64 rng_;
  std::map<std::string, int> byName_;
  int ep_ = -1;
  std::vector<Req> reqs_;
  std::vector<int> free_;
  int active_ = 0;
};

// Enters `cgroup` first, then the namespace (ip netns exec would hide the
// cgroup tree), and dies with the parent.
bool joinCgroupAndNs(const std::string& cgroup, const std::string& ns, pid_t parent) {
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) return false;
  if (!cgroup.empty()) {
    std::ofstream procs(cgroup + "/cgroup.procs");
    procs << ::getpid() << std::endl;
    if (!procs) return false;
  }
  int fd = ::open(("/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = ::setns(fd, CLONE_NEWNET) == 0;
  ::close(fd);
  return ok;
}

// The K workers of one row; killed and reaped by the destructor if still there.
class WorkerSet {
 public:
  ~WorkerSet() {
    for (pid_t p : pids_) ::kill(p, SIGKILL);
    for (pid_t p : pids_) ::waitpid(p, nullptr, 0);
  }
  void spawn(const WorkerPlan& plan, const std::vector<std::string>& cgroups, const std::string& ns) {
    for (int w = 0; w < plan.workers; ++w) {
      pid_t pid = ::fork();
      if (pid < 0) throw std::runtime_error(fmt::format("fork: {}", std::strerror(errno)));
      if (pid == 0) {
        int rc = 5;
        try {  // never unwind into the parent's objects in the child
          if (!joinCgroupAndNs(cgroups[w], ns, plan.parent)) _exit(121);
          rc = Worker(plan, w).run();
        } catch (...) {
          rc = 3;
        }
        _exit(rc);
      }
      pids_.push_back(pid);
    }
  }
  // Waits for every worker until `deadlineNs`; returns the first non-zero status.
  int wait(int64_t deadlineNs) {
    int bad = 0;
    while (!pids_.empty()) {
      if (gInterrupted) return -1;
      if (monoNs() > deadlineNs) {
        for (pid_t p : pids_) ::kill(p, SIGKILL);
        bad = bad ? bad : 124;
      }
      for (size_t i = 0; i < pids_.size();) {
        int st = 0;
        if (::waitpid(pids_[i], &st, WNOHANG) == pids_[i]) {
          int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
          if (code && !bad) bad = code;
          pids_.erase(pids_.begin() + i);
        } else {
          ++i;
        }
      }
      if (!pids_.empty()) std::this_thread::sleep_for(20ms);
    }
    return bad;
  }

 private:
  std::vector<pid_t> pids_;
};

// ---- peers and stand-ins --------------------------------------------------------


// True once addr:port in `ns` accepts a connection (up to ~5 s).
bool waitListening(const std::string& ns, const std::string& addr, uint16_t port) {
  for (int i = 0; i < 100; ++i) {
    checkInterrupted();
    int st = 0;
    testing::runIn(
        "", ns,
        [&](int) {
          int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
          sockaddr_in sa = makeAddr(addr, port);
          int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
          ::close(fd);
          return rc == 0 ? 0 : 1;
        },
        &st);
    if (st == 0) return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

std::vector<Child> startStandIns(const Config& c, const Sandbox& sb, const std::string& dir) {
  std::vector<Child> out;
  for (auto& s : c.specs) {
    out.push_back(testing::startIn(sb.backend().name(),
                          {std::string(AIMESH_BINARY_DIR) + "/model-server", "--listen", s.addr, "--port",
                           std::to_string(kPort), "--name", s.addr, "--ttft-ms", std::to_string(s.ttftMs),
                           "--tpot-ms", std::to_string(s.tpotMs), "--tokens", std::to_string(c.tokens),
                           "--max-concurrent", std::to_string(c.maxConcurrent), "--threads",
                           std::to_string(c.serverThreads), "--model", "stand-in"},
                          dir + "/model-" + s.addr + ".log"));
  }
  for (auto& s : c.specs)
    if (!waitListening(sb.backend().name(), s.addr, kPort))
      throw std::runtime_error(fmt::format("model-server {} did not start; log: {}/model-{}.log", s.addr, dir, s.addr));
  return out;
}

std::string haproxyConfig(const Config& c, const std::string& balance) {
  std::string s = fmt::format(
      "global\n"
      "    maxconn 4096\n"  // HAProxy wants 2 fds per connection; the hard RLIMIT_NOFILE here is 20000
      "    nbthread 1\n"
      "defaults\n"
      "    mode tcp\n"
      "    timeout connect 5s\n"
      "    timeout client 120s\n"
      "    timeout server 120s\n"
      "frontend fe\n"
      "    bind {}:{}\n"
      "    default_backend be\n"
      "backend be\n"
      "    balance {}\n",
      kHaproxyAddr, kHaproxyPort, balance);
  // No maxconn (unlimited) and no health checks: the balancer alone decides.
  for (size_t i = 0; i < c.specs.size(); ++i) s += fmt::format("    server s{} {}:{}\n", i, c.specs[i].addr, kPort);
  return s;
}

std::string stateFile(const Config& c, const std::string& algorithm) {
  std::string s = fmt::format(
      "services:\n"
      "  - name: llm\n"
      "    namespace: bench\n"
      "    model: stand-in\n"
      "    vips: [{}]\n"
      "    ports: [{{port: {}}}]\n"
      "    algorithm: {}\n"
      "{}"
      "    endpoints:\n",
      kVip, kPort, algorithm,
      c.scrape ? fmt::format("    model_metrics: {{port: {}, path: /metrics}}\n", kPort) : std::string());
  for (auto& sp : c.specs) s += fmt::format("      - {{address: {}, port: {}}}\n", sp.addr, kPort);
  return s;
}

// Child cgroups of the sandbox cgroup, one per worker; removed (after the
// workers are gone) before the sandbox removes its own.
class ChildCgroups {
 public:
  ChildCgroups(const std::string& parent, int n) {
    for (int i = 0; i < n; ++i) {
      std::string p = fmt::format("{}/w{}", parent, i);
      if (::mkdir(p.c_str(), 0755) != 0) throw std::runtime_error(fmt::format("mkdir {}: {}", p, std::strerror(errno)));
      paths_.push_back(p);
    }
  }
  ~ChildCgroups() {
    for (auto& p : paths_)
      for (int i = 0; i < 50 && ::rmdir(p.c_str()) != 0 && errno != ENOENT; ++i) std::this_thread::sleep_for(20ms);
  }
  const std::vector<std::string>& paths() const { return paths_; }

 private:
  std::vector<std::string> paths_;
};

// ---- results ----------------------------------------------------------------------

double pct(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return kInf;
  size_t k = size_t(std::ceil(p * double(sorted.size())));
  return sorted[std::clamp<size_t>(k, 1, sorted.size()) - 1];
}

struct RowResult {
  RowDef def;
  size_t sent = 0, ok = 0;
  double ttftP50 = kInf, ttftP90 = kInf, ttftP99 = kInf, e2eP50 = kInf, e2eP99 = kInf;  // ms; inf: not reached
  double donePerS = 0;
  std::map<std::string, size_t> errors;
  std::vector<size_t> perBackend;  // requests answered by each stand-in (from X-Aimesh-Backend)
  size_t unknownBackend = 0;
  double maxLagMs = 0;
  double wallS = 0;
  int workerStatus = 0;
  size_t errorCount() const {
    size_t n = 0;
    for (auto& [k, v] : errors) n += v;
    return n;
  }
};

RowResult summarize(const RowDef& def, const Config& c, const Rec* recs, size_t n, double maxLagMs) {
  RowResult r;
  r.def = def;
  r.sent = n;
  r.perBackend.assign(c.specs.size(), 0);
  std::vector<double> ttft, e2e;
  size_t doneInWindow = 0;
  for (size_t i = 0; i < n; ++i) {
    const Rec& x = recs[i];
    // A request without a first token (or without an end) sorts as infinite:
    // the percentiles are over every request sent.
    ttft.push_back(x.ttftNs >= 0 ? x.ttftNs / 1e6 : kInf);
    e2e.push_back(x.outcome == kOk ? x.e2eNs / 1e6 : kInf);
    if (x.outcome == kOk) {
      ++r.ok;
      if (x.endNs <= int64_t(c.seconds * 1e9)) ++doneInWindow;
    } else {
      ++r.errors[outcomeKey(x.outcome)];
    }
    if (x.backend >= 0 && size_t(x.backend) < r.perBackend.size())
      ++r.perBackend[x.backend];
    else
      ++r.unknownBackend;
  }
  std::sort(ttft.begin(), ttft.end());
  std::sort(e2e.begin(), e2e.end());
  r.ttftP50 = pct(ttft, 0.5);
  r.ttftP90 = pct(ttft, 0.9);
  r.ttftP99 = pct(ttft, 0.99);
  r.e2eP50 = pct(e2e, 0.5);
  r.e2eP99 = pct(e2e, 0.99);
  r.donePerS = doneInWindow / c.seconds;
  r.maxLagMs = maxLagMs;
  return r;
}

std::string ms(double v) { return std::isinf(v) ? std::string("inf") : fmt::format("{:.0f}", v); }
json jnum(double v) { return std::isinf(v) ? json(nullptr) : json(v); }

std::string haproxyVersion() {
  auto [rc, out] = testing::capture(std::string(kHaproxyBin) + " -v 2>/dev/null");
  if (rc != 0) return "";
  std::string first = out.substr(0, out.find('\n'));
  return first;
}

// ---- one row ------------------------------------------------------------------------

struct Env {
  std::string dir;
  int runs = 0;
};

RowResult runRow(const RowDef& def, const Config& c, Env& env, const Sandbox& sb, const ChildCgroups& cgs,
                 const std::vector<int64_t>& arrivals, SharedMem& mem) {
  const int64_t rowStart = monoNs();
  std::string work = fmt::format("{}/row{}-{}", env.dir, env.runs++, def.key);
  ::mkdir(work.c_str(), 0700);

  // Fresh stand-ins for every row: empty queues, nothing left from the last.
  std::vector<Child> servers = startStandIns(c, sb, work);

  std::unique_ptr<AgentProcess> agent;
  Child haproxy;
  WorkerPlan plan;
  plan.kind = def.kind;
  for (auto& s : c.specs) {
    plan.backends.push_back(s.addr);
    plan.serviceS.push_back(c.serviceS(s));
  }
  if (def.kind == Kind::Agent) {
    testing::writeFile(work + "/state.yaml", stateFile(c, def.param));
    std::vector<std::string> extra;
    if (c.scrape) extra = {"--scrape-netns", sb.backend().name()};
    agent = std::make_unique<AgentProcess>(sb.cgroup().path(), work + "/state.yaml", work, extra);
    agent->start();
    auto st = callAgent(agent->apiSocket(), {{"method", "status"}}, 3000ms);
    if (!st || !st->value("ready", false))
      throw std::runtime_error(fmt::format("agent not ready; log: {}/agent.log", work));
    plan.fixedAddr = kVip;
    plan.fixedPort = kPort;
  } else if (def.kind == Kind::Haproxy) {
    testing::writeFile(work + "/haproxy.cfg", haproxyConfig(c, def.param));
    haproxy = testing::startIn(sb.client().name(), {kHaproxyBin, "-db", "-f", work + "/haproxy.cfg"},
                               work + "/haproxy.log");
    if (!waitListening(sb.client().name(), kHaproxyAddr, kHaproxyPort))
      throw std::runtime_error(fmt::format("haproxy did not start; log: {}/haproxy.log", work));
    plan.fixedAddr = kHaproxyAddr;
    plan.fixedPort = kHaproxyPort;
  }

  mem.reset();
  plan.arrivals = &arrivals;
  plan.workers = c.clients;
  plan.tokens = c.tokens;
  plan.timeoutNs = int64_t(c.timeoutS * 1e9);
  plan.ttftTimeoutNs = int64_t(c.ttftTimeoutS * 1e9);
  plan.seed = c.seed;
  plan.parent = ::getpid();
  plan.shared = mem.state();
  plan.recs = mem.recs();
  plan.startNs = monoNs() + 300'000'000;  // all workers forked and settled by then
  const int64_t lastArrival = arrivals.empty() ? 0 : arrivals.back();
  plan.hardEndNs = plan.startNs + lastArrival + plan.timeoutNs + 2'000'000'000;

  WorkerSet workers;
  workers.spawn(plan, cgs.paths(), sb.client().name());
  int st = workers.wait(plan.hardEndNs + 3'000'000'000);
  checkInterrupted();

  RowResult r = summarize(def, c, mem.recs(), arrivals.size(), mem.state()->maxLagNs.load() / 1e6);
  r.workerStatus = st;
  if (agent && !agent->metricsUrlPath().size())
    fmt::print(stderr, "  warning: agent of row {} stopped answering during the run; log: {}/agent.log\n", def.key,
               work);
  r.wallS = (monoNs() - rowStart) / 1e9;
  return r;  // agent, HAProxy and stand-ins go here
}

// ---- the table ---------------------------------------------------------------------

const RowResult* find(const std::vector<RowResult>& rs, const std::string& key) {
  for (auto& r : rs)
    if (r.def.key == key) return &r;
  return nullptr;
}

json run(Config& c) {
  const int64_t t0 = monoNs();
  buildSpecs(c);
  const double capacity = c.capacity();
  const double rate = c.load * capacity;

  // One arrival schedule (seconds from the start, in ns) for every row.
  std::vector<int64_t> arrivals;
  {
    std::mt19937_64 rng(c.seed);
    std::exponential_distribution<double> gap(rate);
    for (double t = gap(rng); t < c.seconds && arrivals.size() < 1'000'000; t += gap(rng))
      arrivals.push_back(int64_t(t * 1e9));
  }
  if (arrivals.empty()) throw std::runtime_error("the schedule has no arrival: raise --seconds or --load");

  json facts = testing::machineFacts();
  const auto& fast = c.specs.front();
  const auto& slow = c.specs.back();
  size_t nFast = c.specs.size() - 1;
  fmt::print("lb-compare{}: {} model-server stand-ins in the backend namespace, --max-concurrent {} each "
             "(the rest queue FIFO)\n",
             c.slowBackend ? " --slow-backend" : "", c.specs.size(), c.maxConcurrent);
  fmt::print("  {} fast ({} .. {}): ttft {} ms, tpot {} ms, {} tokens -> {:.0f} ms per request\n", nFast,
             c.specs.front().addr, c.specs[nFast - 1].addr, fast.ttftMs, fast.tpotMs, c.tokens,
             c.serviceS(fast) * 1000);
  fmt::print("  1 {} ({}): ttft {} ms, tpot {} ms, {} tokens -> {:.0f} ms per request\n",
             c.slowBackend ? "stalling" : fmt::format("slow x{}", c.slowFactor), slow.addr, slow.ttftMs, slow.tpotMs,
             c.tokens, c.serviceS(slow) * 1000);
  fmt::print("capacity = sum of max_concurrent / service time = {} x {}/{:.3f} s + {}/{:.3f} s = {:.1f} req/s\n",
             nFast, c.maxConcurrent, c.serviceS(fast), c.maxConcurrent, c.serviceS(slow), capacity);
  fmt::print("load: open-loop Poisson at {:.0f}% of capacity = {:.1f} req/s for {:g} s (seed {}): {} requests, "
             "the same schedule in every row\n",
             c.load * 100, rate, c.seconds, c.seed, arrivals.size());
  fmt::print("client: {} worker processes, each in its own child cgroup of the sandbox cgroup, in the client "
             "namespace;\n  a new TCP connection per streaming POST /v1/completions; timeout {:g} s per request{}\n",
             c.clients, c.timeoutS,
             c.ttftTimeoutS > 0 ? fmt::format(", {:g} s to the first token", c.ttftTimeoutS) : std::string());
  fmt::print("agent: {}\n", c.scrape ? "default flags + --scrape-netns <backend ns>; the service has model_metrics "
                                       "(the stand-ins' /metrics every 500 ms)"
                                     : "default flags (telemetry on); no model_metrics scraping");
  fmt::print("machine: nproc {}, kernel {}, {}; {}; loadavg at start: {}\n", facts["nproc"].get<long>(),
             facts["kernel"].get<std::string>(), facts["cpu"].get<std::string>(), facts["date"].get<std::string>(),
             facts["loadavg_at_start"].get<std::string>());
  std::fflush(stdout);

  std::string agentBin = std::string(AIMESH_BINARY_DIR) + "/aimesh-agent";
  std::string serverBin = std::string(AIMESH_BINARY_DIR) + "/model-server";
  for (auto& b : {agentBin, serverBin})
    if (::access(b.c_str(), X_OK) != 0)
      throw std::runtime_error(b + " not found: build the aimesh-agent and model-server targets first");
  bool wantHaproxy = false;
  for (auto& k : c.rows)
    for (auto& d : allRows())
      if (d.key == k && d.kind == Kind::Haproxy) wantHaproxy = true;
  if (wantHaproxy && ::access(kHaproxyBin, X_OK) != 0)
    throw std::runtime_error(std::string(kHaproxyBin) + " not found: apt-get install haproxy (scripts/install-deps.sh)");

  Env env;
  env.dir = testing::tempDir();
  struct DirGuard {
    std::string d;
    ~DirGuard() { testing::removeTree(d); }
  } dirGuard{env.dir};

  Sandbox sb;
  // More stand-ins than the sandbox's four backend addresses: add addresses
  // to the backend end of the veth, inside our own namespace.
  if (c.specs.size() > 4) {
    auto [rc, out] = testing::capture("ip -n " + sb.backend().name() + " -o link show type veth");
    std::string dev = out.substr(out.find(": ") + 2);
    dev = dev.substr(0, dev.find_first_of("@:"));
    if (rc != 0 || dev.empty()) throw std::runtime_error("cannot find the backend namespace's veth");
    for (size_t i = 4; i < c.specs.size(); ++i)
      if (testing::sh("ip -n " + sb.backend().name() + " addr add " + c.specs[i].addr + "/24 dev " + dev) != 0)
        throw std::runtime_error("cannot add " + c.specs[i].addr + " to the backend namespace");
  }
  // Thousands of short connections per row: keep TIME_WAIT small and the port
  // range wide in our namespaces, as telemetry-overhead does.
  for (auto* ns : {&sb.client(), &sb.backend()})
    if (testing::sh("ip netns exec " + ns->name() +
                    " sysctl -qw net.ipv4.tcp_max_tw_buckets=1024 net.ipv4.tcp_tw_reuse=1"
                    " net.ipv4.ip_local_port_range='1024 65535'") != 0)
      throw std::runtime_error("cannot set the namespaces' TCP sysctls");
  ChildCgroups cgs(sb.cgroup().path(), c.clients);
  SharedMem mem(arrivals.size());

  std::vector<RowResult> results;
  for (auto& key : c.rows) {
    checkInterrupted();
    const RowDef* def = nullptr;
    for (auto& d : allRows())
      if (d.key == key) def = &d;
    fmt::print(stderr, "row {:<13} running ({:g} s of arrivals, then drain)\n", def->key, c.seconds);
    RowResult r = runRow(*def, c, env, sb, cgs, arrivals, mem);
    std::string line = fmt::format("row {:<13} {:6.1f} s: ok {}/{}, TTFT p99 {} ms", def->key, r.wallS, r.ok, r.sent,
                                   ms(r.ttftP99));
    for (auto& [k, v] : r.errors) line += fmt::format(", {} {}", k, v);
    if (r.unknownBackend) line += fmt::format(", {} with no X-Aimesh-Backend", r.unknownBackend);
    if (r.maxLagMs > 50) line += fmt::format(" (loadgen fell behind by up to {:.0f} ms)", r.maxLagMs);
    if (r.workerStatus) line += fmt::format(" (a worker exited with status {})", r.workerStatus);
    fmt::print(stderr, "{}\n", line);
    results.push_back(std::move(r));
  }

  // ---- the table ----
  const size_t slowIdx = c.specs.size() - 1;
  fmt::print("\n{:<13} {:<21} {:>8} {:>7} {:>7} {:>8} {:>7} {:>11} {:>6} {:>7} {:>6}{}\n", "row", "balancer",
             "TTFT p50", "p90", "p99", "e2e p99", "done/s", "ok/sent", "errors", "to slow", "no hdr",
             c.slowBackend ? fmt::format(" {:>9}", fmt::format("ok<={:g}s", c.ttftTimeoutS)) : std::string());
  fmt::print("{:<13} {:<21} {:>8} {:>7} {:>7} {:>8}\n", "", "", "ms", "ms", "ms", "ms");
  json out{{"machine", facts},
           {"mode", c.slowBackend ? "slow_backend" : "default"},
           {"config",
            {{"servers", c.specs.size()},
             {"max_concurrent", c.maxConcurrent},
             {"tokens", c.tokens},
             {"load", c.load},
             {"rate_per_s", rate},
             {"capacity_per_s", capacity},
             {"seconds", c.seconds},
             {"seed", c.seed},
             {"requests", arrivals.size()},
             {"clients", c.clients},
             {"timeout_s", c.timeoutS},
             {"ttft_timeout_s", c.ttftTimeoutS},
             {"server_threads", c.serverThreads},
             {"scrape_model_metrics", c.scrape},
             {"haproxy", wantHaproxy ? haproxyVersion() : ""}}}};
  for (auto& s : c.specs)
    out["config"]["stand_ins"].push_back(
        {{"addr", s.addr}, {"ttft_ms", s.ttftMs}, {"tpot_ms", s.tpotMs}, {"slow", s.slow}, {"service_s", c.serviceS(s)}});
  for (auto& r : results) {
    double toSlow = r.sent ? 100.0 * r.perBackend[slowIdx] / r.sent : 0;
    double success = r.sent ? 100.0 * r.ok / r.sent : 0;
    fmt::print("{:<13} {:<21} {:>8} {:>7} {:>7} {:>8} {:>7.1f} {:>11} {:>6} {:>6.1f}% {:>6}{}\n", r.def.key,
               r.def.label, ms(r.ttftP50), ms(r.ttftP90), ms(r.ttftP99), ms(r.e2eP99), r.donePerS,
               fmt::format("{}/{}", r.ok, r.sent), r.errorCount(), toSlow, r.unknownBackend,
               c.slowBackend ? fmt::format(" {:>8.1f}%", success) : std::string());
    json jr{{"key", r.def.key},
            {"balancer", r.def.label},
            {"ttft_ms", {{"p50", jnum(r.ttftP50)}, {"p90", jnum(r.ttftP90)}, {"p99", jnum(r.ttftP99)}}},
            {"e2e_ms", {{"p50", jnum(r.e2eP50)}, {"p99", jnum(r.e2eP99)}}},
            {"done_per_s", r.donePerS},
            {"sent", r.sent},
            {"ok", r.ok},
            {"success_pct", success},
            {"errors", r.errors},
            {"per_backend", r.perBackend},
            {"unknown_backend", r.unknownBackend},
            {"to_slow_pct", toSlow},
            {"max_loadgen_lag_ms", r.maxLagMs},
            {"wall_s", r.wallS},
            {"worker_status", r.workerStatus}};
    out["rows"].push_back(jr);
  }
  fmt::print("percentiles: over every request sent; one that got no token (or did not finish) counts as inf.\n"
             "done/s: ok requests that finished within the {:g} s arrival window, per second.\n"
             "to slow: share of the requests sent that {} answered (its X-Aimesh-Backend header).\n"
             "no hdr: failed before any response header arrived, so the backend is unknown (not in 'to slow').\n",
             c.seconds, slow.addr);

  // Ratios of p99 TTFT the issue asks about.
  auto ratio = [&](const std::string& a, const std::string& b, double target, const std::string& name) {
    const RowResult *x = find(results, a), *y = find(results, b);
    if (!x || !y) return;
    // inf (a p99 request that never got a token) has no ratio: show both.
    bool finite = std::isfinite(x->ttftP99) && std::isfinite(y->ttftP99) && y->ttftP99 > 0;
    double v = finite ? x->ttftP99 / y->ttftP99 : kInf;
    std::string shown = finite ? fmt::format("{:.2f}", v)
                               : fmt::format("n/a ({} ms / {} ms)", ms(x->ttftP99), ms(y->ttftP99));
    std::string verdict = finite                         ? (v <= target ? "met" : "NOT met")
                          : std::isfinite(y->ttftP99) ? "NOT met"
                                                        : "undetermined: the reference's p99 is inf too";
    std::string goal = target > 0 ? fmt::format("  (target <= {:g}: {})", target, verdict) : "";
    fmt::print("  {:<40} {}{}\n", name, shown, goal);
    out["ratios"][a + "_over_" + b] = {{"value", std::isfinite(v) ? json(v) : json(nullptr)},
                                       {"target", target > 0 ? json(target) : json(nullptr)}};
  };
  fmt::print("\np99 TTFT ratios:\n");
  ratio("least_conn", "jsq", 1.1, "least_conn / ideal JSQ");
  ratio("latency", "sed", 1.2, "latency / ideal SED");
  for (auto& k : {"random", "least_conn", "latency", "maglev", "bounded_hash", "jsq", "sed"})
    ratio(k, "haproxy_lc", 0, fmt::format("{} / HAProxy leastconn", k));
  if (c.slowBackend) {
    // Here the success rate is the measure; p99 is inf wherever > 1% failed.
    auto share = [&](const std::string& k) -> std::string {
      const RowResult* r = find(results, k);
      return r && r->sent ? fmt::format("{:.1f}%", 100.0 * r->ok / r->sent) : std::string("-");
    };
    fmt::print("\nsuccess within {:g} s TTFT, vs. the references:\n", c.ttftTimeoutS);
    for (auto& [a, b] : std::vector<std::pair<std::string, std::string>>{{"least_conn", "jsq"}, {"latency", "sed"}})
      if (find(results, a) && find(results, b))
        fmt::print("  {:<40} {} vs {}\n", a + " vs " + b, share(a), share(b));
    if (find(results, "haproxy_lc"))
      for (auto& k : {"random", "least_conn", "latency", "maglev", "bounded_hash", "jsq", "sed"})
        if (find(results, k))
          fmt::print("  {:<40} {} vs {}\n", fmt::format("{} vs HAProxy leastconn", k), share(k), share("haproxy_lc"));
  }
  fmt::print("total run time: {:.0f} s\n", (monoNs() - t0) / 1e9);
  out["run_seconds"] = (monoNs() - t0) / 1e9;
  return out;
}

}  // namespace
}  // namespace aimesh

int main(int argc, char** argv) {
  using aimesh::allRows;
  CLI::App app{"lb-compare: aimesh's algorithms vs. HAProxy and ideal pickers for streamed inference requests"};
  aimesh::Config c;
  std::string rows;
  app.add_flag("--slow-backend", c.slowBackend,
               "eleven stand-ins, one stalling 2 s before its first token; 1 s TTFT timeout; reports success rates");
  app.add_option("--servers", c.servers, "stand-ins (default 4; 11 with --slow-backend); the last is the slow one")
      ->check(CLI::Range(2, 64));
  app.add_option("--ttft-ms", c.ttftMs, "fast stand-ins' time to first token")->capture_default_str()->check(CLI::Range(1, 10000));
  app.add_option("--tpot-ms", c.tpotMs, "fast stand-ins' time per output token")->capture_default_str()->check(CLI::Range(0, 10000));
  app.add_option("--tokens", c.tokens, "tokens per response")->capture_default_str()->check(CLI::Range(1, 4096));
  app.add_option("--slow-factor", c.slowFactor, "default mode: the slow stand-in's TTFT and TPOT multiplier")
      ->capture_default_str()
      ->check(CLI::Range(1, 100));
  app.add_option("--stall-ms", c.stallMs, "--slow-backend: the stalling stand-in's TTFT")->capture_default_str()->check(CLI::Range(1, 60000));
  app.add_option("--max-concurrent", c.maxConcurrent, "per stand-in")->capture_default_str()->check(CLI::Range(1, 1024));
  app.add_option("--server-threads", c.serverThreads, "HTTP threads per stand-in")->capture_default_str()->check(CLI::Range(1, 256));
  app.add_option("--load", c.load, "offered load as a fraction of capacity")->capture_default_str()->check(CLI::Range(0.01, 2.0));
  app.add_option("--seconds", c.seconds, "arrivals per row (then the row drains)")->capture_default_str()->check(CLI::Range(1.0, 600.0));
  app.add_option("--seed", c.seed, "seed of the arrival schedule")->capture_default_str();
  app.add_option("--clients", c.clients, "client worker processes, one child cgroup each")->capture_default_str()->check(CLI::Range(1, 256));
  app.add_option("--timeout", c.timeoutS, "per-request timeout, seconds")->capture_default_str()->check(CLI::Range(1.0, 120.0));
  app.add_option("--ttft-timeout", c.ttftTimeoutS, "abort a request with no token after this many seconds (0: off; "
                                                   "--slow-backend: 1)")
      ->check(CLI::Range(0.0, 120.0));
  std::string rowHelp = "comma-separated subset of:";
  for (auto& d : allRows()) rowHelp += " " + d.key;
  app.add_option("--rows", rows, rowHelp);
  app.add_flag("--scrape", c.scrape,
               "aimesh rows: scrape the stand-ins' /metrics (model_metrics + agent --scrape-netns); off: default flags");
  app.add_flag("--json", c.wantJson, "also print everything as one JSON object after the table");
  CLI11_PARSE(app, argc, argv);

  if (c.slowBackend) {
    if (!app.count("--servers")) c.servers = 11;
    if (!app.count("--ttft-timeout")) c.ttftTimeoutS = 1.0;
  }
  if (rows.empty()) {
    for (auto& d : allRows()) c.rows.push_back(d.key);
  } else {
    std::stringstream ss(rows);
    std::string k;
    while (std::getline(ss, k, ',')) {
      std::replace(k.begin(), k.end(), '-', '_');
      bool known = std::any_of(allRows().begin(), allRows().end(), [&](auto& d) { return d.key == k; });
      if (!known) {
        std::fprintf(stderr, "lb-compare: unknown row '%s' (%s)\n", k.c_str(), rowHelp.c_str());
        return 2;
      }
      c.rows.push_back(k);
    }
  }
  return aimesh::testing::runBenchMain(
      {.name = "lb-compare", .needsRootFor = "cgroups, network namespaces, BPF", .removed = "sandbox removed"},
      c.wantJson, [&] { return aimesh::run(c); });
}
