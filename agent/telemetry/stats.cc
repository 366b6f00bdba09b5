#include "telemetry/stats.h"
#include "bpf/map_walk.h"
#include "bpf/percpu.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

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
    default: return "unknown";
  }
}

Result<DatapathStats> readStats(const MapFds& fds, const std::vector<uint32_t>& serviceIds,
                                const std::vector<uint32_t>& backendIds) {
  DatapathStats st;
  for (uint32_t id : serviceIds) {
    aimesh_svc_stats s{};
    if (bpf_map_lookup_elem(fds.svcStats, &id, &s) != 0) return Error::fromErrno("lookup aimesh_svc_stats");
    st.services[id] = ServiceCounters{s.connects, s.datagrams, s.refused, s.denied};
  }
  for (uint32_t id : backendIds) {
    aimesh_be_stats s{};
    if (bpf_map_lookup_elem(fds.beStats, &id, &s) != 0) return Error::fromErrno("lookup aimesh_be_stats");
    st.backends[id] = BackendCounters{s.connects, s.datagrams};
  }
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
  return walkKeys(mapFd, info.key_size, [](const void*) { return true; }, limit);
}

}  // namespace aimesh
