// bpf tier: BpfDatapathReader against real kernel maps of the ABI's types
// (created here, nothing attached or pinned). Per-CPU values are written on
// every possible CPU with different numbers, so a reader that forgot to sum
// or merge over CPUs fails.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <vector>

#include "aimesh/abi.h"
#include "telemetry/datapath_reader.h"
#include "util/unique_fd.h"

namespace aimesh {
namespace {

int possibleCpus() { return libbpf_num_possible_cpus(); }

UniqueFd makeMap(bpf_map_type type, uint32_t keySize, uint32_t valueSize, uint32_t entries, const char* name) {
  int fd = bpf_map_create(type, name, keySize, valueSize, entries, nullptr);
  EXPECT_GE(fd, 0) << name << ": " << std::strerror(errno);
  return UniqueFd(fd);
}

// Writes per-CPU values: fill(cpu, value) sets CPU cpu's copy.
template <typename T, typename F>
void putPerCpu(int fd, uint32_t key, F fill) {
  std::vector<T> v(possibleCpus());
  for (int c = 0; c < possibleCpus(); ++c) fill(c, v[c]);
  ASSERT_EQ(bpf_map_update_elem(fd, &key, v.data(), BPF_ANY), 0) << std::strerror(errno);
}

class DatapathReaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    svcStats_ = makeMap(BPF_MAP_TYPE_ARRAY, 4, sizeof(aimesh_svc_stats), 16, "t_svc_stats");
    beStats_ = makeMap(BPF_MAP_TYPE_ARRAY, 4, sizeof(aimesh_be_stats), 16, "t_be_stats");
    reasons_ = makeMap(BPF_MAP_TYPE_PERCPU_ARRAY, 4, sizeof(uint64_t), AIMESH_R_MAX, "t_reasons");
    beTel_ = makeMap(BPF_MAP_TYPE_ARRAY, 4, sizeof(aimesh_be_tel), 16, "t_be_tel");
    LIBBPF_OPTS(bpf_map_create_opts, noPrealloc, .map_flags = BPF_F_NO_PREALLOC);
    int h = bpf_map_create(BPF_MAP_TYPE_HASH, "t_hist", 4, sizeof(aimesh_hist), 16 * AIMESH_M_MAX, &noPrealloc);
    EXPECT_GE(h, 0) << std::strerror(errno);
    hist_ = UniqueFd(h);
    beLoad_ = makeMap(BPF_MAP_TYPE_ARRAY, 4, sizeof(aimesh_be_load), 16, "t_be_load");
    beSignal_ = makeMap(BPF_MAP_TYPE_ARRAY, 4, sizeof(aimesh_be_signal), 16, "t_be_signal");
    frontends_ = makeMap(BPF_MAP_TYPE_HASH, sizeof(aimesh_frontend_key), 4, 64, "t_frontends");
    fds_.svcStats = svcStats_.get();
    fds_.beStats = beStats_.get();
    fds_.reasons = reasons_.get();
    fds_.beTel = beTel_.get();
    fds_.hist = hist_.get();
    fds_.beLoad = beLoad_.get();
    fds_.beSignal = beSignal_.get();
    fds_.frontends = frontends_.get();
  }

  MapFds fds_;
  UniqueFd svcStats_, beStats_, reasons_, beTel_, hist_, beLoad_, beSignal_, frontends_;
};

template <typename K, typename V>
void put(int fd, K key, const V& v) {
  ASSERT_EQ(bpf_map_update_elem(fd, &key, &v, BPF_ANY), 0) << std::strerror(errno);
}

TEST_F(DatapathReaderTest, StatsReadSharedCountersAndSumPerCpuReasons) {
  const int n = possibleCpus();
  put(fds_.svcStats, 3u, aimesh_svc_stats{.connects = 21, .datagrams = 0, .refused = 1, .denied = 2});
  put(fds_.beStats, 5u, aimesh_be_stats{.connects = 210, .datagrams = 0});
  putPerCpu<uint64_t>(fds_.reasons, AIMESH_R_NO_BACKEND, [](int, uint64_t& v) { v = 7; });

  BpfDatapathReader r(fds_, MapLimits{}, AIMESH_DEFAULT_PENALTY_HALF_LIFE_NS, nullptr);
  auto st = r.stats({3}, {5});
  ASSERT_TRUE(st) << st.error().message();
  EXPECT_EQ(st->services.at(3).connects, 21u);
  EXPECT_EQ(st->services.at(3).refused, 1u);
  EXPECT_EQ(st->services.at(3).denied, 2u);
  EXPECT_EQ(st->backends.at(5).connects, 210u);
  EXPECT_EQ(st->reasons[AIMESH_R_NO_BACKEND], 7 * uint64_t(n));
  EXPECT_EQ(st->reasons[AIMESH_R_SERVICE_MISSING], 0u);
}

