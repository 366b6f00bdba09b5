#include "reconcile/diff.h"

#include <gtest/gtest.h>

#include <random>

#include "fixtures/fake_map_writer.h"
#include "reconcile/plan.h"
#include "reconcile/reconciler.h"

namespace aimesh {
namespace {

using testing::FakeMapWriter;

IpAddr ip(const std::string& s) { return *IpAddr::parse(s); }

Service svc(const std::string& name, const std::string& vip, std::vector<Endpoint> eps) {
  Service s;
  s.name = name;
  s.vips = {ip(vip)};
  s.ports = {PortSpec{8000, Protocol::kTcp}};
  s.endpoints = std::move(eps);
  return s;
}

Endpoint ep(const std::string& addr, uint16_t w = 1, EndpointState st = EndpointState::kActive) {
  return Endpoint{ip(addr), 8000, w, st};
}

std::vector<std::string> describeAll(const std::vector<MapOp>& ops) {
  std::vector<std::string> out;
  for (auto& op : ops) out.push_back(describe(op));
  return out;
}

TEST(Diff, NewServiceGolden) {
  Snapshot s{{svc("a", "10.96.0.1", {ep("10.0.0.1"), ep("10.0.0.2", 2)})}};
  Plan p = makePlan(s, {});
  auto ops = describeAll(diff({}, p.desired, p.newServiceIds, p.newBackendIds));
  std::vector<std::string> golden = {
      "reset-service-stats 1",
      "reset-backend-stats 1",
      "reset-backend-stats 2",
      "upsert-backend 1 svc=1 10.0.0.1:8000 active w=1",
      "upsert-backend 2 svc=1 10.0.0.2:8000 active w=2",
      "upsert-slot 1/0 -> 1",
      "upsert-slot 1/1 -> 2",
      "upsert-slot 1/2 -> 2",
      "upsert-service 1 slots=3 backends=2 gen=0 alg=random",
      "upsert-frontend 10.96.0.1:8000/TCP -> 1",
  };
  EXPECT_EQ(ops, golden);
}

TEST(Diff, RemoveServiceGolden) {
  Snapshot s{{svc("a", "10.96.0.1", {ep("10.0.0.1")})}};
  Plan p = makePlan(s, {});
  auto ops = describeAll(diff(p.desired, KernelState{}));
  std::vector<std::string> golden = {
      "delete-frontend 10.96.0.1:8000/TCP",
      "delete-service 1",
      "delete-slot 1/0",
      "delete-backend 1",
  };
  EXPECT_EQ(ops, golden);
}

TEST(Diff, DrainGolden) {
  Snapshot s1{{svc("a", "10.96.0.1", {ep("10.0.0.1"), ep("10.0.0.2")})}};
  Plan p1 = makePlan(s1, {});
  Snapshot s2{{svc("a", "10.96.0.1", {ep("10.0.0.1"), ep("10.0.0.2", 1, EndpointState::kDraining)})}};
  Plan p2 = makePlan(s2, p1.desired);
  auto ops = describeAll(diff(p1.desired, p2.desired, p2.newServiceIds, p2.newBackendIds));
  // The backend is marked draining only after the service flipped to slots
  // without it (the churn e2e test under ASan saw ECONNREFUSED in between).
  std::vector<std::string> golden = {
      "upsert-slot 1/1024 -> 1",
      "upsert-service 1 slots=1 backends=1 gen=1 alg=random",
      "upsert-backend 2 svc=1 10.0.0.2:8000 draining w=1",
  };
  EXPECT_EQ(ops, golden);
}

TEST(Diff, IsDeterministicAndIdempotent) {
  Snapshot s{{svc("a", "10.96.0.1", {ep("10.0.0.1")}), svc("b", "fd00::2", {ep("fd01::1"), ep("fd01::2")})}};
  Plan p = makePlan(s, {});
  EXPECT_EQ(describeAll(diff({}, p.desired)), describeAll(diff({}, p.desired)));
  EXPECT_TRUE(diff(p.desired, p.desired).empty());
}

TEST(Reconciler, SecondRunIsANoOp) {
  FakeMapWriter w;
  Reconciler r(w);
  IdIndex idx;
  Snapshot s{{svc("a", "10.96.0.1", {ep("10.0.0.1"), ep("10.0.0.2")})}};
  auto first = r.reconcile(s, idx);
  ASSERT_TRUE(first.ok());
  EXPECT_GT(first->ops, 0u);
  auto second = r.reconcile(s, idx);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->ops, 0u);
  EXPECT_EQ(idx.services.size(), 1u);
}

// The state a run applied is known: the next run diffs against it without
// reading every map back; Verify::kRead (the agent's resync) reads the
// kernel and repairs what changed behind the agent's back.
TEST(Reconciler, KnownStateIsNotReadBackUntilAskedToVerify) {
  FakeMapWriter w;
  Reconciler r(w);
  IdIndex idx;
  Snapshot s{{svc("a", "10.96.0.1", {ep("10.0.0.1"), ep("10.0.0.2")})}};
  ASSERT_TRUE(r.reconcile(s, idx).ok());
  EXPECT_EQ(w.reads, 1);
  w.state.backends.begin()->second.weight = 9;  // drift: someone rewrote a backend
  auto known = r.reconcile(s, idx);
  ASSERT_TRUE(known.ok());
  EXPECT_EQ(known->ops, 0u);
  EXPECT_EQ(w.reads, 1);
  auto verified = r.reconcile(s, idx, Reconciler::Verify::kRead);
  ASSERT_TRUE(verified.ok());
  EXPECT_EQ(verified->ops, 1u);
  EXPECT_EQ(w.reads, 2);
  EXPECT_EQ(w.state, makePlan(s, w.state).desired);
  // A change after a run is diffed against the known state: only its ops.
  s.services.mut(0).endpoints.push_back(ep("10.0.0.3"));
  auto change = r.reconcile(s, idx);
  ASSERT_TRUE(change.ok());
  EXPECT_EQ(w.reads, 2);
  EXPECT_EQ(w.state, makePlan(s, w.state).desired);
}

TEST(Reconciler, FailedOpIsReportedAndNextRunConverges) {
  FakeMapWriter w;
  Reconciler r(w);
  IdIndex idx;
  Snapshot s{{svc("a", "10.96.0.1", {ep("10.0.0.1"), ep("10.0.0.2")})}};
  w.failAfter = 3;
  auto res = r.reconcile(s, idx);
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.error().code, ENOSPC);
  EXPECT_NE(res.error().context.find("upsert-backend"), std::string::npos);
  EXPECT_EQ(FakeMapWriter::checkInvariants(w.state), "");
  w.failAfter = -1;
  int reads = w.reads;
  ASSERT_TRUE(r.reconcile(s, idx).ok());
  EXPECT_EQ(w.reads, reads + 1) << "after a failed run the kernel is read back, not assumed";
  EXPECT_EQ(w.state, makePlan(s, w.state).desired);
}

