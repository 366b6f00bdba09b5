#include "lifecycle/rebalance.h"

#include <algorithm>
#include <cmath>

namespace aimesh {

std::map<uint32_t, uint32_t> rebalanceBudgets(Algorithm algorithm, const std::vector<EndpointLoad>& endpoints,
                                              uint32_t budget) {
  std::map<uint32_t, uint32_t> out;
  std::vector<const EndpointLoad*> usable;
  for (auto& e : endpoints)
    if (e.usable && e.weight > 0) usable.push_back(&e);
  if (usable.size() < 2 || budget == 0) return out;

  // Capacity: the weight, per unit of time to first token for `latency`
  // (endpoints without a sample yet count as the median of those with one).
  std::vector<double> cap(usable.size());
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
  double total = 0, open = 0, busy = 0;
  for (size_t i = 0; i < usable.size(); ++i) {
    const EndpointLoad& e = *usable[i];
    double w = e.weight;
    if (algorithm == Algorithm::kLatency && median > 0) w /= (e.ewmaNs ? static_cast<double>(e.ewmaNs) : median) / median;
    cap[i] = w;
    total += w;
    open += static_cast<double>(std::max<int64_t>(0, e.open));
    busy += static_cast<double>(std::max<int64_t>(0, e.open - std::max<int64_t>(0, e.idle)));
  }
  struct Over {
    uint32_t id;
    int64_t excess;
  };
  std::vector<Over> over;
  for (size_t i = 0; i < usable.size(); ++i) {
    const EndpointLoad& e = *usable[i];
    int64_t eOpen = std::max<int64_t>(0, e.open), eIdle = std::clamp<int64_t>(e.idle, 0, eOpen);
    double eBusy = static_cast<double>(eOpen - eIdle);
    double shareOpen = open * cap[i] / total, shareBusy = busy * cap[i] / total;
    if (eBusy + 1e-9 < shareBusy) continue;  // carries less than its share of the requests: never trimmed
    double target = shareOpen;
    if (eBusy > shareBusy && eBusy > 0) target *= shareBusy / eBusy;
    int64_t excess = eOpen - static_cast<int64_t>(std::ceil(target - 1e-9));
    excess = std::min(excess, eIdle);
    if (excess > 0) over.push_back({e.id, excess});
  }
  // Within rounding, an endpoint may still sit below its share while every
  // other one holds exactly ceil(share): 2, 2, 2, 0 over four equal
  // replicas (share 1.5) happens whenever reconnects race and two land on
  // the same replica. Nobody is over ceil, yet one replica gets nothing. So
  // the connections missing below floor(share) are also taken, one each,
  // from endpoints holding more than their floor (the fullest first); the
  // balancer sends the reconnect to the emptiest replica.
  int64_t missing = 0, moving = 0;
  std::vector<std::pair<double, uint32_t>> donors;  // (open per unit of capacity, id)
  for (size_t i = 0; i < usable.size(); ++i) {
    const EndpointLoad& e = *usable[i];
    int64_t eOpen = std::max<int64_t>(0, e.open), eIdle = std::clamp<int64_t>(e.idle, 0, eOpen);
    auto floorShare = static_cast<int64_t>(std::floor(open * cap[i] / total + 1e-9));
    missing += std::max<int64_t>(0, floorShare - eOpen);
    bool isOver = std::any_of(over.begin(), over.end(), [&](const Over& o) { return o.id == e.id; });
    double eBusy = static_cast<double>(eOpen - eIdle), shareBusy = busy * cap[i] / total;
    if (!isOver && eOpen > floorShare && eIdle > 0 && eBusy + 1e-9 >= shareBusy)
      donors.emplace_back(static_cast<double>(eOpen) / cap[i], e.id);
  }
  for (auto& o : over) moving += o.excess;
  std::stable_sort(donors.begin(), donors.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t i = 0; i < donors.size() && moving < missing; ++i, ++moving) over.push_back({donors[i].second, 1});
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
