#include "bpf/clients_map.h"

#include <bpf/bpf.h>

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

Status forgetServiceClients(int fd, uint32_t serviceId) {
  if (fd < 0) return {};
  std::vector<aimesh_client_key> keys;
  auto walked = walkKeys<aimesh_client_key>(
      fd,
      [&](const aimesh_client_key& k) {
        if (k.service_id == serviceId) keys.push_back(k);
        return true;
      },
      uint64_t{AIMESH_MAX_CLIENTS} * 2, "aimesh_clients");
  if (!walked) return walked.error();
  return forgetClients(fd, keys);
}

}  // namespace aimesh
