// Workload policy: from the cgroup paths a service allows (PolicySpec, as
// the source wrote them) to the cgroup ids the kernel checks. The lookup is
// passed in, so this is pure and the agent's resolver (stat of the cgroup v2
// directory) is swapped for a table in tests.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "model/snapshot.h"

namespace aimesh {

// A path that is allowed but has no cgroup now (not created yet, or gone).
// Its clients cannot exist, so nothing is lost by leaving it out; the agent
// resolves again while any are missing.
struct UnresolvedCgroup {
  std::string service;  // namespace/name
  std::string path;
  std::string reason;
  auto operator<=>(const UnresolvedCgroup&) const = default;
};

using CgroupLookup = std::function<std::optional<uint64_t>(const std::string& path, std::string* reason)>;

// Fills every policy's allowCgroupIds (sorted, no duplicates) from its
// allowCgroups; returns the paths that did not resolve.
std::vector<UnresolvedCgroup> resolvePolicies(Snapshot& snap, const CgroupLookup& lookup);

// The lookup the agent uses: the id of the cgroup v2 directory at `path`.
CgroupLookup systemCgroupLookup();

}  // namespace aimesh
