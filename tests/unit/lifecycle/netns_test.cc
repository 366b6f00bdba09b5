// agent/lifecycle/netns.h: the distinct network namespaces of a cgroup's
// processes, on a made-up cgroup tree and /proc (namespace files are plain
// files here; two hard links are one namespace).
#include "lifecycle/netns.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "fixtures/sandbox.h"

namespace aimesh {
namespace {

namespace fs = std::filesystem;

class Netns : public ::testing::Test {
 protected:
  void SetUp() override { root_ = testing::tempDir(); }
  void TearDown() override { fs::remove_all(root_); }
  void procs(const std::string& cg, const std::string& pids) {
    fs::create_directories(root_ + "/cg/" + cg);
    std::ofstream(root_ + "/cg/" + cg + "/cgroup.procs") << pids;
  }
  // /proc/PID/ns/net, a new namespace or a link to `same`'s.
  void ns(int pid, int same = 0) {
    std::string dir = root_ + "/proc/" + std::to_string(pid) + "/ns";
    fs::create_directories(dir);
    if (same) fs::create_hard_link(root_ + "/proc/" + std::to_string(same) + "/ns/net", dir + "/net");
    else std::ofstream(dir + "/net") << pid;
  }
  std::string root_;
};

TEST_F(Netns, OneEntryPerNamespaceOfTheTreesProcesses) {
  procs("", "10\n");
  procs("pod-a", "11\n12\n");
  procs("pod-a/ctr", "13\n");
  procs("pod-b", "20\n");
  ns(10);
  ns(11);
  ns(12, 11);
  ns(13, 11);
  ns(20);
  ns(99);  // not in the cgroup
  NetnsFinder f(root_ + "/cg", "", root_ + "/proc");
  auto found = f.find();
  ASSERT_EQ(found.size(), 3u);
  std::set<std::string> paths;
  for (auto& r : found) paths.insert(fs::path(r.path).parent_path().parent_path().filename());
  EXPECT_TRUE(paths.count("10"));
  EXPECT_TRUE(paths.count("20"));
  EXPECT_TRUE(paths.count("11") || paths.count("12") || paths.count("13"));
}

TEST_F(Netns, GoneProcessesAndNamespaceFiles) {
  procs("", "30\n31\n");
  ns(30);
  NetnsFinder f(root_ + "/cg", root_ + "/named", root_ + "/proc");
  EXPECT_EQ(f.find().size(), 1u) << "31 has no /proc entry (exited): skipped";
  fs::create_directories(root_ + "/named");
  std::ofstream(root_ + "/named/cni-1") << "x";
  fs::create_hard_link(root_ + "/proc/30/ns/net", root_ + "/named/same-as-30");
  auto found = f.find();
  EXPECT_EQ(found.size(), 2u) << "a file of the netns dir that is 30's namespace is not walked twice";
  fs::remove_all(root_ + "/proc/30");
  procs("", "");
  EXPECT_EQ(f.find().size(), 2u) << "the named files remain";
}

TEST_F(Netns, MissingCgroupOrDirIsEmpty) {
  NetnsFinder f(root_ + "/nothing", root_ + "/nothing-either", root_ + "/proc");
  EXPECT_TRUE(f.find().empty());
}

}  // namespace
}  // namespace aimesh
