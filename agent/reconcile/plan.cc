#include "reconcile/plan.h"

#include "aimesh/abi.h"
#include "lb/maglev.h"
#include "model/service_rules.h"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>
#include <optional>
#include <set>
#include <tuple>

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

// Hands out ids in [1, limit). An id in the current state or already handed
// out in this plan is never handed out again in the same plan, so a removed
// id's counters are not inherited by a new object. The current state is
// looked up, not copied (a plan of a few services must not cost a pass over
// every id). With the state's free ids known (`free`), the lowest free id is
// the first of them not yet handed out; otherwise it is found by walking the
// current ids in order alongside a cursor from 1, once per plan.
template <class Records>
class IdPool {
 public:
  IdPool(const Records& current, uint32_t limit, const FreeIds* free)
      : current_(current), next_(current.begin()), free_(free), cursor_(free ? std::max<uint32_t>(1, free->top) : 1),
        limit_(limit) {
    if (free_) below_ = free_->below.begin();
  }

  bool claimed(uint32_t id) const { return claimed_.count(id) != 0; }

  // Claims an id of the current state for this plan.
  void keep(uint32_t id) { claimed_.insert(id); }

  // Claims the lowest free id and appends it to `fresh`; nullopt when every
  // id below the limit is taken.
  std::optional<uint32_t> claimNew(std::vector<uint32_t>& fresh) {
    if (free_) {
      while (below_ != free_->below.end() && *below_ < limit_) {
        uint32_t id = *below_++;
        if (!claimed(id)) return take(id, fresh);
      }
      // From `top` up nothing is in the current state.
      while (cursor_ < limit_ && claimed(cursor_)) ++cursor_;
    } else {
      while (cursor_ < limit_ && (inCurrent(cursor_) || claimed(cursor_))) ++cursor_;
    }
    if (cursor_ >= limit_) return std::nullopt;
    return take(cursor_++, fresh);
  }

  // The free ids after this plan, given the ids it freed (in the current
  // state, not in the plan): the state's, less those handed out, plus those.
  FreeIds next(const std::vector<uint32_t>& fresh, const std::vector<uint32_t>& freed) const {
    FreeIds out = *free_;
    for (uint32_t id : fresh) {
      out.below.erase(id);
      out.top = std::max(out.top, id + 1);
    }
    out.below.insert(freed.begin(), freed.end());
    return out;
  }

 private:
  uint32_t take(uint32_t id, std::vector<uint32_t>& fresh) {
    fresh.push_back(id);
    keep(id);
    return id;
  }

  // Whether `id` is in the current state; ids asked for never decrease.
  bool inCurrent(uint32_t id) {
    while (next_ != current_.end() && next_->first < id) ++next_;
    return next_ != current_.end() && next_->first == id;
  }

  const Records& current_;
  typename Records::const_iterator next_;
  const FreeIds* free_;
  std::set<uint32_t>::const_iterator below_;
  std::set<uint32_t> claimed_;
  uint32_t cursor_;
  uint32_t limit_;
};

// A backend keeps its id through (service id, address, port).
using BackendAddress = std::tuple<uint32_t, IpAddr, uint16_t>;

// The ids of one plan, the current backends' ids by address, and the
// entire current state (whose frontends name the services a split's
// backends are when this plan does not).
struct PlanIds {
  IdPool<std::map<uint32_t, ServiceRecord>> services;
  IdPool<std::map<uint32_t, BackendRecord>> backends;
  std::map<BackendAddress, uint32_t> currentBackends;
  const KernelState& whole;
};

