// telemetry-overhead: what the telemetry programs (sock_ops, cgroup_skb
// egress/ingress) cost a client. The same workloads run through a service VIP
// with (a) the agent's default data plane, telemetry attached, (b) the agent
// restarted with --telemetry=false, (c) straight to the backend address from
// a cgroup with no aimesh program at all, and (d) as (b) plus empty programs
// at the three telemetry hooks: the floor that any program there pays for
// being called at all. A last pass with BPF run-time
// statistics on gives each attached program's average run time.
// See docs/benchmarks.md.
//
// Everything runs in a sandbox of its own (tests/fixtures/sandbox.h): a child
// cgroup, client and backend network namespaces joined by a veth pair, a
// temporary work dir and per-agent pin dirs; all removed at exit, on error and
// on SIGINT/SIGTERM.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fmt/format.h>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "client/api_client.h"
#include "fixtures/rate_client.h"
#include "fixtures/sandbox.h"
#include "support/bench_run.h"
#include "support/machine_facts.h"

namespace aimesh {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
using testing::AgentProcess;
using testing::Child;
using testing::Sandbox;
using testing::TestCgroup;

volatile sig_atomic_t& gInterrupted = testing::gBenchInterrupted;
using testing::checkInterrupted;
using testing::Interrupted;
using testing::median;

constexpr const char* kVip = "10.96.0.40";
constexpr const char* kBackend = "10.77.0.2";
constexpr uint16_t kPort = 8000;
constexpr double kWarmupSeconds = 0.3;
constexpr long kMaxErrors = 1000;  // a client gives up after this many failures

const char* kState = R"(services:
  - name: echo
    namespace: bench
    vips: [10.96.0.40]
    ports: [{port: 8000}]
    endpoints:
      - {address: 10.77.0.2, port: 8000}
)";
// The same service with telemetry sampling at its floor (one connection in
// 65,536 timed): what a connection that is not sampled costs.
const char* kStateUnsampled = R"(services:
  - name: echo
    namespace: bench
    vips: [10.96.0.40]
    ports: [{port: 8000}]
    telemetry: {sample: 0.00001}
    endpoints:
      - {address: 10.77.0.2, port: 8000}
)";

enum class Workload { ConnectClose, KeepAlive };
enum class Mode { Attached, Detached, Direct, Empty };
constexpr std::array<Workload, 2> kWorkloads{Workload::ConnectClose, Workload::KeepAlive};
constexpr std::array<Mode, 4> kModes{Mode::Attached, Mode::Detached, Mode::Direct, Mode::Empty};

const char* key(Workload w) { return w == Workload::ConnectClose ? "connect_close" : "keep_alive"; }
const char* label(Workload w) { return w == Workload::ConnectClose ? "connect+close" : "keep-alive req"; }
const char* key(Mode m) {
  return m == Mode::Attached ? "attached" : m == Mode::Detached ? "detached" : m == Mode::Direct ? "direct" : "empty";
}
const char* label(Mode m) {
  return m == Mode::Attached   ? "(a) telemetry attached"
         : m == Mode::Detached ? "(b) telemetry detached"
         : m == Mode::Direct   ? "(c) direct, no aimesh"
                               : "(d) empty programs";
}

// ---- the client, run inside the client namespace ------------------------------

struct Sample {
  double rate = 0;  // operations per second
  long ops = 0, errors = 0;
  long warmupOps = 0;  // done before the timed part
  int firstErrno = 0;
};

