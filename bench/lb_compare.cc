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
//
// --pooled: clients as real inference clients are (OpenAI SDK/httpx,
// urllib3, Go net/http, gateways): each worker is one application with a
// keep-alive pool per destination address, so a balancer that picks at
// connect() time picks once per pooled connection, not per request. The
// pool follows urllib3 and Go: LIFO, an idle connection is checked with a
// zero-timeout poll before reuse, no bound on open connections, at most
// --pool-idle kept idle, and one retry on a new connection when a reused one
// fails before any response byte. --scenario scale-out / remove rewrite the
// agent's state file mid-run and report how fast requests follow the change.
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
#include <poll.h>
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
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "client/api_client.h"
#include "fixtures/http_response.h"
#include "fixtures/sandbox.h"
#include "support/bench_run.h"
#include "support/machine_facts.h"

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
  // aimesh rows that re-balance: the service's rebalance_rate (0: the agent's default).
  double rebalanceRate = 0;
  std::vector<std::string> rows;

  // --pooled: keep-alive pools instead of a connection per request.
  bool pooled = false;
  int apps = 8;       // client applications (worker processes), one pool set each
  int poolIdle = 8;   // idle connections kept per app and destination address
  // Passed to the stand-ins. uvicorn (vLLM) closes idle keep-alive
  // connections after 5 s and has no per-connection request limit.
  int serverKeepAliveMax = 0;
  int serverKeepAliveTimeoutS = 5;
  enum class Scenario { None, ScaleOut, Remove } scenario = Scenario::None;
  double changeAtS = 20;

  int workers() const { return pooled ? apps : clients; }
  // cpp-httplib holds a thread per open connection, idle ones included: in
  // pooled mode each app may keep --pool-idle idle connections on top of the
  // requests in flight, possibly all on one stand-in.
  int standInThreads() const { return pooled ? std::min(4096, serverThreads + apps * poolIdle) : serverThreads; }

  std::vector<ServerSpec> specs;
  double serviceS(const ServerSpec& s) const { return (s.ttftMs + double(s.tpotMs) * (tokens - 1)) / 1000.0; }
  double capacity() const { return capacityOf(allEndpoints()); }
  double capacityOf(const std::vector<int>& endpoints) const {
    double c = 0;
    for (int i : endpoints) c += maxConcurrent / serviceS(specs[i]);
    return c;
  }
  std::vector<int> allEndpoints() const {
    std::vector<int> v(specs.size());
    for (size_t i = 0; i < v.size(); ++i) v[i] = int(i);
    return v;
  }
  // The service's endpoints before and after a scenario's change: scale-out
  // starts with the first half and adds the rest; remove drops the last one
  // from the state file (its stand-in keeps running).
  std::vector<int> initialEndpoints() const {
    auto v = allEndpoints();
    if (scenario == Scenario::ScaleOut) v.resize(std::max<size_t>(1, v.size() / 2));
    return v;
  }
  std::vector<int> finalEndpoints() const {
    auto v = allEndpoints();
    if (scenario == Scenario::Remove) v.pop_back();
    return v;
  }
  // What --load is a fraction of: the whole pool; in scale-out the initial
  // replicas (the pool is short of capacity until the new ones take load);
  // in remove the replicas that stay (so the removal alone overloads nothing).
  double loadCapacity() const {
    if (scenario == Scenario::ScaleOut) return capacityOf(initialEndpoints());
    if (scenario == Scenario::Remove) return capacityOf(finalEndpoints());
    return capacity();
  }
};

