// aimesh_clients (bpf/lib/clients.h), the kernel's per (calling cgroup,
// service) counters: read in batches, and entries deleted (of cgroups that
// are gone, and of a service id given to another service).
#pragma once

#include <cstdint>
#include <vector>

#include "aimesh/abi.h"
#include "util/result.h"

namespace aimesh {

struct ClientPair {
  aimesh_client_key key{};
  aimesh_client_stats stats{};
};

// Every entry, 256 per system call (BPF_MAP_LOOKUP_BATCH; a key walk where
// the kernel has no batch lookups). fd < 0: none.
Result<std::vector<ClientPair>> readClients(int fd);
// Deletes these entries (missing ones are not an error).
Status forgetClients(int fd, const std::vector<aimesh_client_key>& keys);
// Deletes every entry of a service id (of any of these ids: one walk of the
// map for all). fd < 0: nothing to do.
Status forgetServiceClients(int fd, uint32_t serviceId);
Status forgetServicesClients(int fd, const std::vector<uint32_t>& serviceIds);

}  // namespace aimesh
