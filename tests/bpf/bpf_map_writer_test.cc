// bpf tier: BpfMapWriter against real kernel maps of the ABI's types
// (created here, nothing attached or pinned): runs of one operation kind go
// in batches, a run the kernel refuses as a batch is applied one by one and
// the failing operation is named, and reused ids lose their histograms and
// client counts in one walk.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "aimesh/abi.h"
#include "bpf/bpf_map_writer.h"
#include "bpf/map_walk.h"
#include "reconcile/plan.h"
#include "reconcile/reconciler.h"
#include "util/unique_fd.h"

namespace aimesh {
namespace {

UniqueFd makeMap(bpf_map_type type, uint32_t keySize, uint32_t valueSize, uint32_t entries, const char* name) {
  LIBBPF_OPTS(bpf_map_create_opts, noPrealloc, .map_flags = BPF_F_NO_PREALLOC);
  int fd = bpf_map_create(type, name, keySize, valueSize, entries, type == BPF_MAP_TYPE_HASH ? &noPrealloc : nullptr);
  EXPECT_GE(fd, 0) << name << ": " << std::strerror(errno);
  return UniqueFd(fd);
}

uint64_t entries(int fd) {
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  EXPECT_EQ(bpf_obj_get_info_by_fd(fd, &info, &len), 0);
  auto n = walkKeys(fd, info.key_size, [](const void*) { return true; });
  return n ? *n : 0;
}

IpAddr ip(const std::string& s) { return *IpAddr::parse(s); }

// n services of `eps` endpoints each, 10.96.x.y -> 10.1xx.x.y.
Snapshot services(int n, int eps) {
  Snapshot s;
  for (int i = 0; i < n; ++i) {
    Service svc;
    svc.name = "svc-" + std::to_string(i);
    svc.vips = {ip("10.96." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1))};
    svc.ports = {PortSpec{8000, Protocol::kTcp}};
    for (int e = 0; e < eps; ++e)
      svc.endpoints.push_back(Endpoint{ip("10." + std::to_string(100 + e) + "." + std::to_string(i / 250) + "." +
                                          std::to_string(i % 250 + 1)),
                                       8000, 1, EndpointState::kActive});
    s.services.push_back(std::move(svc));
  }
  return s;
}

class BpfMapWriterTest : public ::testing::Test {
 protected:
  static constexpr uint32_t kServices = 1024, kBackends = 4096;

  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    MapLimits l = limits();
    frontends_ = makeMap(BPF_MAP_TYPE_HASH, sizeof(aimesh_frontend_key), sizeof(aimesh_frontend), l.frontends(),
                         "t_frontends");
    services_ = makeMap(BPF_MAP_TYPE_HASH, 4, sizeof(aimesh_service), kServices, "t_services");
    slots_ = makeMap(BPF_MAP_TYPE_HASH, sizeof(aimesh_slot_key), sizeof(aimesh_slot), l.slots(), "t_slots");
    backends_ = makeMap(BPF_MAP_TYPE_HASH, 4, sizeof(aimesh_backend), kBackends, "t_backends");
    svcStats_ = makeMap(BPF_MAP_TYPE_ARRAY, 4, sizeof(aimesh_svc_stats), kServices, "t_svc_stats");
    svcLoad_ = makeMap(BPF_MAP_TYPE_ARRAY, 4, sizeof(aimesh_svc_load), kServices, "t_svc_load");
    beStats_ = makeMap(BPF_MAP_TYPE_ARRAY, 4, sizeof(aimesh_be_stats), kBackends, "t_be_stats");
    beTel_ = makeMap(BPF_MAP_TYPE_ARRAY, 4, sizeof(aimesh_be_tel), kBackends, "t_be_tel");
    beLoad_ = makeMap(BPF_MAP_TYPE_ARRAY, 4, sizeof(aimesh_be_load), kBackends, "t_be_load");
    beSignal_ = makeMap(BPF_MAP_TYPE_ARRAY, 4, sizeof(aimesh_be_signal), kBackends, "t_be_signal");
    hist_ = makeMap(BPF_MAP_TYPE_HASH, 4, sizeof(aimesh_hist), 64, "t_hist");
    clients_ = makeMap(BPF_MAP_TYPE_HASH, sizeof(aimesh_client_key), sizeof(aimesh_client_stats), 64, "t_clients");
    fds_.frontends = frontends_.get();
    fds_.services = services_.get();
    fds_.slots = slots_.get();
    fds_.backends = backends_.get();
    fds_.svcStats = svcStats_.get();
    fds_.svcLoad = svcLoad_.get();
    fds_.beStats = beStats_.get();
    fds_.beTel = beTel_.get();
    fds_.beLoad = beLoad_.get();
    fds_.beSignal = beSignal_.get();
    fds_.hist = hist_.get();
    fds_.clients = clients_.get();
  }

