// tc-compare: what the TC data path (bpf/tc_lb.bpf.c) costs per packet, and
// how it compares with kube-proxy's iptables and nftables modes end to end.
// See docs/benchmarks.md.
//
// Part 1, per packet: BPF_PROG_TEST_RUN of (a) an empty TC program (the
// floor: r0 = TC_ACT_OK; exit), (b) tc_lb on a new flow, (c) tc_lb on an
// existing flow, (d) tc_lb on a packet to no service. IPv4 TCP. Two ways:
//   - repeat = R (>= 1e6) on one packet: the kernel's own average. test_run
//     runs the program R times on the SAME skb, and tc_lb rewrites it, so for
//     (c) a second, synthetic forward entry maps the rewritten packet
//     (client -> backend) back to the frontend: every repetition is then an
//     existing-flow hit plus a rewrite, alternating direction. A new flow
//     cannot be repeated this way (the first run creates the entry), so
//     (b) has no value in this column.
//   - repeat = 1 over N distinct packets (distinct source ports), the
//     kernel-reported durations averaged: (b) on a fresh conntrack map, (c)
//     the same N packets again, (a) and (d) likewise, so the ratios compare
//     like with like (this column includes the kernel's per-run timer cost).
// tc_lb is loaded from its skeleton with every pin path cleared (nothing in
// /sys/fs/bpf) and attached nowhere.
//
// Part 2, end to end: client ⇄ node ⇄ backend namespaces (veth pairs, no
// default routes, as tests/e2e/tc_lb_e2e_test.cc), one set per mode so that
// the conntrack that NAT rules switch on in a namespace taxes only that mode:
//   direct   the client connects to the backend address, routed by the node
//   aimesh   agent in the node namespace, --tc-interfaces on both node veths
//   iptables kube-proxy-style nat chains (KUBE-SERVICES -> KUBE-SVC-* with
//            statistic random -> KUBE-SEP-* DNAT), loaded with iptables-restore
//   nftables kube-proxy nftables-mode shape: daddr . proto . dport vmap ->
//            per-service chain with numgen random mod N vmap -> dnat
// with 1 service, then more (only the last one gets traffic); connect+close
// and keep-alive request rates, and the time each takes to install N
// services. Everything (namespaces, agent, pins, temp dir) is removed at
// exit, on error and on SIGINT/SIGTERM.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <httplib.h>
#include <linux/pkt_cls.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fmt/format.h>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "aimesh/abi.h"
#include "client/api_client.h"
#include "fixtures/libbpf_log.h"
#include "fixtures/packets.h"
#include "fixtures/rate_client.h"
#include "fixtures/sandbox.h"
#include "support/bench_run.h"
#include "support/machine_facts.h"
#include "tc_lb.skel.h"