void buildSpecs(Config& c) {
  c.specs.clear();
  for (int i = 0; i < c.servers; ++i) {
    ServerSpec s{fmt::format("10.77.0.{}", 2 + i), c.ttftMs, c.tpotMs, false};
    // The last one is the odd one out, except in the scenarios: there the
    // question is how load follows a change, which a slow replica would blur.
    if (i == c.servers - 1 && c.scenario == Config::Scenario::None) {
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
  std::string param;       // agent algorithm or HAProxy balance
  bool rebalance = true;   // agent: false writes `connections: {rebalance: false}`
  bool httpMode = false;   // HAProxy: mode http (a per-request L7 proxy) instead of mode tcp
  bool pooledOnly = false; // only meaningful with keep-alive clients
  bool inDefaultList = true;  // run when --rows is not given (default mode)
  bool lifecycle = true;      // agent: false runs it with --connection-lifecycle=false
};

const std::vector<RowDef>& allRows() {
  static const std::vector<RowDef> rows{
      {"random", "aimesh random", Kind::Agent, "random"},
      {"least_conn", "aimesh least_conn", Kind::Agent, "least_conn"},
      {"latency", "aimesh latency", Kind::Agent, "latency"},
      {"maglev", "aimesh maglev", Kind::Agent, "maglev"},
      {"bounded_hash", "aimesh bounded_hash", Kind::Agent, "bounded_hash"},
      // The same algorithms with the agent's connection re-balancing off:
      // what connect-time balancing alone does with pooled connections.
      {"least_conn_static", "aimesh lc static", Kind::Agent, "least_conn", false, false, true, false},
      {"latency_static", "aimesh latency static", Kind::Agent, "latency", false, false, true, false},
      // No connection lifecycle at all (removed endpoints keep their pooled
      // connections too): connect-time balancing only, as before it existed.
      {"least_conn_nolc", "aimesh lc no lifecycle", Kind::Agent, "least_conn", false, false, true, false, false},
      {"haproxy_rr", "HAProxy roundrobin", Kind::Haproxy, "roundrobin"},
      {"haproxy_lc", "HAProxy leastconn", Kind::Haproxy, "leastconn"},
      // A per-request L7 peer: HAProxy terminates HTTP and picks a server
      // for each request, reusing its own server connections.
      {"haproxy_http_lc", "HAProxy L7 leastconn", Kind::Haproxy, "leastconn", true, true, false, false},
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
  kClosed,       // EOF before data: [DONE] (pooled: before the response's end)
  kHttpError,    // status != 200, or a malformed response
  kShort,        // [DONE] with fewer token events than asked for (pooled: or no [DONE])
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
  int64_t ttftNs;   // -1: no token
  int64_t e2eNs;    // -1: not completed
  int64_t endNs;    // when it ended, from the schedule's start
  int64_t startNs;  // when it started (connection taken or connect() called), from the schedule's start
  int32_t tokens;
  int16_t backend;  // index into the specs; -1 unknown
  uint8_t outcome;
  uint8_t connects;  // TCP connections opened for it: 0 (pooled, reused), 1, 2 (retried)
  uint8_t reused;    // pooled: it took an idle connection from the pool
  uint8_t retried;   // pooled: that connection failed before any response byte; sent again on a new one
  uint8_t pad[6];
};
static_assert(sizeof(Rec) == 48);

struct SharedState {
  std::atomic<int32_t> inflight[kMaxServers];  // JSQ/SED: the loadgen's own in-flight requests per backend
  std::atomic<int64_t> maxLagNs;               // worst lateness of a connect() behind its arrival time
  std::atomic<int32_t> changed;                // scenario: the parent has made the change (JSQ/SED follow it)
  std::atomic<int64_t> staleClosed;            // pooled: idle connections found dropped when taken for reuse
  std::atomic<int64_t> poolFullClosed;         // pooled: returned connections closed, the idle pool being full
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
    for (size_t i = 0; i < n_; ++i) recs()[i] = Rec{-1, -1, -1, -1, 0, -1, kNotRun, 0, 0, 0, {}};
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
  // JSQ/SED: the backends they may pick, before and after a scenario's change.
  std::vector<uint8_t> activeBefore, activeAfter;
  bool pooled = false;
  int poolIdle = 0;
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

// One worker: an epoll loop that starts a request at each of its arrival
// times and reads the SSE stream. Default mode: a new connection per request
// with `Connection: close`, done at `data: [DONE]`. Pooled: one application's
// keep-alive pools, one per destination address; a request takes an idle
// connection or opens one, reads the response to its end (the terminal
// chunk) and gives the connection back.
class Worker {
 public:
  Worker(const WorkerPlan& p, int index)
      : p_(p), index_(index), rng_(p.seed * 7919 + index), pools_(p.backends.size() + 1) {
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
    for (auto& pool : pools_)
      for (int fd : pool) ::close(fd);
    ::close(ep_);
    return 0;
  }

 private:
  enum class St { Free, Connecting, Reading };
  struct Req {
    int fd = -1;
    St st = St::Free;
    int idx = -1;
    int dest = -1;     // pool index: a backend (JSQ/SED) or fixedDest() (VIP, HAProxy)
    int picked = -1;   // JSQ/SED: the backend counted in shared->inflight
    int backend = -1;  // from X-Aimesh-Backend
    int64_t t0 = 0;    // scheduled arrival, monotonic ns
    int64_t start = 0;
    int64_t ttft = -1;
    testing::HttpResponseReader reader;
    std::string body;  // decoded, not yet scanned for whole events
    int tokens = 0;
    bool done = false;      // data: [DONE] seen
    bool tookIdle = false;  // started on a pooled connection
    bool reused = false;    // the current connection came from the pool
    bool retried = false;
    bool gotBytes = false;  // any response byte on the current connection
    int connects = 0;
  };

  int fixedDest() const { return int(p_.backends.size()); }

  int pickBackend() {
    const int n = int(p_.backends.size());
    const auto& active = p_.shared->changed.load(std::memory_order_relaxed) ? p_.activeAfter : p_.activeBefore;
    double best = kInf;
    int chosen = 0, ties = 0;
    for (int b = 0; b < n; ++b) {
      if (!active[b]) continue;
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
    r.start = now;
    int64_t lag = now - r.t0;
    int64_t prev = p_.shared->maxLagNs.load();
    while (lag > prev && !p_.shared->maxLagNs.compare_exchange_weak(prev, lag)) {
    }
    r.dest = fixedDest();
    if (p_.kind == Kind::Jsq || p_.kind == Kind::Sed) {
      // Per request, as before; the pool is then that backend's.
      r.picked = r.dest = pickBackend();
      p_.shared->inflight[r.picked].fetch_add(1);
    }
    ++active_;
    if (p_.pooled) {
      if (int fd = takeIdle(r.dest); fd >= 0) {
        r.fd = fd;
        r.tookIdle = r.reused = true;
        return sendRequest(s);
      }
    }
    connectFresh(s);
  }

  // LIFO, as urllib3's LifoQueue and Go's idle list: the connection returned
  // last is taken first. Before reuse, what urllib3's is_connection_dropped()
  // does: poll with a zero timeout; anything readable (EOF, a stray byte), a
  // hang-up or an error means the server dropped it.
  int takeIdle(int dest) {
    auto& pool = pools_[dest];
    while (!pool.empty()) {
      int fd = pool.back();
      pool.pop_back();
      pollfd pfd{fd, POLLIN, 0};
      if (::poll(&pfd, 1, 0) == 0) return fd;
      ::close(fd);
      p_.shared->staleClosed.fetch_add(1, std::memory_order_relaxed);
    }
    return -1;
  }

  void connectFresh(int s) {
    Req& r = reqs_[s];
    const sockaddr_in sa = r.dest == fixedDest() ? makeAddr(p_.fixedAddr, p_.fixedPort)
                                                 : makeAddr(p_.backends[r.dest], kPort);
    ++r.connects;
    r.st = St::Connecting;
    r.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (r.fd < 0) return finish(s, kConnectFail);
    int one = 1;
    ::setsockopt(r.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (::connect(r.fd, reinterpret_cast<const sockaddr*>(&sa), sizeof(sa)) != 0 && errno != EINPROGRESS)
      return finish(s, errno == ECONNREFUSED ? kRefused : kConnectFail);
    epoll_event ev{};
    ev.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP;
    ev.data.u32 = uint32_t(s);
    if (::epoll_ctl(ep_, EPOLL_CTL_ADD, r.fd, &ev) != 0) return finish(s, kConnectFail);
  }

  // A few hundred bytes into an empty send buffer: one send does it.
  void sendRequest(int s) {
    Req& r = reqs_[s];
    static const std::string once = request(false), keepAlive = request(true);
    const std::string& req = p_.pooled ? keepAlive : once;
    if (::send(r.fd, req.data(), req.size(), MSG_NOSIGNAL) != ssize_t(req.size())) return failOnConnection(s, kReset);
    const bool registered = r.st == St::Connecting;  // a pooled one left the epoll set when it went idle
    r.st = St::Reading;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u32 = uint32_t(s);
    if (::epoll_ctl(ep_, registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, r.fd, &ev) != 0 && !registered)
      return finish(s, kReset);
  }

  // A reused connection that fails before any response byte was closed under
  // the client (the server's idle timeout, a reset, a destroyed socket): send
  // the request again, once, on a new connection, as Go's net/http and curl
  // do when nothing was received. Anything else is the request's failure.
  void failOnConnection(int s, Outcome o) {
    Req& r = reqs_[s];
    if (r.reused && !r.gotBytes && !r.retried) {
      ::close(r.fd);  // also leaves the epoll set
      r.fd = -1;
      r.reused = false;
      r.retried = true;
      return connectFresh(s);
    }
    finish(s, o);
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

  static std::string request(bool keepAlive) {
    static const std::string body = R"({"model":"stand-in","prompt":"Say hello","stream":true})";
    return fmt::format(
        "POST /v1/completions HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\n"
        "Accept: text/event-stream\r\nContent-Length: {}\r\n{}\r\n{}",
        kVip, kPort, body.size(), keepAlive ? "" : "Connection: close\r\n", body);
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
      return sendRequest(int(s));
    }
    char buf[16384];
    for (;;) {
      ssize_t n = ::recv(r.fd, buf, sizeof(buf), 0);
      if (n > 0) {
        r.gotBytes = true;
        if (int o = parse(r, buf, size_t(n)); o != kNotRun) return complete(int(s), Outcome(o));
        continue;
      }
      if (n == 0) {
        // A body delimited by the close (no framing) ends here.
        if (p_.pooled && r.gotBytes && r.reader.eof() == testing::HttpResponseReader::State::kDone)
          return complete(int(s), r.done && r.tokens >= p_.tokens ? kOk : kShort);
        return failOnConnection(int(s), kClosed);
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == EINTR) continue;
      if (errno == ECONNRESET || errno == ECONNABORTED || errno == EPIPE) return failOnConnection(int(s), kReset);
      return finish(int(s), kReset);
    }
  }

  // Returns an outcome once the request is over, kNotRun while it goes on.
  // The body is decoded from its HTTP/1.1 chunks; SSE events end with an
  // empty line (WHATWG HTML, server-sent events). Default mode stops at
  // `data: [DONE]` and closes; pooled reads on to the terminal chunk, which
  // must be gone from the socket before it carries the next request.
  int parse(Req& r, const char* data, size_t n) {
    using St = testing::HttpResponseReader::State;
    const bool hadHead = r.reader.headDone();
    const St st = r.reader.feed(data, n, &r.body);
    if (st == St::kError) return kHttpError;
    if (!r.reader.headDone()) return kNotRun;
    if (!hadHead) {
      if (auto name = r.reader.header("X-Aimesh-Backend")) {
        auto it = byName_.find(*name);
        if (it != byName_.end()) r.backend = it->second;
      }
      if (r.reader.status() != 200) return kHttpError;
    }
    size_t scan = 0;
    for (size_t e; (e = r.body.find("\n\n", scan)) != std::string::npos; scan = e + 2) {
      std::string_view ev(r.body.data() + scan, e - scan);
      if (ev.starts_with("data: {")) {
        if (r.tokens++ == 0) r.ttft = monoNs() - r.t0;
      } else if (ev == "data: [DONE]") {
        r.done = true;
      }
    }
    r.body.erase(0, scan);
    if (!p_.pooled) return r.done ? (r.tokens >= p_.tokens ? kOk : kShort) : kNotRun;
    if (st == St::kDone) return r.done && r.tokens >= p_.tokens ? kOk : kShort;
    return kNotRun;
  }

  // The request is over; pooled, a connection whose response was read to its
  // end (and not marked `Connection: close`) goes back to its pool.
  void complete(int s, Outcome o) {
    Req& r = reqs_[s];
    if (p_.pooled && r.reader.reusable()) {
      auto& pool = pools_[r.dest];
      if (int(pool.size()) < p_.poolIdle) {
        ::epoll_ctl(ep_, EPOLL_CTL_DEL, r.fd, nullptr);
        pool.push_back(r.fd);
        r.fd = -1;
      } else {
        // urllib3 discards a connection returned to a full pool; Go closes
        // one beyond MaxIdleConnsPerHost.
        p_.shared->poolFullClosed.fetch_add(1, std::memory_order_relaxed);
      }
    }
    finish(s, o);
  }

  void finish(int s, Outcome o) {
    Req& r = reqs_[s];
    int64_t now = monoNs();
    if (r.fd >= 0) {
      ::close(r.fd);  // also leaves the epoll set
      r.fd = -1;
    }
    if (r.picked >= 0) p_.shared->inflight[r.picked].fetch_sub(1);
    Rec& rec = p_.recs[r.idx];
    rec.ttftNs = r.ttft;
    rec.e2eNs = o == kOk ? now - r.t0 : -1;
    rec.endNs = now - p_.startNs;
    rec.startNs = r.start - p_.startNs;
    rec.tokens = r.tokens;
    rec.backend = int16_t(r.backend);
    rec.outcome = o;
    rec.connects = uint8_t(std::min(r.connects, 255));
    rec.reused = r.tookIdle;
    rec.retried = r.retried;
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
  std::vector<std::vector<int>> pools_;  // pooled: idle fds per destination, the last returned at the back
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
  // Waits for every worker until `deadlineNs`; returns the first non-zero
  // status. Calls `at` once, as soon as `atNs` has passed (a scenario's change).
  int wait(int64_t deadlineNs, int64_t atNs = std::numeric_limits<int64_t>::max(),
           const std::function<void()>& at = {}) {
    int bad = 0;
    bool fired = false;
    while (!pids_.empty()) {
      if (gInterrupted) return -1;
      if (at && !fired && monoNs() >= atNs) {
        fired = true;
        at();
      }
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
      if (!pids_.empty()) std::this_thread::sleep_for(at && !fired ? 2ms : 20ms);
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
                           std::to_string(c.standInThreads()), "--keep-alive-max",
                           std::to_string(c.serverKeepAliveMax), "--keep-alive-timeout",
                           std::to_string(c.serverKeepAliveTimeoutS), "--model", "stand-in"},
                          dir + "/model-" + s.addr + ".log"));
  }
  for (auto& s : c.specs)
    if (!waitListening(sb.backend().name(), s.addr, kPort))
      throw std::runtime_error(fmt::format("model-server {} did not start; log: {}/model-{}.log", s.addr, dir, s.addr));
  return out;
}

std::string haproxyConfig(const Config& c, const RowDef& def) {
  // mode http: HAProxy ends each client request and picks a server for it
  // (leastconn counts requests in progress), keeping server connections for
  // any request (http-reuse always). A request sent on a server connection
  // the stand-in has just closed idle is retried, as a client pool would.
  // http-no-delay: HTTP mode otherwise sends with MSG_MORE, holding each
  // small SSE event in the kernel (~200 ms on the first token here); the
  // option is documented for interactive streams like these.
  const std::string mode = def.httpMode ? "    mode http\n"
                                          "    option http-keep-alive\n"
                                          "    option http-no-delay\n"
                                          "    http-reuse always\n"
                                          "    retry-on conn-failure empty-response\n"
                                        : "    mode tcp\n";
  std::string s = fmt::format(
      "global\n"
      "    maxconn 4096\n"  // HAProxy wants 2 fds per connection; the hard RLIMIT_NOFILE here is 20000
      "    nbthread 1\n"
      "defaults\n"
      "{}"
      "    timeout connect 5s\n"
      "    timeout client 120s\n"
      "    timeout server 120s\n"
      "frontend fe\n"
      "    bind {}:{}\n"
      "    default_backend be\n"
      "backend be\n"
      "    balance {}\n",
      mode, kHaproxyAddr, kHaproxyPort, def.param);
  // No maxconn (unlimited) and no health checks: the balancer alone decides.
  for (size_t i = 0; i < c.specs.size(); ++i) s += fmt::format("    server s{} {}:{}\n", i, c.specs[i].addr, kPort);
  return s;
}

std::string stateFile(const Config& c, const RowDef& def, const std::vector<int>& endpoints) {
  std::string s = fmt::format(
      "services:\n"
      "  - name: llm\n"
      "    namespace: bench\n"
      "    model: stand-in\n"
      "    vips: [{}]\n"
      "    ports: [{{port: {}}}]\n"
      "    algorithm: {}\n"
      "{}{}"
      "    endpoints:\n",
      kVip, kPort, def.param,
      c.scrape ? fmt::format("    model_metrics: {{port: {}, path: /metrics}}\n", kPort) : std::string(),
      !def.rebalance        ? std::string("    connections: {rebalance: false}\n")
      : c.rebalanceRate > 0 ? fmt::format("    connections: {{rebalance_rate: {}}}\n", c.rebalanceRate)
                            : std::string());
  for (int i : endpoints) s += fmt::format("      - {{address: {}, port: {}}}\n", c.specs[i].addr, kPort);
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
  // Pooled mode.
  size_t connects = 0;  // TCP connections opened
  size_t reused = 0;    // requests that took an idle pooled connection
  size_t retried = 0;   // ... which failed before any response byte and were sent again
  int64_t staleClosed = 0, poolFullClosed = 0;
  double changeS = -1;  // scenario: when the change was made, seconds from the schedule's start
  json scenario;        // scenario: the row's report
  std::vector<std::string> scenarioLines;
  double connsPerReq() const { return sent ? double(connects) / double(sent) : 0; }
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
    r.connects += x.connects;
    r.reused += x.reused;
    r.retried += x.retried;
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
  plan.activeBefore.assign(c.specs.size(), 0);
  plan.activeAfter.assign(c.specs.size(), 0);
  for (int i : c.initialEndpoints()) plan.activeBefore[i] = 1;
  for (int i : c.finalEndpoints()) plan.activeAfter[i] = 1;
  plan.pooled = c.pooled;
  plan.poolIdle = c.poolIdle;
  if (def.kind == Kind::Agent) {
    testing::writeFile(work + "/state.yaml", stateFile(c, def, c.initialEndpoints()));
    std::vector<std::string> extra;
    if (c.scrape) extra = {"--scrape-netns", sb.backend().name()};
    if (!def.lifecycle) extra.push_back("--connection-lifecycle=false");
    agent = std::make_unique<AgentProcess>(sb.cgroup().path(), work + "/state.yaml", work, extra);
    try {
      agent->start();
    } catch (const std::exception& e) {
      // The work dir (and the log) goes with lb-compare's exit: say why here.
      std::ifstream log(work + "/agent.log");
      std::string line, last;
      while (std::getline(log, line))
        if (line.find(" error ") != std::string::npos || line.find(" warning ") != std::string::npos) last = line;
      throw std::runtime_error(fmt::format("row {}: {}{}{}", def.key, e.what(),
                                           last.empty() ? "" : "; its last error: " + last,
                                           def.rebalance ? "" : " (this row needs an agent that knows the service "
                                                                "field `connections: {rebalance: false}`)"));
    }
    auto st = callAgent(agent->apiSocket(), {{"method", "status"}}, 3000ms);
    if (!st || !st->value("ready", false))
      throw std::runtime_error(fmt::format("agent not ready{}; log: {}/agent.log",
                                          def.rebalance ? "" : " (does it know `connections: {rebalance: false}`?)",
                                          work));
    plan.fixedAddr = kVip;
    plan.fixedPort = kPort;
  } else if (def.kind == Kind::Haproxy) {
    testing::writeFile(work + "/haproxy.cfg", haproxyConfig(c, def));
    haproxy = testing::startIn(sb.client().name(), {kHaproxyBin, "-db", "-f", work + "/haproxy.cfg"},
                               work + "/haproxy.log");
    if (!waitListening(sb.client().name(), kHaproxyAddr, kHaproxyPort))
      throw std::runtime_error(fmt::format("haproxy did not start; log: {}/haproxy.log", work));
    plan.fixedAddr = kHaproxyAddr;
    plan.fixedPort = kHaproxyPort;
  }

  mem.reset();
  plan.arrivals = &arrivals;
  plan.workers = c.workers();
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

  // A scenario's change: the agent's state file is replaced atomically
  // (write, then rename over it: what the agent's inotify watch expects);
  // JSQ/SED see the shared flag.
  double changeS = -1;
  std::function<void()> change;
  int64_t changeAtNs = std::numeric_limits<int64_t>::max();
  if (c.scenario != Config::Scenario::None) {
    changeAtNs = plan.startNs + int64_t(c.changeAtS * 1e9);
    change = [&] {
      if (def.kind == Kind::Agent) testing::writeFile(work + "/state.yaml", stateFile(c, def, c.finalEndpoints()));
      mem.state()->changed.store(1);
      changeS = (monoNs() - plan.startNs) / 1e9;
    };
  }

  WorkerSet workers;
  workers.spawn(plan, cgs.paths(), sb.client().name());
  int st = workers.wait(plan.hardEndNs + 3'000'000'000, changeAtNs, change);
  checkInterrupted();

  RowResult r = summarize(def, c, mem.recs(), arrivals.size(), mem.state()->maxLagNs.load() / 1e6);
  r.workerStatus = st;
  r.staleClosed = mem.state()->staleClosed.load();
  r.poolFullClosed = mem.state()->poolFullClosed.load();
  r.changeS = changeS;
  if (agent && !agent->metricsUrlPath().size())
    fmt::print(stderr, "  warning: agent of row {} stopped answering during the run; log: {}/agent.log\n", def.key,
               work);
  r.wallS = (monoNs() - rowStart) / 1e9;
  return r;  // agent, HAProxy and stand-ins go here
}

// ---- scenarios ---------------------------------------------------------------------

// Requests are placed in time by their start, the moment the balancer (or
// the pool) decided where they go; requests that failed before any response
// header have no known backend and are left out of the shares.

// scale-out: the added replicas' share of requests in 2-s windows after the
// change, against their fair share of the final pool.
json scaleOutReport(const Config& c, const RowResult& row, const Rec* recs, size_t n,
                    std::vector<std::string>& lines) {
  const auto before = c.initialEndpoints(), after = c.finalEndpoints();
  std::vector<uint8_t> added(c.specs.size(), 0);
  for (int i : after)
    if (std::find(before.begin(), before.end(), i) == before.end()) added[i] = 1;
  const double fair = double(after.size() - before.size()) / double(after.size());
  const double change = row.changeS;
  json out{{"replicas_before", before.size()}, {"replicas_after", after.size()}, {"fair_share", fair}};
  if (change < 0) {
    lines.push_back("  the change was not made: the run ended first");
    out["change_s"] = nullptr;
    return out;
  }
  out["change_s"] = change;
  // Share of the added replicas among requests started in [from, to) s after the change.
  auto share = [&](double from, double to, size_t* total) {
    size_t all = 0, onAdded = 0;
    for (size_t i = 0; i < n; ++i) {
      const Rec& x = recs[i];
      if (x.startNs < 0 || x.backend < 0 || size_t(x.backend) >= added.size()) continue;
      double t = x.startNs / 1e9 - change;
      if (t < from || t >= to) continue;
      ++all;
      onAdded += added[x.backend];
    }
    *total = all;
    return all ? double(onAdded) / double(all) : std::nan("");
  };
  constexpr double kWindowS = 2;
  constexpr double kGoalS = 10;  // the issue's: >= 80 % of fair share within 10 s
  double reached = -1;
  std::string cells;
  int w = 0;
  // Whole windows up to the last arrival, counted from the scheduled change
  // (the real one is a few ms later; the last window is that much short).
  for (; c.changeAtS + (w + 1) * kWindowS <= c.seconds + 1e-9; ++w) {
    size_t total = 0;
    double sh = share(w * kWindowS, (w + 1) * kWindowS, &total);
    out["windows"].push_back({{"from_s", w * kWindowS},
                              {"to_s", (w + 1) * kWindowS},
                              {"requests", total},
                              {"added_share", std::isnan(sh) ? json(nullptr) : json(sh)}});
    if (reached < 0 && total && sh >= 0.8 * fair) reached = (w + 1) * kWindowS;
    if (w && w % 10 == 0) cells += "\n   ";
    cells += std::isnan(sh) ? fmt::format(" +{:g}s -", (w + 1) * kWindowS)
                            : fmt::format(" +{:g}s {:.0f}%", (w + 1) * kWindowS, sh * 100);
  }
  lines.push_back(fmt::format("  the service went from {} to {} replicas at {:.2f} s; the added replicas' share of "
                              "requests (by start), per {:g}-s window after it (fair share {:.0f}%):",
                              before.size(), after.size(), change, kWindowS, fair * 100));
  lines.push_back("   " + (cells.empty() ? std::string(" (no whole window: raise --seconds)") : cells));
  out["reached_80pct_of_fair_after_s"] = reached >= 0 ? json(reached) : json(nullptr);
  lines.push_back(reached >= 0 ? fmt::format("  first window at >= 80% of fair share ends {:g} s after the change "
                                             "(goal <= {:g} s: {})",
                                             reached, kGoalS, reached <= kGoalS ? "met" : "NOT met")
                               : fmt::format("  never at >= 80% of fair share in the run (goal <= {:g} s: NOT met)",
                                             kGoalS));
  size_t total = 0;
  double late = share(10, 20, &total);
  out["added_share_10_20s"] = std::isnan(late) ? json(nullptr) : json(late);
  if (c.changeAtS + 20 > c.seconds + 1e-9)
    lines.push_back(fmt::format("  share over [+10 s, +20 s]: the run ends before (raise --seconds to >= {:g})",
                                c.changeAtS + 20));
  else if (!std::isnan(late))
    lines.push_back(fmt::format("  share over [+10 s, +20 s]: {:.1f}% = {:.0f}% of fair share ({} requests)",
                                late * 100, late / fair * 100, total));
  return out;
}

// remove: did requests keep reaching the removed replica, and for how long
// after what it had in flight at the change was done?
json removeReport(const Config& c, const RowResult& row, const Rec* recs, size_t n, std::vector<std::string>& lines) {
  constexpr double kGoalS = 1;  // the issue's: no new request > 1 s after its in-flight responses
  const int gone = int(c.specs.size()) - 1;
  const double change = row.changeS;
  json out{{"removed", c.specs[gone].addr}};
  if (change < 0) {
    lines.push_back("  the change was not made: the run ended first");
    out["change_s"] = nullptr;
    return out;
  }
  out["change_s"] = change;
  size_t started = 0, inflight = 0, late = 0;
  double lastStart = -1, inflightEnd = change;
  for (size_t i = 0; i < n; ++i) {
    const Rec& x = recs[i];
    if (x.backend != gone || x.startNs < 0) continue;
    double t = x.startNs / 1e9, end = x.endNs / 1e9;
    if (t >= change) {
      ++started;
      lastStart = std::max(lastStart, t);
    } else if (end > change) {
      ++inflight;
      inflightEnd = std::max(inflightEnd, end);
    }
  }
  for (size_t i = 0; i < n; ++i)
    if (recs[i].backend == gone && recs[i].startNs / 1e9 > inflightEnd + kGoalS) ++late;
  out["inflight_at_change"] = inflight;
  out["inflight_end_after_change_s"] = inflightEnd - change;
  out["started_after_change"] = started;
  out["started_after_inflight_end_plus_1s"] = late;
  out["last_start_after_change_s"] = started ? json(lastStart - change) : json(nullptr);
  out["last_start_after_inflight_end_s"] = started ? json(lastStart - inflightEnd) : json(nullptr);
  lines.push_back(fmt::format("  {} left the state file at {:.2f} s (its stand-in kept running); {} requests were in "
                              "flight on it then, the last ended {:.2f} s after the change",
                              c.specs[gone].addr, change, inflight, inflightEnd - change));
  if (started == 0) {
    lines.push_back("  requests it served that started after the change: 0");
  } else {
    lines.push_back(fmt::format("  requests it served that started after the change: {}, the last {:.2f} s after the "
                                "change = {:.2f} s after its in-flight responses ended; {} started later than "
                                "{:g} s after those",
                                started, lastStart - change, lastStart - inflightEnd, late, kGoalS));
  }
  std::string errs;
  for (auto& [k, v] : row.errors) errs += fmt::format("{}{} {}", errs.empty() ? "" : ", ", k, v);
  lines.push_back(fmt::format("  failed: {}{}; retried on a new connection: {}", row.errorCount(),
                              errs.empty() ? "" : " (" + errs + ")", row.retried));
  bool met = late == 0 && row.errorCount() == 0;
  lines.push_back(fmt::format("  goal (nothing new on it > {:g} s after its in-flight responses, 0 failed): {}", kGoalS,
                              met ? "met" : "NOT met"));
  out["goal_met"] = met;
  return out;
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
  const bool scenario = c.scenario != Config::Scenario::None;
  const double capacity = c.capacity();
  const double rate = c.load * c.loadCapacity();

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
  size_t nFast = scenario ? c.specs.size() : c.specs.size() - 1;
  const char* scenarioName = c.scenario == Config::Scenario::ScaleOut ? "scale-out" : "remove";
  fmt::print("lb-compare{}{}{}: {} model-server stand-ins in the backend namespace, --max-concurrent {} each "
             "(the rest queue FIFO)\n",
             c.slowBackend ? " --slow-backend" : "", c.pooled ? " --pooled" : "",
             scenario ? fmt::format(" --scenario {}", scenarioName) : std::string(), c.specs.size(), c.maxConcurrent);
  fmt::print("  {} fast ({} .. {}): ttft {} ms, tpot {} ms, {} tokens -> {:.0f} ms per request\n", nFast,
             c.specs.front().addr, c.specs[nFast - 1].addr, fast.ttftMs, fast.tpotMs, c.tokens,
             c.serviceS(fast) * 1000);
  if (!scenario) {
    fmt::print("  1 {} ({}): ttft {} ms, tpot {} ms, {} tokens -> {:.0f} ms per request\n",
               c.slowBackend ? "stalling" : fmt::format("slow x{}", c.slowFactor), slow.addr, slow.ttftMs,
               slow.tpotMs, c.tokens, c.serviceS(slow) * 1000);
    fmt::print("capacity = sum of max_concurrent / service time = {} x {}/{:.3f} s + {}/{:.3f} s = {:.1f} req/s\n",
               nFast, c.maxConcurrent, c.serviceS(fast), c.maxConcurrent, c.serviceS(slow), capacity);
    fmt::print("load: open-loop Poisson at {:.0f}% of capacity = {:.1f} req/s for {:g} s (seed {}): {} requests, "
               "the same schedule in every row\n",
               c.load * 100, rate, c.seconds, c.seed, arrivals.size());
  } else {
    auto before = c.initialEndpoints(), after = c.finalEndpoints();
    if (c.scenario == Config::Scenario::ScaleOut)
      fmt::print("scenario scale-out: the service starts with {} replicas ({} .. {}); at {:g} s the state file is "
                 "replaced (write + rename) by one with all {}\n",
                 before.size(), c.specs[before.front()].addr, c.specs[before.back()].addr, c.changeAtS, after.size());
    else
      fmt::print("scenario remove: the service starts with {} replicas; at {:g} s the state file is replaced "
                 "(write + rename) by one without {}, whose stand-in keeps running\n",
                 before.size(), c.changeAtS, c.specs.back().addr);
    const size_t basis = c.scenario == Config::Scenario::ScaleOut ? before.size() : after.size();
    fmt::print("load: open-loop Poisson at {:.0f}% of the capacity of the {} {} replicas ({} x {}/{:.3f} s = {:.1f} "
               "req/s) = {:.1f} req/s for {:g} s (seed {}): {} requests, the same schedule in every row\n",
               c.load * 100, basis, c.scenario == Config::Scenario::ScaleOut ? "initial" : "remaining", basis,
               c.maxConcurrent, c.serviceS(fast), c.loadCapacity(), rate, c.seconds, c.seed, arrivals.size());
  }
  if (c.pooled)
    fmt::print("client: {} applications (worker processes), each in its own child cgroup of the sandbox cgroup, in "
               "the client namespace,\n  each with a keep-alive pool per destination address (LIFO; an idle "
               "connection is polled before reuse; at most {} idle, no bound on open ones);\n  streaming POST "
               "/v1/completions over HTTP/1.1 keep-alive, read to the terminal chunk; a request that fails on a "
               "reused connection\n  before any response byte is sent again once on a new connection; timeout {:g} "
               "s per request{}\nstand-ins: --threads {} (a thread per open connection, idle ones too), "
               "--keep-alive-max {}, --keep-alive-timeout {} s\n",
               c.apps, c.poolIdle, c.timeoutS,
               c.ttftTimeoutS > 0 ? fmt::format(", {:g} s to the first token", c.ttftTimeoutS) : std::string(),
               c.standInThreads(), c.serverKeepAliveMax, c.serverKeepAliveTimeoutS);
  else
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
  testing::ScratchDir scratch;  // removed on every way out
  env.dir = scratch.path();

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
  ChildCgroups cgs(sb.cgroup().path(), c.workers());
  SharedMem mem(arrivals.size());

  std::vector<RowResult> results;
  for (auto& key : c.rows) {
    checkInterrupted();
    const RowDef* def = nullptr;
    for (auto& d : allRows())
      if (d.key == key) def = &d;
    fmt::print(stderr, "row {:<13} running ({:g} s of arrivals, then drain)\n", def->key, c.seconds);
    RowResult r = runRow(*def, c, env, sb, cgs, arrivals, mem);
    // The scenario reports read this row's records before the next row reuses them.
    if (c.scenario == Config::Scenario::ScaleOut)
      r.scenario = scaleOutReport(c, r, mem.recs(), arrivals.size(), r.scenarioLines);
    else if (c.scenario == Config::Scenario::Remove)
      r.scenario = removeReport(c, r, mem.recs(), arrivals.size(), r.scenarioLines);
    std::string line = fmt::format("row {:<13} {:6.1f} s: ok {}/{}, TTFT p99 {} ms", def->key, r.wallS, r.ok, r.sent,
                                   ms(r.ttftP99));
    for (auto& [k, v] : r.errors) line += fmt::format(", {} {}", k, v);
    if (c.pooled)
      line += fmt::format(", conns/req {:.3f}, retried {}, stale idle closed {}", r.connsPerReq(), r.retried,
                          r.staleClosed);
    if (r.unknownBackend) line += fmt::format(", {} with no X-Aimesh-Backend", r.unknownBackend);
    if (r.maxLagMs > 50) line += fmt::format(" (loadgen fell behind by up to {:.0f} ms)", r.maxLagMs);
    if (r.workerStatus) line += fmt::format(" (a worker exited with status {})", r.workerStatus);
    fmt::print(stderr, "{}\n", line);
    results.push_back(std::move(r));
  }

  // ---- the table ----
  const size_t slowIdx = c.specs.size() - 1;
  const int kw = c.pooled ? 17 : 13;  // the row key column; the pooled-only keys are longer
  fmt::print("\n{:<{}} {:<21} {:>8} {:>7} {:>7} {:>8} {:>7} {:>11} {:>6} {:>7} {:>6}{}{}\n", "row", kw, "balancer",
             "TTFT p50", "p90", "p99", "e2e p99", "done/s", "ok/sent", "errors", scenario ? "to last" : "to slow",
             "no hdr", c.slowBackend ? fmt::format(" {:>9}", fmt::format("ok<={:g}s", c.ttftTimeoutS)) : std::string(),
             c.pooled ? fmt::format(" {:>9} {:>7}", "conns/req", "retried") : std::string());
  fmt::print("{:<{}} {:<21} {:>8} {:>7} {:>7} {:>8}\n", "", kw, "", "ms", "ms", "ms", "ms");
  std::string mode = c.slowBackend ? "slow_backend" : "default";
  if (c.pooled)
    mode = std::string("pooled") + (c.slowBackend ? "_slow_backend" : "") +
           (c.scenario == Config::Scenario::ScaleOut ? "_scale_out"
            : c.scenario == Config::Scenario::Remove ? "_remove"
                                                     : "");
  json out{{"machine", facts},
           {"mode", mode},
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
  if (c.pooled) {
    out["config"]["apps"] = c.apps;
    out["config"]["pool_idle"] = c.poolIdle;
    out["config"]["stand_in_threads"] = c.standInThreads();
    out["config"]["server_keep_alive_max"] = c.serverKeepAliveMax;
    out["config"]["server_keep_alive_timeout_s"] = c.serverKeepAliveTimeoutS;
    out["config"]["load_basis_capacity_per_s"] = c.loadCapacity();
    if (scenario) {
      out["config"]["scenario"] = scenarioName;
      out["config"]["change_at_s"] = c.changeAtS;
      out["config"]["endpoints_before"] = c.initialEndpoints();
      out["config"]["endpoints_after"] = c.finalEndpoints();
    }
  }
  for (auto& s : c.specs)
    out["config"]["stand_ins"].push_back(
        {{"addr", s.addr}, {"ttft_ms", s.ttftMs}, {"tpot_ms", s.tpotMs}, {"slow", s.slow}, {"service_s", c.serviceS(s)}});
  for (auto& r : results) {
    double toSlow = r.sent ? 100.0 * r.perBackend[slowIdx] / r.sent : 0;
    double success = r.sent ? 100.0 * r.ok / r.sent : 0;
    fmt::print("{:<{}} {:<21} {:>8} {:>7} {:>7} {:>8} {:>7.1f} {:>11} {:>6} {:>6.1f}% {:>6}{}{}\n", r.def.key, kw,
               r.def.label, ms(r.ttftP50), ms(r.ttftP90), ms(r.ttftP99), ms(r.e2eP99), r.donePerS,
               fmt::format("{}/{}", r.ok, r.sent), r.errorCount(), toSlow, r.unknownBackend,
               c.slowBackend ? fmt::format(" {:>8.1f}%", success) : std::string(),
               c.pooled ? fmt::format(" {:>9.3f} {:>7}", r.connsPerReq(), r.retried) : std::string());
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
    if (c.pooled) {
      jr["connects"] = r.connects;
      jr["conns_per_req"] = r.connsPerReq();
      jr["reused"] = r.reused;
      jr["retried"] = r.retried;
      jr["stale_idle_closed"] = r.staleClosed;
      jr["pool_full_closed"] = r.poolFullClosed;
      if (scenario) jr["scenario"] = r.scenario;
    }
    out["rows"].push_back(jr);
  }
  fmt::print("percentiles: over every request sent; one that got no token (or did not finish) counts as inf.\n"
             "done/s: ok requests that finished within the {:g} s arrival window, per second.\n"
             "to slow: share of the requests sent that {} answered (its X-Aimesh-Backend header).\n"
             "no hdr: failed before any response header arrived, so the backend is unknown (not in 'to slow').\n",
             c.seconds, slow.addr);
  if (scenario)
    fmt::print("  (in a scenario there is no slow stand-in: 'to slow' is 'to last', the share {} answered)\n",
               slow.addr);
  if (c.pooled)
    fmt::print("conns/req: TCP connections opened per request sent (a reused pooled one opens none; a retry one "
               "more).\nretried: requests sent again on a new connection after a reused one failed before any "
               "response byte.\n");

  if (scenario) {
    fmt::print("\nscenario {}, per row:\n", scenarioName);
    for (auto& r : results) {
      fmt::print("row {} ({}):\n", r.def.key, r.def.label);
      for (auto& l : r.scenarioLines) fmt::print("{}\n", l);
    }
    fmt::print("total run time: {:.0f} s\n", (monoNs() - t0) / 1e9);
    out["run_seconds"] = (monoNs() - t0) / 1e9;
    return out;
  }

  // Ratios of p99 TTFT the issue asks about. Pooled, a target also asks for
  // zero failed requests: a pool that trades errors for latency has not met it.
  auto ratio = [&](const std::string& a, const std::string& b, double target, const std::string& name,
                   bool noFailures = false) {
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
    if (target > 0 && noFailures)
      goal = fmt::format("  (target <= {:g} and 0 failed: {})", target,
                         x->errorCount() ? fmt::format("NOT met, {} failed", x->errorCount()) : verdict);
    fmt::print("  {:<40} {}{}\n", name, shown, goal);
    out["ratios"][a + "_over_" + b] = {{"value", std::isfinite(v) ? json(v) : json(nullptr)},
                                       {"target", target > 0 ? json(target) : json(nullptr)}};
    if (noFailures) out["ratios"][a + "_over_" + b]["failed"] = x->errorCount();
  };
  fmt::print("\np99 TTFT ratios:\n");
  if (c.pooled) {
    ratio("least_conn", "jsq", 1.3, "least_conn / ideal JSQ", true);
    ratio("latency", "sed", 1.3, "latency / ideal SED", true);
    ratio("least_conn_static", "jsq", 0, "least_conn_static / ideal JSQ");
    ratio("latency_static", "sed", 0, "latency_static / ideal SED");
    ratio("least_conn_nolc", "jsq", 0, "least_conn_nolc / ideal JSQ");
    for (auto& k : {"random", "least_conn", "latency", "maglev", "bounded_hash", "least_conn_static", "latency_static",
                    "least_conn_nolc", "haproxy_http_lc", "jsq", "sed"})
      ratio(k, "haproxy_lc", 0, fmt::format("{} / HAProxy leastconn", k));
  } else {
    ratio("least_conn", "jsq", 1.1, "least_conn / ideal JSQ");
    ratio("latency", "sed", 1.2, "latency / ideal SED");
    for (auto& k : {"random", "least_conn", "latency", "maglev", "bounded_hash", "jsq", "sed"})
      ratio(k, "haproxy_lc", 0, fmt::format("{} / HAProxy leastconn", k));
  }
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
  app.add_option("--rebalance-rate", c.rebalanceRate,
                 "aimesh rows that re-balance: the service's connections.rebalance_rate (closes per second; 0: the "
                 "agent's default)")
      ->check(CLI::Range(0.0, 1000.0));
  app.add_flag("--scrape", c.scrape,
               "aimesh rows: scrape the stand-ins' /metrics (model_metrics + agent --scrape-netns); off: default flags");
  app.add_flag("--json", c.wantJson, "also print everything as one JSON object after the table");
  app.add_flag("--pooled", c.pooled,
               "clients keep keep-alive pools per destination (urllib3/Go-like) instead of a connection per request");
  app.add_option("--apps", c.apps, "--pooled: client applications (worker processes, one child cgroup and pool set each)")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  app.add_option("--pool-idle", c.poolIdle, "--pooled: idle connections kept per app and destination address")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  app.add_option("--server-keep-alive-max", c.serverKeepAliveMax,
                 "stand-ins' --keep-alive-max: requests per connection before they close it (0: unlimited)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 30));
  app.add_option("--server-keep-alive-timeout", c.serverKeepAliveTimeoutS,
                 "stand-ins' --keep-alive-timeout: idle seconds before they close a keep-alive connection")
      ->capture_default_str()
      ->check(CLI::Range(1, 3600));
  std::string scenario;
  app.add_option("--scenario", scenario,
                 "--pooled: scale-out (state file from half the stand-ins to all) or remove (the last one leaves it)")
      ->check(CLI::IsMember({"scale-out", "remove"}));
  app.add_option("--change-at", c.changeAtS, "--scenario: seconds into the arrivals when the state file changes")
      ->capture_default_str()
      ->check(CLI::Range(0.5, 600.0));
  CLI11_PARSE(app, argc, argv);

  auto usage = [](const std::string& msg) {
    std::fprintf(stderr, "lb-compare: %s\n", msg.c_str());
    return 2;
  };
  if (!scenario.empty()) {
    c.scenario = scenario == "scale-out" ? aimesh::Config::Scenario::ScaleOut : aimesh::Config::Scenario::Remove;
    if (!c.pooled) return usage("--scenario needs --pooled");
    if (c.slowBackend) return usage("--scenario runs fast stand-ins only; drop --slow-backend");
    if (c.changeAtS >= c.seconds) return usage("--change-at must be before the end of --seconds");
  }
  if (c.pooled && app.count("--clients")) return usage("--pooled has --apps, not --clients");
  if (!c.pooled)
    for (auto* f : {"--apps", "--pool-idle", "--change-at"})
      if (app.count(f)) return usage(std::string(f) + " needs --pooled");
  if (c.slowBackend) {
    if (!app.count("--servers")) c.servers = 11;
    if (!app.count("--ttft-timeout")) c.ttftTimeoutS = 1.0;
  }
  if (c.scenario == aimesh::Config::Scenario::ScaleOut && c.servers < 2)
    return usage("--scenario scale-out needs --servers >= 2");
  if (rows.empty()) {
    // Default mode: the nine rows it always ran. Pooled: every row. A
    // scenario: the aimesh rows that matter for it and the JSQ reference.
    if (c.scenario != aimesh::Config::Scenario::None)
      c.rows = {"least_conn", "latency", "least_conn_static", "latency_static", "least_conn_nolc", "jsq"};
    else
      for (auto& d : allRows())
        if (c.pooled || d.inDefaultList) c.rows.push_back(d.key);
  } else {
    std::stringstream ss(rows);
    std::string k;
    while (std::getline(ss, k, ',')) {
      std::replace(k.begin(), k.end(), '-', '_');
      auto d = std::find_if(allRows().begin(), allRows().end(), [&](auto& d) { return d.key == k; });
      if (d == allRows().end()) {
        std::fprintf(stderr, "lb-compare: unknown row '%s' (%s)\n", k.c_str(), rowHelp.c_str());
        return 2;
      }
      if (d->pooledOnly && !c.pooled) return usage("row " + k + " needs --pooled");
      // HAProxy's configuration is not changed mid-run.
      if (c.scenario != aimesh::Config::Scenario::None && d->kind == aimesh::Kind::Haproxy)
        return usage("row " + k + ": a scenario runs the aimesh rows and jsq/sed only");
      c.rows.push_back(k);
    }
  }
  return aimesh::testing::runBenchMain(
      {.name = "lb-compare", .needsRootFor = "cgroups, network namespaces, BPF", .removed = "sandbox removed"},
      c.wantJson, [&] { return aimesh::run(c); });
}
