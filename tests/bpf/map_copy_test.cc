// bpf tier: copyMapEntries() between real kernel maps of two sizes (created
// here, nothing attached or pinned), as a resize at restart uses it: arrays,
// per-CPU arrays, hash maps, an array of maps, and the refusals.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "bpf/map_copy.h"
#include "bpf/map_walk.h"
#include "util/unique_fd.h"

namespace aimesh {
namespace {

UniqueFd makeMap(bpf_map_type type, uint32_t valueSize, uint32_t entries, const bpf_map_create_opts* o = nullptr) {
  int fd = bpf_map_create(type, "t_copy", 4, valueSize, entries, o);
  EXPECT_GE(fd, 0) << std::strerror(errno);
  return UniqueFd(fd);
}

uint64_t get(int fd, uint32_t key) {
  uint64_t v = 0;
  if (bpf_map_lookup_elem(fd, &key, &v) != 0) return ~0ULL;
  return v;
}

class MapCopyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  }
};

TEST_F(MapCopyTest, AnArrayCopiesWhatBothSizesHave) {
  UniqueFd from = makeMap(BPF_MAP_TYPE_ARRAY, 8, 32), grown = makeMap(BPF_MAP_TYPE_ARRAY, 8, 64),
           shrunk = makeMap(BPF_MAP_TYPE_ARRAY, 8, 16);
  for (uint32_t k : {1u, 7u, 20u}) {
    uint64_t v = 100 + k;
    ASSERT_EQ(bpf_map_update_elem(from.get(), &k, &v, BPF_ANY), 0);
  }
  auto n = copyMapEntries(from.get(), grown.get(), "t");
  ASSERT_TRUE(n) << n.error().message();
  EXPECT_EQ(*n, 3u) << "zero entries are not written";
  EXPECT_EQ(get(grown.get(), 1), 101u);
  EXPECT_EQ(get(grown.get(), 20), 120u);
  EXPECT_EQ(get(grown.get(), 2), 0u);
  n = copyMapEntries(from.get(), shrunk.get(), "t");
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 2u) << "entry 20 is past the new size";
  EXPECT_EQ(get(shrunk.get(), 7), 107u);
}

TEST_F(MapCopyTest, APerCpuArrayCopiesEveryCpusValue) {
  int ncpu = libbpf_num_possible_cpus();
  ASSERT_GT(ncpu, 0);
  UniqueFd from = makeMap(BPF_MAP_TYPE_PERCPU_ARRAY, 8, 8), to = makeMap(BPF_MAP_TYPE_PERCPU_ARRAY, 8, 16);
  std::vector<uint64_t> in(ncpu), out(ncpu);
  for (int c = 0; c < ncpu; ++c) in[c] = 10 + c;
  uint32_t k = 3;
  ASSERT_EQ(bpf_map_update_elem(from.get(), &k, in.data(), BPF_ANY), 0);
  ASSERT_TRUE(copyMapEntries(from.get(), to.get(), "t"));
  ASSERT_EQ(bpf_map_lookup_elem(to.get(), &k, out.data()), 0);
  EXPECT_EQ(out, in);
}

TEST_F(MapCopyTest, AHashCopiesEveryKeyAndRefusesWhatDoesNotFit) {
  LIBBPF_OPTS(bpf_map_create_opts, noPrealloc, .map_flags = BPF_F_NO_PREALLOC);
  UniqueFd from = makeMap(BPF_MAP_TYPE_HASH, 8, 64, &noPrealloc), to = makeMap(BPF_MAP_TYPE_HASH, 8, 128, &noPrealloc),
           small = makeMap(BPF_MAP_TYPE_HASH, 8, 4, &noPrealloc);
  for (uint32_t k = 0; k < 10; ++k) {
    uint64_t v = k * 3;
    ASSERT_EQ(bpf_map_update_elem(from.get(), &k, &v, BPF_ANY), 0);
  }
  auto n = copyMapEntries(from.get(), to.get(), "t_hash");
  ASSERT_TRUE(n) << n.error().message();
  EXPECT_EQ(*n, 10u);
  EXPECT_EQ(get(to.get(), 9), 27u);
  n = copyMapEntries(from.get(), small.get(), "t_hash");
  ASSERT_FALSE(n);
  EXPECT_NE(n.error().message().find("t_hash"), std::string::npos) << n.error().message();
  // An id the new size cannot index (the arrays keyed by it end before it).
  n = copyMapEntries(from.get(), to.get(), "t_hash", 8);
  ASSERT_FALSE(n);
  EXPECT_NE(n.error().message().find("cannot index"), std::string::npos) << n.error().message();
}

TEST_F(MapCopyTest, AnArrayOfMapsPassesItsInnerMapsOn) {
  UniqueFd inner = makeMap(BPF_MAP_TYPE_ARRAY, 4, 8);
  LIBBPF_OPTS(bpf_map_create_opts, o, .inner_map_fd = static_cast<uint32_t>(inner.get()));
  UniqueFd from = makeMap(BPF_MAP_TYPE_ARRAY_OF_MAPS, 4, 8, &o), to = makeMap(BPF_MAP_TYPE_ARRAY_OF_MAPS, 4, 16, &o);
  uint32_t k = 5, v = 77, fd = static_cast<uint32_t>(inner.get());
  ASSERT_EQ(bpf_map_update_elem(inner.get(), &k, &v, BPF_ANY), 0);
  uint32_t slot = 2;
  ASSERT_EQ(bpf_map_update_elem(from.get(), &slot, &fd, BPF_ANY), 0);
  auto n = copyMapEntries(from.get(), to.get(), "t_mim");
  ASSERT_TRUE(n) << n.error().message();
  EXPECT_EQ(*n, 1u);
  uint32_t id = 0;
  ASSERT_EQ(bpf_map_lookup_elem(to.get(), &slot, &id), 0);
  UniqueFd got(bpf_map_get_fd_by_id(id));
  ASSERT_TRUE(got.valid());
  uint32_t back = 0;
  ASSERT_EQ(bpf_map_lookup_elem(got.get(), &k, &back), 0);
  EXPECT_EQ(back, 77u);
}

}  // namespace
}  // namespace aimesh