namespace aimesh {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using Bytes = std::vector<uint8_t>;
using namespace std::chrono_literals;
using testing::AgentProcess;
using testing::Child;
using testing::NetNs;
using testing::TestCgroup;

volatile sig_atomic_t& gInterrupted = testing::gBenchInterrupted;
using testing::checkInterrupted;
using testing::Interrupted;
using testing::median;

double minOf(const std::vector<double>& v) { return v.empty() ? 0 : *std::min_element(v.begin(), v.end()); }
double maxOf(const std::vector<double>& v) { return v.empty() ? 0 : *std::max_element(v.begin(), v.end()); }

uint64_t monotonicNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

// ============================================================================
// Part 1: ns per packet through BPF_PROG_TEST_RUN
// ============================================================================

const testing::Addr16 kClient = testing::mappedV4(192, 168, 1, 50);
const testing::Addr16 kVip = testing::mappedV4(10, 96, 0, 10);
const testing::Addr16 kBackend = testing::mappedV4(10, 0, 1, 1);
const testing::Addr16 kOther = testing::mappedV4(10, 200, 0, 1);
constexpr uint16_t kVipPort = 80, kBackendPort = 8080;

testing::PacketSpec tcpSpec(const testing::Addr16& src, uint16_t sport, const testing::Addr16& dst, uint16_t dport,
                            uint8_t flags) {
  testing::PacketSpec s;
  s.src = src;
  s.dst = dst;
  s.proto = testing::kProtoTcp;
  s.sport = sport;
  s.dport = dport;
  s.tcpFlags = flags;
  return s;
}

// tc_lb loaded without pins, one service (random algorithm, one backend)
// behind kVip:80/TCP; and the empty program. The flow table holds at least
// `flows` flows (two entries each), so no new flow evicts another.
class MicroBench {
 public:
  explicit MicroBench(int flows) {
    skel_ = tc_lb__open();
    if (!skel_) throw std::runtime_error(fmt::format("tc_lb__open: {}\n{}", std::strerror(errno), libbpfLog_.text()));
    bpf_map* m;
    bpf_object__for_each_map(m, skel_->obj) {
      if (bpf_map__set_pin_path(m, nullptr) != 0) throw std::runtime_error("clear pin path");
    }
    uint32_t ctEntries = std::max<uint32_t>(AIMESH_MAX_CT, 2u * static_cast<uint32_t>(flows) + 1024);
    if (bpf_map__set_max_entries(skel_->maps.aimesh_ct, ctEntries) != 0)
      throw std::runtime_error("size aimesh_ct");
    if (tc_lb__load(skel_) != 0) throw std::runtime_error("tc_lb__load (verifier log):\n" + libbpfLog_.text());
    progFd_ = bpf_program__fd(skel_->progs.aimesh_tc_ingress);
    ctFd_ = bpf_map__fd(skel_->maps.aimesh_ct);

    const bpf_insn empty[] = {
        {BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, TC_ACT_OK},
        {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
    };
    emptyFd_ = bpf_prog_load(BPF_PROG_TYPE_SCHED_CLS, "empty_tc", "GPL", empty, std::size(empty), nullptr);
    if (emptyFd_ < 0) throw std::runtime_error(fmt::format("load the empty TC program: {}", std::strerror(-emptyFd_)));

    uint32_t svc = 1, be = 1;
    aimesh_backend b{};
    std::memcpy(b.addr, kBackend.data(), 16);
    b.port = htons(kBackendPort);
    b.family = AIMESH_FAMILY_V4;
    b.state = AIMESH_BE_ACTIVE;
    b.service_id = svc;
    b.weight = 1;
    update(skel_->maps.aimesh_backends, &be, sizeof(be), &b, sizeof(b));
    aimesh_slot_key sk{};
    sk.service_id = svc;
    sk.slot = 0;
    aimesh_slot sv{};
    sv.backend_id = be;
    update(skel_->maps.aimesh_slots, &sk, sizeof(sk), &sv, sizeof(sv));
    aimesh_service s{};
    s.slot_count = 1;
    s.backend_count = 1;
    s.algorithm = AIMESH_ALG_RANDOM;
    update(skel_->maps.aimesh_services, &svc, sizeof(svc), &s, sizeof(s));
    aimesh_frontend_key fk{};
    std::memcpy(fk.addr, kVip.data(), 16);
    fk.port = htons(kVipPort);
    fk.proto = testing::kProtoTcp;
    aimesh_frontend fv{};
    fv.service_id = svc;
    update(skel_->maps.aimesh_frontends, &fk, sizeof(fk), &fv, sizeof(fv));
  }
  ~MicroBench() {
    if (emptyFd_ >= 0) ::close(emptyFd_);
    if (skel_) tc_lb__destroy(skel_);
  }
  MicroBench(const MicroBench&) = delete;
  MicroBench& operator=(const MicroBench&) = delete;

  int lb() const { return progFd_; }
  int empty() const { return emptyFd_; }

  struct Run {
    uint32_t retval = 0;
    uint32_t durationNs = 0;  // the kernel's average per repetition
    Bytes out;
  };
  Run run(int fd, const Bytes& in, int repeat) {
    Run r;
    r.out.assign(in.size() + 256, 0);
    LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = in.data(), .data_out = r.out.data(),
                .data_size_in = static_cast<uint32_t>(in.size()), .data_size_out = static_cast<uint32_t>(r.out.size()),
                .repeat = repeat);
    if (bpf_prog_test_run_opts(fd, &opts) != 0)
      throw std::runtime_error(fmt::format("BPF_PROG_TEST_RUN: {}", std::strerror(errno)));
    r.retval = opts.retval;
    r.durationNs = opts.duration;
    r.out.resize(opts.data_size_out);
    return r;
  }
  // repeat = 1 over every packet: the mean of the kernel-reported durations.
  double meanSingle(int fd, const std::vector<Bytes>& pkts, uint32_t wantRet) {
    uint64_t sum = 0;
    for (auto& p : pkts) {
      Run r = run(fd, p, 1);
      if (r.retval != wantRet) throw std::runtime_error(fmt::format("verdict {} (wanted {})", r.retval, wantRet));
      sum += r.durationNs;
    }
    checkInterrupted();
    return double(sum) / double(pkts.size());
  }

  size_t ctEntries() {
    size_t n = 0;
    aimesh_ct_key k{}, next{};
    void* prev = nullptr;
    while (bpf_map_get_next_key(ctFd_, prev, &next) == 0) {
      ++n;
      k = next;
      prev = &k;
    }
    return n;
  }
  void clearCt() {
    std::vector<aimesh_ct_key> keys;
    aimesh_ct_key k{}, next{};
    void* prev = nullptr;
    while (bpf_map_get_next_key(ctFd_, prev, &next) == 0) {
      keys.push_back(next);
      k = next;
      prev = &k;
    }
    for (auto& key : keys) bpf_map_delete_elem(ctFd_, &key);
    if (ctEntries() != 0) throw std::runtime_error("could not empty aimesh_ct");
  }
  // A forward entry for client:sport -> backend that rewrites back to the
  // frontend: makes the program's own output an existing flow again.
  void putMirrorEntry(uint16_t sport) {
    aimesh_ct_key k{};
    std::memcpy(k.saddr, kClient.data(), 16);
    std::memcpy(k.daddr, kBackend.data(), 16);
    k.sport = htons(sport);
    k.dport = htons(kBackendPort);
    k.proto = testing::kProtoTcp;
    aimesh_ct v{};
    std::memcpy(v.addr, kVip.data(), 16);
    v.port = htons(kVipPort);
    v.dir = AIMESH_CT_FORWARD;
    v.service_id = 1;
    v.backend_id = 1;
    v.last_seen_ns = monotonicNs();
    if (bpf_map_update_elem(ctFd_, &k, &v, BPF_ANY) != 0)
      throw std::runtime_error(fmt::format("aimesh_ct update: {}", std::strerror(errno)));
  }

