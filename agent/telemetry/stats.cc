#include "telemetry/stats.h"
#include "bpf/map_walk.h"
#include "bpf/percpu.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <algorithm>
#include <cstring>

namespace aimesh {
const char* reasonName(uint32_t reason) {
  switch (reason) {
    case AIMESH_R_NO_BACKEND: return "no_backend";
    case AIMESH_R_SERVICE_MISSING: return "service_missing";
    case AIMESH_R_SLOT_MISSING: return "slot_missing";
    case AIMESH_R_BACKEND_MISSING: return "backend_missing";
    case AIMESH_R_BACKEND_INACTIVE: return "backend_inactive";
    case AIMESH_R_FAMILY_MISMATCH: return "family_mismatch";
    case AIMESH_R_REVNAT_FAILED: return "revnat_failed";
    case AIMESH_R_SOCK_STORAGE_FAILED: return "sock_storage_failed";
    case AIMESH_R_HIST_FULL: return "hist_full";
    case AIMESH_R_EVENT_DROPPED: return "event_dropped";
    case AIMESH_R_EJECTED_SKIPPED: return "ejected_skipped";
    case AIMESH_R_EJECTED_FALLBACK: return "ejected_fallback";
    case AIMESH_R_HASH_TABLE_MISS: return "hash_table_miss";
    case AIMESH_R_TC_FRAGMENT: return "tc_fragment";
    case AIMESH_R_TC_MALFORMED: return "tc_malformed";
    case AIMESH_R_TC_NO_BACKEND: return "tc_no_backend";
    case AIMESH_R_TC_CT_FAILED: return "tc_ct_failed";
    case AIMESH_R_TC_REWRITE_FAILED: return "tc_rewrite_failed";
    case AIMESH_R_CLIENT_FULL: return "client_full";
    case AIMESH_R_SPLIT_FAILOVER: return "split_failover";
    case AIMESH_R_EJECTED_REFUSED: return "ejected_refused";
    default: return "unknown";
  }
}

namespace {
// The ids up to the largest asked for, read in batches; `keep(id, value)`
// for the ids asked for.
template <class V, class F>
Status readIds(int fd, const std::vector<uint32_t>& ids, const char* what, F keep) {
  if (ids.empty()) return {};
  std::vector<uint32_t> sorted = ids;
  std::sort(sorted.begin(), sorted.end());
  return readArray<V>(fd, sorted.back() + 1, [&](uint32_t id, const V& v) {
    if (std::binary_search(sorted.begin(), sorted.end(), id)) keep(id, v);
  }, what);
}
}  // namespace

Result<DatapathStats> readStats(const MapFds& fds, const std::vector<uint32_t>& serviceIds,
                                const std::vector<uint32_t>& backendIds) {
  DatapathStats st;
  // Only what was counted: an id with all zeros reads as no entry (zero).
  Status s = readIds<aimesh_svc_stats>(fds.svcStats, serviceIds, "aimesh_svc_stats",
                                       [&](uint32_t id, const aimesh_svc_stats& v) {
                                         if (v.connects | v.datagrams | v.refused | v.denied)
                                           st.services[id] = ServiceCounters{v.connects, v.datagrams, v.refused,
                                                                             v.denied};
                                       });
  if (!s) return s.error();
  s = readIds<aimesh_be_stats>(fds.beStats, backendIds, "aimesh_be_stats",
                               [&](uint32_t id, const aimesh_be_stats& v) {
                                 if (v.connects | v.datagrams) st.backends[id] = BackendCounters{v.connects, v.datagrams};
                               });
  if (!s) return s.error();
  for (uint32_t r = 0; r < AIMESH_R_MAX; ++r) {
    auto v = lookupPerCpu<uint64_t>(fds.reasons, r, "aimesh_reasons");
    if (!v) return v.error();
    for (auto x : *v) st.reasons[r] += x;
  }
  return st;
}

Result<uint64_t> countEntries(int mapFd, uint64_t limit) {
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(mapFd, &info, &len) != 0) return Error::fromErrno("map info");
  return countHashEntries(mapFd, info.key_size, info.value_size, limit);
}

}  // namespace aimesh
