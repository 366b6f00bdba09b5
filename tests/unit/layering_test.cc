// The agent's folders form layers, and includes point one way: down. A
// folder may include its own headers and those of lower layers only, so the
// pure parts (model, reconcile) never pull in the kernel side, and the kernel
// side never pulls in what renders it. docs/architecture.md draws the same
// picture; change both together.
//
//   agent.{h,cc}, main.cc   the process: wires everything       (top)
//   telemetry/              views, /metrics, API, HTTP, scraping
//   lifecycle/              closing connections (socket iterators)
//   bpf/                    the kernel: programs, maps, map writer and readers
//   reconcile/  source/     plan + diff  |  state file + Kubernetes (not each other)
//   model/                  the cluster state and its rules
//   lb/  view/              pure balancing math (Maglev) | the API's types
//   util/                   Result, fds, small helpers               (bottom)
//
// meshctl (cli/) may use the agent's util/, view/ (the API's types), model/
// and bpf/ (doctor and the pinned-map readers), never the agent process or
// its telemetry.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

namespace aimesh {
namespace {

namespace fs = std::filesystem;

const std::map<std::string, int>& agentRanks() {
  static const std::map<std::string, int> ranks = {
      {"util", 0},      {"lb", 1},        {"view", 1},        {"model", 2},     {"source", 3}, {"reconcile", 3},
      {"bpf", 4},       {"lifecycle", 5}, {"telemetry", 6}, {"", 7},  // agent/*.cc, *.h
  };
  return ranks;
}

// The folder of a file under root ("" for a file directly in it).
std::string folderOf(const fs::path& file, const fs::path& root) {
  fs::path rel = fs::relative(file, root);
  return std::distance(rel.begin(), rel.end()) > 1 ? rel.begin()->string() : "";
}

struct Include {
  std::string file;
  int line;
  std::string target;  // e.g. "bpf/datapath.h"
};

std::vector<Include> projectIncludes(const fs::path& root) {
  static const std::regex inc(R"re(^\s*#\s*include\s+"([^"]+)")re");
  std::vector<Include> out;
  for (auto& e : fs::recursive_directory_iterator(root)) {
    auto ext = e.path().extension();
    if (!e.is_regular_file() || (ext != ".h" && ext != ".cc")) continue;
    std::ifstream f(e.path());
    std::string l;
    for (int n = 1; std::getline(f, l); ++n) {
      std::smatch m;
      if (std::regex_search(l, m, inc)) out.push_back({e.path().string(), n, m[1]});
    }
  }
  return out;
}

// "bpf/datapath.h" -> "bpf"; "sock_lb.skel.h" -> "" (no folder).
std::string targetFolder(const std::string& target) {
  auto slash = target.find('/');
  return slash == std::string::npos ? "" : target.substr(0, slash);
}

// Every include under root (an agent/ tree) that goes up or sideways.
std::vector<std::string> agentViolations(const fs::path& root, size_t* checked = nullptr) {
  std::vector<std::string> wrong;
  for (auto& inc : projectIncludes(root)) {
    std::string from = folderOf(inc.file, root), to = targetFolder(inc.target);
    if (to.empty() || to == "aimesh" || to == from) continue;  // same folder, generated skeletons, the ABI
    std::string where = inc.file + ":" + std::to_string(inc.line) + " includes " + inc.target;
    if (!agentRanks().count(from)) {
      wrong.push_back(where + ": folder '" + from + "' has no layer (add it to this test and docs/architecture.md)");
      continue;
    }
    if (checked) ++*checked;
    auto it = agentRanks().find(to);
    if (it == agentRanks().end())
      wrong.push_back(where + ": unknown folder");
    else if (it->second >= agentRanks().at(from))
      wrong.push_back(where + ": " + (from.empty() ? "agent" : from) + " may include only lower layers");
  }
  return wrong;
}

TEST(Layering, AgentIncludesPointDown) {
  fs::path root = fs::path(AIMESH_SOURCE_DIR) / "agent";
  size_t checked = 0;
  auto wrong = agentViolations(root, &checked);
  EXPECT_GT(checked, 50u) << "found too few includes under " << root;
  for (auto& w : wrong) ADD_FAILURE() << w;
}

TEST(Layering, MeshctlUsesOnlyTheAgentsLowLayers) {
  fs::path root = fs::path(AIMESH_SOURCE_DIR) / "cli";
  const std::set<std::string> own = {"client", "commands", "format", "probe"};
  const std::set<std::string> allowed = {"util", "view", "model", "bpf"};
  std::vector<std::string> wrong;
  for (auto& inc : projectIncludes(root)) {
    std::string to = targetFolder(inc.target);
    if (to.empty() || to == "aimesh" || own.count(to) || allowed.count(to)) continue;
    wrong.push_back(inc.file + ":" + std::to_string(inc.line) + " includes " + inc.target);
  }
  for (auto& w : wrong) ADD_FAILURE() << w << ": meshctl may use the agent's util/, model/ and bpf/ only";
}

// The check itself, on a made-up tree: an upward and a sideways include are
// caught, downward ones and the ABI are not.
TEST(Layering, UpwardAndSidewaysIncludesAreCaught) {
  fs::path root = fs::temp_directory_path() / ("aimesh-layering-" + std::to_string(::getpid()));
  auto put = [&](const std::string& rel, const std::string& text) {
    fs::create_directories((root / rel).parent_path());
    std::ofstream(root / rel) << text;
  };
  put("reconcile/plan.cc", "#include \"reconcile/plan.h\"\n#include \"model/snapshot.h\"\n#include \"bpf/datapath.h\"\n");
  put("source/state_file.cc", "#include \"aimesh/abi.h\"\n  #include \"reconcile/plan.h\"\n");
  put("telemetry/metrics.cc", "#include <vector>\n#include \"bpf/datapath.h\"\n#include \"sock_lb.skel.h\"\n");
  auto wrong = agentViolations(root);
  fs::remove_all(root);
  ASSERT_EQ(wrong.size(), 2u);
  std::sort(wrong.begin(), wrong.end());
  EXPECT_NE(wrong[0].find("reconcile/plan.cc:3 includes bpf/datapath.h"), std::string::npos) << wrong[0];
  EXPECT_NE(wrong[1].find("source/state_file.cc:2 includes reconcile/plan.h"), std::string::npos) << wrong[1];
}

}  // namespace
}  // namespace aimesh
