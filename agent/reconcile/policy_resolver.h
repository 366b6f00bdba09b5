// Workload policy: from the cgroup paths and pods a service allows
// (PolicySpec, as the source wrote them) to the cgroup ids the kernel
// checks. The lookups are passed in, so this is pure and the agent's
// resolvers (stat of the cgroup v2 directory; a walk of the kubelet's cgroup
// tree) are swapped for tables in tests.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "model/snapshot.h"

namespace aimesh {

// A path that is allowed but has no cgroup now (not created yet, or gone).
// Its clients cannot exist, so nothing is lost by leaving it out; the agent
// resolves again while any are missing.
struct UnresolvedCgroup {
  std::string service;  // namespace/name
  std::string path;     // as written, or "pod NAMESPACE/NAME" for an allowed pod
  std::string reason;
  auto operator<=>(const UnresolvedCgroup&) const = default;
};

using CgroupLookup = std::function<std::optional<uint64_t>(const std::string& path, std::string* reason)>;
// A pod's cgroup directory from its uid, or nullopt with a reason.
using PodCgroupLookup = std::function<std::optional<std::string>(const std::string& uid, std::string* reason)>;

// Fills every policy's allowCgroupIds (sorted, no duplicates) from its
// allowCgroups and allowPods (each pod's cgroup from `pods`, then its id
// from `lookup`; AllowedPod::cgroup is set on the way); returns what did
// not resolve. Without a pod lookup, allowed pods do not resolve.
std::vector<UnresolvedCgroup> resolvePolicies(Snapshot& snap, const CgroupLookup& lookup,
                                              const PodCgroupLookup& pods = {});

// The lookup the agent uses: the id of the cgroup v2 directory at `path`.
CgroupLookup systemCgroupLookup();

// The pod uid a kubelet cgroup directory is named after, or "":
//   cgroupfs driver: "pod<uid>"                       (kubepods/burstable/pod1b4e...-...)
//   systemd driver:  "<prefix>-pod<uid with _>.slice" (kubepods-besteffort-pod1b4e..._....slice)
// The uid comes back in its API form (with '-'). Pure.
std::string podUidOfCgroupDir(std::string_view name);

// The lookup the agent uses: on its first call, one walk of the cgroup tree
// under `root` (depth ≤ 6, not below a pod's directory) indexes every pod
// directory by uid, whatever the kubelet's cgroup driver, QoS classes and
// --cgroup-root; later calls answer from that index. Make one per resolve.
PodCgroupLookup systemPodCgroupLookup(const std::string& root);

}  // namespace aimesh