TEST_F(DatapathReaderTest, TelemetryReadsCountersHistogramsThatExistAndLoad) {
  aimesh_be_tel counters{};
  counters.requests = 10;
  counters.closed_by[0] = 1;
  put(fds_.beTel, 5u, counters);
  // Three TTFT samples in bucket 3 and one in bucket 7 for endpoint 5; one
  // for endpoint 9, which is not asked for.
  auto hist = std::make_unique<aimesh_hist>();
  hist->buckets[3] = 3;
  hist->buckets[7] = 1;
  hist->sum_ns = 4000;
  put(fds_.hist, 5u * AIMESH_M_MAX + AIMESH_M_TTFT, *hist);
  put(fds_.hist, 9u * AIMESH_M_MAX + AIMESH_M_TTFT, *hist);
  aimesh_be_load load{};
  load.active = 4;
  load.idle = 3;
  load.ewma_ttft_ns = 123456;
  load.fail_streak = 2;
  uint32_t id = 5;
  ASSERT_EQ(bpf_map_update_elem(fds_.beLoad, &id, &load, BPF_ANY), 0);

  BpfDatapathReader r(fds_, MapLimits{}, AIMESH_DEFAULT_PENALTY_HALF_LIFE_NS, nullptr);
  auto tel = r.telemetry({5, 6});
  ASSERT_TRUE(tel) << tel.error().message();
  const BackendTelemetry& t = tel->at(5);
  EXPECT_EQ(t.counters.requests, 10u);
  EXPECT_EQ(t.counters.closed_by[0], 1u);
  EXPECT_EQ(t.active, 4);
  EXPECT_EQ(t.idle, 3);
  EXPECT_EQ(t.ewmaTtftNs, 123456u);
  EXPECT_EQ(t.failStreak, 2u);
  EXPECT_FALSE(t.ejected);
  EXPECT_EQ(t.hist[AIMESH_M_TTFT].count, 4u);  // the buckets' sum
  EXPECT_EQ(t.hist[AIMESH_M_TTFT].buckets[7], 1u);
  EXPECT_EQ(t.hist[AIMESH_M_TTFT].sumNs, 4000u);
  EXPECT_TRUE(t.hist[AIMESH_M_GAP].empty());  // never sampled: no histogram in the kernel
  EXPECT_EQ(tel->count(9), 0u);
  EXPECT_EQ(tel->count(6), 0u);  // nothing written: no entry (all zero), not an error
}

// Counters of more ids than one batch (1,024) holds: read in batches, only
// the ids asked for, and only those that counted something.
TEST_F(DatapathReaderTest, CountersOfManyIdsAreReadInBatchesAndZerosLeftOut) {
  UniqueFd svc = makeMap(BPF_MAP_TYPE_ARRAY, 4, sizeof(aimesh_svc_stats), 4096, "t_svc_4096");
  UniqueFd be = makeMap(BPF_MAP_TYPE_ARRAY, 4, sizeof(aimesh_be_stats), 4096, "t_be_4096");
  UniqueFd tel = makeMap(BPF_MAP_TYPE_ARRAY, 4, sizeof(aimesh_be_tel), 4096, "t_tel_4096");
  std::vector<uint32_t> ids;
  for (uint32_t id = 1; id < 3000; ++id) ids.push_back(id);
  for (uint32_t id : {7u, 1500u, 2999u, 3500u}) {
    put(svc.get(), id, aimesh_svc_stats{.connects = id, .datagrams = 0, .refused = 0, .denied = 0});
    put(be.get(), id, aimesh_be_stats{.connects = 0, .datagrams = id});
    aimesh_be_tel t{};
    t.opened = id;
    put(tel.get(), id, t);
  }
  MapFds fds = fds_;
  fds.svcStats = svc.get();
  fds.beStats = be.get();
  fds.beTel = tel.get();
  BpfDatapathReader r(fds, MapLimits{4096, 4096, AIMESH_MAX_CT}, AIMESH_DEFAULT_PENALTY_HALF_LIFE_NS, nullptr);
  auto st = r.stats(ids, ids);
  ASSERT_TRUE(st) << st.error().message();
  ASSERT_EQ(st->services.size(), 3u);  // 3500 was not asked for
  EXPECT_EQ(st->services.at(2999).connects, 2999u);
  ASSERT_EQ(st->backends.size(), 3u);
  EXPECT_EQ(st->backends.at(1500).datagrams, 1500u);
  auto t = r.telemetry(ids);
  ASSERT_TRUE(t) << t.error().message();
  ASSERT_EQ(t->size(), 3u);
  EXPECT_EQ(t->at(2999).counters.opened, 2999u);
}

