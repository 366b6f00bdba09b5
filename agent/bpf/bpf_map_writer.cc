#include "bpf/bpf_map_writer.h"

#include "bpf/clients_map.h"
#include "bpf/map_walk.h"
#include "util/overloaded.h"
#include "util/unique_fd.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <algorithm>
#include <utility>
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

// A service id taken by a new service starts with no split counters: those
// of the split it was, and those that splits sent to it.
// walkLimit: how many keys to visit at most (a bound on a walk that keeps
// restarting as the programs change the map), from the configured size.
Status forgetSplitStats(int fd, const std::vector<uint32_t>& serviceIds, uint64_t walkLimit) {
  if (fd < 0 || serviceIds.empty()) return {};
  std::vector<uint32_t> sorted = serviceIds;
  std::sort(sorted.begin(), sorted.end());
  std::vector<aimesh_split_stats_key> keys;
  auto in = [&](uint32_t id) { return std::binary_search(sorted.begin(), sorted.end(), id); };
  auto walked = walkKeys<aimesh_split_stats_key>(
      fd,
      [&](const aimesh_split_stats_key& k) {
        if (in(k.split_id) || in(k.target_id)) keys.push_back(k);
        return true;
      },
      walkLimit, "aimesh_split_stats");
  if (!walked) return walked.error();
  for (const auto& k : keys)
    if (Status st = remove(fd, &k, "aimesh_split_stats"); !st) return st;
  return {};
}

aimesh_split toAbi(const SplitRecord& r) {
  aimesh_split a{};
  a.count = static_cast<uint32_t>(std::min<size_t>(r.targets.size(), AIMESH_SPLIT_MAX));
  for (uint32_t i = 0; i < a.count; ++i) a.targets[i] = {r.targets[i].first, r.targets[i].second};
  return a;
}

SplitRecord fromAbi(const aimesh_split& a) {
  SplitRecord r;
  for (uint32_t i = 0; i < a.count && i < AIMESH_SPLIT_MAX; ++i)
    r.targets.emplace_back(a.targets[i].service_id, a.targets[i].weight);
  return r;
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
  a.flags = (s.policy ? AIMESH_SVC_F_POLICY : 0) | (s.split ? AIMESH_SVC_F_SPLIT : 0) |
            (s.failClose ? AIMESH_SVC_F_FAIL_CLOSE : 0);
  a.sample_skip = s.sampleSkip;
  return a;
}

ServiceRecord fromAbi(const aimesh_service& a) {
  ServiceRecord r{a.slot_count, a.backend_count, static_cast<Algorithm>(a.algorithm), a.slot_gen,
                  a.hash_size,  a.balance_pct,   (a.flags & AIMESH_SVC_F_POLICY) != 0};
  r.split = (a.flags & AIMESH_SVC_F_SPLIT) != 0;
  r.failClose = (a.flags & AIMESH_SVC_F_FAIL_CLOSE) != 0;
  r.sampleSkip = a.sample_skip;
  return r;
}

