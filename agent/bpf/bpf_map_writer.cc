#include "bpf/bpf_map_writer.h"

#include "bpf/clients_map.h"
#include "bpf/map_walk.h"
#include "util/overloaded.h"
#include "util/unique_fd.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <cstring>
#include <limits>
#include <vector>

namespace aimesh {

namespace {

Status update(int fd, const void* k, const void* v, const char* map) {
  if (bpf_map_update_elem(fd, k, v, BPF_ANY) != 0) return Error::fromErrno(std::string("update ") + map);
  return {};
}

Status remove(int fd, const void* k, const char* map) {
  if (bpf_map_delete_elem(fd, k) != 0 && errno != ENOENT) return Error::fromErrno(std::string("delete ") + map);
  return {};
}

// A backend id taken by a new endpoint starts with zeroed counters and load
// and no histograms: nothing of the endpoint that held the id before (its
// first sample creates a histogram again).
Status resetTelemetry(const MapFds& fds, uint32_t id) {
  aimesh_be_tel tel{};
  if (Status st = update(fds.beTel, &id, &tel, "aimesh_be_tel"); !st) return st;
  aimesh_be_load zero{};
  if (Status st = update(fds.beLoad, &id, &zero, "aimesh_be_load"); !st) return st;
  for (uint32_t m = 0; m < AIMESH_M_MAX; ++m) {
    uint32_t key = id * AIMESH_M_MAX + m;
    if (Status st = remove(fds.hist, &key, "aimesh_hist"); !st) return st;
  }
  return {};
}

}  // namespace

aimesh_frontend_key toAbi(const FrontendKey& k) {
  aimesh_frontend_key a{};
  std::memcpy(a.addr, k.addr.bytes.data(), 16);
  a.port = htons(k.port);
  a.proto = static_cast<uint8_t>(k.proto);
  return a;
}

FrontendKey fromAbi(const aimesh_frontend_key& a) {
  FrontendKey k;
  std::memcpy(k.addr.bytes.data(), a.addr, 16);
  k.port = ntohs(a.port);
  k.proto = static_cast<Protocol>(a.proto);
  return k;
}

aimesh_backend toAbi(const BackendRecord& b) {
  aimesh_backend a{};
  std::memcpy(a.addr, b.addr.bytes.data(), 16);
  a.port = htons(b.port);
  a.family = b.addr.isV4() ? AIMESH_FAMILY_V4 : AIMESH_FAMILY_V6;
  a.state = static_cast<uint8_t>(b.state);
  a.service_id = b.serviceId;
  a.weight = b.weight;
  return a;
}

BackendRecord fromAbi(const aimesh_backend& a) {
  BackendRecord b;
  std::memcpy(b.addr.bytes.data(), a.addr, 16);
  b.port = ntohs(a.port);
  b.state = static_cast<EndpointState>(a.state);
  b.serviceId = a.service_id;
  b.weight = a.weight;
  return b;
}

aimesh_service toAbi(const ServiceRecord& s) {
  aimesh_service a{};
  a.slot_count = s.slotCount;
  a.backend_count = s.backendCount;
  a.algorithm = static_cast<uint8_t>(s.algorithm);
  a.slot_gen = s.slotGen;
  a.hash_size = s.hashSize;
  a.balance_pct = s.balancePct;
  a.flags = s.policy ? AIMESH_SVC_F_POLICY : 0;
  a.sample_skip = s.sampleSkip;
  return a;
}

ServiceRecord fromAbi(const aimesh_service& a) {
  return ServiceRecord{a.slot_count, a.backend_count, static_cast<Algorithm>(a.algorithm), a.slot_gen,
                       a.hash_size,  a.balance_pct,   (a.flags & AIMESH_SVC_F_POLICY) != 0, a.sample_skip};
}

namespace {

template <class K, class V, class F>
Status forEach(int fd, const char* map, F f) {
  auto n = walkKeys<K>(
      fd,
      [&](const K& k) {
        V v{};
        if (bpf_map_lookup_elem(fd, &k, &v) == 0) f(k, v);
        return true;
      },
      std::numeric_limits<uint64_t>::max(), map);
  if (!n) return n.error();
  return {};
}
// A service's hash table: a new inner array, filled, then swapped into the
// outer array of maps with one update, so a reader sees the old table or the
// new one, never a mix. The outer map keeps the inner one alive.
Status writeHashTable(int outerFd, uint32_t serviceId, const std::vector<uint32_t>& table) {
  if (table.empty()) return Error::msg("hash table for service " + std::to_string(serviceId) + " is empty");
  LIBBPF_OPTS(bpf_map_create_opts, o, .map_flags = BPF_F_INNER_MAP);
  UniqueFd inner(bpf_map_create(BPF_MAP_TYPE_ARRAY, "aimesh_hash_tbl", sizeof(uint32_t), sizeof(uint32_t),
                                static_cast<uint32_t>(table.size()), &o));
  if (inner.get() < 0) return Error::fromErrno("create hash table for service " + std::to_string(serviceId));
  std::vector<uint32_t> keys(table.size());
  for (uint32_t i = 0; i < keys.size(); ++i) keys[i] = i;
  uint32_t count = static_cast<uint32_t>(table.size());
  if (bpf_map_update_batch(inner.get(), keys.data(), table.data(), &count, nullptr) != 0 || count != table.size())
    return Error::fromErrno("fill hash table for service " + std::to_string(serviceId));
  int fd = inner.get();
  if (bpf_map_update_elem(outerFd, &serviceId, &fd, BPF_ANY) != 0)
    return Error::fromErrno("swap in hash table for service " + std::to_string(serviceId));
  return {};
}

Result<std::vector<uint32_t>> readHashTable(uint32_t innerId) {
  UniqueFd fd(bpf_map_get_fd_by_id(innerId));
  if (fd.get() < 0) return Error::fromErrno("open hash table map id " + std::to_string(innerId));
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd.get(), &info, &len) != 0) return Error::fromErrno("hash table info");
  std::vector<uint32_t> table(info.max_entries);
  for (uint32_t i = 0; i < info.max_entries; ++i)
    if (bpf_map_lookup_elem(fd.get(), &i, &table[i]) != 0) return Error::fromErrno("read hash table");
  return table;
}
}  // namespace

