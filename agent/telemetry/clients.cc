#include "telemetry/clients.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

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
    : root_(std::move(root)), minRewalk_(minRewalk) {
  constexpr long kCgroup2Magic = 0x63677270;  // CGROUP2_SUPER_MAGIC
  struct statfs fs {};
  if (::statfs(root_.c_str(), &fs) != 0 || static_cast<long>(fs.f_type) != kCgroup2Magic) return;
  mountFd_ = ::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (mountFd_ < 0) return;
  // The root's own handle must open, or handles are not for us here (no
  // CAP_DAC_READ_SEARCH, a kernel without kernfs handles): walk instead.
  struct stat st {};
  if (::fstat(mountFd_, &st) != 0 || open(st.st_ino) != "/") {
    ::close(mountFd_);
    mountFd_ = -1;
    gone_.clear();
  }
}

CgroupIndex::~CgroupIndex() {
  if (mountFd_ >= 0) ::close(mountFd_);
}

std::optional<std::string> CgroupIndex::open(uint64_t id) {
  constexpr int kFileIdKernfs = 0xfe;  // FILEID_KERNFS: the handle is the 64-bit node id
  struct {
    file_handle fh;
    uint64_t id;
  } h{};
  h.fh.handle_bytes = sizeof(id);
  h.fh.handle_type = kFileIdKernfs;
  std::memcpy(h.fh.f_handle, &id, sizeof(id));
  int fd = ::open_by_handle_at(mountFd_, &h.fh, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ESTALE) gone_.insert(id);  // removed (or never a cgroup here)
    return std::nullopt;
  }
  char buf[4096];
  std::string link = "/proc/self/fd/" + std::to_string(fd);
  ssize_t n = ::readlink(link.c_str(), buf, sizeof(buf) - 1);
  ::close(fd);
  if (n <= 0) return std::nullopt;
  std::string abs(buf, static_cast<size_t>(n));
  std::string root = root_;
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  if (abs == root) return "/";
  if (abs.rfind(root + "/", 0) == 0) return abs.substr(root.size());
  return abs;  // outside the root: its absolute path
}

void CgroupIndex::refresh() {
  if (walked_ && std::chrono::steady_clock::now() - lastWalk_ < minRewalk_) return;
  if (!byHandle()) return walk();
  lastWalk_ = std::chrono::steady_clock::now();
  walked_ = true;
  for (auto it = byId_.begin(); it != byId_.end();) {
    auto p = open(it->first);
    if (!p && gone_.contains(it->first)) it = byId_.erase(it);
    else ++it;
  }
}

std::optional<std::string> CgroupIndex::path(uint64_t id) {
  auto f = byId_.find(id);
  if (f != byId_.end()) return f->second;
  if (byHandle()) {
    if (gone_.contains(id)) return std::nullopt;
    auto p = open(id);
    if (p) byId_[id] = *p;
    return p;
  }
  refresh();
  f = byId_.find(id);
  if (f != byId_.end()) return f->second;
  return std::nullopt;
}

bool CgroupIndex::goneSince(uint64_t id, std::chrono::steady_clock::time_point since) const {
  if (byHandle()) return gone_.contains(id);
  return walked_ && complete_ && lastWalk_ > since && !byId_.contains(id);
}

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

}  // namespace aimesh
