// Splits name their backend services by name; the kernel needs the ids of
// those services' ports. Before planning, the agent fills each split
// backend's VIP and ports from the snapshot (SplitBackend::vip, ports), and
// the plan turns them into service ids through the frontends. Keeping the
// resolution in the split's own value means a split is planned again
// exactly when what it resolves to changes (a backend service added,
// removed, or given other addresses or ports), by the same snapshot walk
// that finds any other change. Pure.
#pragma once

#include <string>
#include <vector>

#include "model/snapshot.h"

namespace aimesh {

// A split backend that does not resolve: no such service, or a split.
struct UnresolvedSplitBackend {
  std::string split;    // namespace/name of the split
  std::string backend;  // namespace/name it names
  std::string reason;
  auto operator<=>(const UnresolvedSplitBackend&) const = default;
};

// Fills the vip and ports of every split backend in `snap` (a split whose
// resolution is unchanged is left as it is, still shared with earlier
// snapshots); returns the backends that did not resolve (their share goes
// to the others).
std::vector<UnresolvedSplitBackend> resolveSplits(Snapshot& snap);

}  // namespace aimesh