  static MapLimits limits() { return MapLimits{kServices, kBackends, AIMESH_MAX_CT}; }

  MapFds fds_;
  UniqueFd frontends_, services_, slots_, backends_, svcStats_, svcLoad_, beStats_, beTel_, beLoad_, beSignal_, hist_,
      clients_;
};

TEST_F(BpfMapWriterTest, ABigStateGoesInBatchesAndReadsBackAsPlanned) {
  BpfMapWriter w(fds_, limits());
  Reconciler r(w, limits());
  IdIndex idx;
  Snapshot s = services(900, 4);  // more than one batch of backends
  auto rep = r.reconcile(s, idx);
  ASSERT_TRUE(rep) << rep.error().message();
  EXPECT_EQ(entries(fds_.frontends), 900u);
  EXPECT_EQ(entries(fds_.services), 900u);
  EXPECT_EQ(entries(fds_.backends), 3600u);
  auto back = w.read();
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(*back, makePlan(s, *back, limits()).desired);
  // Removing half: delete runs in batches too.
  s.services.resize(450);
  ASSERT_TRUE(r.reconcile(s, idx));
  EXPECT_EQ(entries(fds_.frontends), 450u);
  EXPECT_EQ(entries(fds_.backends), 1800u);
  back = w.read();
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, makePlan(s, *back, limits()).desired);
}

TEST_F(BpfMapWriterTest, AReusedBackendIdLosesItsCountersHistogramsAndLoad) {
  BpfMapWriter w(fds_, limits());
  aimesh_be_tel tel{};
  tel.requests = 7;
  aimesh_hist h{};
  h.sum_ns = 3;
  for (uint32_t id : {5u, 6u}) {
    ASSERT_EQ(bpf_map_update_elem(fds_.beTel, &id, &tel, BPF_ANY), 0);
    for (uint32_t m = 0; m < AIMESH_M_MAX; ++m) {
      uint32_t key = id * AIMESH_M_MAX + m;
      ASSERT_EQ(bpf_map_update_elem(fds_.hist, &key, &h, BPF_ANY), 0) << std::strerror(errno);
    }
  }
  aimesh_client_key ck{};
  ck.cgroup_id = 42;
  ck.service_id = 3;
  aimesh_client_stats cs{};
  ASSERT_EQ(bpf_map_update_elem(fds_.clients, &ck, &cs, BPF_ANY), 0);
  ck.service_id = 4;
  ASSERT_EQ(bpf_map_update_elem(fds_.clients, &ck, &cs, BPF_ANY), 0);

  ASSERT_TRUE(w.applyAll({ResetBackendStats{5}, ResetServiceStats{3}}));
  aimesh_be_tel got{};
  uint32_t id = 5;
  ASSERT_EQ(bpf_map_lookup_elem(fds_.beTel, &id, &got), 0);
  EXPECT_EQ(got.requests, 0u);
  id = 6;
  ASSERT_EQ(bpf_map_lookup_elem(fds_.beTel, &id, &got), 0);
  EXPECT_EQ(got.requests, 7u) << "another id kept its counters";
  EXPECT_EQ(entries(fds_.hist), AIMESH_M_MAX) << "only id 6's histograms are left";
  EXPECT_EQ(entries(fds_.clients), 1u) << "only service 4's client is left";

  // Many ids at once take the other way (one walk of the keys there are).
  std::vector<MapOp> many;
  for (uint32_t b = 100; b < 170; ++b) many.push_back(ResetBackendStats{b});
  for (uint32_t b : {100u, 169u}) {
    uint32_t key = b * AIMESH_M_MAX + 1;
    ASSERT_EQ(bpf_map_update_elem(fds_.hist, &key, &h, BPF_ANY), 0);
  }
  ASSERT_TRUE(w.applyAll(many));
  EXPECT_EQ(entries(fds_.hist), AIMESH_M_MAX) << "the 70 ids' histograms are gone, id 6's are left";
}

