// Re-balancing pooled keep-alive connections: how many idle connections to
// close to each endpoint of a service so that clients reconnect and the
// balancer, which chooses at connect(), places them with fresh load. Pure:
// loads in, a close budget per endpoint out (the iterators spend it on idle
// connections only, lib/lifecycle.h).
//
// The share of an endpoint is its weight, for `latency` divided by its
// peak-EWMA time to first token (a replica twice as slow takes half as many
// clients). An endpoint is over its share of connections when it holds more
// than ceil(share x the service's open connections); one that carries more
// than its share of the requests in flight (busy connections) has that
// target scaled down by the ratio, and one that carries less is never
// trimmed — so connections move toward what the per-request join-the-shortest-
// queue picker would do, and the two measures never pull against each other.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "model/snapshot.h"

namespace aimesh {

struct EndpointLoad {
  uint32_t id = 0;
  uint16_t weight = 1;
  bool usable = true;   // active, weight > 0, not in failure back-off
  int64_t open = 0;     // established connections through this node (aimesh_be_load.active)
  int64_t idle = 0;     // of them, idle between requests
  uint64_t ewmaNs = 0;  // latency: peak-EWMA TTFT, 0 unknown
};

// Idle connections to close per endpoint id (only those > 0), at most
// `budget` in all, the most over-share endpoint first.
std::map<uint32_t, uint32_t> rebalanceBudgets(Algorithm algorithm, const std::vector<EndpointLoad>& endpoints,
                                              uint32_t budget);

// Per-service token bucket of closes: `rate` per second, at most one second
// (and at least one close) of burst.
struct CloseTokens {
  double tokens = 0;
  void refill(double rate, double seconds);
  uint32_t available() const { return tokens >= 1 ? static_cast<uint32_t>(tokens) : 0; }
  void spend(uint32_t n);
};

}  // namespace aimesh
