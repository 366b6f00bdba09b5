// Reconciler: read the kernel state back, plan against the desired snapshot,
// diff, and apply the operations in order through a MapWriter. Level
// triggered: a failed apply leaves the kernel consistent (every step keeps the
// invariants) and the next run starts again from what the kernel holds.
//
// After a successful run the applied state is known, so the next run diffs
// against it without reading every map back; Verify::kRead reads the kernel
// anyway, to repair drift (the agent's periodic resync). A run after a
// successful one is incremental when few services changed: only the services
// added, removed or changed since the last snapshot are planned and diffed
// (against the entries of the ids they own), and the known state and the id
// index are patched in place. It gives the same operations as a full plan
// would (makePartialPlan()); at 10,000 services a one-endpoint change then
// costs a walk over the two snapshots, not a plan of every service.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "model/snapshot.h"
#include "reconcile/diff.h"
#include "reconcile/map_writer.h"
#include "reconcile/plan.h"

namespace aimesh {

struct ReconcileReport {
  size_t ops = 0;
  std::chrono::nanoseconds duration{0};
  bool incremental = false;  // only the changed services were planned
  size_t planned = 0;        // services planned (added or changed; all of them when not incremental)
};

class Reconciler {
 public:
  // incremental=false plans every service on every run (tests compare the two).
  explicit Reconciler(MapWriter& writer, MapLimits limits = {}, bool incremental = true)
      : writer_(writer), limits_(limits), incremental_(incremental) {}
  enum class Verify { kKnown, kRead };
  // On success, `desired` becomes applied() and index() its id index.
  Result<ReconcileReport> reconcile(Snapshot desired, Verify verify = Verify::kKnown);
  // The same, and a copy of the index in `index` (for tests).
  Result<ReconcileReport> reconcile(const Snapshot& desired, IdIndex& index, Verify verify = Verify::kKnown);

  // What the last successful run applied, and the ids it stands at.
  const std::optional<Snapshot>& applied() const { return applied_; }
  const IdIndex& index() const { return index_; }
  // What the last successful run changed in index().
  const IndexChange& lastChange() const { return change_; }

 private:
  Result<ReconcileReport> reconcileAll(Snapshot&& desired, Verify verify);
  // nullopt: the change is not one the incremental path takes (too many
  // services, an order it cannot walk, a frontend moving between services,
  // a map limit): plan all.
  std::optional<Result<ReconcileReport>> reconcileChanged(Snapshot& desired);
  // Adds the service ids `s` (a service of applied()) holds; false if they cannot be told.
  bool idsOf(const Service& s, std::set<uint32_t>& ids) const;

  MapWriter& writer_;
  MapLimits limits_;
  bool incremental_;
  std::optional<KernelState> known_;  // what the last successful run left in the maps
  std::optional<StateFreeIds> free_;  // known_'s free ids, when known
  bool appliedSorted_ = false;        // applied_'s services are in strictly increasing key order
  std::optional<Snapshot> applied_;   // the snapshot of the last successful run
  IdIndex index_;                     // ... and its ids
  IndexChange change_;
};

}  // namespace aimesh
