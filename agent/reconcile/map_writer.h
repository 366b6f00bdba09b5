// The seam between the pure reconciler and the kernel: a MapWriter applies
// one operation at a time and can read the whole state back. The BPF
// implementation is in bpf_map_writer.h; unit tests use a fake that records.
#pragma once

#include "reconcile/diff.h"
#include "reconcile/kernel_state.h"
#include "util/result.h"

namespace aimesh {

class MapWriter {
 public:
  virtual ~MapWriter() = default;
  virtual Status apply(const MapOp& op) = 0;
  virtual Result<KernelState> read() const = 0;
};

}  // namespace aimesh
