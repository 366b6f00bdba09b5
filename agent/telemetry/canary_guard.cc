#include "telemetry/canary_guard.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace aimesh {

const char* toString(GuardState s) {
  switch (s) {
    case GuardState::kOk: return "ok";
    case GuardState::kProbing: return "probing";
    case GuardState::kTripped: return "tripped";
  }
  return "ok";
}

double GuardWindow::metricMs(GuardMetric m) const {
  if (ttft.empty()) return 0;
  return ttft.quantileNs(m == GuardMetric::kTtftP50 ? 0.5 : 0.99) / 1e6;
}

uint32_t probeWeight(double percent, uint64_t others) {
  double w = std::ceil(percent * static_cast<double>(others) / (100 - percent));
  return static_cast<uint32_t>(std::clamp(w, 1.0, static_cast<double>(kMaxSplitWeight)));
}

namespace {

// a - b, for counters read twice; an endpoint whose counters went down (its
// id was given to a new one) counts from zero.
void addDelta(GuardWindow& out, const GuardSample& now, const GuardSample* then) {
  bool reset = then && (now.attempts < then->attempts || now.failures < then->failures ||
                        now.ttft.count < then->ttft.count);
  for (size_t i = 0; i < now.ttft.buckets.size() && then && !reset; ++i) reset = now.ttft.buckets[i] < then->ttft.buckets[i];
  if (reset) then = nullptr;
  for (size_t i = 0; i < now.ttft.buckets.size(); ++i)
    out.ttft.buckets[i] += now.ttft.buckets[i] - (then ? then->ttft.buckets[i] : 0);
  out.ttft.count += now.ttft.count - (then ? then->ttft.count : 0);
  out.ttft.sumNs += now.ttft.sumNs - (then && now.ttft.sumNs >= then->ttft.sumNs ? then->ttft.sumNs : 0);
  out.attempts += now.attempts - (then ? then->attempts : 0);
  out.failures += now.failures - (then ? then->failures : 0);
}

std::string fmtMs(double ms) { return ms >= 100 ? fmt::format("{:.0f} ms", ms) : fmt::format("{:.1f} ms", ms); }

}  // namespace

// Keeps a reading every 1/30 of the window (the first, and then whenever
// the last kept is that old), and drops those the window has passed, all
// but the newest of them (the window's start).
void CanaryGuard::Samples::add(Clock::time_point now, const GuardReading& r, uint64_t windowMs) {
  auto window = std::chrono::milliseconds(windowMs);
  if (at.empty() || now - at.back().first >= window / 30) at.emplace_back(now, r);
  while (at.size() > 1 && now - at[1].first >= window) at.pop_front();
}

GuardWindow CanaryGuard::Samples::window(const GuardReading& now) const {
  GuardWindow out;
  const GuardReading* base = at.empty() ? nullptr : &at.front().second;
  for (auto& [bid, s] : now) {
    const GuardSample* then = nullptr;
    if (base)
      if (auto it = base->find(bid); it != base->end()) then = &it->second;
    addDelta(out, s, then);
  }
  return out;
}

// One canary's evaluation; a transition if its state changes.
std::optional<GuardTransition> CanaryGuard::step(const std::string& split, const Split& in, const std::string& name,
                                                 Canary& c, const GuardWindow& primary, Clock::time_point now) {
  const CanaryGuardSpec& g = in.spec;
  auto move = [&](GuardState to, std::string reason) {
    GuardTransition t{split, name, c.state, to, std::move(reason)};
    c.state = to;
    c.since = now;
    c.reason = t.reason;
    if (to == GuardState::kTripped) ++c.trips;
    return t;
  };
  if (c.state == GuardState::kTripped) {
    if (now - c.since < std::chrono::milliseconds(g.cooldownMs)) return std::nullopt;
    return move(GuardState::kProbing, fmt::format("cooldown {} s over: probing with {}% of the split",
                                                  g.cooldownMs / 1000, g.probePercent));
  }
  const GuardWindow& w = c.last;
  uint64_t n = w.ttft.count, np = primary.ttft.count;
  std::string bad;
  double cm = w.metricMs(g.metric), pm = primary.metricMs(g.metric);
  bool judged = n >= g.minSamples && np >= g.minSamples && pm > 0;
  if (judged && cm > g.maxRatio * pm)
    bad = fmt::format("{} {} > {:g} x primary's {} ({} and {} requests in the window)", toString(g.metric),
                      fmtMs(cm), g.maxRatio, fmtMs(pm), n, np);
  if (bad.empty() && g.maxFailureRate && w.attempts >= g.minSamples &&
      static_cast<double>(w.failures) > *g.maxFailureRate * static_cast<double>(w.attempts)) {
    bad = fmt::format("{} of {} connects failed ({:.1f}% > {:g}%)", w.failures, w.attempts,
                      100.0 * w.failures / w.attempts, *g.maxFailureRate * 100);
    judged = true;
  }
  if (!bad.empty()) return move(GuardState::kTripped, bad);
  if (c.state == GuardState::kProbing && judged)
    return move(GuardState::kOk, fmt::format("{} {} within {:g} x primary's {} ({} requests while probing)",
                                             toString(g.metric), fmtMs(cm), g.maxRatio, fmtMs(pm), n));
  return std::nullopt;
}

