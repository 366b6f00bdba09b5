// bpf tier: backend selection (bpf/lib/lb.h) run in the kernel through the
// SEC("syscall") harness tests/bpf/lb_harness.bpf.c and BPF_PROG_TEST_RUN.
// The test fills the maps, passes a struct aimesh_select_ctx with a chosen
// random number, and checks the pick, the error and the per-CPU reason
// counters. Because the random number is an input (and retries use the LCG in
// lb.h), every expectation here is exact.
//
// Safety: each test loads its own copy of the harness with every map's pin
// path cleared (nothing lands in /sys/fs/bpf) and attaches nothing.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>

#include "telemetry/histogram.h"
#include <map>
#include <random>
#include <string>
#include <vector>

#include "aimesh/abi.h"
#include "aimesh/hash.h"
#include "fixtures/libbpf_log.h"
#include "lb_harness.skel.h"

namespace aimesh {
namespace {

constexpr int kEconnrefused = -111;
constexpr uint32_t kGen1 = AIMESH_MAX_SLOTS_PER_SVC;  // slot number offset of generation 1
constexpr uint64_t kForever = ~0ULL;                  // skip_until_ns: in back-off "forever"

using Reasons = std::array<uint64_t, AIMESH_R_MAX>;

// Same constants as lb_next_rnd() in bpf/lib/lb.h.
uint32_t lcgNext(uint32_t rnd) { return rnd * 1664525u + 1013904223u; }

enum class Family { kV4, kV6 };

class Select : public ::testing::Test {
 protected:
  void SetUp() override {
    skel_ = lb_harness__open();
    ASSERT_NE(skel_, nullptr) << "lb_harness__open: errno " << errno << "\n" << libbpfLog_.text();
    bpf_map* m;
    bpf_object__for_each_map(m, skel_->obj) ASSERT_EQ(bpf_map__set_pin_path(m, nullptr), 0) << bpf_map__name(m);
    ASSERT_EQ(lb_harness__load(skel_), 0) << "lb_harness__load (verifier log):\n" << libbpfLog_.text();
  }
  void TearDown() override { lb_harness__destroy(skel_); }

  void putService(uint32_t id, uint32_t slotCount, uint8_t gen = 0, uint32_t backendCount = 1) {
    aimesh_service s{};
    s.slot_count = slotCount;
    s.backend_count = backendCount;
    s.algorithm = AIMESH_ALG_RANDOM;
    s.slot_gen = gen;
    ASSERT_EQ(bpf_map__update_elem(skel_->maps.aimesh_services, &id, sizeof(id), &s, sizeof(s), BPF_ANY), 0);
  }

  void putSlot(uint32_t svc, uint32_t slot, uint32_t backendId) {
    aimesh_slot_key k{};
    k.service_id = svc;
    k.slot = slot;
    aimesh_slot v{};
    v.backend_id = backendId;
    ASSERT_EQ(bpf_map__update_elem(skel_->maps.aimesh_slots, &k, sizeof(k), &v, sizeof(v), BPF_ANY), 0);
  }

  // Slots index 0..n-1 of generation `gen`.
  void putSlots(uint32_t svc, uint8_t gen, const std::vector<uint32_t>& backends) {
    for (uint32_t i = 0; i < backends.size(); ++i) putSlot(svc, gen * kGen1 + i, backends[i]);
  }

  void putBackend(uint32_t id, uint32_t svc, Family fam, uint8_t state = AIMESH_BE_ACTIVE, uint16_t weight = 1) {
    aimesh_backend b{};
    if (fam == Family::kV4) {
      b.addr[10] = 0xff;  // ::ffff:10.0.<id>
      b.addr[11] = 0xff;
      b.addr[12] = 10;
      b.addr[14] = static_cast<uint8_t>(id >> 8);
      b.addr[15] = static_cast<uint8_t>(id);
      b.family = AIMESH_FAMILY_V4;
    } else {
      b.addr[0] = 0xfd;  // fd00::<id>
      b.addr[14] = static_cast<uint8_t>(id >> 8);
      b.addr[15] = static_cast<uint8_t>(id);
      b.family = AIMESH_FAMILY_V6;
    }
    b.port = htons(8000);
    b.state = state;
    b.service_id = svc;
    b.weight = weight;
    ASSERT_EQ(bpf_map__update_elem(skel_->maps.aimesh_backends, &id, sizeof(id), &b, sizeof(b), BPF_ANY), 0);
  }

  // Runs the harness once. BPF_PROG_TEST_RUN for syscall programs copies the
  // context back into ctx_in (ctx_out is rejected with EINVAL).
  aimesh_select_ctx select(uint32_t svc, uint32_t rnd, bool v4Only = false) {
    aimesh_select_ctx ctx{};
    ctx.service_id = svc;
    ctx.rnd = rnd;
    ctx.family = v4Only ? AIMESH_FAMILY_V4 : 0;
    ctx.err = 12345;            // sentinel: the program must overwrite it
    ctx.backend_id = 0xdeadbeef;
    LIBBPF_OPTS(bpf_test_run_opts, opts, .ctx_in = &ctx, .ctx_size_in = sizeof(ctx));
    int rc = bpf_prog_test_run_opts(bpf_program__fd(skel_->progs.aimesh_select), &opts);
    EXPECT_EQ(rc, 0) << "BPF_PROG_TEST_RUN: " << std::strerror(-rc);
    EXPECT_EQ(opts.retval, 0u);
    EXPECT_NE(ctx.err, 12345) << "program did not write err";
    return ctx;
  }

  // aimesh_reasons summed over every possible CPU (per-CPU array of __u64).
  Reasons reasons() {
    Reasons out{};
    int ncpu = libbpf_num_possible_cpus();
    EXPECT_GT(ncpu, 0);
    if (ncpu <= 0) return out;
    std::vector<uint64_t> perCpu(static_cast<size_t>(ncpu));
    for (uint32_t r = 0; r < AIMESH_R_MAX; ++r) {
      int rc = bpf_map__lookup_elem(skel_->maps.aimesh_reasons, &r, sizeof(r), perCpu.data(),
                                    perCpu.size() * sizeof(uint64_t), 0);
      EXPECT_EQ(rc, 0) << "lookup reason " << r;
      for (uint64_t v : perCpu) out[r] += v;
    }
    return out;
  }

  static Reasons only(std::map<int, uint64_t> nonZero) {
    Reasons r{};
    for (auto [k, v] : nonZero) r[static_cast<size_t>(k)] = v;
    return r;
  }