// Random sequences of snapshots: after every single map operation the kernel
// state must satisfy the invariants (no service visible with a missing slot
// or backend), and each run must end exactly at the planned state.
TEST(Reconciler, InvariantsHoldAfterEveryOpUnderRandomChurn) {
  std::mt19937 rng(42);
  FakeMapWriter w;
  w.checkEachOp = true;
  Reconciler r(w);
  IdIndex idx;
  for (int round = 0; round < 300; ++round) {
    Snapshot s;
    int nsvc = std::uniform_int_distribution<>(0, 4)(rng);
    for (int i = 0; i < nsvc; ++i) {
      std::vector<Endpoint> eps;
      int nep = std::uniform_int_distribution<>(0, 5)(rng);
      for (int j = 0; j < nep; ++j) {
        auto st = static_cast<EndpointState>(std::uniform_int_distribution<>(0, 2)(rng));
        eps.push_back(ep("10.0." + std::to_string(i) + "." + std::to_string(1 + rng() % 8),
                         static_cast<uint16_t>(rng() % 4), st));
      }
      std::sort(eps.begin(), eps.end());
      eps.erase(std::unique(eps.begin(), eps.end(),
                            [](auto& a, auto& b) { return a.address == b.address; }),
                eps.end());
      // Service i sometimes moves to another VIP.
      s.services.push_back(svc("s" + std::to_string(i), "10.96.0." + std::to_string(1 + i + (rng() % 2) * 10), eps));
    }
    ASSERT_TRUE(r.reconcile(s, idx).ok()) << round;
    ASSERT_TRUE(w.violations.empty()) << round << ": " << w.violations.front();
    EXPECT_EQ(w.state, makePlan(s, w.state).desired);
    EXPECT_EQ(idx.services.size(), s.services.size());
  }
}

}  // namespace
}  // namespace aimesh
