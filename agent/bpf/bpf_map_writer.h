// MapWriter over the real pinned BPF maps.
#pragma once

#include <algorithm>

#include "bpf/datapath.h"
#include "reconcile/map_writer.h"

namespace aimesh {

class BpfMapWriter : public MapWriter {
 public:
  explicit BpfMapWriter(const MapFds& fds, MapLimits limits = {})
      : fds_(fds), limits_(limits), countersZero_(fds.countersZero) {}
  Status apply(const MapOp& op) override;
  Status applyAll(const std::vector<MapOp>& ops) override;
  Result<KernelState> read() const override;

 private:
  bool applyBatched(const std::vector<MapOp>& ops, size_t from, size_t to);
  MapFds fds_;
  MapLimits limits_;
  // A bound on walks of aimesh_split_stats (sized by the services limit).
  uint64_t splitStatsWalkLimit() const {
    return uint64_t{std::max<uint32_t>(limits_.services, AIMESH_MAX_SERVICES)} * 64;
  }
  // Until the first write: the counter maps are all zeros (fds.countersZero),
  // so the first applyAll() skips its counter resets (~50,000 writes of
  // zeros at 10,000 services, a tenth of a second of the start).
  bool countersZero_;
};

// Conversions between the ABI structs and the reconciler's values.
aimesh_frontend_key toAbi(const FrontendKey& k);
FrontendKey fromAbi(const aimesh_frontend_key& k);
aimesh_backend toAbi(const BackendRecord& b);
BackendRecord fromAbi(const aimesh_backend& b);
aimesh_service toAbi(const ServiceRecord& s);
ServiceRecord fromAbi(const aimesh_service& s);

}  // namespace aimesh
