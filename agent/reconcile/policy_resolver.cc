#include "reconcile/policy_resolver.h"

#include <sys/stat.h>
#include <sys/statfs.h>

#include <algorithm>

#include "bpf/system.h"

namespace aimesh {

std::vector<UnresolvedCgroup> resolvePolicies(Snapshot& snap, const CgroupLookup& lookup) {
  std::vector<UnresolvedCgroup> missing;
  for (Service& svc : snap.services) {
    if (!svc.policy) continue;
    std::vector<uint64_t> ids;
    for (const std::string& path : svc.policy->allowCgroups) {
      std::string reason;
      if (auto id = lookup(path, &reason)) ids.push_back(*id);
      else missing.push_back(UnresolvedCgroup{svc.key(), path, reason});
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

}  // namespace aimesh
