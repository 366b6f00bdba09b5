// How many objects the data plane's maps hold. The BPF objects are compiled
// with the AIMESH_MAX_* defaults; the agent sets every sized map from these
// before loading (--max-services, --max-backends, --max-flows), so a node
// with 10,000 services does not need a rebuild and a small node does not pay
// for it. Only the small reasons array is per-CPU: see mapMemoryBytes() and
// docs/operations.md.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "aimesh/abi.h"

namespace aimesh {

// The --max-services / --max-backends value to suggest when `wanted` ids do
// not fit: room for them and the reserved id 0, plus a quarter for growth,
// rounded up to a power of two (at least 16).
uint32_t suggestedLimit(std::size_t wanted);

struct MapLimits {
  uint32_t services = AIMESH_MAX_SERVICES;  // service ids 1..services-1
  uint32_t backends = AIMESH_MAX_BACKENDS;  // backend ids 1..backends-1
  uint32_t flows = AIMESH_MAX_CT;           // TC path flow entries (forward + reply)

  // Derived sizes; at the defaults they equal the compiled-in AIMESH_MAX_*.
  uint32_t frontends() const { return services * (AIMESH_MAX_FRONTENDS / AIMESH_MAX_SERVICES); }
  uint32_t slots() const { return services * (AIMESH_MAX_SLOTS / AIMESH_MAX_SERVICES); }
  uint32_t revnat() const { return backends * (AIMESH_MAX_REVNAT / AIMESH_MAX_BACKENDS); }
  uint32_t policies() const { return services * (AIMESH_MAX_POLICY / AIMESH_MAX_SERVICES); }

  // The entries map `name` should have, or nullopt for a map whose size is
  // fixed (reasons, config, the ring buffer).
  std::optional<uint32_t> entriesOf(const std::string& name) const;

  // What is wrong with these limits, naming the flag; nullopt if nothing.
  std::optional<std::string> validate() const;

  bool operator==(const MapLimits&) const = default;
};

// Bounds enforced by validate().
inline constexpr uint32_t kMinServices = 16, kMaxServicesLimit = 1u << 18;  // 262,144
inline constexpr uint32_t kMinBackends = 16, kMaxBackendsLimit = 1u << 20;  // 1,048,576
inline constexpr uint32_t kMinFlows = 1024, kMaxFlowsLimit = 1u << 24;      // 16,777,216

// Bytes the maps take for these limits on `cpus` CPUs (values and keys, the
// events ring buffer, the per-CPU reasons array; the kernel's per-entry
// overhead of hash maps is not counted), histograms excepted: those are
// created by their first sample, see histogramBytes(). For the operator's
// sizing table, and `--check-config`.
uint64_t mapMemoryBytes(const MapLimits& l, unsigned cpus);
// Kernel memory of the latency histograms of `endpoints` endpoints that each
// have a sample of every metric (whatever the CPU count).
uint64_t histogramBytes(uint64_t endpoints);

}  // namespace aimesh