Status BpfMapWriter::apply(const MapOp& op) {
  return std::visit(
      Overloaded{
          [&](const ResetServiceStats& o) {
            aimesh_svc_stats stats{};
            Status st = update(fds_.svcStats, &o.id, &stats, "aimesh_svc_stats");
            if (st) st = forgetServiceClients(fds_.clients, o.id);  // the id's clients called another service
            if (!st || fds_.svcLoad < 0) return st;
            aimesh_svc_load zero{};
            return update(fds_.svcLoad, &o.id, &zero, "aimesh_svc_load");
          },
          [&](const ResetBackendStats& o) {
            aimesh_be_stats stats{};
            Status st = update(fds_.beStats, &o.id, &stats, "aimesh_be_stats");
            if (!st || fds_.beTel < 0) return st;
            st = resetTelemetry(fds_, o.id);
            if (!st || fds_.beSignal < 0) return st;
            aimesh_be_signal zero{};
            return update(fds_.beSignal, &o.id, &zero, "aimesh_be_signal");
          },
          [&](const UpsertHashTable& o) { return writeHashTable(fds_.hashTables, o.serviceId, o.table); },
          [&](const DeleteHashTable& o) { return remove(fds_.hashTables, &o.serviceId, "aimesh_hash_tables"); },
          [&](const UpsertBackend& o) {
            auto v = toAbi(o.rec);
            return update(fds_.backends, &o.id, &v, "aimesh_backends");
          },
          [&](const UpsertSlot& o) {
            aimesh_slot_key k{o.key.serviceId, o.key.slot};
            aimesh_slot v{o.backendId};
            return update(fds_.slots, &k, &v, "aimesh_slots");
          },
          [&](const UpsertService& o) {
            auto v = toAbi(o.rec);
            return update(fds_.services, &o.id, &v, "aimesh_services");
          },
          [&](const UpsertFrontend& o) {
            auto k = toAbi(o.key);
            aimesh_frontend v{o.serviceId};
            return update(fds_.frontends, &k, &v, "aimesh_frontends");
          },
          [&](const DeleteFrontend& o) {
            auto k = toAbi(o.key);
            return remove(fds_.frontends, &k, "aimesh_frontends");
          },
          [&](const DeleteService& o) { return remove(fds_.services, &o.id, "aimesh_services"); },
          [&](const DeleteSlot& o) {
            aimesh_slot_key k{o.key.serviceId, o.key.slot};
            return remove(fds_.slots, &k, "aimesh_slots");
          },
          [&](const DeleteBackend& o) { return remove(fds_.backends, &o.id, "aimesh_backends"); },
          [&](const UpsertPolicy& o) {
            aimesh_policy_key k{o.key.cgroupId, o.key.serviceId, 0};
            aimesh_policy v{1};
            return update(fds_.policy, &k, &v, "aimesh_policy");
          },
          [&](const DeletePolicy& o) {
            aimesh_policy_key k{o.key.cgroupId, o.key.serviceId, 0};
            return remove(fds_.policy, &k, "aimesh_policy");
          },
      },
      op);
}

Result<KernelState> BpfMapWriter::read() const {
  KernelState s;
  Status st = forEach<aimesh_frontend_key, aimesh_frontend>(
      fds_.frontends, "aimesh_frontends",
      [&](const aimesh_frontend_key& k, const aimesh_frontend& v) { s.frontends[fromAbi(k)] = v.service_id; });
  if (!st) return st.error();
  st = forEach<uint32_t, aimesh_service>(fds_.services, "aimesh_services",
                                         [&](uint32_t k, const aimesh_service& v) { s.services[k] = fromAbi(v); });
  if (!st) return st.error();
  st = forEach<aimesh_slot_key, aimesh_slot>(fds_.slots, "aimesh_slots",
                                             [&](const aimesh_slot_key& k, const aimesh_slot& v) {
                                               s.slots[SlotKey{k.service_id, k.slot}] = v.backend_id;
                                             });
  if (!st) return st.error();
  st = forEach<uint32_t, aimesh_backend>(fds_.backends, "aimesh_backends",
                                         [&](uint32_t k, const aimesh_backend& v) { s.backends[k] = fromAbi(v); });
  if (!st) return st.error();
  if (fds_.policy >= 0) {
    st = forEach<aimesh_policy_key, aimesh_policy>(fds_.policy, "aimesh_policy",
                                                  [&](const aimesh_policy_key& k, const aimesh_policy& v) {
                                                    if (v.allow) s.policy[PolicyKey{k.cgroup_id, k.service_id}] = 1;
                                                  });
    if (!st) return st.error();
  }
  if (fds_.hashTables >= 0) {
    // An array of maps has every key; only set entries have a map.
    for (uint32_t sid = 0; sid < limits_.services; ++sid) {
      uint32_t innerId = 0;
      if (bpf_map_lookup_elem(fds_.hashTables, &sid, &innerId) != 0) {
        if (errno == ENOENT) continue;
        return Error::fromErrno("read aimesh_hash_tables");
      }
      auto t = readHashTable(innerId);
      if (!t) return t.error();
      s.hashTables[sid] = std::move(*t);
    }
  }
  return s;
}

}  // namespace aimesh
