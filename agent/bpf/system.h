// Kernel environment the agent needs before loading: bpffs, cgroup v2 root,
// libbpf log routing.
#pragma once

#include <string>

#include "util/result.h"

namespace aimesh {

// The cgroup v2 mount point from /proc/self/mounts (on these machines
// /sys/fs/cgroup/unified), or an error if cgroup v2 is not mounted.
Result<std::string> findCgroup2Root(const std::string& mountsFile = "/proc/self/mounts");

// Mounts bpffs at `dir` (normally /sys/fs/bpf) unless a bpffs is already
// mounted there. Returns true if it mounted it.
Result<bool> ensureBpffs(const std::string& dir, const std::string& mountsFile = "/proc/self/mounts");

// True if `dir` is a mount point of filesystem type `fstype` in `mountsFile`.
bool isMountedAs(const std::string& dir, const std::string& fstype, const std::string& mountsFile);

// Sends libbpf's messages to spdlog (warnings as warnings, debug as debug).
void routeLibbpfLogs();

}  // namespace aimesh
