// The canary guard (docs/traffic-management.md#the-canary-guard): a
// node-local safety net for splits. For each guarded split, every backend
// service but the primary (a "canary") is compared with the primary over a
// sliding window of what this node's kernel measured: time to first token
// (p99 or p50 of the requests timed in the window) and, optionally, the
// share of connects that failed. A canary worse than the bound is
// "tripped": its weight on this node is 0 for new connections. After the
// cooldown it is "probing" with a small share of the split, judged again on
// what it served since, and given its weight back ("ok") when it is within
// the bound, or tripped again. The guard only ever lowers a canary's weight.
//
// Pure: the agent reads the kernel, hands in cumulative readings with the
// time, and writes the weights the guard asks for into the splits.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "model/snapshot.h"
#include "telemetry/histogram.h"

namespace aimesh {

// One endpoint of a backend service, as read now (cumulative since its id
// was given to it).
struct GuardSample {
  Histogram ttft;
  uint64_t attempts = 0;  // connects that ended: established, refused or timed out
  uint64_t failures = 0;  // refused, timed out, or reset once established
};
// A backend service now: its endpoints by backend id.
using GuardReading = std::map<uint32_t, GuardSample>;

enum class GuardState : uint8_t { kOk = 0, kProbing = 1, kTripped = 2 };
const char* toString(GuardState s);  // "ok", "probing", "tripped"

// What a backend service saw in the window, summed over its endpoints.
struct GuardWindow {
  Histogram ttft;
  uint64_t attempts = 0, failures = 0;
  double metricMs(GuardMetric m) const;  // the quantile the guard compares; 0 without samples
};

struct GuardTransition {
  std::string split, backend;  // namespace/name, name
  GuardState from = GuardState::kOk, to = GuardState::kOk;
  std::string reason;
};

// A canary's state, for the API, /metrics and the log.
struct GuardStatus {
  GuardState state = GuardState::kOk;
  uint64_t trips = 0;
  double sinceSeconds = 0;    // in this state
  std::string reason;         // of the last transition ("" if none)
  std::optional<uint32_t> weight;  // the guard's weight; none: the configured one
  double canaryMs = 0, primaryMs = 0;   // the compared metric over the window (0: no samples)
  uint64_t canarySamples = 0, primarySamples = 0;
  double failureRate = 0;     // the canary's, over the window
};

class CanaryGuard {
 public:
  using Clock = std::chrono::steady_clock;

  // One guarded split now: its spec, its primary ("" = the first backend),
  // its backend services in order with their configured weights, and a
  // reading of each. Backends are known by their keys (namespace/name).
  struct Split {
    CanaryGuardSpec spec;
    std::string primary;
    std::vector<std::pair<std::string, uint32_t>> weights;
    std::map<std::string, GuardReading> readings;
  };

  // Takes the readings at `now` and moves each canary's state; returns the
  // transitions. Splits (and backends) not given any more are forgotten.
  std::vector<GuardTransition> update(Clock::time_point now, const std::map<std::string, Split>& splits);

  // The weights the guard sets: (split, backend) -> weight, for the canaries
  // that are not ok.
  std::map<std::pair<std::string, std::string>, uint32_t> weights() const;
  // Every canary of `split` (by name); empty if it is not guarded.
  std::map<std::string, GuardStatus> status(const std::string& split, Clock::time_point now) const;

 private:
  struct Samples {
    std::deque<std::pair<Clock::time_point, GuardReading>> at;
    void add(Clock::time_point now, const GuardReading& r, uint64_t windowMs);
    GuardWindow window(const GuardReading& now) const;  // `now` less the oldest kept
  };
  struct Canary {
    GuardState state = GuardState::kOk;
    Clock::time_point since{};
    uint64_t trips = 0;
    std::string reason;
    std::optional<uint32_t> weight;
    Samples samples;
    GuardWindow last, lastPrimary;
  };
  struct State {
    std::string primary;
    GuardMetric metric = GuardMetric::kTtftP99;
    Samples primarySamples;
    std::map<std::string, Canary> canaries;
  };
  std::optional<GuardTransition> step(const std::string& split, const Split& in, const std::string& name,
                                      Canary& c, const GuardWindow& primary, Clock::time_point now);

  std::map<std::string, State> splits_;
};

// The weight that gives a probing canary `percent` of a split whose other
// backend services weigh `others` (at least 1, at most kMaxSplitWeight).
uint32_t probeWeight(double percent, uint64_t others);

// Writes the guard's weights ((split key, backend key) -> weight) into the
// splits of `snap` (SplitBackend::guardWeight), changing only the splits
// whose weights change. Returns whether `snap` has any split (the same walk).
bool applyGuardWeights(Snapshot& snap, const std::map<std::pair<std::string, std::string>, uint32_t>& weights);

}  // namespace aimesh
