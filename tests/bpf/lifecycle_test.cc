// bpf tier: the connection-lifecycle decision (bpf/lib/lifecycle.h) run in
// the kernel through the SEC("syscall") harness tests/bpf/lc_harness.bpf.c.
// The test writes a socket's aimesh_sock, what the iterator would read from
// the kernel socket (peer, TCP state, unacked and unread bytes), the clock,
// and the maps (backends, load, rules, budgets); the harness returns the
// state it sees and the close reason it would act on. Real sockets and
// bpf_sock_destroy are the e2e tier's (tests/e2e/lifecycle_e2e_test.cc).
//
// Safety: each test loads its own copy of the harness with every map's pin
// path cleared and attaches nothing.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>

#include <arpa/inet.h>

#include <cstring>

#include "aimesh/abi.h"
#include "fixtures/libbpf_log.h"
#include "lc_harness.skel.h"

namespace aimesh {
namespace {

constexpr uint64_t kMs = 1'000'000;
constexpr uint64_t kSec = 1000 * kMs;
constexpr uint64_t kNow = 1000 * kSec;
constexpr uint8_t kNotOurs = 0xff;

class Lifecycle : public ::testing::Test {
 protected:
  void SetUp() override {
    skel_ = lc_harness__open();
    ASSERT_NE(skel_, nullptr) << libbpfLog_.text();
    bpf_map* m;
    bpf_object__for_each_map(m, skel_->obj) ASSERT_EQ(bpf_map__set_pin_path(m, nullptr), 0);
    ASSERT_EQ(lc_harness__load(skel_), 0) << libbpfLog_.text();
    ctl(AIMESH_LC_F_ACT | AIMESH_LC_F_PHASES);
    putBackend(7, 3, 2);
    // An established keep-alive connection to backend 7 of service 3, which
    // served 5 requests; the last response ended 2 s ago.
    ctx_.sock.service_id = 3;
    ctx_.sock.backend_id = 7;
    ctx_.sock.proto = AIMESH_PROTO_TCP;
    ctx_.sock.connect_ns = kNow - 60 * kSec;
    ctx_.sock.established_ns = kNow - 60 * kSec;
    ctx_.sock.requests = 5;
    ctx_.sock.phase = AIMESH_PH_IDLE;
    ctx_.sock.flags = AIMESH_SKF_ESTABLISHED | AIMESH_SKF_IDLE;
    ctx_.sock.idle_ns = kNow - 2 * kSec;
    ctx_.sock.cookie = 4242;
    addr(2, ctx_.sock.be_addr);
    ctx_.sock.be_port = htons(8000);
    addr(2, ctx_.daddr);
    ctx_.dport = htons(8000);
    ctx_.tcp_state = 1;
    ctx_.now_ns = kNow;
    base_ = ctx_;
  }
  void TearDown() override { lc_harness__destroy(skel_); }

  static void addr(uint8_t last, uint8_t out[16]) {
    std::memset(out, 0, 16);
    out[10] = out[11] = 0xff;
    out[12] = 10;
    out[13] = 77;
    out[15] = last;
  }
  void ctl(uint32_t flags, uint64_t guardNs = 5 * kMs, uint64_t newIdleNs = 5 * kSec, uint64_t drainNs = 300 * kSec) {
    aimesh_lc_ctl c{};
    c.flags = flags;
    c.idle_guard_ns = guardNs;
    c.new_idle_ns = newIdleNs;
    c.drain_timeout_ns = drainNs;
    uint32_t zero = 0;
    ASSERT_EQ(bpf_map__update_elem(skel_->maps.aimesh_lc_ctl, &zero, 4, &c, sizeof(c), BPF_ANY), 0);
  }
  void putBackend(uint32_t id, uint32_t svc, uint8_t last, uint8_t state = AIMESH_BE_ACTIVE, uint16_t weight = 1) {
    aimesh_backend b{};
    addr(last, b.addr);
    b.port = htons(8000);
    b.family = AIMESH_FAMILY_V4;
    b.state = state;
    b.service_id = svc;
    b.weight = weight;
    ASSERT_EQ(bpf_map__update_elem(skel_->maps.aimesh_backends, &id, 4, &b, sizeof(b), BPF_ANY), 0);
  }
  void rules(uint32_t svc, uint64_t maxAgeNs, uint32_t maxRequests, uint64_t drainNs = 300 * kSec) {
    aimesh_lc_svc r{};
    r.max_age_ns = maxAgeNs;
    r.max_requests = maxRequests;
    r.drain_timeout_ns = drainNs;
    r.flags = AIMESH_LCS_F_SET;
    ASSERT_EQ(bpf_map__update_elem(skel_->maps.aimesh_lc_svc, &svc, 4, &r, sizeof(r), BPF_ANY), 0);
  }
  void budget(uint32_t id, uint32_t n) {
    aimesh_lc_be b{};
    b.rebalance = n;
    ASSERT_EQ(bpf_map__update_elem(skel_->maps.aimesh_lc_be, &id, 4, &b, sizeof(b), BPF_ANY), 0);
  }
  uint32_t budgetLeft(uint32_t id) {
    aimesh_lc_be b{};
    EXPECT_EQ(bpf_map__lookup_elem(skel_->maps.aimesh_lc_be, &id, 4, &b, sizeof(b), 0), 0);
    return b.rebalance;
  }
  void ejectUntil(uint32_t id, uint64_t until) {
    aimesh_be_load l{};
    l.skip_until_ns = until;
    ASSERT_EQ(bpf_map__update_elem(skel_->maps.aimesh_be_load, &id, 4, &l, sizeof(l), BPF_ANY), 0);
  }
  // Runs the decision; ctx_ is updated (the harness writes state, closed,
  // gone, and the socket's doomed_ns).
  void run() {
    LIBBPF_OPTS(bpf_test_run_opts, opts, .ctx_in = &ctx_, .ctx_size_in = sizeof(ctx_));
    ASSERT_EQ(bpf_prog_test_run_opts(bpf_program__fd(skel_->progs.aimesh_lc_decide), &opts), 0);
    ASSERT_EQ(opts.retval, 0u);
  }

