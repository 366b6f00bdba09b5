// diff(): the ordered map operations that take the kernel from `current` to
// `desired`. Pure and deterministic: the same inputs give the same list.
//
// Order (so that no reader ever follows a reference to something missing, a
// service never appears with half its backends, and a policy is never
// enforced before its allow entries are in):
//   1. reset counters (and load state) of new service and backend ids
//   2. upsert backends         4. upsert hash tables (one swap each)
//   3. upsert slots            5. upsert policy entries
//                              6. upsert services that are not splits (a
//                                 slot-generation flip, the policy flag)
//                              7. upsert splits (they name those services)
//                              8. upsert splits' service records
//                              9. upsert frontends (the service goes live)
//   10. demote backends (active -> draining/terminating or weight 0): only
//       now, when no live slot names them any more
//   11. delete frontends  12. delete services  13. delete splits
//   14. delete policy entries  15. delete hash tables  16. delete slots
//   17. delete backends
// Within a step, operations are sorted by key.
#pragma once

#include <string>
#include <variant>
#include <vector>

#include "reconcile/kernel_state.h"

namespace aimesh {

struct ResetServiceStats { uint32_t id; auto operator<=>(const ResetServiceStats&) const = default; };
struct ResetBackendStats { uint32_t id; auto operator<=>(const ResetBackendStats&) const = default; };
struct UpsertBackend { uint32_t id; BackendRecord rec; auto operator<=>(const UpsertBackend&) const = default; };
struct UpsertSlot { SlotKey key; uint32_t backendId; auto operator<=>(const UpsertSlot&) const = default; };
struct UpsertService { uint32_t id; ServiceRecord rec; auto operator<=>(const UpsertService&) const = default; };
struct UpsertFrontend { FrontendKey key; uint32_t serviceId; auto operator<=>(const UpsertFrontend&) const = default; };
struct DeleteFrontend { FrontendKey key; auto operator<=>(const DeleteFrontend&) const = default; };
struct DeleteService { uint32_t id; auto operator<=>(const DeleteService&) const = default; };
struct DeleteSlot { SlotKey key; auto operator<=>(const DeleteSlot&) const = default; };
struct DeleteBackend { uint32_t id; auto operator<=>(const DeleteBackend&) const = default; };
struct UpsertHashTable {
  uint32_t serviceId;
  std::vector<uint32_t> table;
  auto operator<=>(const UpsertHashTable&) const = default;
};
struct DeleteHashTable { uint32_t serviceId; auto operator<=>(const DeleteHashTable&) const = default; };
struct UpsertSplit { uint32_t serviceId; SplitRecord rec; auto operator<=>(const UpsertSplit&) const = default; };
struct DeleteSplit { uint32_t serviceId; auto operator<=>(const DeleteSplit&) const = default; };
struct UpsertPolicy { PolicyKey key; auto operator<=>(const UpsertPolicy&) const = default; };
struct DeletePolicy { PolicyKey key; auto operator<=>(const DeletePolicy&) const = default; };

using MapOp = std::variant<ResetServiceStats, ResetBackendStats, UpsertBackend, UpsertSlot, UpsertService,
                           UpsertFrontend, DeleteFrontend, DeleteService, DeleteSlot, DeleteBackend,
                           UpsertHashTable, DeleteHashTable, UpsertPolicy, DeletePolicy, UpsertSplit, DeleteSplit>;

// One line per op, for logs and golden tests, e.g. "upsert-slot 3/1024 -> 7".
std::string describe(const MapOp& op);

std::vector<MapOp> diff(const KernelState& current, const KernelState& desired,
                        const std::vector<uint32_t>& newServiceIds = {},
                        const std::vector<uint32_t>& newBackendIds = {});

}  // namespace aimesh