// Ids are free unless `whole` (the entire current state) uses them; the
// backends that can keep their ids are those of `current`.
PlanIds planIds(const KernelState& current, const KernelState& whole, const MapLimits& limits,
                const StateFreeIds* free) {
  PlanIds ids{{whole.services, limits.services, free ? &free->services : nullptr},
              {whole.backends, limits.backends, free ? &free->backends : nullptr},
              {},
              whole};
  for (auto& [id, be] : current.backends) ids.currentBackends[{be.serviceId, be.addr, be.port}] = id;
  return ids;
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

std::vector<FrontendKey> frontendsOf(const Service& svc, const PortSpec& ps) {
  std::vector<FrontendKey> fks;
  for (auto& vip : svc.vips) fks.push_back(FrontendKey{vip, ps.port, ps.protocol});
  return fks;
}

// An existing service keeps its id through the first of its frontends that
// names a current service not yet claimed in this plan; otherwise it gets
// the lowest free id. nullopt when the services map is full.
template <class Pool>
std::optional<uint32_t> claimServiceId(const KernelState& current, const std::vector<FrontendKey>& fks, Pool& ids,
                                       std::vector<uint32_t>& fresh) {
  uint32_t kept = 0;
  for (auto& fk : fks) {
    auto it = current.frontends.find(fk);
    if (it != current.frontends.end() && current.services.count(it->second) && !ids.claimed(it->second)) {
      kept = it->second;
      break;
    }
  }
  if (kept == 0) return ids.claimNew(fresh);
  ids.keep(kept);
  return kept;
}

// The current id of the backend at `addr` if this plan has not claimed it
// yet, otherwise the lowest free id. nullopt when the backends map is full.
std::optional<uint32_t> claimBackendId(PlanIds& ids, const BackendAddress& addr, std::vector<uint32_t>& fresh) {
  auto it = ids.currentBackends.find(addr);
  if (it == ids.currentBackends.end() || ids.backends.claimed(it->second)) return ids.backends.claimNew(fresh);
  ids.backends.keep(it->second);
  return it->second;
}

using WeightedBackends = std::vector<std::pair<uint32_t, uint16_t>>;

// Gives the endpoints of `svc` on port `ps` backend ids under service `sid`
// and adds their records and index entries (endpoints that do not fit are
// left out). Returns the active ones with their weights, in endpoint order.
WeightedBackends planBackends(const Service& svc, const PortSpec& ps, uint32_t sid, PlanIds& ids, Plan& plan,
                              ServiceInfo& info) {
  WeightedBackends weighted;
  for (const Endpoint& ep : svc.endpoints) {
    uint16_t port = ep.port ? ep.port : ps.port;
    std::optional<uint32_t> bid = claimBackendId(ids, {sid, ep.address, port}, plan.newBackendIds);
    if (!bid) continue;
    plan.desired.backends[*bid] = BackendRecord{ep.address, port, ep.state, sid, ep.weight};
    plan.index.backends[*bid] = BackendInfo{sid, ep, port};
    info.backendIds.push_back(*bid);
    if (ep.state == EndpointState::kActive) weighted.emplace_back(*bid, ep.weight);
  }
  return weighted;
}

// maglev and bounded_hash: builds the service's hash table into `out` and
// records its size and load bound in `rec`. Other algorithms have none.
void planHashTable(const Service& svc, uint32_t sid, const WeightedBackends& weighted, KernelState& out,
                   ServiceRecord& rec) {
  if (svc.algorithm != Algorithm::kMaglev && svc.algorithm != Algorithm::kBoundedHash) return;
  // The table holds the backends that take new connections, each
  // known by its address and port so every agent builds the same one.
  std::vector<MaglevBackend> mb;
  for (auto& [bid, weight] : weighted) {
    const BackendRecord& br = out.backends[bid];
    mb.push_back(MaglevBackend{bid, fmt::format("{}:{}", br.addr.toString(), br.port), weight});
  }
  std::vector<uint32_t> table = buildMaglevTable(std::move(mb), svc.hashTableSize);
  if (table.empty()) return;
  rec.hashSize = svc.hashTableSize;
  rec.balancePct = svc.balancePct;
  out.hashTables[sid] = std::move(table);
}

// Writes `slots` as the live slot list of service `sid` and sets
// `rec.slotGen`. A current service keeps every slot as it is; then, if the
// live slot list must change, the other generation is written and the record
// flips to it. The old generation stays for readers still on the old record.
void planSlots(const KernelState& current, uint32_t sid, const std::vector<uint32_t>& slots, KernelState& out,
               ServiceRecord& rec) {
  if (auto cur = current.services.find(sid); cur != current.services.end()) {
    const ServiceRecord& c = cur->second;
    for (auto it = current.slots.lower_bound(SlotKey{sid, 0});
         it != current.slots.end() && it->first.serviceId == sid; ++it)
      out.slots[it->first] = it->second;
    bool same = slotsOf(current, sid, c.slotGen, c.slotCount) == slots;
    rec.slotGen = same ? c.slotGen : static_cast<uint8_t>(1 - (c.slotGen & 1));
    if (!same) {
      uint32_t base = rec.slotGen * AIMESH_MAX_SLOTS_PER_SVC;
      for (auto it = out.slots.lower_bound(SlotKey{sid, base});
           it != out.slots.end() && it->first.serviceId == sid && it->first.slot < base + AIMESH_MAX_SLOTS_PER_SVC;)
        it = out.slots.erase(it);
    }
  }
  uint32_t base = rec.slotGen * AIMESH_MAX_SLOTS_PER_SVC;
  for (uint32_t i = 0; i < slots.size(); ++i) out.slots[SlotKey{sid, base + i}] = slots[i];
}

// The backend services of split `svc` on port `ps`: each resolved backend
// (resolveSplits()) is the service its VIP names on the chosen port, in
// this plan if it plans it (the caller plans splits last), else in the
// current state. Those that do not resolve, or have weight 0, are left out
// of the kernel's record (their share goes to the others) but kept in the
// index.
SplitRecord planSplit(const Service& svc, const PortSpec& ps, const PlanIds& ids, const Plan& plan,
                      ServiceInfo& info) {
  SplitRecord rec;
  for (const SplitBackend& b : svc.split) {
    SplitTargetInfo t{(b.nameSpace.empty() ? svc.nameSpace : b.nameSpace) + "/" + b.service,
                      b.port ? b.port : ps.port, b.weight, b.effectiveWeight(), 0};
    PortSpec want{t.port, ps.protocol};
    if (b.vip && std::find(b.ports.begin(), b.ports.end(), want) != b.ports.end()) {
      FrontendKey fk{*b.vip, want.port, want.protocol};
      if (auto f = plan.desired.frontends.find(fk); f != plan.desired.frontends.end()) t.serviceId = f->second;
      else if (auto g = ids.whole.frontends.find(fk); g != ids.whole.frontends.end()) t.serviceId = g->second;
    }
    if (t.serviceId && t.effectiveWeight > 0 && rec.targets.size() < AIMESH_SPLIT_MAX)
      rec.targets.emplace_back(t.serviceId, t.effectiveWeight);
    info.split.push_back(std::move(t));
  }
  return rec;
}

// Adds the kernel service for port `ps` of `svc` to the plan, with its
// backends, slots, hash table and policy entries; a service that does not
// fit is left out (the caller reports the shortfall via the index's size).
void planServicePort(const Service& svc, const PortSpec& ps, const KernelState& current, PlanIds& ids, Plan& plan) {
  KernelState& out = plan.desired;
  std::vector<FrontendKey> fks = frontendsOf(svc, ps);
  std::optional<uint32_t> claimed = claimServiceId(current, fks, ids.services, plan.newServiceIds);
  if (!claimed) return;
  uint32_t sid = *claimed;

  ServiceInfo info{svc.name,         svc.nameSpace, svc.model,       svc.algorithm,  ps, fks, {},
                   svc.modelMetrics, svc.policy,    svc.connections, {},             svc.canaryGuard};
  ServiceRecord rec{0, 0, svc.algorithm, 0};
  if (!svc.split.empty()) {  // a split has no endpoints, slots or table of its own
    rec.split = true;
    out.splits[sid] = planSplit(svc, ps, ids, plan, info);
  } else {
    WeightedBackends weighted = planBackends(svc, ps, sid, ids, plan, info);
    std::vector<uint32_t> slots = expandSlots(weighted, AIMESH_MAX_SLOTS_PER_SVC);
    std::set<uint32_t> distinct(slots.begin(), slots.end());
    rec.slotCount = static_cast<uint32_t>(slots.size());
    rec.backendCount = static_cast<uint32_t>(distinct.size());
    rec.sampleSkip = telemetrySkip(effectiveTelemetrySample(svc));
    rec.failClose = svc.failClose;  // a split's targets decide for themselves
    info.failClose = svc.failClose;
    planHashTable(svc, sid, weighted, out, rec);
    planSlots(current, sid, slots, out, rec);
  }

  if (svc.policy) {
    rec.policy = true;
    for (uint64_t cg : svc.policy->allowCgroupIds) out.policy[PolicyKey{cg, sid}] = 1;
  }
  out.services[sid] = rec;
  for (auto& fk : fks) out.frontends[fk] = sid;
  plan.index.services[sid] = std::move(info);
}

// Slots of the inactive generation may name backends that are gone; drop
// those entries so no slot points at a deleted backend.
void dropSlotsOfDeletedBackends(KernelState& out) {
  for (auto it = out.slots.begin(); it != out.slots.end();) {
    if (!out.backends.count(it->second)) it = out.slots.erase(it);
    else ++it;
  }
}

}  // namespace