std::vector<GuardTransition> CanaryGuard::update(Clock::time_point now, const std::map<std::string, Split>& splits) {
  std::vector<GuardTransition> out;
  std::erase_if(splits_, [&](const auto& e) { return !splits.count(e.first); });
  for (auto& [key, in] : splits) {
    if (in.weights.size() < 2) continue;
    State& st = splits_[key];
    std::string primary = in.primary.empty() ? in.weights.front().first : in.primary;
    if (st.primary != primary) st = State{primary, in.spec.metric, {}, {}};  // another primary: start afresh
    st.metric = in.spec.metric;
    static const GuardReading kNone;
    auto reading = [&](const std::string& name) -> const GuardReading& {
      auto it = in.readings.find(name);
      return it == in.readings.end() ? kNone : it->second;
    };
    st.primarySamples.add(now, reading(primary), in.spec.windowMs);
    GuardWindow pw = st.primarySamples.window(reading(primary));
    uint64_t total = 0;
    for (auto& [name, w] : in.weights) total += w;
    std::erase_if(st.canaries, [&](const auto& e) {
      return std::none_of(in.weights.begin(), in.weights.end(), [&](auto& w) { return w.first == e.first; });
    });
    for (auto& [name, weight] : in.weights) {
      if (name == primary) continue;
      Canary& c = st.canaries[name];
      if (c.since == Clock::time_point{}) c.since = now;
      c.samples.add(now, reading(name), in.spec.windowMs);
      c.last = c.samples.window(reading(name));
      c.lastPrimary = pw;
      if (auto t = step(key, in, name, c, pw, now)) {
        if (t->to == GuardState::kProbing) {  // judged on what it serves from now on
          c.samples.at.assign(1, {now, reading(name)});
          c.last = GuardWindow{};
        }
        out.push_back(std::move(*t));
      }
      c.weight.reset();
      if (c.state == GuardState::kTripped) c.weight = 0;
      if (c.state == GuardState::kProbing) c.weight = std::min(weight, probeWeight(in.spec.probePercent, total - weight));
    }
  }
  return out;
}

std::map<std::pair<std::string, std::string>, uint32_t> CanaryGuard::weights() const {
  std::map<std::pair<std::string, std::string>, uint32_t> out;
  for (auto& [split, st] : splits_)
    for (auto& [name, c] : st.canaries)
      if (c.weight) out[{split, name}] = *c.weight;
  return out;
}

std::map<std::string, GuardStatus> CanaryGuard::status(const std::string& split, Clock::time_point now) const {
  std::map<std::string, GuardStatus> out;
  auto it = splits_.find(split);
  if (it == splits_.end()) return out;
  for (auto& [name, c] : it->second.canaries) {
    GuardStatus s;
    s.state = c.state;
    s.trips = c.trips;
    s.sinceSeconds = std::chrono::duration<double>(now - c.since).count();
    s.reason = c.reason;
    s.weight = c.weight;
    s.canaryMs = c.last.metricMs(it->second.metric);
    s.primaryMs = c.lastPrimary.metricMs(it->second.metric);
    s.canarySamples = c.last.ttft.count;
    s.primarySamples = c.lastPrimary.ttft.count;
    s.failureRate = c.last.attempts ? static_cast<double>(c.last.failures) / c.last.attempts : 0;
    out[name] = s;
  }
  return out;
}

bool applyGuardWeights(Snapshot& snap, const std::map<std::pair<std::string, std::string>, uint32_t>& weights) {
  bool any = false;
  for (size_t i = 0; i < snap.services.size(); ++i) {
    const Service& s = snap.services[i];
    if (s.split.empty()) continue;
    any = true;
    std::vector<SplitBackend> next = s.split;
    std::string key = s.key();
    for (SplitBackend& b : next) {
      auto it = weights.find({key, (b.nameSpace.empty() ? s.nameSpace : b.nameSpace) + "/" + b.service});
      b.guardWeight = it == weights.end() ? std::nullopt : std::optional<uint32_t>(it->second);
    }
    if (next != s.split) snap.services.mut(i).split = std::move(next);
  }
  return any;
}

}  // namespace aimesh