namespace {

// Every entry of a hash map, 256 per system call where the kernel batches.
template <class K, class V, class F>
Status forEach(int fd, const char* map, F f) {
  return readEntries<K, V>(fd, f, std::numeric_limits<uint64_t>::max(), map);
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
  countersZero_ = false;  // from the first write on, counters may count
  return std::visit(
      Overloaded{
          [&](const ResetServiceStats& o) {
            aimesh_svc_stats stats{};
            Status st = update(fds_.svcStats, &o.id, &stats, "aimesh_svc_stats");
            if (st) st = forgetServiceClients(fds_.clients, o.id);  // the id's clients called another service
            if (st) st = forgetSplitStats(fds_.splitStats, {o.id}, splitStatsWalkLimit());
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
          [&](const UpsertSplit& o) {
            aimesh_split v = toAbi(o.rec);
            return update(fds_.splits, &o.serviceId, &v, "aimesh_splits");
          },
          [&](const DeleteSplit& o) { return remove(fds_.splits, &o.serviceId, "aimesh_splits"); },
      },
      op);
}

namespace {

// Runs of one operation kind, written with one BPF_MAP_*_BATCH call per
// kBatch elements instead of a system call each (a start at 10,000 services
// is ~150,000 operations). A batch that fails is not described: the caller
// applies the run again one by one, which names the operation that fails.
constexpr size_t kBatch = 4096;

template <class K, class V>
bool updateBatch(int fd, const std::vector<K>& keys, const std::vector<V>& values) {
  for (size_t at = 0; at < keys.size(); at += kBatch) {
    uint32_t n = static_cast<uint32_t>(std::min(kBatch, keys.size() - at));
    uint32_t count = n;
    if (bpf_map_update_batch(fd, keys.data() + at, values.data() + at, &count, nullptr) != 0 || count != n)
      return false;
  }
  return true;
}

template <class K>
bool deleteBatch(int fd, const std::vector<K>& keys) {
  for (size_t at = 0; at < keys.size(); at += kBatch) {
    uint32_t n = static_cast<uint32_t>(std::min(kBatch, keys.size() - at));
    uint32_t count = n;
    if (bpf_map_delete_batch(fd, keys.data() + at, &count, nullptr) != 0 || count != n) return false;
  }
  return true;
}

// Zeroes value V at every id of a run (new ids' counters and load).
template <class V>
bool zeroBatch(int fd, const std::vector<uint32_t>& ids) {
  return fd < 0 || updateBatch(fd, ids, std::vector<V>(ids.size()));
}

// The histograms of reused backend ids: one walk of aimesh_hist (its entries
// are the endpoints with traffic) instead of a delete per id and metric.
bool forgetHistograms(int fd, const std::vector<uint32_t>& ids) {
  if (fd < 0) return true;
  // A few ids: delete their keys outright. Many: one walk of the keys there
  // are (a walk costs a system call per key, and every endpoint that carried
  // traffic has some: at scale a walk made a one-endpoint change slow).
  if (ids.size() <= 64) {
    for (uint32_t id : ids)
      for (uint32_t m = 0; m < AIMESH_M_MAX; ++m) {
        uint32_t k = id * AIMESH_M_MAX + m;
        if (bpf_map_delete_elem(fd, &k) != 0 && errno != ENOENT) return false;
      }
    return true;
  }
  std::vector<uint32_t> sorted = ids, gone;
  std::sort(sorted.begin(), sorted.end());
  auto walked = walkKeys<uint32_t>(fd, [&](uint32_t k) {
    if (std::binary_search(sorted.begin(), sorted.end(), k / AIMESH_M_MAX)) gone.push_back(k);
    return true;
  });
  if (!walked) return false;
  for (uint32_t k : gone)
    if (bpf_map_delete_elem(fd, &k) != 0 && errno != ENOENT) return false;
  return true;
}

template <class T>
std::vector<const T*> runOf(const std::vector<MapOp>& ops, size_t from, size_t to) {
  std::vector<const T*> out;
  out.reserve(to - from);
  for (size_t i = from; i < to; ++i) out.push_back(&std::get<T>(ops[i]));
  return out;
}

}  // namespace

// One run of operations of one kind, batched where the kind allows it.
// Returns false if the batch did not go through (the caller retries one by
// one); kinds without a batch form are applied one by one here.
bool BpfMapWriter::applyBatched(const std::vector<MapOp>& ops, size_t from, size_t to) {
  auto ids = [&](auto tag) {
    using T = decltype(tag);
    std::vector<uint32_t> out;
    for (const T* o : runOf<T>(ops, from, to)) out.push_back(o->id);
    return out;
  };
  return std::visit(
      Overloaded{
          [&](const ResetServiceStats&) {
            std::vector<uint32_t> sids = ids(ResetServiceStats{});
            return zeroBatch<aimesh_svc_stats>(fds_.svcStats, sids) && zeroBatch<aimesh_svc_load>(fds_.svcLoad, sids) &&
                   static_cast<bool>(forgetServicesClients(fds_.clients, sids)) &&
                   static_cast<bool>(forgetSplitStats(fds_.splitStats, sids, splitStatsWalkLimit()));
          },
          [&](const ResetBackendStats&) {
            std::vector<uint32_t> bids = ids(ResetBackendStats{});
            bool ok = zeroBatch<aimesh_be_stats>(fds_.beStats, bids);
            if (ok && fds_.beTel >= 0)
              ok = zeroBatch<aimesh_be_tel>(fds_.beTel, bids) && zeroBatch<aimesh_be_load>(fds_.beLoad, bids) &&
                   forgetHistograms(fds_.hist, bids) && zeroBatch<aimesh_be_signal>(fds_.beSignal, bids);
            return ok;
          },
          [&](const UpsertBackend&) {
            std::vector<uint32_t> keys;
            std::vector<aimesh_backend> values;
            for (const UpsertBackend* o : runOf<UpsertBackend>(ops, from, to)) {
              keys.push_back(o->id);
              values.push_back(toAbi(o->rec));
            }
            return updateBatch(fds_.backends, keys, values);
          },
          [&](const UpsertSlot&) {
            std::vector<aimesh_slot_key> keys;
            std::vector<aimesh_slot> values;
            for (const UpsertSlot* o : runOf<UpsertSlot>(ops, from, to)) {
              keys.push_back({o->key.serviceId, o->key.slot});
              values.push_back({o->backendId});
            }
            return updateBatch(fds_.slots, keys, values);
          },
          [&](const UpsertService&) {
            std::vector<uint32_t> keys;
            std::vector<aimesh_service> values;
            for (const UpsertService* o : runOf<UpsertService>(ops, from, to)) {
              keys.push_back(o->id);
              values.push_back(toAbi(o->rec));
            }
            return updateBatch(fds_.services, keys, values);
          },
          [&](const UpsertFrontend&) {
            std::vector<aimesh_frontend_key> keys;
            std::vector<aimesh_frontend> values;
            for (const UpsertFrontend* o : runOf<UpsertFrontend>(ops, from, to)) {
              keys.push_back(toAbi(o->key));
              values.push_back({o->serviceId});
            }
            return updateBatch(fds_.frontends, keys, values);
          },
          [&](const DeleteFrontend&) {
            std::vector<aimesh_frontend_key> keys;
            for (const DeleteFrontend* o : runOf<DeleteFrontend>(ops, from, to)) keys.push_back(toAbi(o->key));
            return deleteBatch(fds_.frontends, keys);
          },
          [&](const DeleteSlot&) {
            std::vector<aimesh_slot_key> keys;
            for (const DeleteSlot* o : runOf<DeleteSlot>(ops, from, to)) keys.push_back({o->key.serviceId, o->key.slot});
            return deleteBatch(fds_.slots, keys);
          },
          [&](const DeleteService&) { return deleteBatch(fds_.services, ids(DeleteService{})); },
          [&](const DeleteBackend&) { return deleteBatch(fds_.backends, ids(DeleteBackend{})); },
          [&](const auto&) {
            for (size_t i = from; i < to; ++i)
              if (!apply(ops[i])) return false;
            return true;
          },
      },
      ops[from]);
}

Status BpfMapWriter::applyAll(const std::vector<MapOp>& ops) {
  const bool zeroed = std::exchange(countersZero_, false);
  for (size_t from = 0; from < ops.size();) {
    size_t to = from + 1;
    while (to < ops.size() && ops[to].index() == ops[from].index()) ++to;
    if (zeroed && (std::holds_alternative<ResetServiceStats>(ops[from]) ||
                   std::holds_alternative<ResetBackendStats>(ops[from]))) {
      from = to;
      continue;
    }
    // A run that did not go through in batches (a key already gone, a kernel
    // without batch updates) is applied again one by one: every operation
    // is idempotent, and this names the one that fails.
    if (!applyBatched(ops, from, to))
      if (Status st = MapWriter::applyAll(std::vector<MapOp>(ops.begin() + from, ops.begin() + to)); !st) return st;
    from = to;
  }
  return {};
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
  if (fds_.splits >= 0) {
    st = forEach<uint32_t, aimesh_split>(fds_.splits, "aimesh_splits",
                                         [&](uint32_t k, const aimesh_split& v) { s.splits[k] = fromAbi(v); });
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
