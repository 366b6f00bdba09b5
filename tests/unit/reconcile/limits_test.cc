#include "reconcile/limits.h"

#include <gtest/gtest.h>

#include <chrono>

#include "fixtures/fake_map_writer.h"
#include "reconcile/plan.h"
#include "reconcile/reconciler.h"

namespace aimesh {
namespace {

using testing::FakeMapWriter;

IpAddr ip(const std::string& s) { return *IpAddr::parse(s); }

// n services, each with `eps` endpoints, VIPs 10.96.x.y and endpoints 10.1.x.y.
Snapshot services(int n, int eps) {
  Snapshot s;
  for (int i = 0; i < n; ++i) {
    Service v;
    v.name = "svc-" + std::to_string(i);
    v.vips = {ip("10.96." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1))};
    v.ports = {PortSpec{8000, Protocol::kTcp}};
    for (int e = 0; e < eps; ++e) {
      int k = i * eps + e;
      v.endpoints.push_back(
          Endpoint{ip("10.1." + std::to_string(k / 250) + "." + std::to_string(k % 250 + 1)), 8000, 1,
                   EndpointState::kActive});
    }
    s.services.push_back(std::move(v));
  }
  return s;
}

TEST(MapLimits, DefaultsAreTheCompiledSizes) {
  MapLimits l;
  EXPECT_EQ(l.entriesOf("aimesh_frontends"), AIMESH_MAX_FRONTENDS);
  EXPECT_EQ(l.entriesOf("aimesh_services"), AIMESH_MAX_SERVICES);
  EXPECT_EQ(l.entriesOf("aimesh_slots"), AIMESH_MAX_SLOTS);
  EXPECT_EQ(l.entriesOf("aimesh_backends"), AIMESH_MAX_BACKENDS);
  EXPECT_EQ(l.entriesOf("aimesh_revnat"), AIMESH_MAX_REVNAT);
  EXPECT_EQ(l.entriesOf("aimesh_ct"), AIMESH_MAX_CT);
  EXPECT_EQ(l.entriesOf("aimesh_reasons"), AIMESH_R_MAX) << "an older agent's pinned map is resized, not refused";
  EXPECT_EQ(l.validate(), std::nullopt);
}

TEST(MapLimits, EverySizedMapFollowsItsLimit) {
  MapLimits l{10240, 20480, 1u << 20};
  for (const char* m : {"aimesh_services", "aimesh_svc_stats", "aimesh_svc_load", "aimesh_hash_tables"})
    EXPECT_EQ(l.entriesOf(m), 10240u) << m;
  for (const char* m : {"aimesh_backends", "aimesh_be_stats", "aimesh_be_tel", "aimesh_be_load", "aimesh_be_signal"})
    EXPECT_EQ(l.entriesOf(m), 20480u) << m;
  EXPECT_EQ(l.entriesOf("aimesh_frontends"), 40960u);
  EXPECT_EQ(l.entriesOf("aimesh_slots"), 327680u);
  EXPECT_EQ(l.entriesOf("aimesh_revnat"), 81920u);
  EXPECT_EQ(l.entriesOf("aimesh_ct"), 1u << 20);
  EXPECT_EQ(l.entriesOf("aimesh_hist"), 20480u * AIMESH_M_MAX);  // room for every endpoint's histograms
  // Fixed-size maps are left alone (aimesh_reasons is sized by the ABI, above).
  for (const char* m : {"aimesh_config", "aimesh_events", "nope"})
    EXPECT_EQ(l.entriesOf(m), std::nullopt) << m;
}

TEST(MapLimits, ValidateNamesTheFlagAndTheRange) {
  auto e = MapLimits{8, AIMESH_MAX_BACKENDS, AIMESH_MAX_CT}.validate();
  ASSERT_TRUE(e);
  EXPECT_NE(e->find("--max-services 8"), std::string::npos) << *e;
  e = MapLimits{AIMESH_MAX_SERVICES, kMaxBackendsLimit + 1, AIMESH_MAX_CT}.validate();
  ASSERT_TRUE(e);
  EXPECT_NE(e->find("--max-backends"), std::string::npos) << *e;
  e = MapLimits{AIMESH_MAX_SERVICES, AIMESH_MAX_BACKENDS, 10}.validate();
  ASSERT_TRUE(e);
  EXPECT_NE(e->find("--max-flows 10"), std::string::npos) << *e;
}

TEST(MapLimits, MemoryGrowsWithCpusOnlyThroughTheReasonsArray) {
  MapLimits l;
  uint64_t one = mapMemoryBytes(l, 1), two = mapMemoryBytes(l, 2);
  EXPECT_EQ(two - one, uint64_t(AIMESH_R_MAX) * sizeof(uint64_t));
  EXPECT_LT(mapMemoryBytes(l, 128) - one, 64u * 1024);  // counters are shared, not per CPU
  EXPECT_GT(mapMemoryBytes(MapLimits{10240, 20480, AIMESH_MAX_CT}, 1), one);
}

TEST(MapLimits, HistogramsCostAFixedAmountPerEndpointWithTraffic) {
  // Six metrics, each a 1.7 KiB histogram in a 2 KiB kernel allocation.
  EXPECT_EQ(histogramBytes(1), uint64_t(AIMESH_M_MAX) * 2048);
  EXPECT_EQ(histogramBytes(300), 300 * histogramBytes(1));
  EXPECT_EQ(histogramBytes(0), 0u);
}

TEST(MakePlanLimits, IdsStayBelowTheLimitsAndTheRestIsLeftOut) {
  MapLimits l{16, 32, AIMESH_MAX_CT};
  Plan p = makePlan(services(20, 1), {}, l);
  EXPECT_EQ(p.index.services.size(), 15u);  // ids 1..15
  for (auto& [id, _] : p.desired.services) EXPECT_LT(id, 16u);
  p = makePlan(services(10, 4), {}, l);
  EXPECT_EQ(p.index.services.size(), 10u);
  EXPECT_EQ(p.index.backends.size(), 31u);  // ids 1..31
  for (auto& [id, _] : p.desired.backends) EXPECT_LT(id, 32u);
}

TEST(MakePlanLimits, TenThousandServicesPlanInLinearishTime) {
  // Ids used to be found by copying the set of used ids for every new id:
  // quadratic, seconds at this size. One set now.
  MapLimits l{10240, 20480, AIMESH_MAX_CT};
  Snapshot s = services(10000, 2);
  auto t0 = std::chrono::steady_clock::now();
  Plan p = makePlan(s, {}, l);
  auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(p.index.services.size(), 10000u);
  EXPECT_EQ(p.index.backends.size(), 20000u);
  EXPECT_EQ(p.desired.frontends.size(), 10000u);
  // A generous bound (sanitizers, a loaded machine): the quadratic version
  // took far longer than this.
  EXPECT_LT(secs, 10.0);
  // Planning again against its own result changes nothing.
  EXPECT_EQ(makePlan(s, p.desired, l).desired, p.desired);
}

TEST(ReconcilerLimits, SuggestedLimitHoldsTheIdsTheReservedOneAndAQuarterMore) {
  EXPECT_EQ(suggestedLimit(0), 16u);
  EXPECT_EQ(suggestedLimit(12), 16u);   // 12 + 1 + 3
  EXPECT_EQ(suggestedLimit(13), 32u);   // 13 + 1 + 3 = 17
  EXPECT_EQ(suggestedLimit(10000), 16384u);  // 12,501
  EXPECT_EQ(suggestedLimit(40000), 65536u);  // 50,001
}

TEST(ReconcilerLimits, TooManyServicesOrBackendsIsAnErrorNamingTheFlag) {
  FakeMapWriter w;
  Reconciler r(w, MapLimits{16, 32, AIMESH_MAX_CT});
  IdIndex idx;
  auto res = r.reconcile(services(20, 1), idx);
  ASSERT_FALSE(res.ok());
  EXPECT_NE(res.error().message().find("e.g. --max-services 32"), std::string::npos) << res.error().message();
  EXPECT_TRUE(w.state.services.empty());  // nothing half-applied
  res = r.reconcile(services(10, 4), idx);
  ASSERT_FALSE(res.ok());
  EXPECT_NE(res.error().message().find("e.g. --max-backends 64"), std::string::npos) << res.error().message();
  EXPECT_NE(res.error().message().find("31 of 40"), std::string::npos) << res.error().message();
  // Both short: both flags in one message, so one restart fixes it.
  res = r.reconcile(services(20, 4), idx);
  ASSERT_FALSE(res.ok());
  EXPECT_NE(res.error().message().find("e.g. --max-services 32"), std::string::npos) << res.error().message();
  EXPECT_NE(res.error().message().find("--max-backends for 80 endpoints (per service port), e.g. --max-backends 128"),
            std::string::npos)
      << res.error().message();
  // Within the limits it applies.
  ASSERT_TRUE(r.reconcile(services(15, 2), idx).ok());
  EXPECT_EQ(idx.services.size(), 15u);
  EXPECT_EQ(w.state.backends.size(), 30u);
}

}  // namespace
}  // namespace aimesh
