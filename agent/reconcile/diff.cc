#include "reconcile/diff.h"
#include "util/overloaded.h"

#include <algorithm>
#include <fmt/format.h>

namespace aimesh {
namespace {


std::string slotStr(const SlotKey& k) { return fmt::format("{}/{}", k.serviceId, k.slot); }

// Upserts for keys whose value is new or changed; deletes for keys gone.
template <class K, class V, class Up, class Del>
void diffMap(const std::map<K, V>& cur, const std::map<K, V>& want, std::vector<MapOp>& ups,
             std::vector<MapOp>& dels, Up up, Del del) {
  for (auto& [k, v] : want) {
    auto it = cur.find(k);
    if (it == cur.end() || !(it->second == v)) ups.push_back(up(k, v));
  }
  for (auto& [k, v] : cur)
    if (!want.count(k)) dels.push_back(del(k));
}

}  // namespace

std::string describe(const MapOp& op) {
  return std::visit(
      Overloaded{
          [](const ResetServiceStats& o) { return fmt::format("reset-service-stats {}", o.id); },
          [](const ResetBackendStats& o) { return fmt::format("reset-backend-stats {}", o.id); },
          [](const UpsertBackend& o) {
            return fmt::format("upsert-backend {} svc={} {}:{} {} w={}", o.id, o.rec.serviceId,
                               o.rec.addr.toString(), o.rec.port, toString(o.rec.state), o.rec.weight);
          },
          [](const UpsertSlot& o) { return fmt::format("upsert-slot {} -> {}", slotStr(o.key), o.backendId); },
          [](const UpsertService& o) {
            std::string d = fmt::format("upsert-service {} slots={} backends={} gen={} alg={}", o.id,
                                        o.rec.slotCount, o.rec.backendCount, o.rec.slotGen,
                                        toString(o.rec.algorithm));
            if (o.rec.hashSize) d += fmt::format(" hash={} balance={}%", o.rec.hashSize, o.rec.balancePct);
            if (o.rec.policy) d += " policy";
            if (o.rec.split) d += " split";
            if (o.rec.failClose) d += " fail-close";
            if (o.rec.sampleSkip) d += fmt::format(" sample-skip={}", o.rec.sampleSkip);
            return d;
          },
          [](const UpsertFrontend& o) {
            return fmt::format("upsert-frontend {} -> {}", o.key.toString(), o.serviceId);
          },
          [](const DeleteFrontend& o) { return fmt::format("delete-frontend {}", o.key.toString()); },
          [](const DeleteService& o) { return fmt::format("delete-service {}", o.id); },
          [](const DeleteSlot& o) { return fmt::format("delete-slot {}", slotStr(o.key)); },
          [](const DeleteBackend& o) { return fmt::format("delete-backend {}", o.id); },
          [](const UpsertHashTable& o) {
            return fmt::format("upsert-hash-table {} size={}", o.serviceId, o.table.size());
          },
          [](const DeleteHashTable& o) { return fmt::format("delete-hash-table {}", o.serviceId); },
          [](const UpsertPolicy& o) {
            return fmt::format("upsert-policy cgroup={} svc={}", o.key.cgroupId, o.key.serviceId);
          },
          [](const DeletePolicy& o) {
            return fmt::format("delete-policy cgroup={} svc={}", o.key.cgroupId, o.key.serviceId);
          },
          [](const UpsertSplit& o) {
            std::string d = fmt::format("upsert-split {} ->", o.serviceId);
            for (auto& [sid, w] : o.rec.targets) d += fmt::format(" {}:{}", sid, w);
            return d;
          },
          [](const DeleteSplit& o) { return fmt::format("delete-split {}", o.serviceId); },
      },
      op);
}

std::vector<MapOp> diff(const KernelState& current, const KernelState& desired,
                        const std::vector<uint32_t>& newServiceIds, const std::vector<uint32_t>& newBackendIds) {
  std::vector<MapOp> resets, upBe, upSlot, upHash, upPol, upSvc, upSplit, upSplitSvc, upFe, delFe, delSvc, delSplit,
      delPol, delHash, delSlot, delBe;
  auto sorted = [](std::vector<uint32_t> v) {
    std::sort(v.begin(), v.end());
    return v;
  };
  for (uint32_t id : sorted(newServiceIds)) resets.push_back(ResetServiceStats{id});
  for (uint32_t id : sorted(newBackendIds)) resets.push_back(ResetBackendStats{id});

  diffMap(current.backends, desired.backends, upBe, delBe,
          [](uint32_t k, const BackendRecord& v) { return MapOp{UpsertBackend{k, v}}; },
          [](uint32_t k) { return MapOp{DeleteBackend{k}}; });
  // A backend that stops taking connections (active -> draining or
  // terminating, or weight -> 0) is demoted only after the services flipped
  // to slots without it: before, a live slot would name a backend the kernel
  // skips, and a pick that hit it on every retry would be refused.
  std::vector<MapOp> demoteBe;
  auto usable = [](const BackendRecord& b) { return b.state == EndpointState::kActive && b.weight > 0; };
  std::erase_if(upBe, [&](const MapOp& op) {
    const auto& u = std::get<UpsertBackend>(op);
    auto cur = current.backends.find(u.id);
    if (cur == current.backends.end() || !usable(cur->second) || usable(u.rec)) return false;
    demoteBe.push_back(op);
    return true;
  });
  diffMap(current.slots, desired.slots, upSlot, delSlot,
          [](const SlotKey& k, uint32_t v) { return MapOp{UpsertSlot{k, v}}; },
          [](const SlotKey& k) { return MapOp{DeleteSlot{k}}; });
  diffMap(current.hashTables, desired.hashTables, upHash, delHash,
          [](uint32_t k, const std::vector<uint32_t>& v) { return MapOp{UpsertHashTable{k, v}}; },
          [](uint32_t k) { return MapOp{DeleteHashTable{k}}; });
  diffMap(current.policy, desired.policy, upPol, delPol,
          [](const PolicyKey& k, uint32_t) { return MapOp{UpsertPolicy{k}}; },
          [](const PolicyKey& k) { return MapOp{DeletePolicy{k}}; });
  diffMap(current.services, desired.services, upSvc, delSvc,
          [](uint32_t k, const ServiceRecord& v) { return MapOp{UpsertService{k, v}}; },
          [](uint32_t k) { return MapOp{DeleteService{k}}; });
  // A split's record goes live after the services it names and its split
  // entry: a connect never follows it to something not written yet.
  std::erase_if(upSvc, [&](const MapOp& op) {
    if (!std::get<UpsertService>(op).rec.split) return false;
    upSplitSvc.push_back(op);
    return true;
  });
  diffMap(current.splits, desired.splits, upSplit, delSplit,
          [](uint32_t k, const SplitRecord& v) { return MapOp{UpsertSplit{k, v}}; },
          [](uint32_t k) { return MapOp{DeleteSplit{k}}; });
  diffMap(current.frontends, desired.frontends, upFe, delFe,
          [](const FrontendKey& k, uint32_t v) { return MapOp{UpsertFrontend{k, v}}; },
          [](const FrontendKey& k) { return MapOp{DeleteFrontend{k}}; });

  std::vector<MapOp> out;
  for (auto* group : {&resets, &upBe, &upSlot, &upHash, &upPol, &upSvc, &upSplit, &upSplitSvc, &upFe, &demoteBe,
                      &delFe, &delSvc, &delSplit, &delPol, &delHash, &delSlot, &delBe})
    out.insert(out.end(), group->begin(), group->end());
  return out;
}

}  // namespace aimesh
