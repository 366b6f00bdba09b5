// bpf tier: walkKeys() over a real hash map: every key once, the limit, and
// stopping when told to.
#include "bpf/map_walk.h"

#include <bpf/bpf.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <set>

#include "util/unique_fd.h"

namespace aimesh {
namespace {

class MapWalkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    fd_ = UniqueFd(bpf_map_create(BPF_MAP_TYPE_HASH, "t_walk", 4, 4, 64, nullptr));
    ASSERT_GE(fd_.get(), 0) << std::strerror(errno);
    for (uint32_t k = 100; k < 110; ++k) ASSERT_EQ(bpf_map_update_elem(fd_.get(), &k, &k, BPF_ANY), 0);
  }
  UniqueFd fd_;
};

TEST_F(MapWalkTest, VisitsEveryKeyOnce) {
  std::set<uint32_t> seen;
  auto n = walkKeys<uint32_t>(fd_.get(), [&](const uint32_t& k) { return seen.insert(k).second; });
  ASSERT_TRUE(n) << n.error().message();
  EXPECT_EQ(*n, 10u);
  EXPECT_EQ(seen.size(), 10u);
  EXPECT_EQ(*seen.begin(), 100u);
  EXPECT_EQ(*seen.rbegin(), 109u);
}

TEST_F(MapWalkTest, StopsAtTheLimitOrWhenTheCallbackSaysSo) {
  int calls = 0;
  auto limited = walkKeys(fd_.get(), 4, [&](const void*) { return ++calls, true; }, 3);
  ASSERT_TRUE(limited);
  EXPECT_EQ(*limited, 3u);
  EXPECT_EQ(calls, 3);
  calls = 0;
  auto stopped = walkKeys<uint32_t>(fd_.get(), [&](const uint32_t&) { return ++calls < 2; });
  ASSERT_TRUE(stopped);
  EXPECT_EQ(*stopped, 2u);
}

TEST_F(MapWalkTest, AnEmptyMapIsZeroAndABadFdAnError) {
  UniqueFd empty(bpf_map_create(BPF_MAP_TYPE_HASH, "t_walk_empty", 4, 4, 8, nullptr));
  ASSERT_GE(empty.get(), 0);
  auto n = walkKeys<uint32_t>(empty.get(), [](const uint32_t&) { return true; });
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 0u);
  auto bad = walkKeys<uint32_t>(-1, [](const uint32_t&) { return true; }, 10, "nothing");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("iterate nothing"), std::string::npos) << bad.error().message();
}

}  // namespace
}  // namespace aimesh
