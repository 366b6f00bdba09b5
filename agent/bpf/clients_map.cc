#include "bpf/clients_map.h"

#include <bpf/bpf.h>

#include <cerrno>

#include "bpf/map_walk.h"

namespace aimesh {

namespace {

Result<std::vector<ClientPair>> walkClients(int fd) {
  std::vector<aimesh_client_key> keys;
  auto walked = walkKeys<aimesh_client_key>(
      fd, [&](const aimesh_client_key& k) { return keys.push_back(k), true; }, uint64_t{AIMESH_MAX_CLIENTS} * 2,
      "aimesh_clients");
  if (!walked) return walked.error();
  std::vector<ClientPair> out;
  for (const aimesh_client_key& k : keys) {
    ClientPair p{.key = k};
    if (bpf_map_lookup_elem(fd, &k, &p.stats) != 0) {
      if (errno == ENOENT) continue;  // deleted since the walk
      return Error::fromErrno("read aimesh_clients");
    }
    out.push_back(p);
  }
  return out;
}

}  // namespace

Result<std::vector<ClientPair>> readClients(int fd) {
  if (fd < 0) return std::vector<ClientPair>{};
  constexpr uint32_t kBatch = 256;
  std::vector<aimesh_client_key> keys(kBatch);
  std::vector<aimesh_client_stats> values(kBatch);
  std::vector<ClientPair> out;
  aimesh_client_key batch{}, next{};
  for (bool first = true;; first = false) {
    uint32_t count = kBatch;
    int rc = bpf_map_lookup_batch(fd, first ? nullptr : &batch, &next, keys.data(), values.data(), &count, nullptr);
    int err = rc != 0 ? errno : 0;
    if (rc != 0 && err != ENOENT) {
      // No batch lookups (EINVAL/ENOTSUPP), or a bucket larger than a batch
      // (ENOSPC): the same by walking the keys.
      if (first && err != EFAULT) return walkClients(fd);
      errno = err;
      return Error::fromErrno("read aimesh_clients");
    }
    for (uint32_t i = 0; i < count; ++i) out.push_back(ClientPair{keys[i], values[i]});
    if (err == ENOENT) return out;  // the end of the map
    batch = next;
  }
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
