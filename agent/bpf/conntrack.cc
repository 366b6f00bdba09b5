#include "bpf/conntrack.h"
#include "bpf/map_walk.h"

#include <bpf/bpf.h>
#include <time.h>

#include <vector>

#include "aimesh/abi.h"

namespace aimesh {

Result<ConntrackSweep> sweepConntrack(int ctFd, const DatapathOptions::Tuning& t) {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  uint64_t now = static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ULL + static_cast<uint64_t>(ts.tv_nsec);
  ConntrackSweep out;
  std::vector<aimesh_ct_key> dead;
  auto walked = walkKeys<aimesh_ct_key>(ctFd, [&](const aimesh_ct_key& key) {
    ++out.entries;
    aimesh_ct v{};
    if (bpf_map_lookup_elem(ctFd, &key, &v) != 0) return true;  // gone meanwhile
    uint64_t timeout = (v.flags & AIMESH_CTF_CLOSING) ? t.ctClosingTimeoutNs
                       : key.proto == AIMESH_PROTO_TCP ? t.ctTcpTimeoutNs
                                                       : t.ctUdpTimeoutNs;
    if (now > v.last_seen_ns && now - v.last_seen_ns > timeout) dead.push_back(key);
    return true;
  });
  if (!walked) return walked.error();
  // Deleted after the walk: deleting while walking restarts get_next_key.
  for (auto& k : dead)
    if (bpf_map_delete_elem(ctFd, &k) == 0) ++out.expired;
  return out;
}

}  // namespace aimesh
