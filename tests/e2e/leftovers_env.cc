// A global environment for the e2e tier: before the tests, remove what an
// earlier, crashed run of this binary left behind (its pid is gone); after
// them, fail if this run left any cgroup, namespace or pin of its own, or
// an aimesh map pinned directly in /sys/fs/bpf (rootPins()).
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "bpf/datapath.h"
#include "bpf/system.h"
#include "fixtures/sandbox.h"

namespace aimesh::testing {
namespace {
namespace fs = std::filesystem;

// Our names carry (pid % 100000) right after the prefix: see uniqueSuffix().
struct Leftover {
  std::string kind, path;
  long pid;
};

std::vector<Leftover> scan() {
  std::vector<Leftover> out;
  std::error_code ec;
  std::regex cg("^aimesh-test-([0-9]+)x[0-9]+$"), ns("^aim([0-9]+)x[0-9]+[cb]$");
  std::smatch m;
  auto root = findCgroup2Root();
  if (root)
    for (auto& e : fs::directory_iterator(*root, ec)) {
      std::string n = e.path().filename();
      if (std::regex_match(n, m, cg)) out.push_back({"cgroup", e.path(), std::stol(m[1])});
    }
  for (auto& e : fs::directory_iterator("/sys/fs/bpf", ec)) {
    std::string n = e.path().filename();
    if (std::regex_match(n, m, cg)) out.push_back({"pins", e.path(), std::stol(m[1])});
  }
  for (auto& e : fs::directory_iterator("/run/netns", ec)) {
    std::string n = e.path().filename();
    if (std::regex_match(n, m, ns)) out.push_back({"netns", n, std::stol(m[1])});
  }
  return out;
}

bool pidAlive(long pid) {
  // Names keep pid % 100000; treat any live process with that remainder as alive.
  std::error_code ec;
  for (auto& e : fs::directory_iterator("/proc", ec)) {
    std::string n = e.path().filename();
    if (!n.empty() && std::isdigit(n[0]) && std::stol(n) % 100000 == pid) return true;
  }
  return false;
}

void remove(const Leftover& l) {
  if (l.kind == "cgroup") fs::remove(l.path);
  else if (l.kind == "pins") (void)Datapath::cleanup(l.path);
  else sh("ip netns del " + l.path + " 2>/dev/null");
}

class LeftoversEnv : public ::testing::Environment {
 public:
  void SetUp() override {
    if (::geteuid() != 0) return;
    rootPinsBefore_ = rootPins();
    for (auto& l : scan())
      if (!pidAlive(l.pid)) remove(l);
  }
  void TearDown() override {
    if (::geteuid() != 0) return;
    long self = ::getpid() % 100000;
    for (auto& l : scan()) {
      if (l.pid != self) continue;
      ADD_FAILURE() << "test left a " << l.kind << " behind: " << l.path;
      remove(l);
    }
    failOnNewRootPins(rootPinsBefore_);
  }

 private:
  std::set<std::string> rootPinsBefore_;
};

const auto* kEnv = ::testing::AddGlobalTestEnvironment(new LeftoversEnv);

}  // namespace
}  // namespace aimesh::testing