  void setAlgorithm(uint32_t svc, uint8_t alg, uint32_t hashSize = 0, uint16_t balancePct = 0) {
    aimesh_service s{};
    ASSERT_EQ(bpf_map__lookup_elem(skel_->maps.aimesh_services, &svc, sizeof(svc), &s, sizeof(s), 0), 0);
    s.algorithm = alg;
    s.hash_size = hashSize;
    s.balance_pct = balancePct;
    ASSERT_EQ(bpf_map__update_elem(skel_->maps.aimesh_services, &svc, sizeof(svc), &s, sizeof(s), BPF_ANY), 0);
  }
  void setFlags(uint32_t svc, uint8_t flags) {
    aimesh_service s{};
    ASSERT_EQ(bpf_map__lookup_elem(skel_->maps.aimesh_services, &svc, sizeof(svc), &s, sizeof(s), 0), 0);
    s.flags = flags;
    ASSERT_EQ(bpf_map__update_elem(skel_->maps.aimesh_services, &svc, sizeof(svc), &s, sizeof(s), BPF_ANY), 0);
  }
  void putLoad(uint32_t id, int64_t active, uint64_t ewmaNs = 0, uint64_t skipUntilNs = 0, int32_t idle = 0) {
    aimesh_be_load l{};
    l.active = active;
    l.idle = idle;
    l.ewma_ttft_ns = ewmaNs;
    l.skip_until_ns = skipUntilNs;
    ASSERT_EQ(bpf_map__update_elem(skel_->maps.aimesh_be_load, &id, sizeof(id), &l, sizeof(l), BPF_ANY), 0);
  }
  void putServiceLoad(uint32_t svc, int64_t active) {
    aimesh_svc_load l{active};
    ASSERT_EQ(bpf_map__update_elem(skel_->maps.aimesh_svc_load, &svc, sizeof(svc), &l, sizeof(l), BPF_ANY), 0);
  }
  // A hash table swapped in the way the agent does it: a new inner array.
  void putTable(uint32_t svc, const std::vector<uint32_t>& table) {
    LIBBPF_OPTS(bpf_map_create_opts, o, .map_flags = BPF_F_INNER_MAP);
    int fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "t", 4, 4, static_cast<uint32_t>(table.size()), &o);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    for (uint32_t i = 0; i < table.size(); ++i) ASSERT_EQ(bpf_map_update_elem(fd, &i, &table[i], BPF_ANY), 0);
    ASSERT_EQ(bpf_map__update_elem(skel_->maps.aimesh_hash_tables, &svc, sizeof(svc), &fd, sizeof(fd), BPF_ANY), 0);
    ::close(fd);
  }
  aimesh_select_ctx selectKey(uint32_t svc, uint64_t key, uint32_t rnd = 1) {
    aimesh_select_ctx ctx{};
    ctx.service_id = svc;
    ctx.rnd = rnd;
    ctx.hash_key = key;
    ctx.err = 12345;
    LIBBPF_OPTS(bpf_test_run_opts, opts, .ctx_in = &ctx, .ctx_size_in = sizeof(ctx));
    EXPECT_EQ(bpf_prog_test_run_opts(bpf_program__fd(skel_->progs.aimesh_select), &opts), 0);
    return ctx;
  }
  std::map<uint32_t, int> spread(uint32_t svc, uint32_t n) {
    std::map<uint32_t, int> hits;
    for (uint32_t rnd = 0; rnd < n; ++rnd) {
      auto ctx = select(svc, rnd * 2654435761u);
      EXPECT_EQ(ctx.err, 0);
      hits[ctx.backend_id]++;
    }
    return hits;
  }
  // Two backends (ids 1, 2) behind service 9, weights w1/w2, slots 1:1.
  void twoBackends(uint8_t alg, uint16_t w1 = 1, uint16_t w2 = 1) {
    putBackend(1, 9, Family::kV4, AIMESH_BE_ACTIVE, w1);
    putBackend(2, 9, Family::kV4, AIMESH_BE_ACTIVE, w2);
    putSlots(9, 0, {1, 2});
    putService(9, 2, 0, 2);
    setAlgorithm(9, alg);
  }

  // Service `id` as a split over `targets` (service id, weight), in order.
  void putSplit(uint32_t id, const std::vector<std::pair<uint32_t, uint32_t>>& targets) {
    aimesh_service s{};
    s.flags = AIMESH_SVC_F_SPLIT;
    ASSERT_EQ(bpf_map__update_elem(skel_->maps.aimesh_services, &id, sizeof(id), &s, sizeof(s), BPF_ANY), 0);
    aimesh_split sp{};
    sp.count = static_cast<uint32_t>(targets.size());
    for (size_t i = 0; i < targets.size(); ++i) sp.targets[i] = {targets[i].first, targets[i].second};
    ASSERT_EQ(bpf_map__update_elem(skel_->maps.aimesh_splits, &id, sizeof(id), &sp, sizeof(sp), BPF_ANY), 0);
  }
  // Service `svc` with one backend `be` per slot, random.
  void plainService(uint32_t svc, const std::vector<uint32_t>& backends) {
    for (uint32_t be : backends) putBackend(be, svc, Family::kV4);
    putSlots(svc, 0, backends);
    putService(svc, static_cast<uint32_t>(backends.size()), 0, static_cast<uint32_t>(backends.size()));
  }

  // least_conn and latency (2 slots: the scan path): the scan finds nothing
  // out of back-off (2 skips), nor does the random draw after it (4 skips), so
  // the call is refused. Out of back-off, backend 2 is the only choice even
  // when it is the busier one.
  void expectFailCloseScan(uint8_t alg) {
    twoBackends(alg);
    setFlags(9, AIMESH_SVC_F_FAIL_CLOSE);
    putLoad(1, 0, 0, kForever);
    putLoad(2, 7, 0, kForever);
    auto ctx = select(9, 5);
    EXPECT_EQ(ctx.err, kEconnrefused);
    EXPECT_EQ(reasons(),
              only({{AIMESH_R_EJECTED_SKIPPED, 6}, {AIMESH_R_EJECTED_REFUSED, 1}, {AIMESH_R_NO_BACKEND, 1}}));
    putLoad(2, 7);
    for (uint32_t rnd = 0; rnd < 8; ++rnd) {
      ctx = select(9, rnd);
      EXPECT_EQ(ctx.err, 0) << rnd;
      EXPECT_EQ(ctx.backend_id, 2u) << rnd;
    }
    EXPECT_EQ(reasons()[AIMESH_R_EJECTED_REFUSED], 1u);
    EXPECT_EQ(reasons()[AIMESH_R_EJECTED_FALLBACK], 0u);
  }

