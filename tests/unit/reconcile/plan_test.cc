#include "reconcile/plan.h"
#include "reconcile/diff.h"

#include <gtest/gtest.h>

#include <map>

namespace aimesh {
namespace {

IpAddr ip(const char* s) { return *IpAddr::parse(s); }

Service svc(std::string name, const char* vip, uint16_t port, std::vector<Endpoint> eps) {
  Service s;
  s.name = std::move(name);
  s.nameSpace = "ml";
  s.vips = {ip(vip)};
  s.ports = {PortSpec{port, Protocol::kTcp}};
  s.endpoints = std::move(eps);
  return s;
}

Endpoint ep(const char* addr, uint16_t weight = 1, EndpointState st = EndpointState::kActive) {
  return Endpoint{ip(addr), 8000, weight, st};
}

std::map<uint32_t, int> countSlots(const std::vector<uint32_t>& slots) {
  std::map<uint32_t, int> c;
  for (auto id : slots) c[id]++;
  return c;
}

TEST(ExpandSlots, ReducesByGcd) {
  auto s = expandSlots({{1, 2}, {2, 4}}, 1024);
  EXPECT_EQ(s, (std::vector<uint32_t>{1, 2, 2}));
}

TEST(ExpandSlots, ZeroWeightGetsNoSlot) {
  EXPECT_EQ(expandSlots({{1, 0}, {2, 3}}, 1024), (std::vector<uint32_t>{2}));
  EXPECT_TRUE(expandSlots({{1, 0}}, 1024).empty());
  EXPECT_TRUE(expandSlots({}, 1024).empty());
}

TEST(ExpandSlots, ScalesDownProportionallyKeepingOneEach) {
  auto s = expandSlots({{1, 1000}, {2, 3000}, {3, 1}}, 100);
  ASSERT_LE(s.size(), 100u);
  auto c = countSlots(s);
  EXPECT_EQ(c[3], 1);
  EXPECT_NEAR(static_cast<double>(c[2]) / c[1], 3.0, 0.15);
}

TEST(ExpandSlots, MoreBackendsThanSlots) {
  std::vector<std::pair<uint32_t, uint16_t>> w;
  for (uint32_t i = 1; i <= 10; ++i) w.emplace_back(i, 1);
  EXPECT_EQ(expandSlots(w, 4).size(), 4u);
}

TEST(MakePlan, AssignsDenseIdsFromOne) {
  Snapshot snap{{svc("a", "10.96.0.1", 80, {ep("10.0.0.1"), ep("10.0.0.2", 2)})}};
  Plan p = makePlan(snap, {});
  ASSERT_EQ(p.desired.services.size(), 1u);
  EXPECT_EQ(p.desired.services.begin()->first, 1u);
  EXPECT_EQ(p.desired.backends.size(), 2u);
  EXPECT_EQ(p.newServiceIds, (std::vector<uint32_t>{1}));
  EXPECT_EQ(p.newBackendIds, (std::vector<uint32_t>{1, 2}));
  const ServiceRecord& r = p.desired.services.at(1);
  EXPECT_EQ(r.slotCount, 3u);
  EXPECT_EQ(r.backendCount, 2u);
  EXPECT_EQ(p.desired.frontends.at(FrontendKey{ip("10.96.0.1"), 80, Protocol::kTcp}), 1u);
  EXPECT_EQ(p.index.services.at(1).name, "a");
  EXPECT_EQ(p.index.backends.at(2).endpoint.weight, 2);
}

TEST(MakePlan, IdsStableAcrossChanges) {
  Snapshot s1{{svc("a", "10.96.0.1", 80, {ep("10.0.0.1"), ep("10.0.0.2")}),
               svc("b", "10.96.0.2", 80, {ep("10.0.0.3")})}};
  Plan p1 = makePlan(s1, {});
  // Remove service a's first endpoint and add one to b: untouched objects keep ids.
  Snapshot s2{{svc("a", "10.96.0.1", 80, {ep("10.0.0.2")}),
               svc("b", "10.96.0.2", 80, {ep("10.0.0.3"), ep("10.0.0.4")})}};
  Plan p2 = makePlan(s2, p1.desired);
  EXPECT_EQ(p2.desired.frontends, p1.desired.frontends);
  auto idOf = [](const Plan& p, const char* addr) {
    for (auto& [id, be] : p.desired.backends)
      if (be.addr == ip(addr)) return id;
    return 0u;
  };
  EXPECT_EQ(idOf(p2, "10.0.0.2"), idOf(p1, "10.0.0.2"));
  EXPECT_EQ(idOf(p2, "10.0.0.3"), idOf(p1, "10.0.0.3"));
  // The new backend does not reuse the removed backend's id (its counters).
  EXPECT_NE(idOf(p2, "10.0.0.4"), idOf(p1, "10.0.0.1"));
  EXPECT_EQ(p2.newBackendIds, (std::vector<uint32_t>{idOf(p2, "10.0.0.4")}));
  EXPECT_TRUE(p2.newServiceIds.empty());
}

// A full plan knows the free ids of the state it makes; a partial plan
// given them hands out the same ids as one that walks every id from 1, and
// knows the free ids after it.
TEST(MakePlan, FreeIdsAreKeptAndHandOutTheSameIdsAsAWalk) {
  Service a = svc("a", "10.96.0.1", 80, {ep("10.0.0.1"), ep("10.0.0.2")});
  Service b = svc("b", "10.96.0.2", 80, {ep("10.0.0.3"), ep("10.0.0.4")});
  Plan p1 = makePlan(Snapshot{{a, b}}, {});
  ASSERT_TRUE(p1.nextFree);
  EXPECT_EQ(*p1.nextFree, (StateFreeIds{{{}, 3}, {{}, 5}}));
  auto owned = [](const KernelState& whole, uint32_t sid) {
    KernelState part;
    part.services.emplace(sid, whole.services.at(sid));
    for (auto& [fk, id] : whole.frontends)
      if (id == sid) part.frontends.emplace(fk, id);
    for (auto& [k, v] : whole.slots)
      if (k.serviceId == sid) part.slots.emplace(k, v);
    for (auto& [id, be] : whole.backends)
      if (be.serviceId == sid) part.backends.emplace(id, be);
    return part;
  };
  // a loses 10.0.0.1 (backend 1), which is free after the plan.
  Service a2 = svc("a", "10.96.0.1", 80, {ep("10.0.0.2")});
  Plan p2 = makePartialPlan({&a2}, owned(p1.desired, 1), p1.desired, {}, &*p1.nextFree);
  ASSERT_TRUE(p2.nextFree);
  EXPECT_EQ(*p2.nextFree, (StateFreeIds{{{}, 3}, {{1}, 5}}));
  KernelState whole = p1.desired;
  whole.backends.erase(1);
  for (auto& [k, v] : p2.desired.slots) whole.slots[k] = v;
  whole.services[1] = p2.desired.services.at(1);
  // b gains two endpoints and loses 10.0.0.3 (backend 3): ids 1 and 5; 3 is
  // still in the state during the plan, so it is not handed out.
  Service b2 = svc("b", "10.96.0.2", 80, {ep("10.0.0.4"), ep("10.0.0.5"), ep("10.0.0.6")});
  Plan known = makePartialPlan({&b2}, owned(whole, 2), whole, {}, &*p2.nextFree);
  Plan walked = makePartialPlan({&b2}, owned(whole, 2), whole, {});
  EXPECT_EQ(known.newBackendIds, (std::vector<uint32_t>{1, 5}));
  EXPECT_EQ(known.desired, walked.desired);
  EXPECT_EQ(known.newBackendIds, walked.newBackendIds);
  ASSERT_TRUE(known.nextFree);
  EXPECT_EQ(*known.nextFree, (StateFreeIds{{{}, 3}, {{3}, 6}}));
  EXPECT_FALSE(walked.nextFree) << "a partial plan without the free ids does not know them after it";
}

TEST(MakePlan, DrainingAndZeroWeightGetNoSlots) {
  Snapshot s{{svc("a", "10.96.0.1", 80,
                  {ep("10.0.0.1"), ep("10.0.0.2", 1, EndpointState::kDraining), ep("10.0.0.3", 0)})}};
  Plan p = makePlan(s, {});
  EXPECT_EQ(p.desired.backends.size(), 3u);  // drained backends stay known
  EXPECT_EQ(p.desired.services.at(1).slotCount, 1u);
  EXPECT_EQ(p.desired.slots.at(SlotKey{1, 0}), 1u);
}

// The service record carries the telemetry sample as the kernel's skip
// threshold, forced to "every connection" where the lifecycle needs it.
TEST(MakePlan, TelemetrySampleBecomesTheRecordsSkip) {
  Service a = svc("a", "10.96.0.1", 80, {ep("10.0.0.1")});
  a.telemetrySample = 0.5;
  Service b = svc("b", "10.96.0.2", 80, {ep("10.0.0.2")});
  b.telemetrySample = 0.5;
  b.algorithm = Algorithm::kLeastConn;  // re-balances: every connection followed
  Plan p = makePlan(Snapshot{{a, b}}, {});
  EXPECT_EQ(p.desired.services.at(1).sampleSkip, 32768u);
  EXPECT_EQ(p.desired.services.at(2).sampleSkip, 0u);
}

// failure_mode: fail_close reaches every port's record (and the
// upsert's description); a split has no picks of its own, so never the flag.
TEST(MakePlan, FailCloseReachesTheRecord) {
  Service a = svc("a", "10.96.0.1", 80, {ep("10.0.0.1")});
  a.failClose = true;
  a.ports.push_back(PortSpec{81, Protocol::kTcp});
  Service b = svc("b", "10.96.0.2", 80, {ep("10.0.0.2")});
  Service split = svc("c", "10.96.0.3", 80, {});
  split.failClose = true;
  split.split = {SplitBackend{"a"}};
  Plan p = makePlan(Snapshot{{a, b, split}}, {});
  ASSERT_EQ(p.desired.services.size(), 4u);
  EXPECT_TRUE(p.desired.services.at(1).failClose);
  EXPECT_TRUE(p.desired.services.at(2).failClose);
  EXPECT_FALSE(p.desired.services.at(3).failClose);
  EXPECT_TRUE(p.desired.services.at(4).split);
  EXPECT_FALSE(p.desired.services.at(4).failClose);
  EXPECT_EQ(describe(MapOp{UpsertService{1, p.desired.services.at(1)}}),
            "upsert-service 1 slots=1 backends=1 gen=0 alg=random fail-close");
}

TEST(MakePlan, NoEndpointsMeansZeroSlots) {
  Plan p = makePlan(Snapshot{{svc("a", "10.96.0.1", 80, {})}}, {});
  EXPECT_EQ(p.desired.services.at(1).slotCount, 0u);
  EXPECT_EQ(p.desired.frontends.size(), 1u);
}

TEST(MakePlan, SlotChangeFlipsGenerationAndKeepsOldOne) {
  Snapshot s1{{svc("a", "10.96.0.1", 80, {ep("10.0.0.1"), ep("10.0.0.2")})}};
  Plan p1 = makePlan(s1, {});
  EXPECT_EQ(p1.desired.services.at(1).slotGen, 0);
  Snapshot s2{{svc("a", "10.96.0.1", 80, {ep("10.0.0.1"), ep("10.0.0.2", 3)})}};
  Plan p2 = makePlan(s2, p1.desired);
  EXPECT_EQ(p2.desired.services.at(1).slotGen, 1);
  EXPECT_EQ(p2.desired.services.at(1).slotCount, 4u);
  // generation 0 is still there for readers holding the old record
  EXPECT_TRUE(p2.desired.slots.count(SlotKey{1, 0}));
  EXPECT_TRUE(p2.desired.slots.count(SlotKey{1, AIMESH_MAX_SLOTS_PER_SVC + 3}));
  // Same state again: nothing flips.
  Plan p3 = makePlan(s2, p2.desired);
  EXPECT_EQ(p3.desired, p2.desired);
}

TEST(MakePlan, MultiplePortsAndVipsShareEndpoints) {
  Service s = svc("a", "10.96.0.1", 80, {ep("10.0.0.1")});
  s.vips.push_back(ip("fd00::1"));
  s.ports.push_back(PortSpec{81, Protocol::kUdp});
  s.endpoints[0].port = 0;  // same as frontend port
  Plan p = makePlan(Snapshot{{s}}, {});
  EXPECT_EQ(p.desired.services.size(), 2u);
  EXPECT_EQ(p.desired.frontends.size(), 4u);
  ASSERT_EQ(p.desired.backends.size(), 2u);
  EXPECT_EQ(p.desired.backends.at(1).port, 80);
  EXPECT_EQ(p.desired.backends.at(2).port, 81);
}

}  // namespace
}  // namespace aimesh
