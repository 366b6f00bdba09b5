#include "lifecycle/netns.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

namespace aimesh {

namespace fs = std::filesystem;

NetnsFinder::NetnsFinder(std::string cgroupDir, std::string netnsDir, std::string procRoot)
    : cgroupDir_(std::move(cgroupDir)), netnsDir_(std::move(netnsDir)), procRoot_(std::move(procRoot)) {}

std::vector<NetnsRef> NetnsFinder::find() {
  std::set<int> pids;
  std::error_code ec;
  auto readProcs = [&](const fs::path& dir) {
    std::ifstream in(dir / "cgroup.procs");
    int pid;
    while (in >> pid)
      if (pid > 0) pids.insert(pid);
  };
  if (!cgroupDir_.empty() && fs::is_directory(cgroupDir_, ec)) {
    readProcs(cgroupDir_);
    for (auto it = fs::recursive_directory_iterator(cgroupDir_, fs::directory_options::skip_permission_denied, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (it.depth() >= kMaxDepth) it.disable_recursion_pending();
      if (it->is_directory(ec)) readProcs(it->path());
    }
  }
  std::map<int, NetnsRef> now;
  std::vector<NetnsRef> out;
  std::set<std::pair<uint64_t, uint64_t>> seen;
  auto add = [&](const NetnsRef& r) {
    if (seen.insert({r.dev, r.ino}).second) out.push_back(r);
  };
  for (int pid : pids) {
    auto cached = byPid_.find(pid);
    if (cached != byPid_.end()) {
      now.emplace(pid, cached->second);
      add(cached->second);
      continue;
    }
    std::string path = procRoot_ + "/" + std::to_string(pid) + "/ns/net";
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) continue;  // gone, or not visible from our pid namespace
    NetnsRef r{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino), path};
    now.emplace(pid, r);
    add(r);
  }
  byPid_ = std::move(now);
  if (!netnsDir_.empty() && fs::is_directory(netnsDir_, ec)) {
    for (auto& e : fs::directory_iterator(netnsDir_, ec)) {
      struct stat st {};
      if (::stat(e.path().c_str(), &st) != 0) continue;
      add(NetnsRef{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino), e.path().string()});
    }
  }
  std::sort(out.begin(), out.end(),
            [](const NetnsRef& a, const NetnsRef& b) { return std::tie(a.dev, a.ino) < std::tie(b.dev, b.ino); });
  return out;
}

}  // namespace aimesh
