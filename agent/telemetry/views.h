// Builds the read API's views (view/views.h) from the id index and what the
// DatapathReader and the lifecycle read. Pure: no kernel, no lock, no clock
// (the caller reads everything first and passes it in), so every view is
// unit-tested on hand-made input (tests/unit/telemetry/views_test.cc).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "lifecycle/lifecycle.h"
#include "reconcile/plan.h"
#include "reconcile/policy_resolver.h"
#include "telemetry/canary_guard.h"
#include "telemetry/clients.h"
#include "telemetry/datapath_reader.h"
#include "telemetry/stats.h"
#include "telemetry/telemetry.h"
#include "view/views.h"

namespace aimesh {

using TelemetryById = std::map<uint32_t, BackendTelemetry>;

// The ids of an index's services or backends, for the reader.
std::vector<uint32_t> serviceIds(const IdIndex& idx);
std::vector<uint32_t> backendIds(const IdIndex& idx);

// "10.77.0.2:8000", "[fd77::2]:8000", or "backend#7" for an id not in the index.
std::string endpointName(const IdIndex& idx, uint32_t backendId);

// Which services a request names: empty name or namespace matches all.
struct ServiceFilter {
  std::string name;
  std::string nameSpace;
  bool matches(const ServiceInfo& s) const {
    return (name.empty() || s.name == name) && (nameSpace.empty() || s.nameSpace == nameSpace);
  }
  // "ml/llm", or "llm" without a namespace.
  std::string text() const { return nameSpace.empty() ? name : nameSpace + "/" + name; }
};

// One endpoint of the index joined with its service and with what was read
// about it. Every per-endpoint view and /metrics (telemetry/metrics.h) start
// from these rows, so the id -> service, name and readings join is here once.
struct EndpointRow {
  uint32_t id = 0;
  const ServiceInfo* service = nullptr;
  const BackendInfo* backend = nullptr;
  std::string name;                             // endpointName()
  const BackendCounters* counters = nullptr;    // null: not read (or never counted)
  const BackendTelemetry* telemetry = nullptr;  // null: telemetry off or not read
};
// The row of one backend id of the index (its service must be in it).
EndpointRow endpointRow(const IdIndex& idx, uint32_t backendId, const DatapathStats* stats, const TelemetryById* tel);
// The endpoints of the services the filter matches, in backend id order.
std::vector<EndpointRow> endpointRows(const IdIndex& idx, const ServiceFilter& filter, const DatapathStats* stats,
                                      const TelemetryById* tel);
// The counters read for a service id, null if none.
const ServiceCounters* serviceCounters(const DatapathStats* stats, uint32_t serviceId);

// A null stats or telemetry counts as all zero (not read, or telemetry off).
view::ServiceList buildServices(const IdIndex& idx, const DatapathStats* stats);
view::EndpointList buildEndpoints(const IdIndex& idx, const ServiceFilter& filter, const DatapathStats* stats,
                                  const TelemetryById* tel);
// The splits of the index that the filter matches, in id order: configured
// and effective weights, the connections each backend service got (`now`,
// cumulative) and its share of those in the window (`now` less `before`,
// the reading `windowSeconds` ago; null: no share), and the canary guard's
// view (split key -> backend key -> status).
struct RouteReadings {
  const SplitStats* now = nullptr;
  const SplitStats* before = nullptr;
  double windowSeconds = 0;
  const std::map<std::string, std::map<std::string, GuardStatus>>* guard = nullptr;
  const std::vector<RouteNote>* routes = nullptr;  // the applied snapshot's (Kubernetes mesh routes)
};
view::Routes buildRoutes(const IdIndex& idx, const ServiceFilter& filter, const RouteReadings& in);

view::Policy buildPolicy(const IdIndex& idx, const DatapathStats* stats,
                         const std::vector<UnresolvedCgroup>& unresolved);

// The backends of the services named exactly (a namespace narrows it), in
// index order; an error when no such service exists.
Result<std::vector<uint32_t>> latencyBackends(const IdIndex& idx, const ServiceFilter& filter);
view::Latency buildLatency(const IdIndex& idx, const std::vector<uint32_t>& backendIds, const TelemetryById& tel);
view::Histogram histogramView(const Histogram& h);

view::Top buildTop(const IdIndex& idx, const TelemetryById& tel, double monoSeconds);
view::Flows buildFlows(const IdIndex& idx, const std::vector<FlowEvent>& events, uint64_t next, uint64_t dropped);

// A kernel client entry with the name the agent gave its cgroup.
struct NamedClient {
  std::string name;
  ClientPair pair;
};
// Who calls which service: the `topK` (client, service) pairs with the most
// calls (connections + datagrams + requests + refused + denied) by name, the
// others summed per service into a row named "other". Cgroups with one name
// (a pod's and its containers') are summed into one client first. Pairs of
// service ids not in the index are left out. Rows by namespace, service and port, then
// by calls (most first), "other" last.
view::Clients buildClients(const IdIndex& idx, const std::vector<NamedClient>& clients, uint32_t topK,
                           double monoSeconds);

// The connections a lifecycle pass saw, per endpoint of the services the
// filter matches (all of them listed, with or without connections), then
// per endpoint that left the state (state "removed").
view::Connections buildConnections(const IdIndex& idx, const ServiceFilter& filter,
                                   const std::vector<ConnectionSeen>& seen, const std::vector<ClosedSeries>& closed,
                                   const TelemetryById* tel, uint64_t namespacesWalked);

}  // namespace aimesh