  testing::LibbpfLogCapture libbpfLog_;
  lc_harness* skel_ = nullptr;
  aimesh_lc_test_ctx ctx_{};
  aimesh_lc_test_ctx base_{};  // ctx_ as SetUp() made it
};

TEST_F(Lifecycle, IdleConnectionToAHealthyBackendIsLeftOpen) {
  run();
  EXPECT_EQ(ctx_.state, AIMESH_CS_IDLE);
  EXPECT_EQ(ctx_.gone, 0);
  EXPECT_EQ(ctx_.closed, AIMESH_CLOSE_NONE);
}

// What makes a connection busy, each on its own: a request in flight by the
// telemetry's phase, bytes written and not acked, bytes received and not
// read, a response that ended less than the guard ago.
TEST_F(Lifecycle, BusyIsAnythingInFlight) {
  putBackend(7, 3, 2, AIMESH_BE_DRAINING);  // would close it if it were idle
  struct Case {
    const char* what;
    void (*set)(aimesh_lc_test_ctx&);
  };
  const Case cases[] = {
      {"awaiting the first byte",
       [](aimesh_lc_test_ctx& c) {
         c.sock.phase = AIMESH_PH_AWAIT_FIRST;
         c.sock.flags = AIMESH_SKF_ESTABLISHED;
       }},
      {"streaming a framed response",
       [](aimesh_lc_test_ctx& c) {
         c.sock.phase = AIMESH_PH_STREAMING;
         c.sock.framing = AIMESH_FR_CHUNKED;
         c.sock.flags = AIMESH_SKF_ESTABLISHED;
       }},
      {"request bytes not acked", [](aimesh_lc_test_ctx& c) { c.unacked = 120; }},
      {"response bytes not read", [](aimesh_lc_test_ctx& c) { c.unread = 5; }},
      {"response ended 1 ms ago", [](aimesh_lc_test_ctx& c) { c.sock.idle_ns = c.now_ns - kMs; }},
  };
  for (const auto& c : cases) {
    ctx_ = base_;
    c.set(ctx_);
    run();
    EXPECT_EQ(ctx_.state, AIMESH_CS_BUSY) << c.what;
    EXPECT_EQ(ctx_.closed, AIMESH_CLOSE_NONE) << c.what;
  }
}

// Request ends aimesh cannot see are never idle: HTTP/2, an unframed
// response in flight, and every TCP connection when telemetry is off.
TEST_F(Lifecycle, UnknownIsNeverIdle) {
  putBackend(7, 3, 2, AIMESH_BE_DRAINING);
  ctx_.sock.flags |= AIMESH_SKF_H2;
  run();
  EXPECT_EQ(ctx_.state, AIMESH_CS_UNKNOWN);
  EXPECT_EQ(ctx_.closed, AIMESH_CLOSE_NONE);
  ctx_.sock.flags &= ~AIMESH_SKF_H2;
  ctx_.sock.phase = AIMESH_PH_STREAMING;
  ctx_.sock.framing = AIMESH_FR_NONE;
  run();
  EXPECT_EQ(ctx_.state, AIMESH_CS_UNKNOWN);
  EXPECT_EQ(ctx_.closed, AIMESH_CLOSE_NONE);
  ctx_.sock.phase = AIMESH_PH_IDLE;
  ctl(AIMESH_LC_F_ACT);  // no AIMESH_LC_F_PHASES
  run();
  EXPECT_EQ(ctx_.state, AIMESH_CS_UNKNOWN);
  EXPECT_EQ(ctx_.closed, AIMESH_CLOSE_NONE);
}

TEST_F(Lifecycle, DrainingWeightZeroAndEjectedCloseIdleConnections) {
  putBackend(7, 3, 2, AIMESH_BE_DRAINING);
  run();
  EXPECT_EQ(ctx_.closed, AIMESH_CLOSE_DRAINED);
  putBackend(7, 3, 2, AIMESH_BE_TERMINATING);
  run();
  EXPECT_EQ(ctx_.closed, AIMESH_CLOSE_DRAINED);
  putBackend(7, 3, 2, AIMESH_BE_ACTIVE, 0);
  run();
  EXPECT_EQ(ctx_.closed, AIMESH_CLOSE_DRAINED);
  putBackend(7, 3, 2);
  ejectUntil(7, kNow + kSec);
  run();
  EXPECT_EQ(ctx_.closed, AIMESH_CLOSE_EJECTED);
  ejectUntil(7, kNow - kSec);  // the back-off is over
  run();
  EXPECT_EQ(ctx_.closed, AIMESH_CLOSE_NONE);
}

// Removed: the id has no record, or it now names another address (ids are
// reused). Idle: at once. Busy: left until drain_timeout after the first pass
// that saw it gone, then closed anyway.
TEST_F(Lifecycle, RemovedBackendIdleAtOnceBusyAfterTheDrainTimeout) {
  putBackend(7, 3, 9);  // id 7 reused for 10.77.0.9
  run();
  EXPECT_EQ(ctx_.gone, 1);
  EXPECT_EQ(ctx_.closed, AIMESH_CLOSE_REMOVED);

  ASSERT_EQ(bpf_map__delete_elem(skel_->maps.aimesh_backends, &ctx_.sock.backend_id, 4, 0), 0);
  rules(3, 0, 0, 30 * kSec);
  ctx_.sock.phase = AIMESH_PH_STREAMING;
  ctx_.sock.framing = AIMESH_FR_CHUNKED;
  ctx_.sock.flags = AIMESH_SKF_ESTABLISHED;
  run();
  EXPECT_EQ(ctx_.gone, 1);
  EXPECT_EQ(ctx_.closed, AIMESH_CLOSE_NONE);
  EXPECT_EQ(ctx_.sock.doomed_ns, kNow) << "the first pass that saw it gone stamps it";
  ctx_.now_ns = kNow + 29 * kSec;
  run();
  EXPECT_EQ(ctx_.closed, AIMESH_CLOSE_NONE);
  ctx_.now_ns = kNow + 30 * kSec;
  run();
  EXPECT_EQ(ctx_.closed, AIMESH_CLOSE_REMOVED);
}

// A service with no rules entry uses the pass's default drain timeout.
TEST_F(Lifecycle, RemovedWithoutRulesUsesTheDefaultDrainTimeout) {
  ctl(AIMESH_LC_F_ACT | AIMESH_LC_F_PHASES, 5 * kMs, 5 * kSec, 10 * kSec);
  ASSERT_EQ(bpf_map__delete_elem(skel_->maps.aimesh_backends, &ctx_.sock.backend_id, 4, 0), 0);
  ctx_.unacked = 10;
  ctx_.sock.doomed_ns = kNow - 10 * kSec;
  run();
  EXPECT_EQ(ctx_.state, AIMESH_CS_BUSY);
  EXPECT_EQ(ctx_.closed, AIMESH_CLOSE_REMOVED);
}

TEST_F(Lifecycle, UdpToARemovedBackendIsClosedAndOnlyThen) {
  ctx_.sock.proto = AIMESH_PROTO_UDP;
  ctx_.tcp_state = 0;
  run();
  EXPECT_EQ(ctx_.state, AIMESH_CS_DATAGRAM);
  EXPECT_EQ(ctx_.closed, AIMESH_CLOSE_NONE);
  putBackend(7, 3, 2, AIMESH_BE_DRAINING);
  run();
  EXPECT_EQ(ctx_.closed, AIMESH_CLOSE_NONE) << "draining is for TCP keep-alive connections";
  ASSERT_EQ(bpf_map__delete_elem(skel_->maps.aimesh_backends, &ctx_.sock.backend_id, 4, 0), 0);
  run();
  EXPECT_EQ(ctx_.closed, AIMESH_CLOSE_REMOVED);
}

// A socket connected again elsewhere after the connect hook rewrote it keeps
// its storage but is not ours: not even reported.
TEST_F(Lifecycle, SocketNowConnectedElsewhereIsNotOurs) {
  ASSERT_EQ(bpf_map__delete_elem(skel_->maps.aimesh_backends, &ctx_.sock.backend_id, 4, 0), 0);
  addr(50, ctx_.daddr);
  run();
  EXPECT_EQ(ctx_.state, kNotOurs);
  EXPECT_EQ(ctx_.closed, AIMESH_CLOSE_NONE);
}

TEST_F(Lifecycle, MaxRequestsAndMaxAgeBetweenRequests) {
  rules(3, 0, 5);
  run();
  EXPECT_EQ(ctx_.closed, AIMESH_CLOSE_MAX_REQUESTS);
  rules(3, 0, 6);
  run();
  EXPECT_EQ(ctx_.closed, AIMESH_CLOSE_NONE);
  // 60 s old: a 60 s limit is reached whatever the jitter (-10..0 %), a 67 s
  // one is not, and a 66 s one is for some cookies only.
  rules(3, 60 * kSec, 0);
  run();
  EXPECT_EQ(ctx_.closed, AIMESH_CLOSE_MAX_AGE);
  rules(3, 67 * kSec, 0);
  run();
  EXPECT_EQ(ctx_.closed, AIMESH_CLOSE_NONE);
  int closed = 0;
  rules(3, 65 * kSec, 0);
  for (uint64_t cookie = 1; cookie <= 200; ++cookie) {
    ctx_.sock.cookie = cookie;
    run();
    closed += ctx_.closed == AIMESH_CLOSE_MAX_AGE;
  }
  EXPECT_GT(closed, 40) << "jitter spreads the closes";
  EXPECT_LT(closed, 160);
  // Busy: never, however old.
  rules(3, kSec, 1);
  ctx_.unread = 1;
  run();
  EXPECT_EQ(ctx_.closed, AIMESH_CLOSE_NONE);
}

TEST_F(Lifecycle, RebalanceBudgetCountsDownOnePerIdleConnection) {
  budget(7, 2);
  run();
  EXPECT_EQ(ctx_.closed, AIMESH_CLOSE_REBALANCED);
  run();
  EXPECT_EQ(ctx_.closed, AIMESH_CLOSE_REBALANCED);
  run();
  EXPECT_EQ(ctx_.closed, AIMESH_CLOSE_NONE);
  EXPECT_EQ(budgetLeft(7), 0u);
  budget(7, 1);
  ctx_.unacked = 1;  // busy: the budget is kept for an idle one
  run();
  EXPECT_EQ(ctx_.closed, AIMESH_CLOSE_NONE);
  EXPECT_EQ(budgetLeft(7), 1u);
}

// A connection that has not sent a request yet is about to (a client
// connects to send): left alone until it has been unused for new_idle.
TEST_F(Lifecycle, NewConnectionCountsAsIdleOnlyAfterAWhile) {
  putBackend(7, 3, 2, AIMESH_BE_DRAINING);
  ctx_.sock.requests = 0;
  ctx_.sock.flags = AIMESH_SKF_ESTABLISHED;
  ctx_.sock.established_ns = kNow - kSec;
  run();
  EXPECT_EQ(ctx_.state, AIMESH_CS_NEW);
  EXPECT_EQ(ctx_.closed, AIMESH_CLOSE_NONE);
  ctx_.sock.established_ns = kNow - 6 * kSec;
  run();
  EXPECT_EQ(ctx_.closed, AIMESH_CLOSE_DRAINED);
}

// Report only: the same states, nothing closed, budgets untouched.
TEST_F(Lifecycle, ReportOnlyPassClosesNothing) {
  ctl(AIMESH_LC_F_PHASES);
  budget(7, 3);
  putBackend(7, 3, 2, AIMESH_BE_DRAINING);
  run();
  EXPECT_EQ(ctx_.state, AIMESH_CS_IDLE);
  EXPECT_EQ(ctx_.closed, AIMESH_CLOSE_NONE);
  EXPECT_EQ(budgetLeft(7), 3u);
}

TEST_F(Lifecycle, PastEstablishedIsClosingAndOnlyARemovedBackendClosesIt) {
  ctx_.tcp_state = 8;  // CLOSE_WAIT
  putBackend(7, 3, 2, AIMESH_BE_DRAINING);
  run();
  EXPECT_EQ(ctx_.state, AIMESH_CS_CLOSING);
  EXPECT_EQ(ctx_.closed, AIMESH_CLOSE_NONE);
  ASSERT_EQ(bpf_map__delete_elem(skel_->maps.aimesh_backends, &ctx_.sock.backend_id, 4, 0), 0);
  run();
  EXPECT_EQ(ctx_.closed, AIMESH_CLOSE_REMOVED);
}

}  // namespace
}  // namespace aimesh