// Pins the calling process (pid 0) or `pid` to one CPU; cpu < 0: no-op.
void pinTo(int cpu, pid_t pid = 0) {
  if (cpu < 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (::sched_setaffinity(pid, sizeof(set), &set) != 0)
    throw std::runtime_error(fmt::format("sched_setaffinity(cpu {}): {}", cpu, std::strerror(errno)));
}

Sample clientLoop(Workload w, const std::string& addr, double seconds) {
  auto r = testing::runRateClient(
      w == Workload::ConnectClose ? testing::RateWorkload::kConnectClose : testing::RateWorkload::kKeepAlive, addr,
      kPort, kWarmupSeconds, seconds, &gInterrupted, kMaxErrors);
  return Sample{r.rate, r.ops, r.errors, r.warmupOps, r.firstErrno};
}

// Runs the client in `cgroup` + the client namespace, in a forked child.
// One client loop, as a JSON line written to fd; `cpu` as in pinTo.
int clientTo(int fd, Workload w, const std::string& addr, double seconds, int cpu) {
  try {
    pinTo(cpu);
    Sample s = clientLoop(w, addr, seconds);
    std::string t = json{{"rate", s.rate},
                         {"ops", s.ops},
                         {"errors", s.errors},
                         {"warmup_ops", s.warmupOps},
                         {"errno", s.firstErrno}}
                        .dump() +
                    "\n";
    return ::write(fd, t.data(), t.size()) == static_cast<ssize_t>(t.size()) ? 0 : 2;
  } catch (...) {  // never unwind into the parent's objects in the child
    return 3;
  }
}

// `clients` client processes at once (the first on `cpu`, the others on the
// next CPUs), each with its own connection: with 2, two CPUs count into the
// same endpoint's shared counters and histograms at the same time.
Sample measure(const Sandbox& sb, const std::string& cgroup, Workload w, const std::string& addr, double seconds,
               int cpu, int clients) {
  int status = 0;
  std::string out = testing::runIn(
      cgroup, sb.client().name(),
      [&](int fd) {
        long ncpu = std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN));
        std::vector<pid_t> kids;
        for (int k = 1; k < clients; ++k) {
          pid_t pid = ::fork();
          if (pid == 0) _exit(clientTo(fd, w, addr, seconds, cpu < 0 ? -1 : int((cpu + k) % ncpu)));
          if (pid > 0) kids.push_back(pid);
        }
        int rc = clientTo(fd, w, addr, seconds, cpu);
        for (pid_t pid : kids) {
          int st = 0;
          ::waitpid(pid, &st, 0);
          if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) rc = rc ? rc : 4;
        }
        return rc;
      },
      &status);
  checkInterrupted();
  if (status != 0) throw std::runtime_error(fmt::format("client exited with status {}", status));
  Sample s;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {  // one per client: summed
    json j = json::parse(line);
    s.rate += j["rate"].get<double>();
    s.ops += j["ops"].get<long>();
    s.errors += j["errors"].get<long>();
    s.warmupOps += j["warmup_ops"].get<long>();
    if (!s.firstErrno) s.firstErrno = j["errno"].get<int>();
  }
  if (s.ops == 0)
    throw std::runtime_error(fmt::format("{} to {}: no successful operation (first error: {})", label(w), addr,
                                         std::strerror(s.firstErrno)));
  return s;
}

// ---- the agent -------------------------------------------------------------

struct Env {
  std::string dir;  // temporary work dir, removed at exit
  int agentStarts = 0;
};

json agentStatus(const AgentProcess& a) {
  auto r = callAgent(a.apiSocket(), {{"method", "status"}}, 3000ms);
  if (!r) throw std::runtime_error("agent status: " + r.error().message());
  return *r;
}

std::vector<std::string> programNames(const json& status) {
  std::vector<std::string> out;
  for (auto& p : status.value("programs", json::array())) out.push_back(p.value("name", "?"));
  return out;
}

bool isTelemetry(const std::string& n) { return n == "sockops" || n == "skb_egress" || n == "skb_ingress"; }

std::unique_ptr<AgentProcess> startAgent(Env& env, const Sandbox& sb, Mode m, const char* state = "state.yaml") {
  std::string work = env.dir + "/agent-" + std::to_string(env.agentStarts++);
  ::mkdir(work.c_str(), 0700);
  std::vector<std::string> extra;
  if (m == Mode::Detached || m == Mode::Empty) extra.push_back("--telemetry=false");
  auto a = std::make_unique<AgentProcess>(sb.cgroup().path(), env.dir + "/" + state, work, extra);
  a->start();
  // The data plane must be what the mode says.
  auto names = programNames(agentStatus(*a));
  int tel = std::count_if(names.begin(), names.end(), isTelemetry);
  if ((m == Mode::Attached && tel != 3) || (m != Mode::Attached && tel != 0))
    throw std::runtime_error(fmt::format("agent ({}) has {} telemetry program(s) attached; log: {}/agent.log",
                                         key(m), tel, work));
  return a;
}

// ---- (d): empty programs at the telemetry hooks -------------------------------