  testing::LibbpfLogCapture libbpfLog_;  // what libbpf said, shown if open or load fails
  lb_harness* skel_ = nullptr;
};

// Weights 1:2:1 expanded to 4 slots: the pick is slots[rnd % 4], so over
// rnd = 0..N-1 the backends are hit exactly 1:2:1.
TEST_F(Select, WeightedSlotsFollowRndModuloSlotCount) {
  constexpr uint32_t kSvc = 7;
  const std::vector<uint32_t> slots = {1, 2, 2, 3};
  putBackend(1, kSvc, Family::kV4, AIMESH_BE_ACTIVE, 1);
  putBackend(2, kSvc, Family::kV4, AIMESH_BE_ACTIVE, 2);
  putBackend(3, kSvc, Family::kV4, AIMESH_BE_ACTIVE, 1);
  putSlots(kSvc, 0, slots);
  putService(kSvc, 4, 0, 3);

  std::map<uint32_t, int> hits;
  constexpr uint32_t kN = 1024;
  for (uint32_t rnd = 0; rnd < kN; ++rnd) {
    auto ctx = select(kSvc, rnd);
    ASSERT_EQ(ctx.err, 0) << "rnd " << rnd;
    ASSERT_EQ(ctx.backend_id, slots[rnd % 4]) << "rnd " << rnd;
    hits[ctx.backend_id]++;
  }
  for (uint32_t rnd : {0xfffffffcu, 0xfffffffdu, 0xfffffffeu, 0xffffffffu, 0x80000001u}) {
    auto ctx = select(kSvc, rnd);
    EXPECT_EQ(ctx.err, 0);
    EXPECT_EQ(ctx.backend_id, slots[rnd % 4]) << "rnd " << rnd;
  }
  EXPECT_EQ(hits[1], 256);
  EXPECT_EQ(hits[2], 512);
  EXPECT_EQ(hits[3], 256);
  EXPECT_EQ(reasons(), Reasons{}) << "no skip or refusal expected";
}

// Only the live generation's half of the slot space is read: the other one
// may hold a half-written next slot set.
TEST_F(Select, UsesLiveSlotGeneration) {
  constexpr uint32_t kSvc = 3;
  putBackend(10, kSvc, Family::kV4);
  putBackend(20, kSvc, Family::kV4);
  putBackend(21, kSvc, Family::kV4);
  putSlots(kSvc, 0, {10, 10});
  const std::vector<uint32_t> gen1 = {20, 21, 20};
  putSlots(kSvc, 1, gen1);

  putService(kSvc, 3, 1, 2);
  for (uint32_t rnd = 0; rnd < 300; ++rnd) {
    auto ctx = select(kSvc, rnd);
    ASSERT_EQ(ctx.err, 0);
    ASSERT_EQ(ctx.backend_id, gen1[rnd % 3]) << "rnd " << rnd << ": generation 0 slot used";
  }
  // Flip back: one service update switches every pick to generation 0.
  putService(kSvc, 2, 0, 1);
  for (uint32_t rnd = 0; rnd < 300; ++rnd) {
    auto ctx = select(kSvc, rnd);
    ASSERT_EQ(ctx.err, 0);
    ASSERT_EQ(ctx.backend_id, 10u) << "rnd " << rnd;
  }
  EXPECT_EQ(reasons(), Reasons{});
}

// A live generation with a missing slot does not fall back to the other one.
TEST_F(Select, LiveGenerationSlotMissingDoesNotFallBack) {
  constexpr uint32_t kSvc = 3;
  putBackend(10, kSvc, Family::kV4);
  putSlots(kSvc, 0, {10});
  putService(kSvc, 1, 1);
  auto ctx = select(kSvc, 0);
  EXPECT_EQ(ctx.err, kEconnrefused);
  EXPECT_EQ(reasons(), only({{AIMESH_R_SLOT_MISSING, AIMESH_SELECT_TRIES}, {AIMESH_R_NO_BACKEND, 1}}));
}

TEST_F(Select, DrainingBackendSkippedWithNextRnd) {
  constexpr uint32_t kSvc = 1;
  putBackend(1, kSvc, Family::kV4, AIMESH_BE_DRAINING);
  putBackend(2, kSvc, Family::kV4);
  putSlots(kSvc, 0, {1, 2});
  putService(kSvc, 2);

  // rnd 0 -> slot 0 (draining) -> lcgNext(0) = 1013904223, odd -> slot 1.
  ASSERT_EQ(lcgNext(0) % 2, 1u);
  auto ctx = select(kSvc, 0);
  EXPECT_EQ(ctx.err, 0);
  EXPECT_EQ(ctx.backend_id, 2u);
  EXPECT_EQ(reasons(), only({{AIMESH_R_BACKEND_INACTIVE, 1}}));

  // rnd 1 -> slot 1 directly, nothing skipped.
  ctx = select(kSvc, 1);
  EXPECT_EQ(ctx.err, 0);
  EXPECT_EQ(ctx.backend_id, 2u);
  EXPECT_EQ(reasons(), only({{AIMESH_R_BACKEND_INACTIVE, 1}}));
}

// Terminating and zero-weight backends are skipped like draining ones.
TEST_F(Select, TerminatingAndZeroWeightSkipped) {
  constexpr uint32_t kSvc = 2;
  putBackend(1, kSvc, Family::kV4, AIMESH_BE_TERMINATING);
  putBackend(2, kSvc, Family::kV4, AIMESH_BE_ACTIVE, 0);
  putBackend(3, kSvc, Family::kV4);
  putSlots(kSvc, 0, {1, 2, 3, 3});
  putService(kSvc, 4);
  uint64_t skipped = 0;
  for (uint32_t rnd = 0; rnd < 64; ++rnd) {
    auto ctx = select(kSvc, rnd);
    ASSERT_EQ(ctx.err, 0) << "rnd " << rnd;
    ASSERT_EQ(ctx.backend_id, 3u) << "rnd " << rnd;
    // Power-of-two slot count: the LCG's low bits visit all 4 slots in 4 tries.
    for (uint32_t r = rnd; r % 4 < 2; r = lcgNext(r)) ++skipped;
  }
  EXPECT_EQ(reasons(), only({{AIMESH_R_BACKEND_INACTIVE, skipped}}));
}

TEST_F(Select, AllDrainingRefused) {
  constexpr uint32_t kSvc = 4;
  putBackend(1, kSvc, Family::kV4, AIMESH_BE_DRAINING);
  putBackend(2, kSvc, Family::kV4, AIMESH_BE_DRAINING);
  putSlots(kSvc, 0, {1, 2, 1});
  putService(kSvc, 3, 0, 0);
  auto ctx = select(kSvc, 42);
  EXPECT_EQ(ctx.err, kEconnrefused);
  EXPECT_EQ(reasons(), only({{AIMESH_R_BACKEND_INACTIVE, AIMESH_SELECT_TRIES}, {AIMESH_R_NO_BACKEND, 1}}));
}

TEST_F(Select, ZeroSlotCountRefused) {
  constexpr uint32_t kSvc = 5;
  putBackend(1, kSvc, Family::kV4);
  putSlots(kSvc, 0, {1});  // present, but slot_count says no slot is live
  putService(kSvc, 0, 0, 0);
  auto ctx = select(kSvc, 0);
  EXPECT_EQ(ctx.err, kEconnrefused);
  EXPECT_EQ(reasons(), only({{AIMESH_R_NO_BACKEND, 1}}));
}

TEST_F(Select, SlotCountAboveLimitRefused) {
  constexpr uint32_t kSvc = 5;
  putBackend(1, kSvc, Family::kV4);
  putSlots(kSvc, 0, {1});
  putService(kSvc, AIMESH_MAX_SLOTS_PER_SVC + 1);
  auto ctx = select(kSvc, 0);
  EXPECT_EQ(ctx.err, kEconnrefused);
  EXPECT_EQ(reasons(), only({{AIMESH_R_NO_BACKEND, 1}}));
}

TEST_F(Select, UnknownServiceRefused) {
  putBackend(1, 1, Family::kV4);
  putSlots(1, 0, {1});
  putService(1, 1);
  auto ctx = select(99, 0);
  EXPECT_EQ(ctx.err, kEconnrefused);
  EXPECT_EQ(reasons(), only({{AIMESH_R_SERVICE_MISSING, 1}}));
}

TEST_F(Select, V4OnlyWithIpv6OnlyBackendRefused) {
  constexpr uint32_t kSvc = 6;
  putBackend(1, kSvc, Family::kV6);
  putSlots(kSvc, 0, {1});
  putService(kSvc, 1);
  auto ctx = select(kSvc, 0, /*v4Only=*/true);
  EXPECT_EQ(ctx.err, kEconnrefused);
  EXPECT_EQ(reasons(), only({{AIMESH_R_FAMILY_MISMATCH, AIMESH_SELECT_TRIES}, {AIMESH_R_NO_BACKEND, 1}}));

  // An IPv6 socket may use it.
  ctx = select(kSvc, 0, /*v4Only=*/false);
  EXPECT_EQ(ctx.err, 0);
  EXPECT_EQ(ctx.backend_id, 1u);
}

TEST_F(Select, V4OnlyWithMixedBackendsPicksIpv4) {
  constexpr uint32_t kSvc = 8;
  putBackend(1, kSvc, Family::kV6);
  putBackend(2, kSvc, Family::kV4);
  putSlots(kSvc, 0, {1, 2});
  putService(kSvc, 2, 0, 2);
  constexpr uint32_t kN = 1000;
  for (uint32_t rnd = 0; rnd < kN; ++rnd) {
    auto ctx = select(kSvc, rnd * 2654435761u, /*v4Only=*/true);
    ASSERT_EQ(ctx.err, 0) << "rnd " << rnd * 2654435761u;
    ASSERT_EQ(ctx.backend_id, 2u) << "rnd " << rnd * 2654435761u;
  }
  // Every even rnd lands on the IPv6 slot first (2654435761 is odd, so half
  // of the inputs are even).
  EXPECT_EQ(reasons(), only({{AIMESH_R_FAMILY_MISMATCH, kN / 2}}));
  // Without v4_only both are used.
  EXPECT_EQ(select(kSvc, 0).backend_id, 1u);
  EXPECT_EQ(select(kSvc, 1).backend_id, 2u);
}

TEST_F(Select, MissingSlotCountedAndRetried) {
  constexpr uint32_t kSvc = 9;
  putBackend(5, kSvc, Family::kV4);
  putSlot(kSvc, 1, 5);  // slot 0 missing (update in flight)
  putService(kSvc, 2);
  auto ctx = select(kSvc, 0);  // slot 0, then lcgNext(0) is odd -> slot 1
  EXPECT_EQ(ctx.err, 0);
  EXPECT_EQ(ctx.backend_id, 5u);
  EXPECT_EQ(reasons(), only({{AIMESH_R_SLOT_MISSING, 1}}));
}

TEST_F(Select, MissingBackendCountedAndRetried) {
  constexpr uint32_t kSvc = 9;
  putBackend(5, kSvc, Family::kV4);
  putSlots(kSvc, 0, {77, 5});  // backend 77 has no record
  putService(kSvc, 2);
  auto ctx = select(kSvc, 0);
  EXPECT_EQ(ctx.err, 0);
  EXPECT_EQ(ctx.backend_id, 5u);
  EXPECT_EQ(reasons(), only({{AIMESH_R_BACKEND_MISSING, 1}}));
}

// The kernel agrees with a C++ model of lb_select on a messy service (odd
// slot count, missing slots and backends, drained and IPv6 backends) for many
// random numbers, both socket families, including the reason totals.
TEST_F(Select, MatchesModelOnMixedService) {
  constexpr uint32_t kSvc = 11;
  struct Be {
    bool present;
    bool usable;
    bool v4;
  };
  const std::map<uint32_t, Be> backends = {
      {1, {true, true, true}},    {2, {true, true, false}}, {3, {true, false, true}},
      {4, {false, false, false}}, {5, {true, true, true}},
  };
  putBackend(1, kSvc, Family::kV4);
  putBackend(2, kSvc, Family::kV6);
  putBackend(3, kSvc, Family::kV4, AIMESH_BE_DRAINING);
  putBackend(5, kSvc, Family::kV4);
  // slot index -> backend id; 0 = slot entry missing
  const std::vector<uint32_t> slots = {3, 2, 0, 4, 2, 1, 3, 2, 3, 3, 5};
  for (uint32_t i = 0; i < slots.size(); ++i)
    if (slots[i] != 0) putSlot(kSvc, kGen1 + i, slots[i]);
  putService(kSvc, static_cast<uint32_t>(slots.size()), 1, 3);

  Reasons want{};
  std::mt19937 gen(20240601);
  for (int iter = 0; iter < 2000; ++iter) {
    const uint32_t rnd0 = gen();
    const bool v4Only = iter % 2 == 0;
    // Model of lb_select.
    int wantErr = kEconnrefused;
    uint32_t wantBe = 0;
    uint32_t rnd = rnd0;
    for (int t = 0; t < AIMESH_SELECT_TRIES; ++t) {
      uint32_t id = slots[rnd % slots.size()];
      rnd = lcgNext(rnd);
      if (id == 0) {
        want[AIMESH_R_SLOT_MISSING]++;
        continue;
      }
      const Be& b = backends.at(id);
      if (!b.present) {
        want[AIMESH_R_BACKEND_MISSING]++;
        continue;
      }
      if (!b.usable) {
        want[AIMESH_R_BACKEND_INACTIVE]++;
        continue;
      }
      if (v4Only && !b.v4) {
        want[AIMESH_R_FAMILY_MISMATCH]++;
        continue;
      }
      wantErr = 0;
      wantBe = id;
      break;
    }
    if (wantErr != 0) want[AIMESH_R_NO_BACKEND]++;

    auto ctx = select(kSvc, rnd0, v4Only);
    ASSERT_EQ(ctx.err, wantErr) << "rnd " << rnd0 << " v4_only " << v4Only;
    ASSERT_EQ(ctx.backend_id, wantBe) << "rnd " << rnd0 << " v4_only " << v4Only;
  }
  EXPECT_EQ(reasons(), want);
  // The service is messy enough that every skip reason and refusals happen.
  for (int r : {AIMESH_R_NO_BACKEND, AIMESH_R_SLOT_MISSING, AIMESH_R_BACKEND_MISSING, AIMESH_R_BACKEND_INACTIVE,
                AIMESH_R_FAMILY_MISMATCH})
    EXPECT_GT(want[static_cast<size_t>(r)], 0u) << "reason " << r << " never exercised";
}

// Counter reads use the per-CPU layout: one 8-byte value per possible CPU.
TEST_F(Select, ReasonsMapIsPerCpuU64) {
  EXPECT_EQ(bpf_map__type(skel_->maps.aimesh_reasons), BPF_MAP_TYPE_PERCPU_ARRAY);
  EXPECT_EQ(bpf_map__value_size(skel_->maps.aimesh_reasons), sizeof(uint64_t));
  EXPECT_EQ(bpf_map__max_entries(skel_->maps.aimesh_reasons), static_cast<uint32_t>(AIMESH_R_MAX));
}

}  // namespace
}  // namespace aimesh

