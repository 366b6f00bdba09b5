#include "telemetry/clients.h"

#include <sys/stat.h>

#include <cerrno>
#include <filesystem>

#include "reconcile/policy_resolver.h"

namespace aimesh {

std::string clientName(const std::string& relPath, const PodNameLookup& pods) {
  if (pods) {
    size_t start = 0;
    while (start < relPath.size()) {
      size_t end = relPath.find('/', start);
      if (end == std::string::npos) end = relPath.size();
      std::string uid = podUidOfCgroupDir(std::string_view(relPath).substr(start, end - start));
      if (!uid.empty())
        if (auto name = pods(uid)) return *name;
      start = end + 1;
    }
  }
  return relPath.empty() ? "/" : relPath;
}

CgroupIndex::CgroupIndex(std::string root, std::chrono::milliseconds minRewalk)
    : root_(std::move(root)), minRewalk_(minRewalk) {}

void CgroupIndex::walk() {
  namespace fs = std::filesystem;
  constexpr int kMaxDepth = 12;
  constexpr size_t kMaxCgroups = 200000;
  lastWalk_ = std::chrono::steady_clock::now();
  walked_ = true;
  ++walks_;
  byId_.clear();
  struct stat st {};
  if (::stat(root_.c_str(), &st) == 0) byId_[st.st_ino] = "/";
  std::error_code ec;
  bool deep = false;
  fs::recursive_directory_iterator it(root_, fs::directory_options::skip_permission_denied, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    if (byId_.size() >= kMaxCgroups) break;
    std::error_code ec2;
    if (it->is_symlink(ec2) || !it->is_directory(ec2)) {
      continue;
    }
    if (it.depth() >= kMaxDepth) {
      it.disable_recursion_pending();
      deep = true;  // what is below is not indexed: the walk proves nothing gone
    }
    if (::stat(it->path().c_str(), &st) != 0) continue;  // gone meanwhile
    byId_[st.st_ino] = "/" + it->path().lexically_relative(root_).string();
  }
  // A directory that went away mid-walk ends it early, and the depth and
  // size limits cut it short: such a walk names what it found but proves
  // nothing gone.
  complete_ = !ec && !deep && byId_.size() < kMaxCgroups;
}

void CgroupIndex::refresh() {
  if (!walked_ || std::chrono::steady_clock::now() - lastWalk_ >= minRewalk_) walk();
}

std::optional<std::string> CgroupIndex::path(uint64_t id) {
  auto f = byId_.find(id);
  if (f != byId_.end()) return f->second;
  refresh();
  f = byId_.find(id);
  if (f != byId_.end()) return f->second;
  return std::nullopt;
}

bool CgroupIndex::goneSince(uint64_t id, std::chrono::steady_clock::time_point since) const {
  return walked_ && complete_ && lastWalk_ > since && !byId_.contains(id);
}

}  // namespace aimesh
