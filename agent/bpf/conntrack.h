// The TC path's flow table (aimesh_ct): counting and sweeping. The program
// forgets an idle flow only when one of its packets comes again; the agent
// deletes the ones nobody will send again, so the table holds live flows and
// its size means something.
#pragma once

#include <cstdint>

#include "bpf/datapath.h"
#include "util/result.h"

namespace aimesh {

struct ConntrackSweep {
  uint64_t entries = 0;  // before the sweep
  uint64_t expired = 0;  // deleted
};

// Deletes every entry idle for longer than its timeout (same rule as
// ct_timeout() in bpf/lib/conntrack.h), by CLOCK_MONOTONIC, the clock of
// bpf_ktime_get_ns().
Result<ConntrackSweep> sweepConntrack(int ctFd, const DatapathOptions::Tuning& t);

}  // namespace aimesh