// A sock_ops program that does nothing but ask for state callbacks (as the
// real one does for its sockets, so the kernel calls it as often), and two
// cgroup_skb programs that only return "allow". Attached with links next to
// the agent's programs; detached when this object goes away.
class EmptyHooks {
 public:
  explicit EmptyHooks(const std::string& cgroup) {
    cg_ = ::open(cgroup.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (cg_ < 0) throw std::runtime_error(fmt::format("open {}: {}", cgroup, std::strerror(errno)));
    try {
      const bpf_insn sockops[] = {
          insn(BPF_LDX | BPF_MEM | BPF_W, 2, 1, offsetof(bpf_sock_ops, op), 0),
          insn(BPF_JMP | BPF_JNE | BPF_K, 2, 0, 2, BPF_SOCK_OPS_TCP_CONNECT_CB),
          insn(BPF_ALU64 | BPF_MOV | BPF_K, 2, 0, 0, BPF_SOCK_OPS_STATE_CB_FLAG),
          insn(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_sock_ops_cb_flags_set),
          insn(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, 1),
          insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
      };
      const bpf_insn allow[] = {insn(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, 1), insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)};
      attach(BPF_PROG_TYPE_SOCK_OPS, BPF_CGROUP_SOCK_OPS, sockops, std::size(sockops), "empty_sockops");
      attach(BPF_PROG_TYPE_CGROUP_SKB, BPF_CGROUP_INET_EGRESS, allow, std::size(allow), "empty_egress");
      attach(BPF_PROG_TYPE_CGROUP_SKB, BPF_CGROUP_INET_INGRESS, allow, std::size(allow), "empty_ingress");
    } catch (...) {
      release();
      throw;
    }
  }
  ~EmptyHooks() { release(); }
  // The three programs' fds, in attach order (sockops, egress, ingress).
  std::vector<int> programs() const { return progs_; }
  EmptyHooks(const EmptyHooks&) = delete;
  EmptyHooks& operator=(const EmptyHooks&) = delete;

 private:
  static bpf_insn insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
    bpf_insn i{};
    i.code = code;
    i.dst_reg = dst;
    i.src_reg = src;
    i.off = off;
    i.imm = imm;
    return i;
  }
  void attach(bpf_prog_type type, bpf_attach_type at, const bpf_insn* code, size_t n, const char* name) {
    LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = at);
    int prog = bpf_prog_load(type, name, "GPL", code, n, &opts);
    if (prog < 0) throw std::runtime_error(fmt::format("load {}: {}", name, std::strerror(-prog)));
    fds_.push_back(prog);
    progs_.push_back(prog);
    int link = bpf_link_create(prog, cg_, at, nullptr);
    if (link < 0) throw std::runtime_error(fmt::format("attach {}: {}", name, std::strerror(-link)));
    fds_.push_back(link);
  }
  void release() {
    for (auto it = fds_.rbegin(); it != fds_.rend(); ++it) ::close(*it);  // links first: detaches
    fds_.clear();
    progs_.clear();
    if (cg_ >= 0) ::close(cg_);
    cg_ = -1;
  }
  int cg_ = -1;
  std::vector<int> fds_, progs_;
};

// ---- BPF run-time statistics ------------------------------------------------

// Turns on kernel-wide BPF run-time statistics while alive. BPF_ENABLE_STATS
// keeps them on only while its fd is open, so they go off even if this
// process is killed; the sysctl (saved and restored) is the fallback.
class BpfStatsOn {
 public:
  BpfStatsOn() {
    fd_ = bpf_enable_stats(BPF_STATS_RUN_TIME);
    if (fd_ >= 0) {
      how_ = "BPF_ENABLE_STATS";
      return;
    }
    std::ifstream in(kSysctl);
    if (!(in >> prev_)) throw std::runtime_error(std::string("cannot read ") + kSysctl);
    write("1");
    restore_ = true;
    how_ = "sysctl kernel.bpf_stats_enabled";
  }
  ~BpfStatsOn() {
    if (fd_ >= 0) ::close(fd_);
    if (restore_) write(prev_);
  }
  BpfStatsOn(const BpfStatsOn&) = delete;
  BpfStatsOn& operator=(const BpfStatsOn&) = delete;
  const std::string& how() const { return how_; }

 private:
  static constexpr const char* kSysctl = "/proc/sys/kernel/bpf_stats_enabled";
  static void write(const std::string& v) {
    std::ofstream out(kSysctl);
    out << v << "\n";
  }
  int fd_ = -1;
  bool restore_ = false;
  std::string prev_, how_;
};

struct Prog {
  std::string name, attach;
  uint32_t id = 0;
  int fd = -1;
};

