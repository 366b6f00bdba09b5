// A global environment for the bpf tier: these tests load BPF objects from
// their skeletons, each with every map's pin path cleared; fail the run if
// one ever leaves an aimesh map pinned directly in /sys/fs/bpf (libbpf's
// default pin root), and remove it.
#include <gtest/gtest.h>
#include <unistd.h>

#include <set>
#include <string>

#include "fixtures/sandbox.h"

namespace aimesh::testing {
namespace {

class RootPinsEnv : public ::testing::Environment {
 public:
  void SetUp() override {
    if (::geteuid() == 0) before_ = rootPins();
  }
  void TearDown() override {
    if (::geteuid() == 0) failOnNewRootPins(before_);
  }

 private:
  std::set<std::string> before_;
};

const auto* kEnv = ::testing::AddGlobalTestEnvironment(new RootPinsEnv);

}  // namespace
}  // namespace aimesh::testing
