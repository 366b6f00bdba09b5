// Reconciler: read the kernel state back, plan against the desired snapshot,
// diff, and apply the operations in order through a MapWriter. Level
// triggered: a failed apply leaves the kernel consistent (every step keeps the
// invariants) and the next run starts again from what the kernel holds.
// After a successful run the applied state is known, so the next run diffs
// against it without reading every map back (at 10,000 services that read
// was most of a one-endpoint change); Verify::kRead reads the kernel anyway,
// to repair drift (the agent's periodic resync).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "model/snapshot.h"
#include "reconcile/diff.h"
#include "reconcile/map_writer.h"
#include "reconcile/plan.h"

namespace aimesh {

struct ReconcileReport {
  size_t ops = 0;
  std::chrono::nanoseconds duration{0};
};

class Reconciler {
 public:
  explicit Reconciler(MapWriter& writer, MapLimits limits = {}) : writer_(writer), limits_(limits) {}
  enum class Verify { kKnown, kRead };
  // On success, returns what was done and fills `index` with the id index of
  // the applied state.
  Result<ReconcileReport> reconcile(const Snapshot& desired, IdIndex& index, Verify verify = Verify::kKnown);

 private:
  MapWriter& writer_;
  MapLimits limits_;
  std::optional<KernelState> known_;  // what the last successful run left in the maps
};

}  // namespace aimesh