namespace aimesh {
namespace {

// The kernel's hist_bucket() and the agent's histBucket() are two copies of
// one layout (abi.h); they must agree on every bucket edge and in between.
TEST_F(Select, KernelHistogramBucketsMatchTheAgentReader) {
  auto kernelBucket = [&](uint64_t ns) {
    aimesh_hist_ctx ctx{};
    ctx.ns = ns;
    ctx.bucket = 0xffffffff;
    LIBBPF_OPTS(bpf_test_run_opts, opts, .ctx_in = &ctx, .ctx_size_in = sizeof(ctx));
    EXPECT_EQ(bpf_prog_test_run_opts(bpf_program__fd(skel_->progs.aimesh_hist_bucket), &opts), 0);
    return ctx.bucket;
  };
  std::vector<uint64_t> values = {0, 1, 1023, 1024, 1025, 50'000'000, 10'000'000, (1ULL << 37) - 1, 1ULL << 37,
                                  ~0ULL};
  for (uint32_t b = 0; b < AIMESH_HIST_BUCKETS; ++b) {
    values.push_back(histBucketLower(b));
    if (histBucketUpper(b) > histBucketLower(b)) values.push_back(histBucketUpper(b) - 1);
  }
  uint64_t x = 88172645463325252ULL;  // xorshift: values of every magnitude
  for (int i = 0; i < 2000; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    values.push_back(x >> (x % 64));
  }
  for (uint64_t v : values) ASSERT_EQ(kernelBucket(v), histBucket(v)) << "value " << v;
}

// ---- algorithms (docs/load-balancing.md) ----

// Two choices: the less loaded one wins whenever the two draws differ, which
// (with redraws) is nearly always; random would split 50/50.
TEST_F(Select, LeastConnPicksTheLessLoadedCandidate) {
  twoBackends(AIMESH_ALG_LEAST_CONN);
  putLoad(1, 5);
  putLoad(2, 0);
  auto hits = spread(9, 400);
  EXPECT_GE(hits[2], 380) << hits[1];
  putLoad(1, 0);
  putLoad(2, 5);
  hits = spread(9, 400);
  EXPECT_GE(hits[1], 380) << hits[2];
}

// Cost is load / weight: 3 open on weight 4 (0.75) beats 1 open on
// weight 1 (1.0).
TEST_F(Select, LeastConnIsWeightAware) {
  twoBackends(AIMESH_ALG_LEAST_CONN, 4, 1);
  putLoad(1, 3);
  putLoad(2, 1);
  auto hits = spread(9, 400);
  EXPECT_GE(hits[1], 380) << hits[2];
}

// Every endpoint idle: equal cost, so the pick follows the weights (the
// scan starts at a random slot, weights are slots) instead of sending every
// connection to the heaviest endpoint, as a (load + 1) / weight cost did.
TEST_F(Select, LeastConnIdleEndpointsSpreadByWeight) {
  putBackend(1, 9, Family::kV4, AIMESH_BE_ACTIVE, 1);
  putBackend(2, 9, Family::kV4, AIMESH_BE_ACTIVE, 2);
  putSlots(9, 0, {1, 2, 2});
  putService(9, 3, 0, 2);
  setAlgorithm(9, AIMESH_ALG_LEAST_CONN);
  putLoad(1, 0);
  putLoad(2, 0);
  auto hits = spread(9, 900);
  EXPECT_NEAR(hits[1], 300, 60) << hits[2];
  EXPECT_NEAR(hits[2], 600, 60) << hits[1];
}

// A pooled keep-alive connection between requests is no load: 6 open, all
// idle, is less than 1 open and busy.
TEST_F(Select, LeastConnDoesNotCountIdleKeepAliveConnections) {
  twoBackends(AIMESH_ALG_LEAST_CONN);
  putLoad(1, 6, 0, 0, 6);
  putLoad(2, 1, 0, 0, 0);
  auto hits = spread(9, 400);
  EXPECT_GE(hits[1], 380) << hits[2];
  putLoad(1, 6, 0, 0, 4);  // 2 busy: now the other one
  hits = spread(9, 400);
  EXPECT_GE(hits[2], 380) << hits[1];
}

// Beyond AIMESH_LB_SCAN_MAX slots, two random choices: the one loaded
// backend is never kept when the other draw is idle (random: 1 in 17).
TEST_F(Select, LeastConnUsesTwoChoicesOnLargeServices) {
  std::vector<uint32_t> slots;
  for (uint32_t id = 1; id <= AIMESH_LB_SCAN_MAX + 1; ++id) {
    putBackend(id, 9, Family::kV4);
    putLoad(id, 0);
    slots.push_back(id);
  }
  putSlots(9, 0, slots);
  putService(9, static_cast<uint32_t>(slots.size()), 0, static_cast<uint32_t>(slots.size()));
  setAlgorithm(9, AIMESH_ALG_LEAST_CONN);
  putLoad(1, 100);
  auto hits = spread(9, 680);
  EXPECT_EQ(hits.count(1), 0u) << "the loaded backend never wins";
  EXPECT_EQ(hits.size(), AIMESH_LB_SCAN_MAX + 0u) << "every idle backend is picked sometimes";
}

TEST_F(Select, LatencyAvoidsTheSlowerBackend) {
  twoBackends(AIMESH_ALG_LATENCY);
  putLoad(1, 0, 10'000'000);   // 10 ms
  putLoad(2, 0, 100'000'000);  // 100 ms
  auto hits = spread(9, 400);
  EXPECT_GE(hits[1], 380) << hits[2];
  // ... until the fast one is loaded past the ratio: 10 ms x 12 > 100 ms x 1.
  putLoad(1, 11, 10'000'000);
  hits = spread(9, 400);
  EXPECT_GE(hits[2], 380) << hits[1];
}

// A backend without a sample borrows the other's EWMA: neither flooded (cost
// 0) nor starved (cost infinite); with equal load the first draw stays.
TEST_F(Select, LatencyNewBackendIsNeitherFloodedNorStarved) {
  twoBackends(AIMESH_ALG_LATENCY);
  putLoad(1, 0, 50'000'000);
  putLoad(2, 0, 0);
  auto hits = spread(9, 400);
  EXPECT_GT(hits[2], 120);
  EXPECT_GT(hits[1], 120);
  // With the same EWMA, load decides.
  putLoad(2, 3, 0);
  hits = spread(9, 400);
  EXPECT_GE(hits[1], 380) << hits[2];
}

TEST_F(Select, MaglevIndexesTheTableWithTheHashedKey) {
  putBackend(1, 9, Family::kV4);
  putBackend(2, 9, Family::kV4);
  putBackend(3, 9, Family::kV4);
  putSlots(9, 0, {1, 2, 3});
  putService(9, 3, 0, 3);
  const std::vector<uint32_t> table = {1, 2, 3, 3, 2, 1, 2};
  putTable(9, table);
  setAlgorithm(9, AIMESH_ALG_MAGLEV, 7);
  for (uint64_t key = 1; key < 200; ++key) {
    auto ctx = selectKey(9, key * 7919, static_cast<uint32_t>(key));
    ASSERT_EQ(ctx.err, 0);
    // aimesh_hash_slot(): fmix64(key) % size, as in include/aimesh/hash.h.
    uint64_t k = key * 7919;
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    EXPECT_EQ(ctx.backend_id, table[k % 7]) << "key " << key;
  }
  EXPECT_EQ(reasons(), Reasons{});
}

// An entry naming a backend that must be skipped walks on to the next entry.
TEST_F(Select, MaglevWalksPastADrainingBackendAndMissesFallBackToRandom) {
  putBackend(1, 9, Family::kV4, AIMESH_BE_DRAINING);
  putBackend(2, 9, Family::kV4);
  putSlots(9, 0, {2});
  putService(9, 1, 0, 1);
  putTable(9, {1, 1, 1, 2, 1, 1, 1});
  setAlgorithm(9, AIMESH_ALG_MAGLEV, 7);
  for (uint64_t key = 1; key < 50; ++key) EXPECT_EQ(selectKey(9, key).backend_id, 2u) << key;
  // Table larger than the one in the map, or no table: random, counted.
  setAlgorithm(9, AIMESH_ALG_MAGLEV, 65521);
  EXPECT_EQ(selectKey(9, 5).backend_id, 2u);
  EXPECT_GT(reasons()[AIMESH_R_HASH_TABLE_MISS], 0u);
}

// bounded_hash: 8 open over 2 backends, factor 1.25: cap = ceil(1.25 x 9 / 2) = 6.
TEST_F(Select, BoundedHashSpillsPastABackendOverTheBound) {
  putBackend(1, 9, Family::kV4);
  putBackend(2, 9, Family::kV4);
  putSlots(9, 0, {1, 2});
  putService(9, 2, 0, 2);
  putTable(9, {1, 1, 1, 1, 1, 1, 2});
  setAlgorithm(9, AIMESH_ALG_BOUNDED_HASH, 7, 125);
  putServiceLoad(9, 8);
  putLoad(1, 5);  // 5 + 1 <= 6: stays
  putLoad(2, 3);
  for (uint64_t key = 1; key < 30; ++key) EXPECT_EQ(selectKey(9, key).backend_id, selectKey(9, key).backend_id);
  int onOne = 0;
  for (uint64_t key = 1; key < 30; ++key) onOne += selectKey(9, key).backend_id == 1;
  EXPECT_GT(onOne, 20) << "under the bound the table decides (6 of 7 entries are backend 1)";
  putLoad(1, 6);  // 6 + 1 > 6: every key whose entry is 1 walks on to 2
  for (uint64_t key = 1; key < 30; ++key) EXPECT_EQ(selectKey(9, key).backend_id, 2u) << key;
}

TEST_F(Select, EjectedBackendSkippedUnlessAllAre) {
  twoBackends(AIMESH_ALG_RANDOM);
  putLoad(1, 0, 0, ~0ULL);  // in back-off "forever"
  auto hits = spread(9, 200);
  EXPECT_EQ(hits[2], 200);
  EXPECT_GT(reasons()[AIMESH_R_EJECTED_SKIPPED], 0u);
  putLoad(2, 0, 0, ~0ULL);
  auto ctx = select(9, 3);
  EXPECT_EQ(ctx.err, 0) << "every backend ejected: fail open";
  EXPECT_GT(reasons()[AIMESH_R_EJECTED_FALLBACK], 0u);
  // least_conn too never prefers an ejected candidate.
  setAlgorithm(9, AIMESH_ALG_LEAST_CONN);
  putLoad(1, 50);
  putLoad(2, 0, 0, ~0ULL);
  hits = spread(9, 200);
  EXPECT_EQ(hits[1], 200);
}

// ---- fail close (AIMESH_SVC_F_FAIL_CLOSE) ----------------------------------
//
// Service 9 has slots {1, 2}. The LCG's multiplier and increment are odd, so
// a draw's parity flips each time: the four draws of one aimesh_lb_random()
// alternate between the two slots, starting at slot rnd % 2, and end on
// slot (rnd + 1) % 2.

TEST_F(Select, FailCloseRandomRefusesWhenEveryPickIsInBackoff) {
  twoBackends(AIMESH_ALG_RANDOM);
  setFlags(9, AIMESH_SVC_F_FAIL_CLOSE);
  putLoad(1, 0, 0, kForever);
  putLoad(2, 0, 0, kForever);
  auto ctx = select(9, 3);
  EXPECT_EQ(ctx.err, kEconnrefused);
  EXPECT_EQ(reasons(), only({{AIMESH_R_EJECTED_SKIPPED, 4}, {AIMESH_R_EJECTED_REFUSED, 1}, {AIMESH_R_NO_BACKEND, 1}}));
}

TEST_F(Select, FailCloseRandomPicksTheOneBackendNotInBackoff) {
  twoBackends(AIMESH_ALG_RANDOM);
  setFlags(9, AIMESH_SVC_F_FAIL_CLOSE);
  putLoad(1, 0, 0, kForever);
  for (uint32_t rnd : {2u, 3u}) {  // first draw on backend 1 (skipped), then on 2
    auto ctx = select(9, rnd);
    EXPECT_EQ(ctx.err, 0) << rnd;
    EXPECT_EQ(ctx.backend_id, 2u) << rnd;
  }
  EXPECT_EQ(reasons(), only({{AIMESH_R_EJECTED_SKIPPED, 1}}));
}

// Without the flag every pick in back-off still gets one of them (fail open),
// counted once per connection: the last draw's backend.
TEST_F(Select, FailOpenIsStillTheDefault) {
  twoBackends(AIMESH_ALG_RANDOM);
  putLoad(1, 0, 0, kForever);
  putLoad(2, 0, 0, kForever);
  auto ctx = select(9, 3);
  EXPECT_EQ(ctx.err, 0);
  EXPECT_EQ(ctx.backend_id, 1u) << "draws on slots 1, 0, 1, 0";
  EXPECT_EQ(reasons(), only({{AIMESH_R_EJECTED_SKIPPED, 4}, {AIMESH_R_EJECTED_FALLBACK, 1}}));
  // least_conn: the scan, the first draw and the second-choice draws all
  // find only backends in back-off; the connection uses the first draw's,
  // and only the first draw counts the fallback.
  setAlgorithm(9, AIMESH_ALG_LEAST_CONN);
  ctx = select(9, 3);
  EXPECT_EQ(ctx.err, 0);
  EXPECT_EQ(ctx.backend_id, 1u);
  EXPECT_EQ(reasons()[AIMESH_R_EJECTED_FALLBACK], 2u) << "one more connection, one more fallback";
}

TEST_F(Select, FailCloseLeastConnRefusesAndPicksTheOneNotInBackoff) { expectFailCloseScan(AIMESH_ALG_LEAST_CONN); }

TEST_F(Select, FailCloseLatencyRefusesAndPicksTheOneNotInBackoff) { expectFailCloseScan(AIMESH_ALG_LATENCY); }

// maglev: the table walk finds nothing usable (a miss, counted), then the
// random draws neither: refused. With backend 2 out of back-off the walk
// reaches it from every entry (it is every other entry).
TEST_F(Select, FailCloseMaglevRefusesAndPicksTheOneNotInBackoff) {
  twoBackends(AIMESH_ALG_MAGLEV);
  putTable(9, {1, 2, 1, 2, 1, 2, 1});
  setAlgorithm(9, AIMESH_ALG_MAGLEV, 7);
  setFlags(9, AIMESH_SVC_F_FAIL_CLOSE);
  putLoad(1, 0, 0, kForever);
  putLoad(2, 0, 0, kForever);
  auto ctx = selectKey(9, 42, 5);
  EXPECT_EQ(ctx.err, kEconnrefused);
  Reasons r = reasons();
  EXPECT_EQ(r[AIMESH_R_HASH_TABLE_MISS], 1u);
  EXPECT_EQ(r[AIMESH_R_EJECTED_REFUSED], 1u);
  EXPECT_EQ(r[AIMESH_R_NO_BACKEND], 1u);
  EXPECT_EQ(r[AIMESH_R_EJECTED_FALLBACK], 0u);
  putLoad(2, 0);
  for (uint64_t key = 1; key < 50; ++key) {
    ctx = selectKey(9, key);
    EXPECT_EQ(ctx.err, 0) << key;
    EXPECT_EQ(ctx.backend_id, 2u) << key;
  }
  EXPECT_EQ(reasons()[AIMESH_R_HASH_TABLE_MISS], 1u) << "the walk found backend 2 every time";
  EXPECT_EQ(reasons()[AIMESH_R_EJECTED_REFUSED], 1u);
}

// A split's fail-close target whose backends are all in back-off is passed
// over like a target without a backend: rnd 0 draws target 1 (r = 0 of 100),
// which refuses; the redraw among the rest lands on target 3. Without the
// flag target 1 takes the connection, on a backend in back-off.
TEST_F(Select, SplitFailsOverFromAFailCloseTargetInBackoff) {
  plainService(1, {11, 12});
  plainService(3, {31});
  putSplit(50, {{1, 90}, {3, 10}});
  setFlags(1, AIMESH_SVC_F_FAIL_CLOSE);
  putLoad(11, 0, 0, kForever);
  putLoad(12, 0, 0, kForever);
  auto ctx = select(50, 0);
  EXPECT_EQ(ctx.err, 0);
  EXPECT_EQ(ctx.target_id, 3u);
  EXPECT_EQ(ctx.backend_id, 31u);
  EXPECT_EQ(reasons(), only({{AIMESH_R_EJECTED_SKIPPED, 4},
                             {AIMESH_R_EJECTED_REFUSED, 1},
                             {AIMESH_R_NO_BACKEND, 1},
                             {AIMESH_R_SPLIT_FAILOVER, 1}}));
  setFlags(1, 0);
  ctx = select(50, 0);
  EXPECT_EQ(ctx.err, 0);
  EXPECT_EQ(ctx.target_id, 1u);
  uint32_t inner = static_cast<uint32_t>(aimesh_mix64(0));
  EXPECT_EQ(ctx.backend_id, (inner + 1) % 2 == 0 ? 11u : 12u) << "the last of four draws";
  EXPECT_EQ(reasons()[AIMESH_R_EJECTED_FALLBACK], 1u);
  EXPECT_EQ(reasons()[AIMESH_R_SPLIT_FAILOVER], 1u);
}

// ---- splits (lib/lb.h lb_split) -------------------------------------------

// The first draw picks a target by weight from the high bits of rnd x total:
// target i takes the draws whose r = (rnd * total) >> 32 falls in its weight's
// range; the target's own pick then uses a mix of rnd (aimesh_mix64).
TEST_F(Select, SplitDrawsATargetByWeightThenPicksInsideIt) {
  plainService(1, {11, 12, 13});
  plainService(2, {21});
  putSplit(50, {{1, 90}, {2, 10}});
  for (uint32_t rnd : {0u, 1u, 0x12345678u, 0xe6666666u, 0xe6666667u, 0xf0000000u, 0xffffffffu}) {
    auto ctx = select(50, rnd);
    ASSERT_EQ(ctx.err, 0) << "rnd " << rnd;
    uint64_t r = (uint64_t{rnd} * 100) >> 32;
    uint32_t target = r < 90 ? 1 : 2;
    EXPECT_EQ(ctx.target_id, target) << "rnd " << rnd;
    uint32_t inner = static_cast<uint32_t>(aimesh_mix64(rnd));
    uint32_t want = target == 1 ? std::vector<uint32_t>{11, 12, 13}[inner % 3] : 21;
    EXPECT_EQ(ctx.backend_id, want) << "rnd " << rnd;
  }
  EXPECT_EQ(reasons(), Reasons{});
}

// Over 2^16 evenly spread draws, each target's share is its weight's to within
// one draw, whatever the weights (weight 0 takes nothing); the backends of a
// target are hit evenly (its pick does not depend on which target was drawn).
TEST_F(Select, SplitSharesAreExactAndTargetsSpreadEvenly) {
  plainService(1, {11, 12});
  plainService(2, {21, 22});
  plainService(3, {31});
  putSplit(50, {{1, 7}, {2, 0}, {3, 1000000}, });
  putSplit(51, {{1, 1}, {2, 3}});
  constexpr uint32_t kN = 1u << 16;
  std::map<uint32_t, int> targets50, targets51, backends51;
  for (uint32_t k = 0; k < kN; ++k) {
    uint32_t rnd = k << 16 | (k * 40503u & 0xffff);
    auto a = select(50, rnd);
    ASSERT_EQ(a.err, 0);
    targets50[a.target_id]++;
    auto b = select(51, rnd);
    ASSERT_EQ(b.err, 0);
    targets51[b.target_id]++;
    backends51[b.backend_id]++;
  }
  EXPECT_NEAR(targets50[1], kN * 7.0 / 1000007, 1.0);
  EXPECT_EQ(targets50[2], 0);
  EXPECT_EQ(targets51[1], kN / 4);
  EXPECT_EQ(targets51[2], kN * 3 / 4);
  for (uint32_t be : {11u, 12u}) EXPECT_NEAR(backends51[be], kN / 8, kN / 100) << be;
  for (uint32_t be : {21u, 22u}) EXPECT_NEAR(backends51[be], kN * 3 / 8, kN / 100) << be;
  EXPECT_EQ(reasons(), Reasons{});
}

// A target with no usable backend is passed over (counted) and the draw is
// made again among the others; the call is refused only when none has one.
TEST_F(Select, SplitFailsOverToTargetsWithABackend) {
  plainService(1, {11});
  putService(2, 0);                      // no backend at all
  plainService(3, {31});
  putBackend(31, 3, Family::kV4, AIMESH_BE_DRAINING);  // ... and one draining
  putSplit(50, {{2, 50}, {3, 40}, {1, 10}});
  for (uint32_t rnd : {0u, 0x70000000u, 0xf0000000u}) {
    auto ctx = select(50, rnd);
    ASSERT_EQ(ctx.err, 0) << "rnd " << rnd;
    EXPECT_EQ(ctx.target_id, 1u);
    EXPECT_EQ(ctx.backend_id, 11u);
  }
  // rnd 0 and 0x70000000 first draw service 2 (r = 0, 43), 0xf0000000
  // service 1 (r = 93); a redraw among the other two may land on 3 first.
  uint64_t passed = reasons()[AIMESH_R_SPLIT_FAILOVER];
  EXPECT_GE(passed, 2u);
  EXPECT_LE(passed, 4u);
  putService(1, 0);
  auto none = select(50, 0);
  EXPECT_EQ(none.err, kEconnrefused);
  EXPECT_EQ(reasons()[AIMESH_R_SPLIT_FAILOVER], passed + 3) << "each of the three tried once";
}

// A split with no record, no weight, or a split as its target refuses.
TEST_F(Select, SplitWithoutUsableTargetsRefuses) {
  plainService(1, {11});
  putSplit(50, {{1, 0}});
  EXPECT_EQ(select(50, 7).err, kEconnrefused);
  EXPECT_EQ(reasons()[AIMESH_R_NO_BACKEND], 1u);
  putSplit(51, {{50, 1}});  // never written by the agent: a split's target is a split
  EXPECT_EQ(select(51, 7).err, kEconnrefused);
  EXPECT_EQ(reasons()[AIMESH_R_SPLIT_FAILOVER], 1u);
  aimesh_service s{};
  s.flags = AIMESH_SVC_F_SPLIT;
  uint32_t id = 52;
  ASSERT_EQ(bpf_map__update_elem(skel_->maps.aimesh_services, &id, sizeof(id), &s, sizeof(s), BPF_ANY), 0);
  EXPECT_EQ(select(52, 7).err, kEconnrefused);  // no aimesh_splits entry
}

// The target's own algorithm decides inside it: least_conn picks the idle
// backend of the drawn target.
TEST_F(Select, SplitTargetUsesItsOwnAlgorithm) {
  twoBackends(AIMESH_ALG_LEAST_CONN);  // service 9: backends 1, 2
  putLoad(1, 5);
  putLoad(2, 0);
  plainService(3, {31});
  putSplit(50, {{9, 1}, {3, 1}});
  for (uint32_t rnd = 0; rnd < 64; ++rnd) {
    auto ctx = select(50, rnd << 25);
    ASSERT_EQ(ctx.err, 0);
    if (ctx.target_id == 9) EXPECT_EQ(ctx.backend_id, 2u) << "rnd " << rnd;
    else EXPECT_EQ(ctx.backend_id, 31u);
  }
}

}  // namespace
}  // namespace aimesh
