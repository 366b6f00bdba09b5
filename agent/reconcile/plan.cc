#include "reconcile/plan.h"

#include "aimesh/abi.h"
#include "lb/maglev.h"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>
#include <set>

namespace aimesh {

// lb/ and model/ keep their own copies of the kernel's hash-table numbers
// (they do not include the ABI); the kernel records are built here.
static_assert(kMaglevMaxSize == AIMESH_MAX_HASH_SIZE);
static_assert(kDefaultHashTableSize == AIMESH_DEFAULT_HASH_SIZE);
static_assert(kDefaultBalancePct == AIMESH_DEFAULT_BALANCE_PCT);

std::string FrontendKey::toString() const { return formatFrontend(addr, port, proto); }

std::vector<uint32_t> expandSlots(const std::vector<std::pair<uint32_t, uint16_t>>& weighted,
                                  uint32_t maxSlots) {
  std::vector<std::pair<uint32_t, uint64_t>> w;
  uint64_t g = 0;
  for (auto& [id, weight] : weighted) {
    if (weight == 0) continue;
    w.emplace_back(id, weight);
    g = std::gcd(g, static_cast<uint64_t>(weight));
  }
  if (w.empty() || maxSlots == 0) return {};
  if (w.size() > maxSlots) w.resize(maxSlots);  // more backends than slots: first maxSlots
  uint64_t sum = 0;
  for (auto& e : w) sum += (e.second /= g);
  if (sum > maxSlots) {
    // Proportional scaling with a floor of one slot each; then trim the
    // largest until it fits (the floors can push the sum over).
    uint64_t newSum = 0;
    for (auto& e : w) newSum += (e.second = std::max<uint64_t>(1, e.second * maxSlots / sum));
    while (newSum > maxSlots) {
      auto it = std::max_element(w.begin(), w.end(), [](auto& a, auto& b) { return a.second < b.second; });
      --it->second;
      --newSum;
    }
  }
  std::vector<uint32_t> slots;
  for (auto& [id, n] : w) slots.insert(slots.end(), n, id);
  return slots;
}

namespace {

uint32_t lowestFree(const std::set<uint32_t>& used, uint32_t& cursor, uint32_t limit) {
  while (cursor < limit && used.count(cursor)) ++cursor;
  return cursor < limit ? cursor++ : 0;
}

// The slots of `gen` for service `id` in `state`, in index order.
std::vector<uint32_t> slotsOf(const KernelState& state, uint32_t id, uint8_t gen, uint32_t count) {
  std::vector<uint32_t> out;
  for (uint32_t i = 0; i < count; ++i) {
    auto it = state.slots.find(SlotKey{id, gen * AIMESH_MAX_SLOTS_PER_SVC + i});
    out.push_back(it == state.slots.end() ? 0 : it->second);
  }
  return out;
}

}  // namespace

Plan makePlan(const Snapshot& desired, const KernelState& current, const MapLimits& limits) {
  Plan plan;
  KernelState& out = plan.desired;

  // Ids in use now or already handed out in this plan are never reused in the
  // same plan, so a removed id's counters are not inherited by a new object.
  // `used*` holds both (one set, so handing out n ids costs O(n log n)).
  std::set<uint32_t> usedSvc, usedBe;
  for (auto& [id, _] : current.services) usedSvc.insert(id);
  for (auto& [id, _] : current.backends) usedBe.insert(id);
  uint32_t svcCursor = 1, beCursor = 1;
  std::set<uint32_t> claimedSvc, claimedBe;

  std::map<std::tuple<uint32_t, IpAddr, uint16_t>, uint32_t> currentBackendIds;
  for (auto& [id, be] : current.backends) currentBackendIds[{be.serviceId, be.addr, be.port}] = id;

  for (const Service& svc : desired.services) {
    for (const PortSpec& ps : svc.ports) {
      std::vector<FrontendKey> fks;
      for (auto& vip : svc.vips) fks.push_back(FrontendKey{vip, ps.port, ps.protocol});

      uint32_t sid = 0;
      for (auto& fk : fks) {
        auto it = current.frontends.find(fk);
        if (it != current.frontends.end() && current.services.count(it->second) &&
            !claimedSvc.count(it->second)) {
          sid = it->second;
          break;
        }
      }
      if (sid == 0) {
        sid = lowestFree(usedSvc, svcCursor, limits.services);
        if (sid == 0) continue;  // full: the caller reports the shortfall via index size
        plan.newServiceIds.push_back(sid);
      }
      claimedSvc.insert(sid);
      usedSvc.insert(sid);

      ServiceInfo info{svc.name,         svc.nameSpace, svc.model,  svc.algorithm,  ps, fks, {},
                       svc.modelMetrics, svc.policy,    svc.connections};
      std::vector<std::pair<uint32_t, uint16_t>> weighted;
      for (const Endpoint& ep : svc.endpoints) {
        uint16_t port = ep.port ? ep.port : ps.port;
        uint32_t bid = 0;
        auto it = currentBackendIds.find({sid, ep.address, port});
        if (it != currentBackendIds.end() && !claimedBe.count(it->second)) {
          bid = it->second;
        } else {
          bid = lowestFree(usedBe, beCursor, limits.backends);
          if (bid == 0) continue;
          plan.newBackendIds.push_back(bid);
        }
        claimedBe.insert(bid);
        usedBe.insert(bid);
        out.backends[bid] = BackendRecord{ep.address, port, ep.state, sid, ep.weight};
        plan.index.backends[bid] = BackendInfo{sid, ep, port};
        info.backendIds.push_back(bid);
        if (ep.state == EndpointState::kActive) weighted.emplace_back(bid, ep.weight);
      }

      std::vector<uint32_t> slots = expandSlots(weighted, AIMESH_MAX_SLOTS_PER_SVC);
      std::set<uint32_t> distinct(slots.begin(), slots.end());
      ServiceRecord rec{static_cast<uint32_t>(slots.size()), static_cast<uint32_t>(distinct.size()),
                        svc.algorithm, 0};
      if (svc.algorithm == Algorithm::kMaglev || svc.algorithm == Algorithm::kBoundedHash) {
        // The table holds the backends that take new connections, each
        // known by its address and port so every agent builds the same one.
        std::vector<MaglevBackend> mb;
        for (auto& [bid, weight] : weighted) {
          const BackendRecord& br = out.backends[bid];
          mb.push_back(MaglevBackend{bid, fmt::format("{}:{}", br.addr.toString(), br.port), weight});
        }
        std::vector<uint32_t> table = buildMaglevTable(std::move(mb), svc.hashTableSize);
        if (!table.empty()) {
          rec.hashSize = svc.hashTableSize;
          rec.balancePct = svc.balancePct;
          out.hashTables[sid] = std::move(table);
        }
      }

      auto cur = current.services.find(sid);
      if (cur != current.services.end()) {
        const ServiceRecord& c = cur->second;
        // Keep every slot of this service as it is; then, if the live slot
        // list must change, write the other generation and flip to it. The
        // old generation stays for readers still on the old record.
        for (auto it = current.slots.lower_bound(SlotKey{sid, 0});
             it != current.slots.end() && it->first.serviceId == sid; ++it)
          out.slots[it->first] = it->second;
        bool same = slotsOf(current, sid, c.slotGen, c.slotCount) == slots;
        rec.slotGen = same ? c.slotGen : static_cast<uint8_t>(1 - (c.slotGen & 1));
        if (!same) {
          uint32_t base = rec.slotGen * AIMESH_MAX_SLOTS_PER_SVC;
          for (auto it = out.slots.lower_bound(SlotKey{sid, base});
               it != out.slots.end() && it->first.serviceId == sid &&
               it->first.slot < base + AIMESH_MAX_SLOTS_PER_SVC;)
            it = out.slots.erase(it);
        }
      }
      uint32_t base = rec.slotGen * AIMESH_MAX_SLOTS_PER_SVC;
      for (uint32_t i = 0; i < slots.size(); ++i) out.slots[SlotKey{sid, base + i}] = slots[i];

      if (svc.policy) {
        rec.policy = true;
        for (uint64_t cg : svc.policy->allowCgroupIds) out.policy[PolicyKey{cg, sid}] = 1;
      }
      out.services[sid] = rec;
      for (auto& fk : fks) out.frontends[fk] = sid;
      plan.index.services[sid] = std::move(info);
    }
  }

  // Slots of the inactive generation may name backends that are gone; drop
  // those entries so no slot points at a deleted backend.
  for (auto it = out.slots.begin(); it != out.slots.end();) {
    if (!out.backends.count(it->second)) it = out.slots.erase(it);
    else ++it;
  }
  return plan;
}

}  // namespace aimesh