// More histograms than one batch read (256) holds: every one is read, each
// added to its own endpoint and metric.
TEST_F(DatapathReaderTest, HistogramsOfManyEndpointsAreReadInBatches) {
  LIBBPF_OPTS(bpf_map_create_opts, noPrealloc, .map_flags = BPF_F_NO_PREALLOC);
  int fd = bpf_map_create(BPF_MAP_TYPE_HASH, "t_hist_many", 4, sizeof(aimesh_hist), 512 * AIMESH_M_MAX, &noPrealloc);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  UniqueFd many(fd);
  auto h = std::make_unique<aimesh_hist>();
  std::vector<uint32_t> ids;
  for (uint32_t id = 1; id <= 400; ++id) {
    *h = aimesh_hist{};
    h->buckets[5] = id;  // endpoint id samples of TTFT, one of RTT
    put(fd, id * AIMESH_M_MAX + AIMESH_M_TTFT, *h);
    *h = aimesh_hist{};
    h->buckets[9] = 1;
    put(fd, id * AIMESH_M_MAX + AIMESH_M_RTT, *h);
    ids.push_back(id);
  }
  UniqueFd tel512 = makeMap(BPF_MAP_TYPE_ARRAY, 4, sizeof(aimesh_be_tel), 512, "t_be_tel_512");
  MapFds fds = fds_;
  fds.hist = many.get();
  fds.beTel = tel512.get();
  BpfDatapathReader r(fds, MapLimits{512, 512, AIMESH_MAX_CT}, AIMESH_DEFAULT_PENALTY_HALF_LIFE_NS, nullptr);
  auto tel = r.telemetry(ids);
  ASSERT_TRUE(tel) << tel.error().message();
  ASSERT_EQ(tel->size(), 400u);
  for (uint32_t id = 1; id <= 400; ++id) {
    EXPECT_EQ(tel->at(id).hist[AIMESH_M_TTFT].count, id) << id;
    EXPECT_EQ(tel->at(id).hist[AIMESH_M_RTT].count, 1u) << id;
    EXPECT_TRUE(tel->at(id).hist[AIMESH_M_GAP].empty()) << id;
  }
}

TEST_F(DatapathReaderTest, OccupancyCountsEntriesAgainstTheLimits) {
  for (uint16_t port : {8000, 8001, 9000}) {
    aimesh_frontend_key k{};
    k.port = port;
    uint32_t v = 1;
    ASSERT_EQ(bpf_map_update_elem(fds_.frontends, &k, &v, BPF_ANY), 0);
  }
  MapLimits limits;
  limits.services = 64;
  BpfDatapathReader r(fds_, limits, AIMESH_DEFAULT_PENALTY_HALF_LIFE_NS, nullptr);
  auto occ = r.occupancy();
  ASSERT_EQ(occ.size(), 5u);
  EXPECT_EQ(occ[0].map, "aimesh_frontends");
  EXPECT_EQ(occ[0].entries, 3u);
  EXPECT_EQ(occ[0].capacity, limits.frontends());
  EXPECT_EQ(occ[1].map, "aimesh_services");
  EXPECT_EQ(occ[1].entries, 0u);  // no map: counted as empty
  EXPECT_EQ(occ[1].capacity, 64u);
}

TEST_F(DatapathReaderTest, NoEventLogSaysSo) {
  BpfDatapathReader r(fds_, MapLimits{}, AIMESH_DEFAULT_PENALTY_HALF_LIFE_NS, nullptr);
  std::vector<FlowEvent> evs;
  uint64_t next = 0, dropped = 0;
  EXPECT_FALSE(r.flowEvents(0, 10, &evs, &next, &dropped));
  EXPECT_EQ(r.flowEventsTotal(), 0u);
}

}  // namespace
}  // namespace aimesh
