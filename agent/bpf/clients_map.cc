#include "bpf/clients_map.h"

#include <bpf/bpf.h>

#include <algorithm>
#include <cerrno>

#include "bpf/map_walk.h"

namespace aimesh {

Result<std::vector<ClientPair>> readClients(int fd) {
  std::vector<ClientPair> out;
  if (fd < 0) return out;
  Status st = readEntries<aimesh_client_key, aimesh_client_stats>(
      fd, [&](const aimesh_client_key& k, const aimesh_client_stats& v) { out.push_back(ClientPair{k, v}); },
      uint64_t{AIMESH_MAX_CLIENTS} * 2, "aimesh_clients");
  if (!st) return st.error();
  return out;
}

Status forgetClients(int fd, const std::vector<aimesh_client_key>& keys) {
  for (const aimesh_client_key& k : keys)
    if (bpf_map_delete_elem(fd, &k) != 0 && errno != ENOENT) return Error::fromErrno("delete from aimesh_clients");
  return {};
}

Status forgetServicesClients(int fd, const std::vector<uint32_t>& serviceIds) {
  if (fd < 0 || serviceIds.empty()) return {};
  std::vector<uint32_t> sorted = serviceIds;
  std::sort(sorted.begin(), sorted.end());
  std::vector<aimesh_client_key> keys;
  auto walked = walkKeys<aimesh_client_key>(
      fd,
      [&](const aimesh_client_key& k) {
        if (std::binary_search(sorted.begin(), sorted.end(), k.service_id)) keys.push_back(k);
        return true;
      },
      uint64_t{AIMESH_MAX_CLIENTS} * 2, "aimesh_clients");
  if (!walked) return walked.error();
  return forgetClients(fd, keys);
}

Status forgetServiceClients(int fd, uint32_t serviceId) { return forgetServicesClients(fd, {serviceId}); }

}  // namespace aimesh