// Counter maps the agent just created are all zeros: the first run skips
// writing zeros over them, and every later run resets what it reuses.
TEST_F(BpfMapWriterTest, FreshCounterMapsAreNotZeroedAgainOnlyAtTheFirstRun) {
  fds_.countersZero = true;
  BpfMapWriter w(fds_, limits());
  aimesh_be_tel tel{};
  tel.requests = 7;
  uint32_t id = 5;
  // A value the fresh-map promise says cannot be there: proves the skip.
  ASSERT_EQ(bpf_map_update_elem(fds_.beTel, &id, &tel, BPF_ANY), 0);
  ASSERT_TRUE(w.applyAll({ResetBackendStats{5}, UpsertBackend{5, BackendRecord{ip("10.1.0.5"), 8000}}}));
  aimesh_be_tel got{};
  ASSERT_EQ(bpf_map_lookup_elem(fds_.beTel, &id, &got), 0);
  EXPECT_EQ(got.requests, 7u) << "the first run wrote zeros over a fresh map";
  EXPECT_EQ(entries(fds_.backends), 1u) << "the other operations of the run are applied";
  ASSERT_TRUE(w.applyAll({ResetBackendStats{5}}));
  ASSERT_EQ(bpf_map_lookup_elem(fds_.beTel, &id, &got), 0);
  EXPECT_EQ(got.requests, 0u) << "a later run must reset a reused id";

  // Without the promise (maps adopted from pins), the first run resets too.
  MapFds pinned = fds_;
  pinned.countersZero = false;
  BpfMapWriter adopted(pinned, limits());
  ASSERT_EQ(bpf_map_update_elem(fds_.beTel, &id, &tel, BPF_ANY), 0);
  ASSERT_TRUE(adopted.applyAll({ResetBackendStats{5}}));
  ASSERT_EQ(bpf_map_lookup_elem(fds_.beTel, &id, &got), 0);
  EXPECT_EQ(got.requests, 0u);
}

TEST_F(BpfMapWriterTest, ARunRefusedAsABatchIsAppliedOneByOneAndTheFailureNamed) {
  BpfMapWriter w(fds_, limits());
  // Deleting keys already gone (drift) fails as a batch; one by one a
  // missing key is not an error.
  ASSERT_TRUE(w.applyAll({DeleteBackend{7}, DeleteBackend{8}}));
  // A backend map that is full: the batch fails, the one-by-one pass names
  // the first operation that does not fit.
  std::vector<MapOp> ops;
  for (uint32_t id = 1; id <= kBackends + 2; ++id) {
    BackendRecord b;
    b.addr = ip("10.0.0.1");
    b.port = 80;
    b.serviceId = 1;
    ops.push_back(UpsertBackend{id, b});
  }
  Status st = w.applyAll(ops);
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().context.find("upsert-backend " + std::to_string(kBackends + 1)), std::string::npos)
      << st.error().message();
}

// A service's fail-close mode is AIMESH_SVC_F_FAIL_CLOSE in its kernel
// record, beside the other flags, and reads back as written; turning it off
// clears the bit alone.
TEST_F(BpfMapWriterTest, TheFailCloseFlagRoundTrips) {
  BpfMapWriter w(fds_, limits());
  ServiceRecord rec{2, 2, Algorithm::kLeastConn, 1, 0, 0, true};
  rec.failClose = true;
  ASSERT_TRUE(w.applyAll({UpsertService{5, rec}}));
  uint32_t key = 5;
  aimesh_service raw{};
  ASSERT_EQ(bpf_map_lookup_elem(fds_.services, &key, &raw), 0);
  EXPECT_EQ(raw.flags, AIMESH_SVC_F_POLICY | AIMESH_SVC_F_FAIL_CLOSE);
  auto back = w.read();
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->services.at(5), rec);
  rec.failClose = false;
  ASSERT_TRUE(w.applyAll({UpsertService{5, rec}}));
  ASSERT_EQ(bpf_map_lookup_elem(fds_.services, &key, &raw), 0);
  EXPECT_EQ(raw.flags, AIMESH_SVC_F_POLICY);
  back = w.read();
  ASSERT_TRUE(back);
  EXPECT_EQ(back->services.at(5), rec);
  ASSERT_TRUE(w.applyAll({DeleteService{5}}));

  // From a snapshot: every port of a fail-close service, nothing else.
  Snapshot s = services(3, 2);
  s.services.mut(1).failClose = true;
  s.services.mut(1).ports.push_back(PortSpec{8001, Protocol::kTcp});
  Reconciler r(w, limits());
  IdIndex idx;
  ASSERT_TRUE(r.reconcile(s, idx));
  back = w.read();
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, makePlan(s, *back, limits()).desired);
  int failClose = 0;
  for (auto& [id, svc] : back->services) failClose += svc.failClose;
  EXPECT_EQ(failClose, 2);
}

}  // namespace
}  // namespace aimesh
