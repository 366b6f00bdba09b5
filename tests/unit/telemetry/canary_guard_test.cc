// The canary guard's state machine on hand-made readings: when it trips,
// what weight a tripped and a probing canary get, how it recovers, and that
// it judges only the window's requests.
#include <gtest/gtest.h>

#include "telemetry/canary_guard.h"

namespace aimesh {
namespace {

using Clock = CanaryGuard::Clock;
using namespace std::chrono_literals;

// A backend service (its reading) that has served `n` more requests of `ms` each (on one
// endpoint, id `bid`), and `fails` failed connects of `attempts`.
struct Model {
  GuardReading r;
  void serve(int n, double ms, uint32_t bid = 1) {
    for (int i = 0; i < n; ++i) r[bid].ttft.record(static_cast<uint64_t>(ms * 1e6));
    r[bid].attempts += n;
  }
  void fail(int n, uint32_t bid = 1) {
    r[bid].attempts += n;
    r[bid].failures += n;
  }
};

struct GuardTest : ::testing::Test {
  CanaryGuard guard;
  Model v1, v2;
  Clock::time_point t0 = Clock::now(), now = t0;
  CanaryGuardSpec spec;  // p99 > 1.5 x, 200 samples, 60 s window, 60 s cooldown, 1 %

  std::vector<GuardTransition> tick(std::chrono::milliseconds dt = 1s) {
    now += dt;
    CanaryGuard::Split s{spec, "", {{"v1", 95}, {"v2", 5}}, {{"v1", v1.r}, {"v2", v2.r}}};
    return guard.update(now, {{"ml/llama", s}});
  }
  GuardStatus v2Status() { return guard.status("ml/llama", now).at("v2"); }
};

TEST_F(GuardTest, TripsACanaryThreeTimesSlowerAndZeroesItsWeight) {
  tick();
  v1.serve(300, 100);
  v2.serve(199, 300);
  EXPECT_TRUE(tick().empty()) << "199 canary requests: not judged yet";
  v2.serve(1, 300);
  auto t = tick();
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t[0].split, "ml/llama");
  EXPECT_EQ(t[0].backend, "v2");
  EXPECT_EQ(t[0].to, GuardState::kTripped);
  EXPECT_NE(t[0].reason.find("ttft_p99"), std::string::npos) << t[0].reason;
  EXPECT_NE(t[0].reason.find("1.5 x primary's"), std::string::npos) << t[0].reason;
  EXPECT_EQ(guard.weights(), (std::map<std::pair<std::string, std::string>, uint32_t>{{{"ml/llama", "v2"}, 0}}));
  GuardStatus s = v2Status();
  EXPECT_EQ(s.state, GuardState::kTripped);
  EXPECT_EQ(s.trips, 1u);
  EXPECT_NEAR(s.canaryMs / s.primaryMs, 3.0, 0.4);
}

TEST_F(GuardTest, ACanaryWithinTheBoundIsLeftAlone) {
  tick();
  v1.serve(1000, 100);
  v2.serve(1000, 140);
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(tick().empty());
  EXPECT_TRUE(guard.weights().empty());
  EXPECT_EQ(v2Status().state, GuardState::kOk);
}

TEST_F(GuardTest, ProbesAfterTheCooldownAndGivesTheWeightBackWhenHealthy) {
  tick();
  v1.serve(300, 100);
  v2.serve(300, 300);
  ASSERT_EQ(tick().size(), 1u);
  EXPECT_TRUE(tick(59s).empty()) << "cooldown not over";
  auto t = tick(1s);
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t[0].to, GuardState::kProbing);
  // 1 % of a split whose other backend weighs 95: weight 1 of 96.
  EXPECT_EQ(guard.weights().at({"ml/llama", "v2"}), 1u);
  // What it served before the probe does not count: 300 healthy requests now.
  v1.serve(300, 100);
  v2.serve(300, 110);
  t = tick();
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t[0].to, GuardState::kOk) << t[0].reason;
  EXPECT_TRUE(guard.weights().empty());
}

TEST_F(GuardTest, AProbeThatIsStillSlowTripsAgain) {
  tick();
  v1.serve(300, 100);
  v2.serve(300, 300);
  tick();
  tick(60s);
  ASSERT_EQ(v2Status().state, GuardState::kProbing);
  v1.serve(300, 100);
  v2.serve(250, 400);
  auto t = tick();
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t[0].from, GuardState::kProbing);
  EXPECT_EQ(t[0].to, GuardState::kTripped);
  EXPECT_EQ(v2Status().trips, 2u);
}

TEST_F(GuardTest, TripsOnFailedConnectsWhenAsked) {
  spec.maxFailureRate = 0.05;
  tick();
  v1.serve(300, 100);
  v2.serve(190, 100);
  v2.fail(10);
  EXPECT_TRUE(tick().empty()) << "5 % is not above 5 %";
  v2.fail(20);
  auto t = tick();
  ASSERT_EQ(t.size(), 1u);
  EXPECT_NE(t[0].reason.find("connects failed"), std::string::npos) << t[0].reason;
}

// Slow requests that slid out of the window are not held against it.
TEST_F(GuardTest, JudgesOnlyTheWindow) {
  spec.minSamples = 100;
  tick();
  v2.serve(100, 1000);  // slow, but with no primary samples to compare with
  v1.serve(50, 100);
  EXPECT_TRUE(tick().empty());
  for (int i = 0; i < 70; ++i) EXPECT_TRUE(tick().empty());  // 70 s later
  v1.serve(300, 100);
  v2.serve(300, 100);
  EXPECT_TRUE(tick().empty()) << "the slow 100 are out of the window";
  EXPECT_LT(v2Status().canaryMs, 150);
}

TEST(ProbeWeight, GivesThePercentOfTheSplit) {
  EXPECT_EQ(probeWeight(1, 95), 1u);
  EXPECT_EQ(probeWeight(10, 900), 100u);
  EXPECT_EQ(probeWeight(50, 7), 7u);
  EXPECT_EQ(probeWeight(1, 0), 1u);
}

TEST(ApplyGuardWeights, SetsTheWeightsAndLeavesOtherSplitsShared) {
  Snapshot snap;
  Service a;
  a.name = "a";
  a.split = {SplitBackend{"v1"}, SplitBackend{"v2"}};
  Service b = a;
  b.name = "b";
  snap.services.push_back(a);
  snap.services.push_back(b);
  SharedServices::Ptr before = snap.services.ptr(1);
  EXPECT_TRUE(applyGuardWeights(snap, {{{"default/a", "default/v2"}, 0}}));
  EXPECT_EQ(snap.services[0].split[1].effectiveWeight(), 0u);
  EXPECT_EQ(snap.services[0].split[0].effectiveWeight(), 1u);
  EXPECT_EQ(snap.services.ptr(1), before);
  applyGuardWeights(snap, {});
  EXPECT_FALSE(snap.services[0].split[1].guardWeight);
  Snapshot plain;
  plain.services.push_back(Service{});
  EXPECT_FALSE(applyGuardWeights(plain, {})) << "no split";
}

}  // namespace
}  // namespace aimesh
