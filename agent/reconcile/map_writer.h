// The seam between the pure reconciler and the kernel: a MapWriter applies
// operations in order and can read the whole state back. The BPF
// implementation is in bpf_map_writer.h (it batches runs of one kind of
// operation); unit tests use a fake that records.
#pragma once

#include "reconcile/diff.h"
#include "reconcile/kernel_state.h"
#include "util/result.h"

namespace aimesh {

class MapWriter {
 public:
  virtual ~MapWriter() = default;
  virtual Status apply(const MapOp& op) = 0;
  // Applies ops in order; stops at the first that fails and returns its
  // error, naming it (describe()). The same as apply() on each, by default.
  virtual Status applyAll(const std::vector<MapOp>& ops) {
    for (const MapOp& op : ops)
      if (Status st = apply(op); !st) return Error{st.error().code, describe(op) + ": " + st.error().context};
    return {};
  }
  virtual Result<KernelState> read() const = 0;
};

}  // namespace aimesh