 private:
  static void update(bpf_map* m, const void* k, size_t kl, const void* v, size_t vl) {
    if (bpf_map__update_elem(m, k, kl, v, vl, BPF_ANY) != 0)
      throw std::runtime_error(fmt::format("{} update: {}", bpf_map__name(m), std::strerror(errno)));
  }
  testing::LibbpfLogCapture libbpfLog_;  // what libbpf said, shown if open or load fails
  tc_lb* skel_ = nullptr;
  int progFd_ = -1, ctFd_ = -1, emptyFd_ = -1;
};

enum class Case { Empty, NewFlow, Existing, NonService };
constexpr std::array<Case, 4> kCases{Case::Empty, Case::NewFlow, Case::Existing, Case::NonService};
const char* key(Case c) {
  return c == Case::Empty ? "empty" : c == Case::NewFlow ? "new_flow" : c == Case::Existing ? "existing_flow"
                                                                                            : "non_service";
}
const char* label(Case c) {
  return c == Case::Empty      ? "(a) empty TC program"
         : c == Case::NewFlow  ? "(b) tc_lb, new flow"
         : c == Case::Existing ? "(c) tc_lb, existing flow"
                               : "(d) tc_lb, not a service";
}

json runMicro(int reps, int repeat, int flows) {
  MicroBench mb(flows);
  // The packets: a SYN per flow for (a) and (b), an ACK of the same flow for
  // (c), and an ACK to no service for (d). 50,000 source ports per client
  // address, then the next address.
  std::vector<Bytes> flowPkts, ackPkts, otherPkts;
  flowPkts.reserve(static_cast<size_t>(flows));
  ackPkts.reserve(static_cast<size_t>(flows));
  otherPkts.reserve(static_cast<size_t>(flows));
  for (int i = 0; i < flows; ++i) {
    uint16_t sport = static_cast<uint16_t>(10000 + i % 50000);
    testing::Addr16 client = testing::mappedV4(192, 168, static_cast<uint8_t>(1 + i / 50000), 50);
    flowPkts.push_back(testing::buildPacket(tcpSpec(client, sport, kVip, kVipPort, testing::kTcpSyn)));
    ackPkts.push_back(testing::buildPacket(tcpSpec(client, sport, kVip, kVipPort, testing::kTcpAck)));
    otherPkts.push_back(testing::buildPacket(tcpSpec(client, sport, kOther, kVipPort, testing::kTcpAck)));
  }
  const uint16_t kOnePort = 9999;
  const Bytes one = testing::buildPacket(tcpSpec(kClient, kOnePort, kVip, kVipPort, testing::kTcpAck));
  const Bytes oneDnat = testing::buildPacket(tcpSpec(kClient, kOnePort, kBackend, kBackendPort, testing::kTcpAck));
  const Bytes other = testing::buildPacket(tcpSpec(kClient, kOnePort, kOther, kVipPort, testing::kTcpAck));

  // Correctness first: a new flow is rewritten byte for byte as expected, and
  // the looped existing flow really alternates (even repeat: back to input).
  mb.clearCt();
  auto first = mb.run(mb.lb(), one, 1);
  if (first.retval != TC_ACT_OK || first.out != oneDnat)
    throw std::runtime_error("tc_lb did not rewrite the new flow to the backend as expected");
  mb.putMirrorEntry(kOnePort);
  auto loop = mb.run(mb.lb(), one, 1000);
  if (loop.retval != TC_ACT_OK || loop.out != one)
    throw std::runtime_error("existing-flow loop: 1000 runs did not return to the input packet");
  auto pass = mb.run(mb.lb(), other, 1);
  if (pass.retval != TC_ACT_OK || pass.out != other) throw std::runtime_error("non-service packet was changed");
  // repeat must be even so the looped packet ends where it started.
  if (repeat % 2) ++repeat;

  std::map<Case, std::vector<double>> loopNs, singleNs;
  for (int r = 0; r < reps; ++r) {
    checkInterrupted();
    // repeat = R on one packet.
    loopNs[Case::Empty].push_back(mb.run(mb.empty(), one, repeat).durationNs);
    mb.putMirrorEntry(kOnePort);  // last_seen fresh
    auto ex = mb.run(mb.lb(), one, repeat);
    if (ex.out != one) throw std::runtime_error("existing-flow loop did not return to the input packet");
    loopNs[Case::Existing].push_back(ex.durationNs);
    loopNs[Case::NonService].push_back(mb.run(mb.lb(), other, repeat).durationNs);
    // repeat = 1 over N distinct flows, on a fresh conntrack map.
    singleNs[Case::Empty].push_back(mb.meanSingle(mb.empty(), flowPkts, TC_ACT_OK));
    mb.clearCt();
    singleNs[Case::NewFlow].push_back(mb.meanSingle(mb.lb(), flowPkts, TC_ACT_OK));
    size_t ct = mb.ctEntries();
    if (ct != 2 * flowPkts.size())
      throw std::runtime_error(fmt::format("{} new flows made {} conntrack entries, not {}", flowPkts.size(), ct,
                                           2 * flowPkts.size()));
    singleNs[Case::Existing].push_back(mb.meanSingle(mb.lb(), ackPkts, TC_ACT_OK));
    singleNs[Case::NonService].push_back(mb.meanSingle(mb.lb(), otherPkts, TC_ACT_OK));
    mb.clearCt();
    mb.putMirrorEntry(kOnePort);
    mb.run(mb.lb(), one, 1);  // re-create the forward entry for the next loop
    mb.putMirrorEntry(kOnePort);
    fmt::print(stderr, "micro rep {}/{}: loop empty {} existing {} non-service {} | single empty {:.0f} new {:.0f} "
               "existing {:.0f} non-service {:.0f} ns\n",
               r + 1, reps, loopNs[Case::Empty].back(), loopNs[Case::Existing].back(), loopNs[Case::NonService].back(),
               singleNs[Case::Empty].back(), singleNs[Case::NewFlow].back(), singleNs[Case::Existing].back(),
               singleNs[Case::NonService].back());
  }

  fmt::print("\nPart 1: ns per packet, BPF_PROG_TEST_RUN, IPv4 TCP, median of {} reps (min-max)\n", reps);
  fmt::print("{:<26} | {:>22} {:>9} | {:>22} {:>9}\n", "program / case", fmt::format("repeat={} 1 pkt", repeat),
             "x empty", fmt::format("repeat=1 x {} pkts", flows), "x empty");
  json out{{"reps", reps}, {"repeat", repeat}, {"flows", flows}};
  double le = median(loopNs[Case::Empty]), se = median(singleNs[Case::Empty]);
  for (Case c : kCases) {
    std::string l = "-", lr = "-", s = "-", sr = "-";
    json jc;
    if (!loopNs[c].empty()) {
      double m = median(loopNs[c]);
      l = fmt::format("{:.1f} ({:.0f}-{:.0f})", m, minOf(loopNs[c]), maxOf(loopNs[c]));
      lr = fmt::format("{:.2f}", m / le);
      jc["repeat_ns"] = {{"median", m}, {"runs", loopNs[c]}, {"over_empty", m / le}};
    }
    if (!singleNs[c].empty()) {
      double m = median(singleNs[c]);
      s = fmt::format("{:.1f} ({:.0f}-{:.0f})", m, minOf(singleNs[c]), maxOf(singleNs[c]));
      sr = fmt::format("{:.2f}", m / se);
      jc["single_ns"] = {{"median", m}, {"runs", singleNs[c]}, {"over_empty", m / se}};
    }
    fmt::print("{:<26} | {:>22} {:>9} | {:>22} {:>9}\n", label(c), l, lr, s, sr);
    out["cases"][key(c)] = jc;
  }
  fmt::print("(b) cannot be repeated on one packet: the first run creates the flow. Each single run's\n"
             "duration is the kernel's (bpf_test_run timer), so that column includes its per-run overhead.\n");
  return out;
}

// ============================================================================
// Part 2: end to end through a node namespace
// ============================================================================

constexpr const char* kClientAddr = "10.79.1.1";
constexpr const char* kNodeClientSide = "10.79.1.2";
constexpr const char* kNodeBackendSide = "10.79.2.1";
const std::array<const char*, 2> kBackends{"10.79.2.2", "10.79.2.3"};
constexpr const char* kTargetVip = "10.97.0.10";  // the one service that gets traffic
constexpr uint16_t kPort = 8000;
constexpr double kWarmupSeconds = 0.3;
constexpr long kMaxErrors = 1000;

enum class Mode { Direct, Aimesh, Iptables, Nftables };
constexpr std::array<Mode, 4> kModes{Mode::Direct, Mode::Aimesh, Mode::Iptables, Mode::Nftables};
const char* key(Mode m) {
  return m == Mode::Direct ? "direct" : m == Mode::Aimesh ? "aimesh" : m == Mode::Iptables ? "iptables" : "nftables";
}
const char* label(Mode m) {
  return m == Mode::Direct     ? "direct (routed, no LB)"
         : m == Mode::Aimesh   ? "aimesh TC"
         : m == Mode::Iptables ? "iptables (kube-proxy)"
                               : "nftables (kube-proxy)";
}
enum class Workload { ConnectClose, KeepAlive };
constexpr std::array<Workload, 2> kWorkloads{Workload::ConnectClose, Workload::KeepAlive};
const char* key(Workload w) { return w == Workload::ConnectClose ? "connect_close" : "keep_alive"; }
const char* label(Workload w) { return w == Workload::ConnectClose ? "connect+close" : "keep-alive req"; }

// Service i (0-based) of n: the last one is the target; the others have
// addresses nothing routes to (they only have to be installed).
struct Svc {
  std::string vip;
  std::vector<std::string> endpoints;
};
std::vector<Svc> services(int n) {
  std::vector<Svc> out;
  for (int i = 0; i + 1 < n; ++i) {
    int a = (i + 1) >> 8, b = (i + 1) & 255;
    out.push_back({fmt::format("10.96.{}.{}", a, b), {fmt::format("10.80.{}.{}", a, b), fmt::format("10.81.{}.{}", a, b)}});
  }
  out.push_back({kTargetVip, {kBackends[0], kBackends[1]}});
  return out;
}

std::string stateFile(int n) {
  if (n == 0) return "services: []\n";
  std::string s = "services:\n";
  int i = 0;
  for (auto& v : services(n)) {
    s += fmt::format("  - name: s{}\n    namespace: bench\n    vips: [{}]\n    ports: [{{port: {}}}]\n    endpoints:\n",
                     i++, v.vip, kPort);
    for (auto& e : v.endpoints) s += fmt::format("      - {{address: {}, port: {}}}\n", e, kPort);
  }
  return s;
}

// kube-proxy's iptables shape: PREROUTING -> KUBE-SERVICES (one rule per
// service port, matched in order) -> KUBE-SVC-* (statistic random over the
// endpoints, probabilities 1/k, 1/(k-1), ...) -> KUBE-SEP-* DNAT. No
// masquerade: the backend routes back through the node.
std::string iptablesRules(int n) {
  std::string chains, rules;
  chains += ":PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n";
  if (n > 0) {
    chains += ":KUBE-SERVICES - [0:0]\n";
    rules += "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n";
    int i = 0;
    for (auto& v : services(n)) {
      std::string svc = fmt::format("KUBE-SVC-{:06d}", i);
      chains += ":" + svc + " - [0:0]\n";
      rules += fmt::format("-A KUBE-SERVICES -d {}/32 -p tcp -m comment --comment \"bench/s{}\" -m tcp --dport {} -j {}\n",
                           v.vip, i, kPort, svc);
      size_t k = v.endpoints.size();
      for (size_t e = 0; e < k; ++e) {
        std::string sep = fmt::format("KUBE-SEP-{:06d}-{}", i, e);
        chains += ":" + sep + " - [0:0]\n";
        if (e + 1 < k)
          rules += fmt::format("-A {} -m statistic --mode random --probability {:.11f} -j {}\n", svc,
                               1.0 / double(k - e), sep);
        else
          rules += fmt::format("-A {} -j {}\n", svc, sep);
        rules += fmt::format("-A {} -p tcp -m tcp -j DNAT --to-destination {}:{}\n", sep, v.endpoints[e], kPort);
      }
      ++i;
    }
  }
  return "*nat\n" + chains + rules + "COMMIT\n";
}

// kube-proxy's nftables shape: one vmap on daddr . proto . dport, a chain per
// service with numgen random mod k, a chain per endpoint with the dnat. The
// file replaces the table atomically (declare, delete, re-create).
std::string nftRules(int n) {
  std::string s = "table ip aimeshbench\ndelete table ip aimeshbench\n";
  if (n == 0) return s;
  s += "table ip aimeshbench {\n";
  std::string elems, chains;
  int i = 0;
  for (auto& v : services(n)) {
    elems += fmt::format("{}{} . tcp . {} : goto svc{}", i ? ",\n      " : "", v.vip, kPort, i);
    std::string vm;
    for (size_t e = 0; e < v.endpoints.size(); ++e) {
      vm += fmt::format("{}{} : goto sep{}_{}", e ? ", " : "", e, i, e);
      chains += fmt::format("  chain sep{}_{} {{\n    meta l4proto tcp dnat to {}:{}\n  }}\n", i, e, v.endpoints[e], kPort);
    }
    chains += fmt::format("  chain svc{} {{\n    numgen random mod {} vmap {{ {} }}\n  }}\n", i, v.endpoints.size(), vm);
    ++i;
  }
  s += "  map service_ips {\n    type ipv4_addr . inet_proto . inet_service : verdict\n    elements = { " + elems +
       " }\n  }\n";
  s += chains;
  s += "  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n"
       "    ip daddr . meta l4proto . th dport vmap @service_ips\n  }\n}\n";
  return s;
}

// One client ⇄ node ⇄ backend set of namespaces with two echo servers.
class Topology {
 public:
  explicit Topology(int cpu) : p_("tq" + testing::uniqueSuffix()), c_(p_ + "c"), n_(p_ + "n"), b_(p_ + "b") {
    std::string c = c_.name(), n = n_.name(), b = b_.name();
    cIf_ = p_ + "c0";
    n0_ = p_ + "n0";
    n1_ = p_ + "n1";
    bIf_ = p_ + "b0";
    using testing::sh;
    int rc = sh("ip link add " + cIf_ + " type veth peer name " + n0_) +
             sh("ip link add " + n1_ + " type veth peer name " + bIf_) + sh("ip link set " + cIf_ + " netns " + c) +
             sh("ip link set " + n0_ + " netns " + n) + sh("ip link set " + n1_ + " netns " + n) +
             sh("ip link set " + bIf_ + " netns " + b) +
             sh(fmt::format("ip -n {} addr add {}/24 dev {}", c, kClientAddr, cIf_)) +
             sh(fmt::format("ip -n {} addr add {}/24 dev {}", n, kNodeClientSide, n0_)) +
             sh(fmt::format("ip -n {} addr add {}/24 dev {}", n, kNodeBackendSide, n1_));
    for (auto* a : kBackends) rc += sh(fmt::format("ip -n {} addr add {}/24 dev {}", b, a, bIf_));
    rc += sh("ip -n " + c + " link set " + cIf_ + " up") + sh("ip -n " + n + " link set " + n0_ + " up") +
          sh("ip -n " + n + " link set " + n1_ + " up") + sh("ip -n " + b + " link set " + bIf_ + " up") +
          sh("ip -n " + c + " link set lo up") + sh("ip -n " + n + " link set lo up") +
          sh("ip -n " + b + " link set lo up") + sh("ip netns exec " + n + " sysctl -qw net.ipv4.ip_forward=1") +
          // Only the service address and the backend subnet go to the node.
          sh(fmt::format("ip -n {} route add {}/32 via {}", c, kTargetVip, kNodeClientSide)) +
          sh(fmt::format("ip -n {} route add 10.79.2.0/24 via {}", c, kNodeClientSide)) +
          sh(fmt::format("ip -n {} route add 10.79.1.0/24 via {}", b, kNodeBackendSide)) +
          // As telemetry-overhead: connect+close must not run out of ports.
          sh("ip netns exec " + c +
             " sysctl -qw net.ipv4.tcp_max_tw_buckets=256 net.ipv4.tcp_tw_reuse=1"
             " net.ipv4.ip_local_port_range='1024 65535'");
    if (rc != 0) throw std::runtime_error("topology setup failed");
    for (auto* a : kBackends) {
      servers_.push_back(testing::startNameServer(b, a, kPort, a));
      pin(cpu, servers_.back().pid());
    }
  }
  const std::string& client() const { return c_.name(); }
  const std::string& node() const { return n_.name(); }
  std::string tcInterfaces() const { return n0_ + "," + n1_; }

