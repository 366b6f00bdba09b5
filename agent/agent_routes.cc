// The agent's splits: the canary guard's tick and the routes view (meshctl
// routes, /metrics). The guard's logic is in telemetry/canary_guard.h; here
// the agent reads what it needs, under its lock, and applies what it asks.
#include <spdlog/spdlog.h>

#include <chrono>

#include "agent.h"

namespace aimesh {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kGuardTick = std::chrono::seconds(1);
constexpr auto kShareWindow = std::chrono::seconds(60);  // meshctl routes' observed shares
constexpr size_t kGuardEventsKept = 100;

GuardSample sampleOf(const BackendTelemetry& t) {
  GuardSample s;
  s.ttft = t.hist[AIMESH_M_TTFT];
  s.attempts = t.counters.opened + t.counters.failed_refused + t.counters.failed_timeout;
  s.failures = t.counters.failed_refused + t.counters.failed_timeout + t.counters.reset;
  return s;
}

}  // namespace

// The guarded splits of the index: their backend services' weights and
// endpoints (over every port of the split), read now.
std::map<std::string, CanaryGuard::Split> Agent::guardInputsLocked() {
  std::map<std::string, CanaryGuard::Split> out;
  std::map<std::string, std::map<std::string, std::vector<uint32_t>>> endpoints;  // split -> backend -> ids
  std::vector<uint32_t> all;
  for (auto& [sid, s] : index().services) {
    if (!s.canaryGuard || s.split.empty()) continue;
    std::string key = s.nameSpace + "/" + s.name;
    CanaryGuard::Split& in = out[key];
    in.spec = *s.canaryGuard;
    in.primary = in.spec.primary.empty() ? s.split.front().service : s.nameSpace + "/" + in.spec.primary;
    for (auto& t : s.split) {
      if (std::none_of(in.weights.begin(), in.weights.end(), [&](auto& w) { return w.first == t.service; }))
        in.weights.emplace_back(t.service, t.weight);
      auto target = index().services.find(t.serviceId);
      if (!t.serviceId || target == index().services.end()) continue;
      auto& ids = endpoints[key][t.service];
      ids.insert(ids.end(), target->second.backendIds.begin(), target->second.backendIds.end());
      all.insert(all.end(), target->second.backendIds.begin(), target->second.backendIds.end());
    }
  }
  if (out.empty()) return out;
  auto tel = reader_->telemetry(all);
  if (!tel) {
    spdlog::warn("canary guard: read telemetry: {}", tel.error().message());
    return {};
  }
  for (auto& [key, backends] : endpoints)
    for (auto& [name, ids] : backends)
      for (uint32_t bid : ids)
        if (auto t = tel->find(bid); t != tel->end()) out[key].readings[name][bid] = sampleOf(t->second);
  return out;
}

void Agent::guardTick() {
  auto now = Clock::now();
  if (now - lastGuard_ < kGuardTick) return;
  lastGuard_ = now;
  std::lock_guard lk(mu_);
  if (!anySplits_) {  // nothing to guard or count: forget what there was
    splitHistory_.clear();
    guard_ = CanaryGuard{};
    return;
  }
  if (auto st = reader_->splitStats(); st && !st->empty()) {
    if (splitHistory_.empty() || now - splitHistory_.back().first >= std::chrono::seconds(5))
      splitHistory_.emplace_back(now, std::move(*st));
    while (splitHistory_.size() > 1 && now - splitHistory_[1].first >= kShareWindow) splitHistory_.pop_front();
  }
  auto before = guard_.weights();
  auto transitions = guard_.update(now, guardInputsLocked());
  double unixNow = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  for (auto& t : transitions) {
    std::string line = fmt::format("canary guard: split {}: {} {} -> {}: {}", t.split, t.backend, toString(t.from),
                                   toString(t.to), t.reason);
    if (t.to == GuardState::kTripped) spdlog::warn("{}", line);
    else spdlog::info("{}", line);
    guardEvents_.push_back(view::GuardEvent{unixNow, t.split, t.backend, toString(t.from), toString(t.to), t.reason});
    // And in the flow log, for meshctl flows and whoever follows it.
    size_t slash = t.split.find('/');
    reader_->logAgentEvent(AgentEvent{.type = std::string("guard_") + toString(t.to),
                                      .service = t.split.substr(slash + 1),
                                      .nameSpace = t.split.substr(0, slash),
                                      .endpoint = t.backend,
                                      .reason = t.reason});
    if (guardEvents_.size() > kGuardEventsKept) guardEvents_.pop_front();
  }
  if (guard_.weights() != before && reconciler_.applied()) applyLocked(*reconciler_.applied());
}

view::Routes Agent::routesLocked(const ServiceFilter& filter) {
  std::map<std::string, std::map<std::string, GuardStatus>> guard;
  auto now = Clock::now();
  for (auto& [sid, s] : index().services)
    if (s.canaryGuard) guard.emplace(s.nameSpace + "/" + s.name, guard_.status(s.nameSpace + "/" + s.name, now));
  auto st = reader_->splitStats();
  RouteReadings in;
  if (st) in.now = &st.value();
  if (!splitHistory_.empty() && now - splitHistory_.front().first >= std::chrono::seconds(1)) {
    in.before = &splitHistory_.front().second;
    in.windowSeconds = std::chrono::duration<double>(now - splitHistory_.front().first).count();
  }
  in.guard = &guard;
  if (const auto& applied = reconciler_.applied(); applied && applied->routes) in.routes = &*applied->routes;
  view::Routes out = buildRoutes(index(), filter, in);
  out.guardEvents.assign(guardEvents_.begin(), guardEvents_.end());
  return out;
}

// meshctl top: each endpoint of a guarded canary with its service's guard
// state (the worst over the splits that guard it).
void Agent::markGuardedLocked(view::Top& top) {
  if (!anySplits_) return;
  std::map<std::string, GuardState> worst;  // backend service key -> state
  auto now = Clock::now();
  for (auto& [sid, s] : index().services) {
    if (!s.canaryGuard) continue;
    for (auto& [backend, st] : guard_.status(s.nameSpace + "/" + s.name, now)) {
      auto [it, fresh] = worst.emplace(backend, st.state);
      if (!fresh && static_cast<int>(st.state) > static_cast<int>(it->second)) it->second = st.state;
    }
  }
  if (worst.empty()) return;
  for (view::TopEndpoint& e : top.endpoints)
    if (auto it = worst.find(e.nameSpace + "/" + e.service); it != worst.end()) e.guard = toString(it->second);
}

view::Routes Agent::routesView(const ServiceFilter& filter) {
  std::lock_guard lk(mu_);
  return routesLocked(filter);
}

}  // namespace aimesh
