#include "reconcile/reconciler.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>

namespace aimesh {
namespace {
// Pinned maps keep their size (docs/operations.md, "Changing the sizes").
constexpr const char* kResizeNote = "; restart the agent with it: the pinned maps are resized in place";

// Services added or changed (in `after`'s order) and removed or changed (in
// `before`'s), from one walk of two snapshots sorted by key. nullopt if one
// is not sorted by key with unique keys, or more than `budget` differ.
// `before` is known to be sorted (it passed this walk, or sortedByKey, when
// it was applied). A run of services both share costs no key comparison:
// at 10,000 services the comparisons were a fifth of a one-service change.
struct SnapshotChange {
  std::vector<const Service*> planned, gone;
};
std::optional<SnapshotChange> changedServices(const SharedServices& before, const SharedServices& after,
                                              size_t budget) {
  SnapshotChange ch;
  size_t i = 0, j = 0;
  bool prevShared = false;  // after[j - 1] is before[i - 1]
  auto increasing = [](const SharedServices& v, size_t k) { return k == 0 || compareKeys(v[k - 1], v[k]) < 0; };
  while (i < before.size() || j < after.size()) {
    bool shared = i < before.size() && j < after.size() && before.ptr(i) == after.ptr(j);
    if (shared && prevShared) {  // in order, as in `before`
      ++i, ++j;
      continue;
    }
    prevShared = shared;
    if (j < after.size() && !increasing(after, j)) return std::nullopt;
    if (shared) {
      ++i, ++j;
      continue;
    }
    int c = i == before.size() ? 1 : j == after.size() ? -1 : compareKeys(before[i], after[j]);
    if (c < 0) {
      ch.gone.push_back(&before[i++]);
    } else if (c > 0) {
      ch.planned.push_back(&after[j++]);
    } else {
      if (!(before[i] == after[j])) {
        ch.gone.push_back(&before[i]);
        ch.planned.push_back(&after[j]);
      }
      ++i, ++j;
    }
    if (ch.planned.size() + ch.gone.size() > budget) return std::nullopt;
  }
  return ch;
}

// The entries of `whole` that service ids `ids` own (their frontends,
// records, slots, backends, hash tables, splits and policy entries).
KernelState ownedBy(const KernelState& whole, const IdIndex& index, const std::set<uint32_t>& ids) {
  KernelState part;
  for (uint32_t sid : ids) {
    const ServiceInfo& info = index.services.at(sid);
    for (auto& fk : info.frontends)
      if (auto f = whole.frontends.find(fk); f != whole.frontends.end() && f->second == sid)
        part.frontends.emplace(fk, sid);
    if (auto s = whole.services.find(sid); s != whole.services.end()) part.services.emplace(*s);
    for (auto it = whole.slots.lower_bound(SlotKey{sid, 0}); it != whole.slots.end() && it->first.serviceId == sid;
         ++it)
      part.slots.emplace(*it);
    for (uint32_t bid : info.backendIds)
      if (auto b = whole.backends.find(bid); b != whole.backends.end()) part.backends.emplace(*b);
    if (auto h = whole.hashTables.find(sid); h != whole.hashTables.end()) part.hashTables.emplace(*h);
    if (auto sp = whole.splits.find(sid); sp != whole.splits.end()) part.splits.emplace(*sp);
  }
  for (auto& [key, v] : whole.policy)
    if (ids.count(key.serviceId)) part.policy.emplace(key, v);
  return part;
}

// Replaces the entries `part` names in `whole` with those of `next`.
template <class Map>
void replaceEntries(Map& whole, const Map& part, Map&& next) {
  for (auto& [key, _] : part) whole.erase(key);
  for (auto& [key, v] : next) whole.insert_or_assign(key, std::move(v));
}
void replaceState(KernelState& whole, const KernelState& part, KernelState&& next) {
  replaceEntries(whole.frontends, part.frontends, std::move(next.frontends));
  replaceEntries(whole.services, part.services, std::move(next.services));
  replaceEntries(whole.slots, part.slots, std::move(next.slots));
  replaceEntries(whole.backends, part.backends, std::move(next.backends));
  replaceEntries(whole.hashTables, part.hashTables, std::move(next.hashTables));
  replaceEntries(whole.policy, part.policy, std::move(next.policy));
  replaceEntries(whole.splits, part.splits, std::move(next.splits));
}
}  // namespace

Result<ReconcileReport> Reconciler::reconcile(const Snapshot& desired, IdIndex& index, Verify verify) {
  auto r = reconcile(Snapshot(desired), verify);
  if (r) index = index_;
  return r;
}

Result<ReconcileReport> Reconciler::reconcile(Snapshot desired, Verify verify) {
  if (incremental_ && verify == Verify::kKnown && known_ && applied_ && appliedSorted_) {
    if (auto r = reconcileChanged(desired)) return std::move(*r);
  }
  return reconcileAll(std::move(desired), verify);
}

Result<ReconcileReport> Reconciler::reconcileAll(Snapshot&& desired, Verify verify) {
  auto start = std::chrono::steady_clock::now();
  if (verify == Verify::kRead || !known_) {
    known_.reset();
    free_.reset();
    auto read = writer_.read();
    if (!read) return read.error();
    known_ = std::move(read.value());
  }
  KernelState current = std::move(*known_);
  known_.reset();  // until this run succeeds: a failed one leaves the kernel between the two
  Plan plan = makePlan(desired, current, limits_);

  size_t wanted = 0, wantedBe = 0;
  for (auto& s : desired.services) {
    wanted += s.ports.size();
    wantedBe += s.ports.size() * (s.split.empty() ? s.endpoints.size() : 0);  // a split has none
  }
  if (plan.index.services.size() != wanted) {
    known_ = std::move(current);  // nothing applied
    // Both flags at once when both are short, so one restart is enough.
    std::string backends =
        wantedBe + 1 > limits_.backends
            ? fmt::format(", and --max-backends for {} endpoints (per service port), e.g. --max-backends {}", wantedBe,
                          suggestedLimit(wantedBe))
            : "";
    return Error::msg(fmt::format("out of service ids: {} of {} service ports fit (limit {}; raise --max-services, "
                                  "e.g. --max-services {}{}{})",
                                  plan.index.services.size(), wanted, limits_.services - 1, suggestedLimit(wanted),
                                  backends, kResizeNote));
  }
  if (plan.index.backends.size() != wantedBe) {
    known_ = std::move(current);
    return Error::msg(fmt::format("out of backend ids: {} of {} endpoints (per service port) fit (limit {}; raise "
                                  "--max-backends, e.g. --max-backends {}{})",
                                  plan.index.backends.size(), wantedBe, limits_.backends - 1,
                                  suggestedLimit(wantedBe), kResizeNote));
  }

  auto ops = diff(current, plan.desired, plan.newServiceIds, plan.newBackendIds);
  if (Status st = writer_.applyAll(ops); !st) return st.error();
  index_ = std::move(plan.index);
  change_ = IndexChange{};
  known_ = std::move(plan.desired);
  free_ = std::move(plan.nextFree);
  size_t planned = desired.services.size();
  appliedSorted_ = true;
  for (size_t k = 1; k < desired.services.size() && appliedSorted_; ++k)
    appliedSorted_ = compareKeys(desired.services[k - 1], desired.services[k]) < 0;
  applied_ = std::move(desired);
  return ReconcileReport{ops.size(), std::chrono::steady_clock::now() - start, false, planned};
}

// A service of applied() has one id per port, which its first VIP's
// frontend on that port names.
bool Reconciler::idsOf(const Service& s, std::set<uint32_t>& ids) const {
  if (s.vips.empty()) return false;
  for (const PortSpec& ps : s.ports) {
    auto f = known_->frontends.find(FrontendKey{s.vips.front(), ps.port, ps.protocol});
    if (f == known_->frontends.end()) return false;
    auto info = index_.services.find(f->second);
    if (info == index_.services.end() || info->second.name != s.name || info->second.nameSpace != s.nameSpace ||
        info->second.port != ps)
      return false;
    ids.insert(f->second);
  }
  return true;
}

std::optional<Result<ReconcileReport>> Reconciler::reconcileChanged(Snapshot& desired) {
  auto start = std::chrono::steady_clock::now();
  // Past a quarter of the services, planning them all costs about the same.
  size_t budget = std::max(desired.services.size(), applied_->services.size()) / 4 + 1;
  std::optional<SnapshotChange> ch = changedServices(applied_->services, desired.services, budget);
  if (!ch) return std::nullopt;

  std::set<uint32_t> oldIds;
  for (const Service* s : ch->gone)
    if (!idsOf(*s, oldIds)) return std::nullopt;
  const KernelState& whole = *known_;
  // A frontend that moves from an unchanged service to a changed one would
  // take that service's id away: only a full plan decides that.
  size_t wanted = 0, wantedBe = 0;
  for (const Service* s : ch->planned) {
    wanted += s->ports.size();
    wantedBe += s->ports.size() * (s->split.empty() ? s->endpoints.size() : 0);
    for (auto& ps : s->ports)
      for (auto& vip : s->vips)
        if (auto f = whole.frontends.find(FrontendKey{vip, ps.port, ps.protocol});
            f != whole.frontends.end() && !oldIds.count(f->second))
          return std::nullopt;
  }
  KernelState current = ownedBy(whole, index_, oldIds);
  Plan plan = makePartialPlan(ch->planned, current, whole, limits_, free_ ? &*free_ : nullptr);
  // Out of ids: the full plan says so, with the totals.
  if (plan.index.services.size() != wanted || plan.index.backends.size() != wantedBe) return std::nullopt;

  auto ops = diff(current, plan.desired, plan.newServiceIds, plan.newBackendIds);
  if (Status st = writer_.applyAll(ops); !st) {
    known_.reset();  // the kernel is between the two: the next run reads it back
    return Result<ReconcileReport>(st.error());
  }
  replaceState(*known_, current, std::move(plan.desired));
  free_ = std::move(plan.nextFree);
  for (uint32_t sid : oldIds) {
    auto it = index_.services.find(sid);
    for (uint32_t bid : it->second.backendIds) index_.backends.erase(bid);
    index_.services.erase(it);
  }
  change_ = IndexChange{false, {oldIds.begin(), oldIds.end()}, {}};
  for (auto& [sid, info] : plan.index.services) {
    change_.written.push_back(sid);
    index_.services.insert_or_assign(sid, std::move(info));
  }
  for (auto& [bid, info] : plan.index.backends) index_.backends.insert_or_assign(bid, std::move(info));
  size_t planned = ch->planned.size();
  applied_ = std::move(desired);
  return ReconcileReport{ops.size(), std::chrono::steady_clock::now() - start, true, planned};
}

}  // namespace aimesh