struct ProgCounters {
  uint64_t cnt = 0, ns = 0;
};

// The programs the agent attached to our cgroup: status `programs` link ids
// -> link info -> program id -> program fd.
std::vector<Prog> attachedPrograms(const json& status) {
  std::vector<Prog> out;
  for (auto& p : status.value("programs", json::array())) {
    uint32_t linkId = p.value("link_id", 0u);
    int lfd = bpf_link_get_fd_by_id(linkId);
    if (lfd < 0) throw std::runtime_error(fmt::format("bpf_link_get_fd_by_id({}): {}", linkId, std::strerror(errno)));
    bpf_link_info li{};
    uint32_t len = sizeof(li);
    int rc = bpf_obj_get_info_by_fd(lfd, &li, &len);
    ::close(lfd);
    if (rc != 0) throw std::runtime_error(fmt::format("link {} info: {}", linkId, std::strerror(errno)));
    Prog g;
    g.name = p.value("name", "?");
    const char* at = li.type == BPF_LINK_TYPE_CGROUP
                         ? libbpf_bpf_attach_type_str(static_cast<bpf_attach_type>(li.cgroup.attach_type))
                         : nullptr;
    g.attach = at ? at : "?";
    g.id = li.prog_id;
    g.fd = bpf_prog_get_fd_by_id(li.prog_id);
    if (g.fd < 0)
      throw std::runtime_error(fmt::format("bpf_prog_get_fd_by_id({}): {}", li.prog_id, std::strerror(errno)));
    out.push_back(g);
  }
  return out;
}

ProgCounters readCounters(const Prog& p) {
  bpf_prog_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(p.fd, &info, &len) != 0)
    throw std::runtime_error(fmt::format("prog {} info: {}", p.id, std::strerror(errno)));
  return {info.run_cnt, info.run_time_ns};
}

// ---- reporting ----------------------------------------------------------------

struct Results {
  // rates[workload][mode] = one value per round
  std::map<Workload, std::map<Mode, std::vector<double>>> rates;
  std::map<Workload, std::map<Mode, long>> errors;
};

