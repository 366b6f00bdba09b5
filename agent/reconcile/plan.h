// From a desired Snapshot and the current KernelState to the desired
// KernelState: stable id assignment (an existing service keeps its id through
// any of its frontends; an existing backend keeps its id through (service id,
// address, port)), weight expansion into slots, and slot generations. Pure.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "model/snapshot.h"
#include "reconcile/kernel_state.h"
#include "reconcile/limits.h"

namespace aimesh {

// One backend service of a split, as planned.
struct SplitTargetInfo {
  std::string service;     // namespace/name
  uint16_t port = 0;       // its port that takes the traffic
  uint32_t weight = 0;     // as configured
  uint32_t effectiveWeight = 0;  // in the kernel: the canary guard's, else `weight`
  uint32_t serviceId = 0;  // its kernel service id; 0: it does not resolve (no such service or port)
  bool operator==(const SplitTargetInfo&) const = default;
};

// What a kernel service or backend id stands for, for metrics and the API.
struct ServiceInfo {
  std::string name, nameSpace, model;
  Algorithm algorithm = Algorithm::kRandom;
  PortSpec port;
  std::vector<FrontendKey> frontends;
  std::vector<uint32_t> backendIds;  // in endpoint order
  std::optional<ModelMetricsSpec> modelMetrics;  // scrape the endpoints' model-server metrics
  std::optional<PolicySpec> policy;              // who may connect (with the resolved cgroup ids)
  ConnectionPolicy connections;                  // the lifecycle rules (agent/lifecycle/)
  std::vector<SplitTargetInfo> split;            // a split's backend services (then no backendIds)
  Boxed<CanaryGuardSpec> canaryGuard;            // a split's guard
  bool failClose = false;                        // Service::failClose (never on a split)
  bool operator==(const ServiceInfo&) const = default;
};
struct BackendInfo {
  uint32_t serviceId = 0;
  Endpoint endpoint;       // as in the snapshot
  uint16_t targetPort = 0; // resolved port
  bool operator==(const BackendInfo&) const = default;
};
struct IdIndex {
  std::map<uint32_t, ServiceInfo> services;
  std::map<uint32_t, BackendInfo> backends;
  bool operator==(const IdIndex&) const = default;
};

// What one reconcile changed in the index, for those that keep a copy of
// parts of it (the lifecycle): the service ids whose entries (and their
// backends') went, then those written anew. all: a full plan, where any id
// may have changed.
struct IndexChange {
  bool all = true;
  std::vector<uint32_t> removed, written;
};

// The free ids of a state: `below` and every id from `top` up. Known, they
// spare a plan the walk over every id in use for the lowest free one (at
// 40,000 backends that walk was most of the cost of a one-service change).
struct FreeIds {
  std::set<uint32_t> below;
  uint32_t top = 1;
  bool operator==(const FreeIds&) const = default;
};
struct StateFreeIds {
  FreeIds services, backends;
  bool operator==(const StateFreeIds&) const = default;
};

struct Plan {
  KernelState desired;
  IdIndex index;
  std::vector<uint32_t> newServiceIds;  // ids not in the current state: counters to reset
  std::vector<uint32_t> newBackendIds;
  // The free ids of the state after this plan (`whole` with `current`
  // replaced by `desired`), when known: given the state's, or for a plan of
  // everything.
  std::optional<StateFreeIds> nextFree;
};

// Expand weights into at most `maxSlots` slots: weights are divided by their
// gcd, scaled down proportionally if their sum does not fit (each active
// backend keeps at least one slot), and laid out in the given order.
// Entries with weight 0 get no slots. Returns backend ids, one per slot.
std::vector<uint32_t> expandSlots(const std::vector<std::pair<uint32_t, uint16_t>>& weighted,
                                  uint32_t maxSlots);

// Ids are handed out below `limits` (services, backends); what does not fit is
// left out of the plan (its index is then smaller than the snapshot).
Plan makePlan(const Snapshot& desired, const KernelState& current, const MapLimits& limits = {});

// The plan of some services only (a change to a few of many): `current` is
// the part of the current state those services own now (every entry of
// their current service ids: frontends, services, slots, backends, hash
// tables, policy entries) and `whole` the entire current state, whose ids
// are not handed out again. Provided no other current service owns one of
// their frontends, this is exactly makePlan(desired, whole) restricted to
// these services (the reconciler's incremental path relies on that, and
// tests/unit/reconcile/incremental_test.cc checks it). `free`, if given,
// must be the free ids of `whole` (the previous plan's nextFree).
Plan makePartialPlan(const std::vector<const Service*>& services, const KernelState& current,
                     const KernelState& whole, const MapLimits& limits = {}, const StateFreeIds* free = nullptr);

}  // namespace aimesh
