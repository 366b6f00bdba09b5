// agent/lifecycle/rebalance.h: how many idle connections to close per
// endpoint so pooled clients move toward each endpoint's share.
#include "lifecycle/rebalance.h"

#include <gtest/gtest.h>

namespace aimesh {
namespace {

using Budgets = std::map<uint32_t, uint32_t>;

EndpointLoad ep(uint32_t id, int64_t open, int64_t idle, uint16_t weight = 1, uint64_t ewmaNs = 0, bool usable = true) {
  return EndpointLoad{id, weight, usable, open, idle, ewmaNs};
}

TEST(Rebalance, ScaleOutMovesTheExcessOfTheOldReplicas) {
  // 8 pooled connections on two replicas, two more join: 2 each is fair.
  auto b = rebalanceBudgets(Algorithm::kLeastConn, {ep(1, 4, 4), ep(2, 4, 4), ep(3, 0, 0), ep(4, 0, 0)}, 100);
  EXPECT_EQ(b, (Budgets{{1, 2}, {2, 2}}));
}

TEST(Rebalance, TheBudgetCapsTheTotalLargestExcessFirst) {
  auto b = rebalanceBudgets(Algorithm::kLeastConn, {ep(1, 8, 8), ep(2, 2, 2)}, 3);
  EXPECT_EQ(b, (Budgets{{1, 3}}));
  b = rebalanceBudgets(Algorithm::kLeastConn, {ep(1, 6, 6), ep(2, 5, 5), ep(3, 0, 0), ep(4, 1, 1)}, 3);
  EXPECT_EQ(b, (Budgets{{1, 2}, {2, 1}}));
  EXPECT_TRUE(rebalanceBudgets(Algorithm::kLeastConn, {ep(1, 8, 8), ep(2, 0, 0)}, 0).empty());
}

TEST(Rebalance, OnlyIdleConnectionsCount) {
  auto b = rebalanceBudgets(Algorithm::kLeastConn, {ep(1, 8, 1), ep(2, 0, 0)}, 100);
  EXPECT_EQ(b, (Budgets{{1, 1}}));
}

TEST(Rebalance, WithinRoundingOfTheShareNothingMoves) {
  EXPECT_TRUE(rebalanceBudgets(Algorithm::kLeastConn, {ep(1, 5, 5), ep(2, 4, 4)}, 100).empty());
  EXPECT_TRUE(rebalanceBudgets(Algorithm::kLeastConn, {ep(1, 2, 2), ep(2, 1, 1)}, 100).empty());
  EXPECT_EQ(rebalanceBudgets(Algorithm::kLeastConn, {ep(1, 3, 3), ep(2, 0, 0)}, 100), (Budgets{{1, 1}}));
}

// Every replica at or under ceil(share) is not enough: 2, 2, 2, 0 over four
// equal replicas leaves one with nothing. One connection is taken from a
// replica above its floor for each one missing below a floor.
TEST(Rebalance, AReplicaBelowItsFloorGetsAConnectionFromOneAboveIt) {
  auto b = rebalanceBudgets(Algorithm::kLeastConn, {ep(1, 2, 2), ep(2, 2, 2), ep(3, 2, 2), ep(4, 0, 0)}, 100);
  EXPECT_EQ(b.size(), 1u);
  EXPECT_EQ(b.begin()->second, 1u);
  EXPECT_FALSE(b.count(4));
  // Two missing, two donors (the fullest first: 3 holds 3 of share 2.25).
  b = rebalanceBudgets(Algorithm::kLeastConn, {ep(1, 3, 3), ep(2, 3, 3), ep(3, 3, 3), ep(4, 0, 0)}, 100);
  EXPECT_EQ(b, (Budgets{{1, 1}, {2, 1}}));
  // A donor with no idle connection gives nothing; busy ones are left alone.
  b = rebalanceBudgets(Algorithm::kLeastConn, {ep(1, 2, 0), ep(2, 2, 0), ep(3, 2, 0), ep(4, 0, 0)}, 100);
  EXPECT_TRUE(b.empty());
  // Connections already moving from an over-share endpoint fill the gap.
  b = rebalanceBudgets(Algorithm::kLeastConn, {ep(1, 3, 3), ep(2, 2, 2), ep(3, 1, 1), ep(4, 0, 0)}, 100);
  EXPECT_EQ(b, (Budgets{{1, 1}}));
  // Balanced within rounding: 2, 2, 1, 1.
  EXPECT_TRUE(rebalanceBudgets(Algorithm::kLeastConn, {ep(1, 2, 2), ep(2, 2, 2), ep(3, 1, 1), ep(4, 1, 1)}, 100).empty());
}

TEST(Rebalance, SharesFollowWeights) {
  // Weights 3:1, 8 connections: 6 and 2.
  EXPECT_EQ(rebalanceBudgets(Algorithm::kLeastConn, {ep(1, 4, 4, 3), ep(2, 4, 4, 1)}, 100), (Budgets{{2, 2}}));
  EXPECT_TRUE(rebalanceBudgets(Algorithm::kLeastConn, {ep(1, 6, 6, 3), ep(2, 2, 2, 1)}, 100).empty());
}

// An endpoint carrying more than its share of the requests in flight has its
// connection target scaled down; one carrying less is never trimmed, even
// if it holds more connections than its share.
TEST(Rebalance, RequestsInFlightShapeTheTarget) {
  // 8 open, 5 busy: shares 4 open and 2.5 busy each. 1 busy 4 of its 6:
  // target 4 x 2.5/4 = 2.5 -> 3, excess 3, 2 idle to close.
  auto b = rebalanceBudgets(Algorithm::kLeastConn, {ep(1, 6, 2), ep(2, 2, 1)}, 100);
  EXPECT_EQ(b, (Budgets{{1, 2}}));
  // 1 holds 6 of 8 connections but only 1 of the 5 busy: left alone.
  EXPECT_TRUE(rebalanceBudgets(Algorithm::kLeastConn, {ep(1, 6, 5), ep(2, 2, 0)}, 100).empty());
}

TEST(Rebalance, LatencyGivesASlowerReplicaFewerConnections) {
  // 4x slower: capacity 1 vs 4; 8 idle connections, 4 each: the slow one
  // should keep ceil(8/5) = 2.
  auto b = rebalanceBudgets(Algorithm::kLatency, {ep(1, 4, 4, 1, 100'000'000), ep(2, 4, 4, 1, 400'000'000)}, 100);
  EXPECT_EQ(b, (Budgets{{2, 2}}));
  // Without samples yet: weights only.
  EXPECT_TRUE(rebalanceBudgets(Algorithm::kLatency, {ep(1, 4, 4), ep(2, 4, 4)}, 100).empty());
  // A replica with no sample counts as the median of those with one.
  b = rebalanceBudgets(Algorithm::kLatency, {ep(1, 6, 6, 1, 100'000'000), ep(2, 0, 0, 1, 0)}, 100);
  EXPECT_EQ(b, (Budgets{{1, 3}}));
}

TEST(Rebalance, UnusableEndpointsAreLeftToTheirOwnRules) {
  // Draining, ejected or weight 0: not part of the shares (the iterators
  // close their idle connections by their own rules).
  auto b = rebalanceBudgets(Algorithm::kLeastConn, {ep(1, 4, 4), ep(2, 0, 0), ep(3, 9, 9, 1, 0, false)}, 100);
  EXPECT_EQ(b, (Budgets{{1, 2}}));
  EXPECT_TRUE(rebalanceBudgets(Algorithm::kLeastConn, {ep(1, 4, 4), ep(3, 9, 9, 1, 0, false)}, 100).empty());
}

TEST(Rebalance, TokensRefillAtTheRateWithOneSecondOfBurst) {
  CloseTokens t;
  EXPECT_EQ(t.available(), 0u);
  t.refill(4, 0.2);
  EXPECT_EQ(t.available(), 0u);  // 0.8
  t.refill(4, 0.1);
  EXPECT_EQ(t.available(), 1u);
  t.refill(4, 10);
  EXPECT_EQ(t.available(), 4u) << "at most a second's worth";
  t.spend(3);
  EXPECT_EQ(t.available(), 1u);
  t.spend(5);
  EXPECT_EQ(t.available(), 0u);
  t.refill(0.5, 100);
  EXPECT_EQ(t.available(), 1u) << "a slow rate still allows one";
}

}  // namespace
}  // namespace aimesh
