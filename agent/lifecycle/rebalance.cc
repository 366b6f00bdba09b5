#include "lifecycle/rebalance.h"

#include <algorithm>
#include <cmath>

namespace aimesh {

namespace {

// One usable endpoint against its shares of the service's open and busy
// connections.
struct Share {
  uint32_t id;
  double cap;          // weight, per unit of time to first token for `latency`
  int64_t open, idle;  // idle clamped to [0, open]
  double shareOpen, shareBusy;
  double busy() const { return static_cast<double>(open - idle); }
  // Carries less than its share of the requests in flight: never trimmed.
  bool underBusy() const { return busy() + 1e-9 < shareBusy; }
};

struct Over {
  uint32_t id;
  int64_t excess;
};

// Capacity: the weight, per unit of time to first token for `latency`
// (endpoints without a sample yet count as the median of those with one).
std::vector<Share> shares(Algorithm algorithm, const std::vector<const EndpointLoad*>& usable) {
  double median = 0;
  if (algorithm == Algorithm::kLatency) {
    std::vector<uint64_t> known;
    for (auto* e : usable)
      if (e->ewmaNs) known.push_back(e->ewmaNs);
    if (!known.empty()) {
      std::nth_element(known.begin(), known.begin() + static_cast<long>(known.size() / 2), known.end());
      median = static_cast<double>(known[known.size() / 2]);
    }
  }
  std::vector<Share> out;
  double total = 0, open = 0, busy = 0;
  for (auto* e : usable) {
    double w = e->weight;
    if (algorithm == Algorithm::kLatency && median > 0) w /= (e->ewmaNs ? static_cast<double>(e->ewmaNs) : median) / median;
    int64_t eOpen = std::max<int64_t>(0, e->open);
    out.push_back(Share{e->id, w, eOpen, std::clamp<int64_t>(e->idle, 0, eOpen), 0, 0});
    total += w;
    open += static_cast<double>(eOpen);
    busy += out.back().busy();
  }
  for (auto& s : out) {
    s.shareOpen = open * s.cap / total;
    s.shareBusy = busy * s.cap / total;
  }
  return out;
}

// Endpoints over ceil(share) of the connections (the target scaled down by
// the ratio for one carrying more than its share of the requests), with how
// many idle connections each should give.
std::vector<Over> overShare(const std::vector<Share>& shares) {
  std::vector<Over> over;
  for (const Share& s : shares) {
    if (s.underBusy()) continue;
    double target = s.shareOpen;
    if (s.busy() > s.shareBusy && s.busy() > 0) target *= s.shareBusy / s.busy();
    int64_t excess = std::min(s.open - static_cast<int64_t>(std::ceil(target - 1e-9)), s.idle);
    if (excess > 0) over.push_back({s.id, excess});
  }
  return over;
}

// Within rounding, an endpoint may still sit below its share while every
// other one holds exactly ceil(share): 2, 2, 2, 0 over four equal replicas
// (share 1.5) happens whenever reconnects race and two land on the same
// replica. Nobody is over ceil, yet one replica gets nothing. So the
// connections missing below floor(share) that `over` does not already move
// are taken, one each, from endpoints holding more than their floor (the
// fullest first); the balancer sends the reconnect to the emptiest replica.
void fillBelowFloor(const std::vector<Share>& shares, std::vector<Over>& over) {
  int64_t missing = 0, moving = 0;
  for (auto& o : over) moving += o.excess;
  std::vector<const Share*> donors;
  for (const Share& s : shares) {
    auto floorShare = static_cast<int64_t>(std::floor(s.shareOpen + 1e-9));
    missing += std::max<int64_t>(0, floorShare - s.open);
    bool isOver = std::any_of(over.begin(), over.end(), [&](const Over& o) { return o.id == s.id; });
    if (!isOver && s.open > floorShare && s.idle > 0 && !s.underBusy()) donors.push_back(&s);
  }
  std::stable_sort(donors.begin(), donors.end(), [](const Share* a, const Share* b) {
    return static_cast<double>(a->open) / a->cap > static_cast<double>(b->open) / b->cap;
  });
  for (size_t i = 0; i < donors.size() && moving < missing; ++i, ++moving) over.push_back({donors[i]->id, 1});
}

}  // namespace

std::map<uint32_t, uint32_t> rebalanceBudgets(Algorithm algorithm, const std::vector<EndpointLoad>& endpoints,
                                              uint32_t budget) {
  std::map<uint32_t, uint32_t> out;
  std::vector<const EndpointLoad*> usable;
  for (auto& e : endpoints)
    if (e.usable && e.weight > 0) usable.push_back(&e);
  if (usable.size() < 2 || budget == 0) return out;
  std::vector<Share> s = shares(algorithm, usable);
  std::vector<Over> over = overShare(s);
  fillBelowFloor(s, over);
  std::stable_sort(over.begin(), over.end(), [](const Over& a, const Over& b) { return a.excess > b.excess; });
  // Round-robin over the over-share endpoints, the largest excess first.
  for (bool any = true; any && budget > 0;) {
    any = false;
    for (auto& o : over) {
      if (budget == 0) break;
      if (o.excess <= static_cast<int64_t>(out[o.id])) continue;
      ++out[o.id];
      --budget;
      any = true;
    }
  }
  std::erase_if(out, [](const auto& kv) { return kv.second == 0; });
  return out;
}

void CloseTokens::refill(double rate, double seconds) {
  double cap = std::max(1.0, rate);
  tokens = std::min(cap, tokens + rate * std::max(0.0, seconds));
}

void CloseTokens::spend(uint32_t n) { tokens = std::max(0.0, tokens - n); }

}  // namespace aimesh
