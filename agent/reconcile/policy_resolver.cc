#include "reconcile/policy_resolver.h"

#include <sys/stat.h>
#include <sys/statfs.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>

#include "util/cgroup.h"

namespace aimesh {

std::vector<UnresolvedCgroup> resolvePolicies(Snapshot& snap, const CgroupLookup& lookup,
                                              const PodCgroupLookup& pods) {
  std::vector<UnresolvedCgroup> missing;
  for (size_t i = 0; i < snap.services.size(); ++i) {
    if (!snap.services[i].policy) continue;
    Service& svc = snap.services.mut(i);  // a copy if a source's cache shares it
    std::vector<uint64_t> ids;
    for (const std::string& path : svc.policy->allowCgroups) {
      std::string reason;
      if (auto id = lookup(path, &reason)) ids.push_back(*id);
      else missing.push_back(UnresolvedCgroup{svc.key(), path, reason});
    }
    for (AllowedPod& pod : svc.policy->allowPods) {
      std::string reason = "pod cgroups are not looked up";
      std::optional<std::string> dir = pods ? pods(pod.uid, &reason) : std::nullopt;
      std::optional<uint64_t> id = dir ? lookup(*dir, &reason) : std::nullopt;
      pod.cgroup = id ? *dir : "";
      if (id) ids.push_back(*id);
      else missing.push_back(UnresolvedCgroup{svc.key(), "pod " + pod.name, reason});
    }
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    svc.policy->allowCgroupIds = std::move(ids);
  }
  return missing;
}

CgroupLookup systemCgroupLookup() {
  return [](const std::string& path, std::string* reason) -> std::optional<uint64_t> {
    constexpr long kCgroup2Magic = 0x63677270;  // CGROUP2_SUPER_MAGIC
    struct statfs fs {};
    if (::statfs(path.c_str(), &fs) == 0 && static_cast<long>(fs.f_type) != kCgroup2Magic) {
      if (reason) *reason = path + " is not in a cgroup v2 file system";
      return std::nullopt;
    }
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0 && !S_ISDIR(st.st_mode)) {
      if (reason) *reason = path + " is not a directory";
      return std::nullopt;
    }
    auto id = cgroupId(path);
    if (!id) {
      if (reason) *reason = id.error().message();
      return std::nullopt;
    }
    return *id;
  };
}

std::string podUidOfCgroupDir(std::string_view name) {
  bool slice = name.size() > 6 && name.substr(name.size() - 6) == ".slice";
  if (slice) name.remove_suffix(6);
  size_t at = slice ? name.rfind("-pod") : (name.rfind("pod", 0) == 0 ? 0 : std::string_view::npos);
  if (at == std::string_view::npos) return "";
  std::string uid(name.substr(at + (slice ? 4 : 3)));
  // A UID as the API server makes it: 8-4-4-4-12 hex digits; the systemd
  // driver writes '_' for '-' ('-' separates the levels of a slice name).
  if (uid.size() != 36) return "";
  for (size_t i = 0; i < uid.size(); ++i) {
    char& c = uid[i];
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash) {
      if (c != (slice ? '_' : '-')) return "";
      c = '-';
    } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return "";
    }
  }
  return uid;
}

namespace {
// Depth-first under dir; a directory that vanishes or cannot be read midway
// (containers come and go) skips that directory only.
void indexPodCgroups(const std::filesystem::path& dir, int depth, std::map<std::string, std::string>& out) {
  constexpr int kMaxDepth = 6;  // root/kubelet.slice/kubelet-kubepods.slice/...-besteffort.slice/...pod.slice
  std::error_code ec;
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code ec2;
    if (it->is_symlink(ec2) || !it->is_directory(ec2)) continue;
    std::string uid = podUidOfCgroupDir(it->path().filename().string());
    if (!uid.empty()) out.emplace(uid, it->path().string());  // its children are the containers
    else if (depth + 1 < kMaxDepth) indexPodCgroups(it->path(), depth + 1, out);
  }
}
}  // namespace

PodCgroupLookup systemPodCgroupLookup(const std::string& root) {
  struct Index {
    bool built = false;
    std::map<std::string, std::string> byUid;
  };
  auto index = std::make_shared<Index>();
  return [root, index](const std::string& uid, std::string* reason) -> std::optional<std::string> {
    if (!index->built) {
      index->built = true;
      indexPodCgroups(root, 0, index->byUid);
    }
    auto f = index->byUid.find(uid);
    if (f != index->byUid.end()) return f->second;
    if (reason) *reason = "no cgroup of pod uid " + uid + " under " + root + " (not started yet, or gone)";
    return std::nullopt;
  };
}

}  // namespace aimesh
