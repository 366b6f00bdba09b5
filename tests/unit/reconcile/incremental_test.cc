// The reconciler's incremental path (a change to a few services plans and
// diffs only those) against the full plan, as a property: under random churn
// of a few services per round (and now and then many, or a VIP moving
// between services), an incremental reconciler and one that plans every
// service issue the same map operations, reach the same kernel state and
// the same id index, and keep the data-plane invariants after every op.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>

#include "fixtures/fake_map_writer.h"
#include "reconcile/plan.h"
#include "reconcile/reconciler.h"
#include "reconcile/split_resolver.h"

namespace aimesh {
namespace {

using testing::FakeMapWriter;

IpAddr ip(const std::string& s) { return *IpAddr::parse(s); }

// A world of services the churn edits; snapshot() sorts it as sources do.
class World {
 public:
  explicit World(uint32_t seed) : rng_(seed) {}

  Service randomService(int i) {
    Service s;
    s.name = "s" + std::to_string(i);
    // "ns" and "ns-a": their keys ("ns/..." and "ns-a/...") sort unlike the
    // namespaces alone ('-' < '/').
    s.nameSpace = i % 3 == 0 ? "ns-a" : "ns";
    s.vips = {vip()};
    if (pick(4) == 0) s.vips.push_back(vip());
    s.ports = {PortSpec{8000, Protocol::kTcp}};
    if (pick(3) == 0) s.ports.push_back(PortSpec{53, Protocol::kUdp});
    s.algorithm = kAlgorithms[pick(5)];
    s.hashTableSize = 251;  // a prime, small so maglev tables are cheap
    if (pick(5) == 0) {
      s.policy = PolicySpec{};
      s.policy->allowCgroupIds = {100 + static_cast<uint64_t>(pick(3)), 200};
    }
    if (pick(8) == 0) {  // a split over a few others (some missing, some splits: left out)
      for (int k = 1 + pick(3); k > 0; --k)
        s.split.push_back(SplitBackend{"s" + std::to_string(pick(kServices)), pick(2) ? "ns-a" : "", 0,
                                       static_cast<uint32_t>(pick(100))});
      return s;
    }
    int n = pick(5);
    std::set<std::string> seen;
    for (int j = 0; j < n; ++j) {
      std::string a = "10.1." + std::to_string(i % 200) + "." + std::to_string(1 + pick(8));
      if (!seen.insert(a).second) continue;
      s.endpoints.push_back(Endpoint{ip(a), static_cast<uint16_t>(pick(2) ? 8000 : 0),
                                     static_cast<uint16_t>(pick(4)), static_cast<EndpointState>(pick(3))});
    }
    return s;
  }

  // Edits one service in one of the ways a cluster does.
  void edit(Service& s) {
    switch (pick(6)) {
      case 0:  // an endpoint more
        if (!s.split.empty()) break;
        s.endpoints.push_back(Endpoint{ip("10.2." + std::to_string(pick(200)) + "." + std::to_string(1 + pick(200))),
                                       0, 1, EndpointState::kActive});
        break;
      case 1:  // an endpoint less
        if (!s.endpoints.empty()) s.endpoints.erase(s.endpoints.begin() + pick(static_cast<int>(s.endpoints.size())));
        break;
      case 2:  // draining, weights
        for (auto& b : s.split) b.weight = static_cast<uint32_t>(pick(100));
        for (auto& e : s.endpoints)
          if (pick(2)) e.state = static_cast<EndpointState>(pick(3)), e.weight = static_cast<uint16_t>(pick(4));
        break;
      case 3: s.algorithm = kAlgorithms[pick(5)]; break;
      case 4: s.vips = {vip()}; break;  // a new VIP (perhaps a removed service's)
      default: s = randomService(std::stoi(s.name.substr(1))); break;
    }
  }

  // One round of churn: mostly a few services, now and then many.
  void churn() {
    int edits = pick(10) == 0 ? 40 : 1 + pick(3);
    for (int k = 0; k < edits; ++k) {
      int i = pick(kServices);
      if (!services_.count(i)) services_[i] = randomService(i);
      else if (pick(6) == 0) services_.erase(i);
      else edit(services_[i]);
    }
    dedupeFrontends();
  }

  Snapshot snapshot() const {
    Snapshot snap;
    for (auto& [_, s] : services_) snap.services.push_back(s);
    snap.services.sortByKey();
    resolveSplits(snap);  // as the agent does before it reconciles
    return snap;
  }

  int pick(int n) { return std::uniform_int_distribution<>(0, n - 1)(rng_); }

  static constexpr int kServices = 60;

 private:
  IpAddr vip() { return ip("10.96.0." + std::to_string(1 + pick(120))); }

  // Sources never hand out two services with one frontend: a later VIP that
  // collides is replaced by a free one.
  void dedupeFrontends() {
    std::set<IpAddr> used;
    for (auto& [_, s] : services_) {
      for (auto& v : s.vips) {
        if (used.count(v)) {
          for (int k = 1; k < 250; ++k)
            if (!used.count(ip("10.97.0." + std::to_string(k)))) {
              v = ip("10.97.0." + std::to_string(k));
              break;
            }
        }
        used.insert(v);
      }
      std::sort(s.vips.begin(), s.vips.end());
      s.vips.erase(std::unique(s.vips.begin(), s.vips.end()), s.vips.end());
    }
  }