  static void pin(int cpu, pid_t pid) {
    if (cpu < 0) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (::sched_setaffinity(pid, sizeof(set), &set) != 0)
      throw std::runtime_error(fmt::format("sched_setaffinity(cpu {}): {}", cpu, std::strerror(errno)));
  }

 private:
  std::string p_;
  NetNs c_, n_, b_;
  std::string cIf_, n0_, n1_, bIf_;
  std::vector<Child> servers_;  // declared last: killed before the namespaces go
};

struct Sample {
  double rate = 0;
  long ops = 0, errors = 0;
  int firstErrno = 0;
};

Sample clientLoop(Workload w, const std::string& addr, double seconds) {
  auto r = testing::runRateClient(
      w == Workload::ConnectClose ? testing::RateWorkload::kConnectClose : testing::RateWorkload::kKeepAlive, addr,
      kPort, kWarmupSeconds, seconds, &gInterrupted, kMaxErrors);
  return Sample{r.rate, r.ops, r.errors, r.firstErrno};
}

Sample measure(const Topology& t, Workload w, const std::string& addr, double seconds, int cpu) {
  int status = 0;
  std::string out = testing::runIn(
      "", t.client(),
      [&](int fd) {
        try {
          Topology::pin(cpu, 0);
          Sample s = clientLoop(w, addr, seconds);
          std::string j = json{{"rate", s.rate}, {"ops", s.ops}, {"errors", s.errors}, {"errno", s.firstErrno}}.dump();
          return ::write(fd, j.data(), j.size()) == static_cast<ssize_t>(j.size()) ? 0 : 2;
        } catch (...) {
          return 3;
        }
      },
      &status);
  checkInterrupted();
  if (status != 0) throw std::runtime_error(fmt::format("client exited with status {}", status));
  json j = json::parse(out);
  Sample s{j["rate"].get<double>(), j["ops"].get<long>(), j["errors"].get<long>(), j["errno"].get<int>()};
  if (s.ops == 0)
    throw std::runtime_error(fmt::format("{} to {}: no successful operation (first error: {})", label(w), addr,
                                         std::strerror(s.firstErrno)));
  return s;
}

// Runs argv inside network namespace `ns` (nsenter: no /sys remount, unlike
// `ip netns exec`) with `input` on stdin; returns the wall time in seconds.
double timedIn(const std::string& ns, const std::string& cmd, const std::string& file) {
  auto t0 = Clock::now();
  int rc = testing::sh("nsenter --net=/var/run/netns/" + ns + " " + cmd + " < " + file);
  double s = std::chrono::duration<double>(Clock::now() - t0).count();
  if (rc != 0) throw std::runtime_error(fmt::format("`{}` < {} in {} failed ({})", cmd, file, ns, rc));
  return s;
}

json agentStatus(const AgentProcess& a) {
  auto r = callAgent(a.apiSocket(), {{"method", "status"}}, 3000ms);
  if (!r) throw std::runtime_error("agent status: " + r.error().message());
  return *r;
}

// aimesh_agent_last_reconcile_duration_seconds from /metrics, fetched from
// inside the node namespace (the agent listens on 127.0.0.1 there).
double lastReconcileSeconds(const AgentProcess& a, const std::string& ns) {
  std::string addr = agentStatus(a).value("metrics_addr", "");
  int st = 0;
  std::string out = testing::runIn("", ns, [&](int fd) {
    auto colon = addr.rfind(':');
    httplib::Client cli(addr.substr(0, colon), std::stoi(addr.substr(colon + 1)));
    cli.set_read_timeout(3, 0);
    auto res = cli.Get("/metrics");
    if (!res || res->status != 200) return 1;
    std::istringstream in(res->body);
    std::string line;
    while (std::getline(in, line))
      if (line.rfind("aimesh_agent_last_reconcile_duration_seconds ", 0) == 0) {
        std::string v = line.substr(line.find(' ') + 1);
        (void)!::write(fd, v.data(), v.size());
        return 0;
      }
    return 2;
  }, &st);
  return st == 0 ? std::stod(out) : -1;
}

// Waits until the agent reports `want` service ports applied; wall seconds.
double waitApplied(const AgentProcess& a, size_t want, Clock::time_point since) {
  auto deadline = since + 60s;
  while (Clock::now() < deadline) {
    checkInterrupted();
    json st = agentStatus(a);
    if (st.value("services", size_t(0)) == want) return std::chrono::duration<double>(Clock::now() - since).count();
    std::this_thread::sleep_for(2ms);
  }
  throw std::runtime_error(fmt::format("agent did not report {} services within 60 s", want));
}

struct Install {
  std::vector<double> seconds;          // wall: command start (or file write) to applied
  std::vector<double> reconcileSeconds;  // aimesh only: the agent's own reconcile time
};

// A mode's node: topology plus whatever balances in it.
struct Node {
  Mode mode;
  std::unique_ptr<Topology> topo;
  std::unique_ptr<AgentProcess> agent;
  std::string stateFile;
};

// Installs n services in a mode `rounds` times (removing them in between,
// untimed), leaving them installed.
Install install(Node& nd, int n, int rounds, const std::string& dir) {
  Install ins;
  std::string ns = nd.topo->node();
  for (int r = 0; r < rounds; ++r) {
    checkInterrupted();
    switch (nd.mode) {
      case Mode::Direct:
        return ins;
      case Mode::Iptables: {
        testing::writeFile(dir + "/empty.rules", iptablesRules(0));
        testing::writeFile(dir + "/ipt.rules", iptablesRules(n));
        timedIn(ns, "iptables-restore", dir + "/empty.rules");
        ins.seconds.push_back(timedIn(ns, "iptables-restore", dir + "/ipt.rules"));
        break;
      }
      case Mode::Nftables: {
        testing::writeFile(dir + "/empty.nft", nftRules(0));
        testing::writeFile(dir + "/nft.rules", nftRules(n));
        timedIn(ns, "nft -f -", dir + "/empty.nft");
        ins.seconds.push_back(timedIn(ns, "nft -f -", dir + "/nft.rules"));
        break;
      }
      case Mode::Aimesh: {
        testing::writeFile(nd.stateFile, stateFile(0));
        waitApplied(*nd.agent, 0, Clock::now());
        std::string text = stateFile(n);
        auto t0 = Clock::now();
        testing::writeFile(nd.stateFile, text);
        ins.seconds.push_back(waitApplied(*nd.agent, size_t(n), t0));
        ins.reconcileSeconds.push_back(lastReconcileSeconds(*nd.agent, ns));
        break;
      }
    }
  }
  return ins;
}

json runE2e(int rounds, double seconds, int cpu, const std::vector<int>& counts) {
  std::string agentBin = std::string(AIMESH_BINARY_DIR) + "/aimesh-agent";
  if (::access(agentBin.c_str(), X_OK) != 0)
    throw std::runtime_error(agentBin + " not found: build the aimesh-agent target first");
  for (const char* tool : {"iptables-restore", "nft", "nsenter"})
    if (testing::sh(fmt::format("command -v {} >/dev/null", tool)) != 0)
      throw std::runtime_error(fmt::format("{} not found (scripts/install-deps.sh installs it)", tool));

  testing::ScratchDir scratch;  // removed on every way out
  const std::string& dir = scratch.path();
  TestCgroup cgroup;  // the agent's socket hooks go here; no client is in it

  std::vector<Node> nodes;
  for (Mode m : kModes) {
    Node nd{m, std::make_unique<Topology>(cpu), nullptr, dir + "/state-" + key(m) + ".yaml"};
    if (m == Mode::Aimesh) {
      testing::writeFile(nd.stateFile, stateFile(0));
      ::mkdir((dir + "/agent").c_str(), 0700);
      // Maps sized for the largest count (each service has two endpoints),
      // rounded up to a multiple of 1024, never below the defaults.
      int most = *std::max_element(counts.begin(), counts.end());
      auto roundUp = [](long v, long floor) { return std::to_string(std::max(floor, (v + 1024) / 1024 * 1024)); };
      nd.agent = std::make_unique<AgentProcess>(
          cgroup.path(), nd.stateFile, dir + "/agent",
          std::vector<std::string>{"--tc-interfaces", nd.topo->tcInterfaces(), "--max-services",
                                   roundUp(most, AIMESH_MAX_SERVICES), "--max-backends",
                                   roundUp(2L * most, AIMESH_MAX_BACKENDS)});
      nd.agent->setNetns(nd.topo->node());
      nd.agent->start();
    }
    nodes.push_back(std::move(nd));
  }

  json out{{"rounds", rounds}, {"seconds", seconds}, {"cpu", cpu}};
  for (int n : counts) {
    checkInterrupted();
    std::map<Mode, Install> installs;
    for (auto& nd : nodes) {
      installs[nd.mode] = install(nd, n, rounds, dir);
    }
    std::map<Workload, std::map<Mode, std::vector<double>>> rates;
    std::map<Workload, std::map<Mode, long>> errors;
    for (int r = 0; r < rounds; ++r) {
      std::string line = fmt::format("{} services, round {}/{}:", n, r + 1, rounds);
      std::array<Mode, 4> order = kModes;
      std::rotate(order.begin(), order.begin() + r % 4, order.end());
      for (Mode m : order) {
        auto& nd = nodes[static_cast<size_t>(m)];
        const char* addr = m == Mode::Direct ? kBackends[0] : kTargetVip;
        for (Workload w : kWorkloads) {
          Sample s = measure(*nd.topo, w, addr, seconds, cpu);
          rates[w][m].push_back(s.rate);
          errors[w][m] += s.errors;
          line += fmt::format(" {}/{} {:.0f}/s", key(m), w == Workload::ConnectClose ? "cc" : "ka", s.rate);
          if (s.errors) line += fmt::format(" ({} errors: {})", s.errors, std::strerror(s.firstErrno));
        }
      }
      fmt::print(stderr, "{}\n", line);
    }

    fmt::print("\nPart 2: {} service(s) installed, traffic to one; median of {} rounds of {:g} s (min-max)\n", n,
               rounds, seconds);
    fmt::print("{:<24} | {:>22} {:>8} | {:>22} {:>8} | {:>18}\n", "mode", "connect+close /s", "x direct",
               "keep-alive req /s", "x direct", "install N (ms)");
    json jn;
    for (Mode m : kModes) {
      std::string row = fmt::format("{:<24}", label(m));
      json jm;
      for (Workload w : kWorkloads) {
        auto& v = rates[w][m];
        double med = median(v), base = median(rates[w][Mode::Direct]);
        row += fmt::format(" | {:>22} {:>8.3f}", fmt::format("{:.0f} ({:.0f}-{:.0f})", med, minOf(v), maxOf(v)),
                           med / base);
        jm[key(w)] = {{"median", med}, {"runs", v}, {"over_direct", med / base}, {"errors", errors[w][m]}};
      }
      auto& ins = installs[m];
      if (ins.seconds.empty()) {
        row += fmt::format(" | {:>18}", "-");
      } else {
        std::string cell = fmt::format("{:.1f}", median(ins.seconds) * 1e3);
        if (!ins.reconcileSeconds.empty()) cell += fmt::format(" (rec {:.1f})", median(ins.reconcileSeconds) * 1e3);
        row += fmt::format(" | {:>18}", cell);
        jm["install_seconds"] = ins.seconds;
        if (!ins.reconcileSeconds.empty()) jm["reconcile_seconds"] = ins.reconcileSeconds;
      }
      fmt::print("{}\n", row);
      jn[key(m)] = jm;
    }
    std::fflush(stdout);
    out["services"][std::to_string(n)] = jn;
  }
  fmt::print("install: iptables-restore / nft -f (process start included) replacing an empty table; aimesh: state\n"
             "file written -> status API reports N services, (rec) = aimesh_agent_last_reconcile_duration_seconds.\n");
  return out;
}

json run(const std::string& part, int reps, int repeat, int flows, int rounds, double seconds, int cpu,
         const std::vector<int>& counts) {
  json facts = testing::machineFacts();
  fmt::print("tc-compare\nmachine: nproc {}, kernel {} ({}), {}\n", facts["nproc"].get<long>(),
             facts["kernel"].get<std::string>(), facts["machine"].get<std::string>(), facts["cpu"].get<std::string>());
  fmt::print("date: {}; loadavg at start: {}\n", facts["date"].get<std::string>(),
             facts["loadavg_at_start"].get<std::string>());
  std::fflush(stdout);
  json out{{"machine", facts}};
  if (part == "all" || part == "micro") out["micro"] = runMicro(reps, repeat, flows);
  std::fflush(stdout);
  if (part == "all" || part == "e2e") out["e2e"] = runE2e(rounds, seconds, cpu, counts);
  return out;
}

}  // namespace
}  // namespace aimesh