Plan makePlan(const Snapshot& desired, const KernelState& current, const MapLimits& limits) {
  std::vector<const Service*> all;
  all.reserve(desired.services.size());
  for (const Service& svc : desired.services) all.push_back(&svc);
  return makePartialPlan(all, current, current, limits);
}

template <class Records>
FreeIds freeIdsOf(const Records& records) {
  FreeIds out;
  for (auto& [id, _] : records) {
    for (; out.top < id; ++out.top) out.below.insert(out.top);
    out.top = id + 1;
  }
  return out;
}

// The ids of `current` that `desired` no longer has.
template <class Records>
std::vector<uint32_t> freedIds(const Records& current, const Records& desired) {
  std::vector<uint32_t> out;
  for (auto& [id, _] : current)
    if (!desired.count(id)) out.push_back(id);
  return out;
}

Plan makePartialPlan(const std::vector<const Service*>& services, const KernelState& current,
                     const KernelState& whole, const MapLimits& limits, const StateFreeIds* free) {
  Plan plan;
  PlanIds ids = planIds(current, whole, limits, free);
  // Splits last: they name the services of this plan by their frontends.
  for (bool splits : {false, true})
    for (const Service* svc : services)
      if (svc->split.empty() != splits)
        for (const PortSpec& ps : svc->ports) planServicePort(*svc, ps, current, ids, plan);
  dropSlotsOfDeletedBackends(plan.desired);
  if (free) {
    plan.nextFree = StateFreeIds{
        ids.services.next(plan.newServiceIds, freedIds(current.services, plan.desired.services)),
        ids.backends.next(plan.newBackendIds, freedIds(current.backends, plan.desired.backends))};
  } else if (&current == &whole) {  // a plan of everything: the state after it is the plan
    plan.nextFree = StateFreeIds{freeIdsOf(plan.desired.services), freeIdsOf(plan.desired.backends)};
  }
  return plan;
}

}  // namespace aimesh