  std::mt19937 rng_;
  std::map<int, Service> services_;
};

// An incremental reconciler and one that always plans in full, each over
// its own fake kernel, fed the same snapshots.
struct SideBySide {
  explicit SideBySide(MapLimits limits = {}) : inc(wi, limits), full(wf, limits, /*incremental=*/false) {
    wi.checkEachOp = true;
  }

  // One round of churn, applied to both.
  std::pair<Result<ReconcileReport>, Result<ReconcileReport>> step(World& world) {
    world.churn();
    Snapshot s = world.snapshot();
    wi.log.clear();
    wf.log.clear();
    auto ri = inc.reconcile(s);
    return {std::move(ri), full.reconcile(s)};
  }

  void expectSame(int round) {
    ASSERT_EQ(wi.log, wf.log) << "round " << round;
    ASSERT_TRUE(wi.violations.empty()) << "round " << round << ": " << wi.violations.front();
    ASSERT_EQ(wi.state, wf.state) << "round " << round;
    ASSERT_TRUE(inc.index() == full.index()) << "round " << round;
    ASSERT_EQ(inc.applied(), full.applied()) << "round " << round;
  }

  FakeMapWriter wi, wf;
  Reconciler inc, full;
};

TEST(ReconcilerIncremental, SameOpsStateAndIndexAsAFullPlanUnderRandomChurn) {
  for (uint32_t seed : {1u, 2u, 3u}) {
    World world(seed);
    SideBySide r;
    int incremental = 0, rounds = 400;
    for (int round = 0; round < rounds; ++round) {
      auto [ri, rf] = r.step(world);
      ASSERT_TRUE(ri.ok() && rf.ok()) << "round " << round;
      EXPECT_FALSE(rf->incremental);
      incremental += ri->incremental;
      ASSERT_NO_FATAL_FAILURE(r.expectSame(round)) << "seed " << seed;
    }
    // Most rounds change a few of ~50 services: those take the short path.
    EXPECT_GT(incremental, rounds / 2) << "seed " << seed;
  }
}

// The same with map limits so small that some rounds run out of ids: both
// refuse the same rounds with the same message and apply nothing.
TEST(ReconcilerIncremental, RunsOutOfIdsWhereAFullPlanDoes) {
  World world(7);
  MapLimits limits;
  limits.services = 40;
  limits.backends = 90;
  SideBySide r(limits);
  int refused = 0;
  for (int round = 0; round < 300; ++round) {
    auto [ri, rf] = r.step(world);
    ASSERT_EQ(ri.ok(), rf.ok()) << "round " << round;
    if (!ri.ok()) {
      ++refused;
      EXPECT_EQ(ri.error().message(), rf.error().message());
      EXPECT_TRUE(r.wi.log.empty());
    }
    ASSERT_NO_FATAL_FAILURE(r.expectSame(round));
  }
  EXPECT_GT(refused, 0);
}

// A failed incremental apply leaves the kernel between two states; the next
// run reads it back, plans every service and ends at the planned state.
TEST(ReconcilerIncremental, AFailedApplyIsRepairedByTheNextRun) {
  World world(11);
  FakeMapWriter w;
  w.checkEachOp = true;
  Reconciler r(w);
  for (int round = 0; round < 5; ++round) world.churn();
  ASSERT_TRUE(r.reconcile(world.snapshot()).ok());
  int reads = w.reads;
  Snapshot before = world.snapshot();
  Snapshot next;
  do {
    world.churn();
    next = world.snapshot();
  } while (next == before);
  w.log.clear();
  w.failAfter = 1;  // the change's second op fails
  auto failed = r.reconcile(next);
  if (failed.ok()) GTEST_SKIP() << "the change took one op";
  EXPECT_EQ(r.applied(), before);  // the last good state stays
  w.failAfter = -1;
  auto again = r.reconcile(next);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->incremental);
  EXPECT_EQ(w.reads, reads + 1);
  EXPECT_TRUE(w.violations.empty());
  EXPECT_EQ(w.state, makePlan(next, w.state).desired);
  EXPECT_EQ(r.applied(), next);
}

// A snapshot a source did not sort is still applied, by a full plan: one
// reversed (and a service changed), and one where two services the last
// snapshot also held are swapped (every pointer is shared, but the order is
// wrong, and the walk that skips shared runs still sees it).
TEST(ReconcilerIncremental, AnUnsortedSnapshotIsPlannedInFull) {
  for (bool swapTwo : {false, true}) {
    SCOPED_TRACE(swapTwo ? "two shared services swapped" : "reversed, one changed");
    World world(5);
    FakeMapWriter w;
    Reconciler r(w);
    for (int round = 0; round < 5; ++round) world.churn();
    Snapshot s = world.snapshot();
    ASSERT_TRUE(r.reconcile(s).ok());
    ASSERT_GE(s.services.size(), 6u);
    SharedServices reordered;
    for (size_t i = 0; i < s.services.size(); ++i)
      reordered.push_back(s.services.ptr(swapTwo ? (i == 3 ? 4 : i == 4 ? 3 : i) : s.services.size() - 1 - i));
    s.services = reordered;
    if (!swapTwo) s.services.mut(0).endpoints.clear();
    auto res = r.reconcile(s);
    ASSERT_TRUE(res.ok());
    EXPECT_FALSE(res->incremental);
    EXPECT_EQ(w.state, makePlan(s, w.state).desired);
  }
}

}  // namespace
}  // namespace aimesh
