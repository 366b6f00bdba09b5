#include "reconcile/limits.h"

#include <fmt/format.h>

namespace aimesh {

uint32_t suggestedLimit(std::size_t wanted) {
  uint64_t need = uint64_t{wanted} + 1 + wanted / 4, v = 16;
  while (v < need && v < (uint64_t{1} << 31)) v *= 2;
  return static_cast<uint32_t>(v);
}

std::optional<uint32_t> MapLimits::entriesOf(const std::string& name) const {
  if (name == "aimesh_frontends") return frontends();
  if (name == "aimesh_services" || name == "aimesh_svc_stats" || name == "aimesh_svc_load" ||
      name == "aimesh_hash_tables" || name == "aimesh_lc_svc" || name == "aimesh_splits" ||
      name == "aimesh_split_stats")
    return services;
  if (name == "aimesh_slots") return slots();
  if (name == "aimesh_backends" || name == "aimesh_be_stats" || name == "aimesh_be_tel" ||
      name == "aimesh_be_load" || name == "aimesh_be_signal" || name == "aimesh_lc_be")
    return backends;
  if (name == "aimesh_revnat") return revnat();
  if (name == "aimesh_hist") return backends * AIMESH_M_MAX;
  if (name == "aimesh_ct") return flows;
  if (name == "aimesh_policy") return policies();
  // Not a limit, but sized here so that a map pinned by an older agent with
  // fewer reasons is resized (its counters copied) instead of refused.
  if (name == "aimesh_reasons") return AIMESH_R_MAX;
  return std::nullopt;
}

std::optional<std::string> MapLimits::validate() const {
  auto check = [](const char* flag, uint32_t v, uint32_t lo, uint32_t hi) -> std::optional<std::string> {
    if (v < lo || v > hi) return fmt::format("{} {} is out of range [{}, {}]", flag, v, lo, hi);
    return std::nullopt;
  };
  if (auto e = check("--max-services", services, kMinServices, kMaxServicesLimit)) return e;
  if (auto e = check("--max-backends", backends, kMinBackends, kMaxBackendsLimit)) return e;
  if (auto e = check("--max-flows", flows, kMinFlows, kMaxFlowsLimit)) return e;
  return std::nullopt;
}

uint64_t mapMemoryBytes(const MapLimits& l, unsigned cpus) {
  auto kv = [](uint64_t n, uint64_t k, uint64_t v) { return n * (k + v); };
  uint64_t c = cpus ? cpus : 1;
  uint64_t b = 0;
  b += kv(l.frontends(), sizeof(aimesh_frontend_key), sizeof(aimesh_frontend));
  b += kv(l.services, 0, sizeof(aimesh_service));
  b += kv(l.slots(), sizeof(aimesh_slot_key), sizeof(aimesh_slot));
  b += kv(l.backends, 0, sizeof(aimesh_backend));
  b += kv(l.revnat(), sizeof(aimesh_revnat_key), sizeof(aimesh_revnat));
  b += kv(l.services, 0, sizeof(aimesh_svc_stats));
  b += kv(l.backends, 0, sizeof(aimesh_be_stats) + sizeof(aimesh_be_tel));
  b += kv(AIMESH_R_MAX, 0, c * sizeof(uint64_t));  // aimesh_reasons, the one per-CPU map
  b += AIMESH_EVENTS_BYTES;
  b += kv(AIMESH_TIMED_SLOTS, 0, sizeof(uint32_t));  // aimesh_timed, fixed
  b += kv(l.backends, 0, sizeof(aimesh_be_load) + sizeof(aimesh_be_signal));
  b += kv(l.services, 0, sizeof(aimesh_svc_load) + sizeof(uint32_t));
  b += kv(l.flows, sizeof(aimesh_ct_key), sizeof(aimesh_ct));
  b += kv(l.policies(), sizeof(aimesh_policy_key), sizeof(aimesh_policy));
  return b;
}

uint64_t histogramBytes(uint64_t endpoints) {
  // key + value + the hash element's header, rounded up to the kernel's
  // allocation size class (2 KiB for a 1.7 KiB histogram).
  uint64_t elem = sizeof(uint32_t) + sizeof(aimesh_hist) + 64, alloc = 64;
  while (alloc < elem) alloc *= 2;
  return endpoints * AIMESH_M_MAX * alloc;
}

}  // namespace aimesh