json run(int runs, double seconds, int cpu, int clients) {
  json facts = testing::machineFacts();
  fmt::print("telemetry-overhead: {} run(s) of {:g} s per workload and mode\n", runs, seconds);
  fmt::print("machine: nproc {}, kernel {} ({}), {}\n", facts["nproc"].get<long>(), facts["kernel"].get<std::string>(),
             facts["machine"].get<std::string>(), facts["cpu"].get<std::string>());
  fmt::print("date: {}; loadavg at start: {}\n", facts["date"].get<std::string>(),
             facts["loadavg_at_start"].get<std::string>());
  fmt::print("{} client(s); the first client and the echo server pinned to {}\n", clients,
             cpu < 0 ? std::string("no CPU (--cpu -1)") : fmt::format("CPU {}", cpu));
  std::fflush(stdout);

  std::string agentBin = std::string(AIMESH_BINARY_DIR) + "/aimesh-agent";
  if (::access(agentBin.c_str(), X_OK) != 0)
    throw std::runtime_error(agentBin + " not found: build the aimesh-agent target first");

  Env env;
  testing::ScratchDir scratch;  // removed on every way out
  env.dir = scratch.path();
  testing::writeFile(env.dir + "/state.yaml", kState);
  testing::writeFile(env.dir + "/state-unsampled.yaml", kStateUnsampled);

  Sandbox sb;
  TestCgroup directCg;  // nothing is ever attached here: baseline (c)
  // Connect-and-close would leave tens of thousands of client ports in
  // TIME_WAIT, and connect()'s search for a free port would slow down run
  // after run (whichever mode ran later would pay). In the client namespace
  // (ours) keep at most 256 TIME_WAIT sockets; a closing socket beyond that
  // goes straight to CLOSED. Wide port range and reuse on top.
  if (testing::sh("ip netns exec " + sb.client().name() +
                  " sysctl -qw net.ipv4.tcp_max_tw_buckets=256 net.ipv4.tcp_tw_reuse=1"
                  " net.ipv4.ip_local_port_range='1024 65535'") != 0)
    throw std::runtime_error("cannot set the client namespace's TCP sysctls");
  Child server = testing::startNameServer(sb.backend().name(), kBackend, kPort, "backend");
  pinTo(cpu, server.pid());

  // Orders per round: the four modes rotate, and every other cycle of four
  // runs backwards, so no mode always runs first or right after another.
  auto orderOf = [](int r) {
    std::array<Mode, 4> o{Mode::Attached, Mode::Detached, Mode::Empty, Mode::Direct};
    std::rotate(o.begin(), o.begin() + r % 4, o.end());
    if ((r / 4) % 2) std::reverse(o.begin(), o.end());
    return o;
  };
  Results res;
  for (int r = 0; r < runs; ++r) {
    std::string line = fmt::format("run {}/{}:", r + 1, runs);
    for (Mode m : orderOf(r)) {
      checkInterrupted();
      std::unique_ptr<AgentProcess> agent;
      std::unique_ptr<EmptyHooks> empty;
      if (m != Mode::Direct) agent = startAgent(env, sb, m);
      if (m == Mode::Empty) empty = std::make_unique<EmptyHooks>(sb.cgroup().path());
      const std::string& cg = m == Mode::Direct ? directCg.path() : sb.cgroup().path();
      const char* addr = m == Mode::Direct ? kBackend : kVip;
      for (Workload w : kWorkloads) {
        Sample s = measure(sb, cg, w, addr, seconds, cpu, clients);
        res.rates[w][m].push_back(s.rate);
        res.errors[w][m] += s.errors;
        line += fmt::format(" {}/{} {:.0f}/s", key(m), w == Workload::ConnectClose ? "cc" : "ka", s.rate);
        if (s.errors) line += fmt::format(" ({} errors, first: {})", s.errors, std::strerror(s.firstErrno));
      }
      empty.reset();
      agent.reset();  // SIGKILL and cleanup of its pin dir
    }
    fmt::print(stderr, "{}\n", line);
  }

  // Profile pass: a fresh attached agent, BPF run-time statistics on.
  checkInterrupted();
  auto agent = startAgent(env, sb, Mode::Attached);
  auto progs = attachedPrograms(agentStatus(*agent));
  struct ProgRow {
    std::map<Workload, ProgCounters> delta;
  };
  std::vector<ProgRow> progRows(progs.size());
  std::map<Workload, Sample> statsSample;
  std::string statsHow;
  {
    BpfStatsOn stats;
    statsHow = stats.how();
    for (Workload w : kWorkloads) {
      std::vector<ProgCounters> before;
      for (auto& p : progs) before.push_back(readCounters(p));
      statsSample[w] = measure(sb, sb.cgroup().path(), w, kVip, seconds, cpu, clients);
      for (size_t i = 0; i < progs.size(); ++i) {
        ProgCounters after = readCounters(progs[i]);
        progRows[i].delta[w] = {after.cnt - before[i].cnt, after.ns - before[i].ns};
      }
    }
  }
  for (auto& p : progs) ::close(p.fd);
  agent.reset();

  // Two more passes with statistics on, each giving the BPF ns per operation
  // of the programs at the three telemetry hooks: (1) the floor, the agent
  // without telemetry plus the empty programs (what any program there costs:
  // being called, and the statistics' own clock reads); (2) the telemetry
  // programs with sampling at its floor, so no connection is timed.
  auto hookNsPerOp = [&](const std::vector<Prog>& hooks) {
    std::map<Workload, double> perOp;
    BpfStatsOn stats;
    for (Workload w : kWorkloads) {
      std::vector<ProgCounters> before;
      for (auto& p : hooks) before.push_back(readCounters(p));
      Sample sm = measure(sb, sb.cgroup().path(), w, kVip, seconds, cpu, clients);
      double ops = double(sm.ops + sm.warmupOps), ns = 0;
      for (size_t i = 0; i < hooks.size(); ++i) ns += double(readCounters(hooks[i]).ns - before[i].ns);
      perOp[w] = ops > 0 ? ns / ops : 0;
    }
    return perOp;
  };
  std::map<Workload, double> floorNsPerOp, unsampledNsPerOp;
  {
    checkInterrupted();
    auto bare = startAgent(env, sb, Mode::Empty);
    EmptyHooks empty(sb.cgroup().path());
    std::vector<Prog> hooks;
    for (int fd : empty.programs()) hooks.push_back(Prog{.name = "empty", .attach = "", .id = 0, .fd = fd});
    floorNsPerOp = hookNsPerOp(hooks);
  }
  {
    checkInterrupted();
    auto sampledOut = startAgent(env, sb, Mode::Attached, "state-unsampled.yaml");
    std::vector<Prog> hooks;
    for (const Prog& p : attachedPrograms(agentStatus(*sampledOut))) {
      if (isTelemetry(p.name)) hooks.push_back(p);
      else ::close(p.fd);
    }
    unsampledNsPerOp = hookNsPerOp(hooks);
    for (auto& p : hooks) ::close(p.fd);
  }

  // ---- the table ----
  json out{{"machine", facts}, {"runs", runs}, {"seconds", seconds}};
  fmt::print("\n{:<15} {:<24} {:>12} {:>12} {:>12}  {}\n", "workload", "mode", "median ops/s", "min", "max",
             "errors");
  for (Workload w : kWorkloads) {
    for (Mode m : kModes) {
      auto& v = res.rates[w][m];
      double med = median(v);
      fmt::print("{:<15} {:<24} {:>12.0f} {:>12.0f} {:>12.0f}  {}\n", label(w), label(m), med,
                 *std::min_element(v.begin(), v.end()), *std::max_element(v.begin(), v.end()), res.errors[w][m]);
      out["results"][key(w)][key(m)] = {{"median", med}, {"runs", v}, {"errors", res.errors[w][m]}};
    }
    auto& a = res.rates[w][Mode::Attached];
    auto& b = res.rates[w][Mode::Detached];
    auto& c = res.rates[w][Mode::Direct];
    auto& d = res.rates[w][Mode::Empty];
    double ab = median(a) / median(b), bc = median(b) / median(c), db = median(d) / median(b),
           ad = median(a) / median(d);
    std::vector<double> pairedAb, pairedBc, pairedDb, pairedAd;
    for (size_t i = 0; i < a.size(); ++i) {
      pairedAb.push_back(a[i] / b[i]);
      pairedBc.push_back(b[i] / c[i]);
      pairedDb.push_back(d[i] / b[i]);
      pairedAd.push_back(a[i] / d[i]);
    }
    fmt::print("{:<15} attached/detached {:.3f} (goal >= 0.97: {}; per-run ratios, median {:.3f})\n", "", ab,
               ab >= 0.97 ? "met" : "NOT met", median(pairedAb));
    fmt::print("{:<15} empty/detached    {:.3f} (per-run ratios, median {:.3f}): the hooks' floor\n", "", db,
               median(pairedDb));
    fmt::print("{:<15} attached/empty    {:.3f} (per-run ratios, median {:.3f}): the programs' own work\n", "", ad,
               median(pairedAd));
    fmt::print("{:<15} detached/direct   {:.3f} (per-run ratios, median {:.3f})\n", "", bc, median(pairedBc));
    out["ratios"][key(w)] = {{"attached_over_detached", ab},
                             {"detached_over_direct", bc},
                             {"empty_over_detached", db},
                             {"attached_over_empty", ad},
                             {"attached_over_detached_paired_median", median(pairedAb)},
                             {"detached_over_direct_paired_median", median(pairedBc)},
                             {"empty_over_detached_paired_median", median(pairedDb)},
                             {"attached_over_empty_paired_median", median(pairedAd)},
                             {"goal_attached_over_detached", 0.97},
                             {"goal_met", ab >= 0.97}};
  }

  fmt::print("\nBPF programs on the cgroup, telemetry attached, one {:g} s run per workload with run-time stats on\n"
             "({}; these runs: connect+close {:.0f}/s, keep-alive {:.0f}/s, not in the medians above)\n",
             seconds, statsHow, statsSample[Workload::ConnectClose].rate, statsSample[Workload::KeepAlive].rate);
  fmt::print("{:<12} {:<22} {:>6} | {:>10} {:>8} {:>8} | {:>10} {:>8} {:>8}\n", "program", "attach type", "id",
             "cc runs", "avg ns", "runs/op", "ka runs", "avg ns", "runs/op");
  std::map<Workload, double> nsPerOpAll, nsPerOpTel;
  for (size_t i = 0; i < progs.size(); ++i) {
    std::string row = fmt::format("{:<12} {:<22} {:>6}", progs[i].name, progs[i].attach, progs[i].id);
    json jp{{"name", progs[i].name}, {"attach_type", progs[i].attach}, {"prog_id", progs[i].id}};
    for (Workload w : kWorkloads) {
      auto d = progRows[i].delta[w];
      double avg = d.cnt ? double(d.ns) / d.cnt : 0;
      double ops = double(statsSample[w].ops + statsSample[w].warmupOps);  // the counters cover both
      row += fmt::format(" | {:>10} {:>8.0f} {:>8.2f}", d.cnt, avg, ops > 0 ? d.cnt / ops : 0);
      jp[key(w)] = {{"run_cnt", d.cnt}, {"run_time_ns", d.ns}, {"avg_ns", avg}};
      if (ops > 0) {
        nsPerOpAll[w] += d.ns / ops;
        if (isTelemetry(progs[i].name)) nsPerOpTel[w] += d.ns / ops;
      }
    }
    fmt::print("{}\n", row);
    out["programs"].push_back(jp);
  }
  fmt::print("BPF ns per operation: connect+close {:.0f} (telemetry {:.0f}), keep-alive request {:.0f} "
             "(telemetry {:.0f})\n",
             nsPerOpAll[Workload::ConnectClose], nsPerOpTel[Workload::ConnectClose], nsPerOpAll[Workload::KeepAlive],
             nsPerOpTel[Workload::KeepAlive]);
  fmt::print("BPF ns per operation of empty programs at the same hooks (the floor): connect+close {:.0f}, "
             "keep-alive request {:.0f}\n",
             floorNsPerOp[Workload::ConnectClose], floorNsPerOp[Workload::KeepAlive]);
  fmt::print("BPF ns per operation of the telemetry programs, no connection sampled: connect+close {:.0f}, "
             "keep-alive request {:.0f}\n",
             unsampledNsPerOp[Workload::ConnectClose], unsampledNsPerOp[Workload::KeepAlive]);
  auto above = [&](std::map<Workload, double>& m, Workload w) { return m[w] - floorNsPerOp[w]; };
  fmt::print("telemetry above the floor, every connection sampled: connect+close {:.0f} (goal <= 800), "
             "keep-alive request {:.0f} (goal <= 150)\n",
             above(nsPerOpTel, Workload::ConnectClose), above(nsPerOpTel, Workload::KeepAlive));
  fmt::print("telemetry above the floor, none sampled: connect+close {:.0f}, keep-alive request {:.0f} "
             "({:.0f} per payload segment; goal <= 30)\n",
             above(unsampledNsPerOp, Workload::ConnectClose), above(unsampledNsPerOp, Workload::KeepAlive),
             above(unsampledNsPerOp, Workload::KeepAlive) / 2);
  for (Workload w : kWorkloads) {
    out["bpf_stats"][key(w)] = {{"ops_per_second", statsSample[w].rate},
                                {"ops", statsSample[w].ops + statsSample[w].warmupOps},
                                {"bpf_ns_per_op", nsPerOpAll[w]},
                                {"telemetry_bpf_ns_per_op", nsPerOpTel[w]},
                                {"floor_bpf_ns_per_op", floorNsPerOp[w]},
                                {"unsampled_telemetry_bpf_ns_per_op", unsampledNsPerOp[w]}};
  }
  out["bpf_stats"]["enabled_with"] = statsHow;
  out["cpu"] = cpu;
  return out;
}

}  // namespace
}  // namespace aimesh

int main(int argc, char** argv) {
  CLI::App app{"telemetry-overhead: request rates with aimesh telemetry attached, detached, and without aimesh"};
  int runs = 5;
  double seconds = 2;
  bool wantJson = false;
  int cpu = 0;  // addCpuOption() sets the default
  int clients = 1;
  app.add_option("--runs", runs, "measured runs per workload and mode (the median is reported)")
      ->capture_default_str()
      ->check(CLI::Range(1, 50));
  app.add_option("--seconds", seconds, "length of one run")->capture_default_str()->check(CLI::Range(0.1, 60.0));
  aimesh::testing::addCpuOption(app, cpu, "pin the client and the echo server to this CPU (-1: no pinning)");
  app.add_option("--clients", clients,
                 "client processes at once, each on its own CPU from --cpu on (2: two CPUs count into the same "
                 "endpoint)")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  app.add_flag("--json", wantJson, "also print the results as one JSON object after the table");
  CLI11_PARSE(app, argc, argv);
  return aimesh::testing::runBenchMain({.name = "telemetry-overhead",
                                        .needsRootFor = "cgroups, network namespaces, BPF",
                                        .removed = "sandbox removed"},
                                       wantJson, [&] { return aimesh::run(runs, seconds, cpu, clients); });
}
