// Reads the data plane's counters (per-CPU arrays, summed over CPUs).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <vector>

#include "aimesh/abi.h"
#include "bpf/datapath.h"
#include "util/result.h"

namespace aimesh {

struct ServiceCounters {
  uint64_t connects = 0, datagrams = 0, refused = 0, denied = 0;
};
struct BackendCounters {
  uint64_t connects = 0, datagrams = 0;
};

struct DatapathStats {
  // Only the ids that counted something; a missing id counted nothing.
  std::map<uint32_t, ServiceCounters> services;
  std::map<uint32_t, BackendCounters> backends;
  std::array<uint64_t, AIMESH_R_MAX> reasons{};
};

Result<DatapathStats> readStats(const MapFds& fds, const std::vector<uint32_t>& serviceIds,
                                const std::vector<uint32_t>& backendIds);

// Number of entries in a hash map (batched reads, or a key walk; stops at
// `limit`).
Result<uint64_t> countEntries(int mapFd, uint64_t limit = 1 << 20);

// Stable snake_case name of a reason, used as the `reason` label.
const char* reasonName(uint32_t reason);

}  // namespace aimesh
