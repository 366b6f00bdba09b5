// Splits from names to kernel ids: resolveSplits() fills each backend's VIP
// and ports from the snapshot, makePlan() turns them into the service ids of
// the split's port, and diff() writes a split after the services it names.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <algorithm>

#include "fixtures/fake_map_writer.h"
#include "reconcile/plan.h"
#include "reconcile/reconciler.h"
#include "reconcile/split_resolver.h"

namespace aimesh {
namespace {

IpAddr ip(const std::string& s) { return *IpAddr::parse(s); }

Service plain(const std::string& name, const std::string& vip, std::vector<PortSpec> ports = {{8000, Protocol::kTcp}}) {
  Service s;
  s.name = name;
  s.vips = {ip(vip)};
  s.ports = std::move(ports);
  s.endpoints = {Endpoint{ip("10.77.0.1"), 0, 1, EndpointState::kActive}};
  return s;
}

Service split(const std::string& name, const std::string& vip, std::vector<SplitBackend> backends) {
  Service s;
  s.name = name;
  s.vips = {ip(vip)};
  s.ports = {{8000, Protocol::kTcp}};
  s.split = std::move(backends);
  return s;
}

Snapshot snapshotOf(std::vector<Service> services) {
  Snapshot snap;
  for (auto& s : services) snap.services.push_back(std::move(s));
  snap.services.sortByKey();
  return snap;
}

uint32_t idOf(const IdIndex& index, const std::string& name) {
  for (auto& [sid, info] : index.services)
    if (info.name == name) return sid;
  ADD_FAILURE() << "no id for " << name;
  return 0;
}

TEST(ResolveSplits, FillsAddressesAndReportsWhatIsLeftOut) {
  Snapshot snap = snapshotOf({plain("v1", "10.96.0.1"), plain("v2", "10.96.0.2"),
                              split("inner", "10.96.0.3", {{"v1", "", 0, 1}}),
                              split("llama", "10.96.0.9", {{"v1", "", 0, 9}, {"v2", "", 0, 1}, {"v3", "", 0, 1},
                                                           {"inner", "", 0, 1}, {"v1", "other", 0, 1}})});
  auto missing = resolveSplits(snap);
  const Service* llama = snap.services.find("default", "llama", true);
  ASSERT_NE(llama, nullptr);
  EXPECT_EQ(llama->split[0].vip, ip("10.96.0.1"));
  EXPECT_EQ(llama->split[1].vip, ip("10.96.0.2"));
  EXPECT_EQ(llama->split[1].ports, (std::vector<PortSpec>{{8000, Protocol::kTcp}}));
  EXPECT_FALSE(llama->split[2].vip);
  EXPECT_FALSE(llama->split[3].vip);
  EXPECT_FALSE(llama->split[4].vip);
  ASSERT_EQ(missing.size(), 3u);
  EXPECT_EQ(missing[0].backend, "default/v3");
  EXPECT_EQ(missing[0].reason, "no such service");
  EXPECT_EQ(missing[1].backend, "default/inner");
  EXPECT_NE(missing[1].reason.find("split itself"), std::string::npos);
  EXPECT_EQ(missing[2].backend, "other/v1");

  // Resolved again with nothing changed, the split is still the same object.
  Snapshot again = snap;
  resolveSplits(again);
  EXPECT_EQ(again.services.find("default", "llama", true), llama);
}

// The kernel's split names the same port of each backend service, by id, in
// order, with its weight; an unresolved or weight-0 backend is left out of
// the kernel but kept in the index.
TEST(PlanSplit, NamesTheBackendServicesPortsByIdWithTheirWeights) {
  Snapshot snap = snapshotOf(
      {plain("v1", "10.96.0.1", {{8000, Protocol::kTcp}, {9000, Protocol::kTcp}}), plain("v2", "10.96.0.2"),
       split("llama", "10.96.0.9", {{"v1", "", 0, 90}, {"v2", "", 0, 10}, {"v2", "", 0, 0}, {"v9", "", 0, 5}})});
  resolveSplits(snap);
  Plan plan = makePlan(snap, KernelState{});
  uint32_t llama = idOf(plan.index, "llama"), v2 = idOf(plan.index, "v2");
  uint32_t v1 = plan.desired.frontends.at(FrontendKey{ip("10.96.0.1"), 8000, Protocol::kTcp});
  EXPECT_TRUE(plan.desired.services.at(llama).split);
  EXPECT_EQ(plan.desired.services.at(llama).slotCount, 0u);
  EXPECT_EQ(plan.desired.splits.at(llama).targets, (std::vector<std::pair<uint32_t, uint32_t>>{{v1, 90}, {v2, 10}}));
  const auto& info = plan.index.services.at(llama).split;
  ASSERT_EQ(info.size(), 4u);
  EXPECT_EQ(info[0].service, "default/v1");
  EXPECT_EQ(info[0].serviceId, v1);
  EXPECT_EQ(info[2].weight, 0u);
  EXPECT_EQ(info[3].serviceId, 0u) << "v9 does not exist";
  EXPECT_TRUE(plan.index.services.at(llama).backendIds.empty());
}

// A weight change rewrites the split's record only, in one update; removing
// a backend service drops it from the split before the service goes.
TEST(PlanSplit, AWeightChangeIsOneUpdateAndARemovedBackendLeavesTheSplitFirst) {
  testing::FakeMapWriter w;
  w.checkEachOp = true;
  Reconciler r(w);
  auto apply = [&](std::vector<Service> services) {
    Snapshot snap = snapshotOf(std::move(services));
    resolveSplits(snap);
    w.log.clear();
    auto rep = r.reconcile(snap);
    ASSERT_TRUE(rep.ok()) << rep.error().message();
  };
  apply({plain("v1", "10.96.0.1"), plain("v2", "10.96.0.2"), split("llama", "10.96.0.9", {{"v1", "", 0, 90}, {"v2", "", 0, 10}})});
  uint32_t llama = idOf(r.index(), "llama"), v1 = idOf(r.index(), "v1"), v2 = idOf(r.index(), "v2");
  apply({plain("v1", "10.96.0.1"), plain("v2", "10.96.0.2"), split("llama", "10.96.0.9", {{"v1", "", 0, 50}, {"v2", "", 0, 50}})});
  EXPECT_EQ(w.log, (std::vector<std::string>{fmt::format("upsert-split {} -> {}:50 {}:50", llama, v1, v2)}));
  apply({plain("v1", "10.96.0.1"), split("llama", "10.96.0.9", {{"v1", "", 0, 50}, {"v2", "", 0, 50}})});
  ASSERT_GE(w.log.size(), 2u);
  EXPECT_EQ(w.log.front(), fmt::format("upsert-split {} -> {}:50", llama, v1));
  EXPECT_NE(std::find(w.log.begin(), w.log.end(), fmt::format("delete-service {}", v2)), w.log.end());
  EXPECT_TRUE(w.violations.empty()) << w.violations.front();
}

}  // namespace
}  // namespace aimesh