int main(int argc, char** argv) {
  CLI::App app{"tc-compare: the TC data path per packet, and against kube-proxy's iptables and nftables modes"};
  std::string part = "all";
  int reps = 5, repeat = 1000000, flows = 1000000, rounds = 3;
  double seconds = 2;
  int cpu = 0;  // addCpuOption() sets the default
  std::vector<int> counts{1, 1000, 10000};
  bool wantJson = false;
  app.add_option("--part", part, "micro (BPF_PROG_TEST_RUN), e2e (namespaces), or all")
      ->capture_default_str()
      ->check(CLI::IsMember({"all", "micro", "e2e"}));
  app.add_option("--reps", reps, "part 1: repetitions (the median is reported)")->capture_default_str()->check(CLI::Range(1, 50));
  app.add_option("--repeat", repeat, "part 1: BPF_PROG_TEST_RUN repeat on one packet")
      ->capture_default_str()
      ->check(CLI::Range(2, 100000000));
  app.add_option("--flows", flows, "part 1: distinct flows (packets) for the repeat=1 column")
      ->capture_default_str()
      ->check(CLI::Range(1, 2000000));
  app.add_option("--rounds", rounds, "part 2: rounds per service count (the median is reported)")
      ->capture_default_str()
      ->check(CLI::Range(1, 20));
  app.add_option("--seconds", seconds, "part 2: length of one measured run")->capture_default_str()->check(CLI::Range(0.1, 60.0));
  aimesh::testing::addCpuOption(app, cpu, "part 2: pin client and echo servers to this CPU (-1: no pinning)");
  app.add_option("--services", counts, "part 2: service counts to install (e.g. 1,1000)")
      ->capture_default_str()
      ->delimiter(',')
      ->check(CLI::Range(1, 60000));
  app.add_flag("--json", wantJson, "also print the results as one JSON object after the tables");
  CLI11_PARSE(app, argc, argv);
  return aimesh::testing::runBenchMain(
      {.name = "tc-compare", .needsRootFor = "BPF, network namespaces", .removed = "everything removed"}, wantJson,
      [&] { return aimesh::run(part, reps, repeat, flows, rounds, seconds, cpu, counts); });
}
