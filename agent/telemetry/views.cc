#include "telemetry/views.h"

#include <arpa/inet.h>
#include <fmt/format.h>

#include <algorithm>

#include "model/snapshot.h"
#include "telemetry/histogram.h"

namespace aimesh {

namespace {
template <class M>
std::vector<uint32_t> keysOf(const M& m) {
  std::vector<uint32_t> out;
  out.reserve(m.size());
  for (auto& [k, v] : m) out.push_back(k);
  return out;
}

template <class M>
const typename M::mapped_type* find(const M* m, uint32_t id) {
  if (!m) return nullptr;
  auto it = m->find(id);
  return it == m->end() ? nullptr : &it->second;
}

const char* protoName(uint8_t proto) { return proto == AIMESH_PROTO_UDP ? "UDP" : "TCP"; }
}  // namespace

std::vector<uint32_t> serviceIds(const IdIndex& idx) { return keysOf(idx.services); }
std::vector<uint32_t> backendIds(const IdIndex& idx) { return keysOf(idx.backends); }

std::string endpointName(const IdIndex& idx, uint32_t backendId) {
  auto it = idx.backends.find(backendId);
  if (it == idx.backends.end()) return fmt::format("backend#{}", backendId);
  return formatHostPort(it->second.endpoint.address, it->second.targetPort);
}

EndpointRow endpointRow(const IdIndex& idx, uint32_t backendId, const DatapathStats* stats, const TelemetryById* tel) {
  const BackendInfo& b = idx.backends.at(backendId);
  return EndpointRow{.id = backendId, .service = &idx.services.at(b.serviceId), .backend = &b,
                     .name = formatHostPort(b.endpoint.address, b.targetPort),
                     .counters = stats ? find(&stats->backends, backendId) : nullptr, .telemetry = find(tel, backendId)};
}

std::vector<EndpointRow> endpointRows(const IdIndex& idx, const ServiceFilter& filter, const DatapathStats* stats,
                                      const TelemetryById* tel) {
  std::vector<EndpointRow> out;
  out.reserve(idx.backends.size());
  for (auto& [id, b] : idx.backends) {
    auto sit = idx.services.find(b.serviceId);
    if (sit != idx.services.end() && filter.matches(sit->second)) out.push_back(endpointRow(idx, id, stats, tel));
  }
  return out;
}

const ServiceCounters* serviceCounters(const DatapathStats* stats, uint32_t serviceId) {
  return stats ? find(&stats->services, serviceId) : nullptr;
}

view::ServiceList buildServices(const IdIndex& idx, const DatapathStats* stats) {
  view::ServiceList out;
  for (auto& [id, s] : idx.services) {
    view::Service v{.name = s.name, .nameSpace = s.nameSpace, .model = s.model,
                    .algorithm = s.split.empty() ? toString(s.algorithm) : "split", .serviceId = id};
    for (auto& f : s.frontends) v.frontends.push_back(f.toString());
    v.endpoints = s.backendIds.size();
    for (auto bid : s.backendIds) {
      auto& ep = idx.backends.at(bid).endpoint;
      v.activeEndpoints += ep.state == EndpointState::kActive && ep.weight > 0;
    }
    if (const ServiceCounters* c = serviceCounters(stats, id)) {
      v.connections = c->connects;
      v.datagrams = c->datagrams;
      v.refused = c->refused;
      v.denied = c->denied;
    }
    v.policy = s.policy.has_value();
    if (s.failClose) v.failClose = true;
    out.services.push_back(std::move(v));
  }
  return out;
}

view::EndpointList buildEndpoints(const IdIndex& idx, const ServiceFilter& filter, const DatapathStats* stats,
                                  const TelemetryById* tel) {
  view::EndpointList out;
  for (auto& [sid, s] : idx.services) {
    if (!filter.matches(s)) continue;
    for (auto bid : s.backendIds) {
      EndpointRow r = endpointRow(idx, bid, stats, tel);
      const BackendInfo& b = *r.backend;
      const BackendCounters* c = r.counters;
      view::Endpoint e{.service = s.name, .nameSpace = s.nameSpace, .address = b.endpoint.address.toString(),
                       .port = b.targetPort, .protocol = toString(s.port.protocol), .pod = b.endpoint.pod.str(), .weight = b.endpoint.weight,
                       .state = toString(b.endpoint.state), .backendId = bid,
                       .connections = c ? c->connects : 0, .datagrams = c ? c->datagrams : 0};
      if (const BackendTelemetry* t = r.telemetry) {
        e.inFlight = std::max<int64_t>(0, t->active);
        e.idleConnections = std::clamp<int64_t>(t->idle, 0, std::max<int64_t>(0, t->active));
        e.ttftEwmaMs = t->ewmaTtftNs / 1e6;
        e.failurePenalty = t->penalty;
        e.consecutiveFailures = t->failStreak;
        e.ejected = t->ejected;
        e.ejectedForSeconds = t->ejectedForSeconds;
        if (t->signal.valid) {
          e.queuedRequests = t->signal.queue_depth;
          e.runningRequests = t->signal.running;
          e.kvCacheUsage = t->signal.kv_cache_permille / 1000.0;
        }
      }
      out.endpoints.push_back(std::move(e));
    }
  }
  return out;
}

view::Policy buildPolicy(const IdIndex& idx, const DatapathStats* stats,
                         const std::vector<UnresolvedCgroup>& unresolved) {
  view::Policy out;
  for (auto& [id, s] : idx.services) {
    const ServiceCounters* c = serviceCounters(stats, id);
    view::ServicePolicy p{.name = s.name, .nameSpace = s.nameSpace, .serviceId = id, .port = s.port.port,
                          .protocol = toString(s.port.protocol), .enforced = s.policy.has_value(),
                          .denied = c ? c->denied : 0};
    if (s.policy) {
      std::string key = s.nameSpace + "/" + s.name;
      auto missing = [&](const std::string& path) -> const UnresolvedCgroup* {
        auto it = std::find_if(unresolved.begin(), unresolved.end(),
                               [&](const UnresolvedCgroup& u) { return u.service == key && u.path == path; });
        return it == unresolved.end() ? nullptr : &*it;
      };
      for (auto& path : s.policy->allowCgroups) {
        const UnresolvedCgroup* miss = missing(path);
        view::PolicyAllow a{.cgroup = path, .resolved = !miss};
        if (miss) a.reason = miss->reason;
        p.allow.push_back(std::move(a));
      }
      for (auto& pod : s.policy->allowPods) {
        const UnresolvedCgroup* miss = missing("pod " + pod.name);
        view::PolicyAllow a{.pod = pod.name, .uid = pod.uid, .resolved = !miss};
        if (miss) a.reason = miss->reason;
        else a.cgroup = pod.cgroup;
        p.allow.push_back(std::move(a));
      }
      if (!s.policy->podSelector.empty()) p.podSelector = s.policy->podSelector;
      p.allowedCgroupIds = s.policy->allowCgroupIds;
    }
    out.services.push_back(std::move(p));
  }
  return out;
}

Result<std::vector<uint32_t>> latencyBackends(const IdIndex& idx, const ServiceFilter& filter) {
  std::vector<uint32_t> ids;
  bool known = false;
  for (auto& [sid, s] : idx.services) {
    if (s.name != filter.name || (!filter.nameSpace.empty() && s.nameSpace != filter.nameSpace)) continue;
    known = true;
    ids.insert(ids.end(), s.backendIds.begin(), s.backendIds.end());
  }
  if (!known) return Error::msg("unknown service '" + filter.name + "'");
  return ids;
}

view::Histogram histogramView(const Histogram& h) {
  view::Histogram v{.count = h.count, .sumSeconds = h.sumNs / 1e9, .p50 = h.quantileNs(0.5) / 1e9,
                    .p90 = h.quantileNs(0.9) / 1e9, .p99 = h.quantileNs(0.99) / 1e9};
  for (uint32_t b = 0; b < AIMESH_HIST_BUCKETS; ++b)
    if (h.buckets[b]) v.buckets.push_back({histBucketLower(b) / 1e9, histBucketUpper(b) / 1e9, h.buckets[b]});
  return v;
}

view::Latency buildLatency(const IdIndex& idx, const std::vector<uint32_t>& backendIds, const TelemetryById& tel) {
  view::Latency out;
  for (uint32_t id : backendIds) {
    EndpointRow r = endpointRow(idx, id, nullptr, &tel);
    const ServiceInfo& s = *r.service;
    view::EndpointLatency e{.service = s.name, .nameSpace = s.nameSpace, .model = s.model, .endpoint = r.name,
                            .backendId = id};
    // An endpoint with no samples (none read) has empty histograms.
    static const BackendTelemetry kNone{};
    const BackendTelemetry* t = r.telemetry ? r.telemetry : &kNone;
    for (uint32_t m = 0; m < AIMESH_M_MAX; ++m) e.metrics[metricName(m)] = histogramView(t->hist[m]);
    out.endpoints.push_back(std::move(e));
  }
  return out;
}

view::Top buildTop(const IdIndex& idx, const TelemetryById& tel, double monoSeconds) {
  view::Top out{.timeSeconds = monoSeconds};
  static const BackendTelemetry kNone{};
  for (const EndpointRow& r : endpointRows(idx, {}, nullptr, &tel)) {
    const ServiceInfo& s = *r.service;
    const BackendTelemetry* t = r.telemetry ? r.telemetry : &kNone;
    const aimesh_be_tel& c = t->counters;
    out.endpoints.push_back(view::TopEndpoint{
        .service = s.name, .nameSpace = s.nameSpace, .model = s.model, .endpoint = r.name,
        .backendId = r.id, .active = std::max<int64_t>(0, t->active), .opened = c.opened, .requests = c.requests,
        .responses = c.responses, .errors = c.failed_refused + c.failed_timeout + c.reset,
        .ttftP50 = t->hist[AIMESH_M_TTFT].quantileNs(0.5) / 1e9,
        .ttftP99 = t->hist[AIMESH_M_TTFT].quantileNs(0.99) / 1e9,
        .gapP50 = t->hist[AIMESH_M_GAP].quantileNs(0.5) / 1e9});
  }
  return out;
}

view::Flows buildFlows(const IdIndex& idx, const std::vector<FlowEvent>& events, uint64_t next, uint64_t dropped) {
  view::Flows out{.next = next, .dropped = dropped};
  for (auto& fe : events) {
    const aimesh_event& e = fe.ev;
    if (fe.agent) {
      const AgentEvent& a = *fe.agent;
      out.events.push_back(view::Flow{.seq = fe.seq, .timeSeconds = e.ts_ns / 1e9, .type = a.type, .service = a.service,
                                      .nameSpace = a.nameSpace, .endpoint = a.endpoint, .reason = a.reason});
      continue;
    }
    auto sit = idx.services.find(e.service_id);
    bool known = sit != idx.services.end();
    out.events.push_back(view::Flow{
        .seq = fe.seq, .timeSeconds = e.ts_ns / 1e9, .type = eventTypeName(e.type),
        .service = known ? sit->second.name : "", .nameSpace = known ? sit->second.nameSpace : "",
        .endpoint = e.backend_id ? endpointName(idx, e.backend_id) : "", .durationSeconds = e.duration_ns / 1e9,
        .bytesSent = e.bytes_sent, .bytesReceived = e.bytes_received, .requests = e.requests,
        .retransmits = e.retransmits, .clientCgroupId = e.cgroup_id});
  }
  return out;
}

namespace {

uint64_t clientCalls(const aimesh_client_stats& c) {
  return c.connects + c.datagrams + c.requests + c.refused + c.denied;
}

void addClientStats(view::ClientRow& row, const aimesh_client_stats& c) {
  row.connections += c.connects;
  row.datagrams += c.datagrams;
  row.requests += c.requests;
  row.refused += c.refused;
  row.denied += c.denied;
}

uint64_t rowCalls(const view::ClientRow& r) { return r.connections + r.datagrams + r.requests + r.refused + r.denied; }

}  // namespace

view::Clients buildClients(const IdIndex& idx, const std::vector<NamedClient>& clients, uint32_t topK,
                           double monoSeconds) {
  view::Clients out{.timeSeconds = monoSeconds, .topK = topK, .pairs = clients.size()};
  // Cgroups with one name (a pod's own and its containers') are one client:
  // summed, under the lowest of their ids.
  std::map<std::pair<std::string, uint32_t>, NamedClient> merged;
  for (const NamedClient& c : clients) {
    if (!idx.services.contains(c.pair.key.service_id)) continue;
    auto [it, fresh] = merged.try_emplace({c.name, c.pair.key.service_id}, c);
    if (fresh) continue;
    aimesh_client_stats& m = it->second.pair.stats;
    m.connects += c.pair.stats.connects;
    m.datagrams += c.pair.stats.datagrams;
    m.requests += c.pair.stats.requests;
    m.refused += c.pair.stats.refused;
    m.denied += c.pair.stats.denied;
    it->second.pair.key.cgroup_id = std::min(it->second.pair.key.cgroup_id, c.pair.key.cgroup_id);
  }
  std::vector<const NamedClient*> known;
  for (auto& [key, c] : merged) known.push_back(&c);
  std::stable_sort(known.begin(), known.end(), [](const NamedClient* a, const NamedClient* b) {
    uint64_t ca = clientCalls(a->pair.stats), cb = clientCalls(b->pair.stats);
    return ca != cb ? ca > cb : std::tie(a->name, a->pair.key.cgroup_id) < std::tie(b->name, b->pair.key.cgroup_id);
  });
  std::map<uint32_t, view::ClientRow> other;  // by service id
  auto rowOf = [&](const ServiceInfo& s, std::string client, uint64_t cgroupId) {
    return view::ClientRow{.client = std::move(client), .cgroupId = cgroupId, .service = s.name,
                           .nameSpace = s.nameSpace, .port = s.port.port, .protocol = toString(s.port.protocol)};
  };
  for (size_t i = 0; i < known.size(); ++i) {
    const NamedClient& c = *known[i];
    const ServiceInfo& s = idx.services.at(c.pair.key.service_id);
    if (i < topK) {
      out.clients.push_back(rowOf(s, c.name, c.pair.key.cgroup_id));
      addClientStats(out.clients.back(), c.pair.stats);
      continue;
    }
    auto [it, fresh] = other.try_emplace(c.pair.key.service_id);
    if (fresh) it->second = rowOf(s, "other", 0);
    addClientStats(it->second, c.pair.stats);
  }
  for (auto& [id, row] : other) out.clients.push_back(std::move(row));
  auto order = [](const view::ClientRow& r) {
    return std::tuple(r.nameSpace, r.service, r.port, r.protocol, r.client == "other", ~rowCalls(r), r.client,
                      r.cgroupId);
  };
  std::stable_sort(out.clients.begin(), out.clients.end(),
                   [&](const view::ClientRow& a, const view::ClientRow& b) { return order(a) < order(b); });
  return out;
}

namespace {

// Connections closed by aimesh, by reason (every reason listed), for one
// endpoint of a service.
std::map<std::string, uint64_t> closedOf(const std::vector<ClosedSeries>& closed, const ServiceInfo& s,
                                         const std::string& ep) {
  std::map<std::string, uint64_t> out;
  for (uint8_t r = 1; r < AIMESH_CLOSE_MAX; ++r) out[closeReasonName(r)] = 0;
  for (auto& cs : closed)
    if (cs.service == s.name && cs.nameSpace == s.nameSpace && cs.port == s.port && cs.endpoint == ep)
      for (uint8_t r = 1; r < AIMESH_CLOSE_MAX; ++r) out[closeReasonName(r)] = cs.byReason[r];
  return out;
}

// A row for connections to an endpoint that left the state, named after its
// service if that is still known.
view::EndpointConnections removedRow(const IdIndex& idx, const aimesh_conn& rec, const std::string& ep,
                                     const std::vector<ClosedSeries>& closed) {
  view::EndpointConnections row{.endpoint = ep, .backendId = rec.backend_id, .state = "removed"};
  if (auto sit = idx.services.find(rec.service_id); sit != idx.services.end()) {
    const ServiceInfo& s = sit->second;
    row.service = s.name;
    row.nameSpace = s.nameSpace;
    row.port = s.port.port;
    row.protocol = toString(s.port.protocol);
    row.closed = closedOf(closed, s, ep);
  } else {
    row.service = fmt::format("service#{}", rec.service_id);
    row.protocol = protoName(rec.proto);
  }
  return row;
}

void addConnection(view::EndpointConnections& row, const ConnectionSeen& c) {
  const aimesh_conn& rec = c.rec;
  row.open++;
  row.idle += rec.state == AIMESH_CS_IDLE;
  row.busy += rec.state == AIMESH_CS_BUSY;
  row.requests += rec.requests;
  row.oldestSeconds = std::max(row.oldestSeconds, rec.age_ns / 1e9);
  view::Connection v{.cookie = rec.cookie, .protocol = protoName(rec.proto),
                     .client = Lifecycle::endpointText(rec.saddr, ntohs(rec.sport)), .ageSeconds = rec.age_ns / 1e9,
                     .requests = rec.requests, .state = connStateName(rec.state), .netns = c.netns};
  if (rec.state == AIMESH_CS_IDLE) v.idleSeconds = rec.idle_ns / 1e9;
  row.connections.push_back(std::move(v));
}

}  // namespace

view::Connections buildConnections(const IdIndex& idx, const ServiceFilter& filter,
                                   const std::vector<ConnectionSeen>& seen, const std::vector<ClosedSeries>& closed,
                                   const TelemetryById* tel, uint64_t namespacesWalked) {
  std::map<uint32_t, view::EndpointConnections> live;                                // by backend id
  std::map<std::pair<uint32_t, std::string>, view::EndpointConnections> removed;     // by service id and endpoint
  for (const EndpointRow& r : endpointRows(idx, filter, nullptr, tel)) {
    const ServiceInfo& s = *r.service;
    live.emplace(r.id, view::EndpointConnections{.service = s.name, .nameSpace = s.nameSpace, .port = s.port.port,
                                                 .protocol = toString(s.port.protocol), .endpoint = r.name,
                                                 .backendId = r.id, .state = toString(r.backend->endpoint.state),
                                                 .ejected = r.telemetry && r.telemetry->ejected,
                                                 .closed = closedOf(closed, s, r.name)});
  }
  for (const ConnectionSeen& c : seen) {
    const aimesh_conn& rec = c.rec;
    if (!rec.gone) {
      if (auto it = live.find(rec.backend_id); it != live.end()) addConnection(it->second, c);
      continue;  // else another service, or filtered out
    }
    auto sit = idx.services.find(rec.service_id);
    if (sit != idx.services.end() ? !filter.matches(sit->second) : !filter.name.empty()) continue;
    std::string ep = Lifecycle::endpointText(rec.daddr, ntohs(rec.dport));
    auto [it, fresh] = removed.try_emplace({rec.service_id, ep});
    if (fresh) it->second = removedRow(idx, rec, ep, closed);
    addConnection(it->second, c);
  }
  view::Connections out{.available = true, .reason = "", .namespacesWalked = namespacesWalked};
  for (auto& [id, r] : live) out.endpoints.push_back(std::move(r));
  for (auto& [key, r] : removed) out.endpoints.push_back(std::move(r));
  return out;
}

}  // namespace aimesh

namespace aimesh {
namespace {

uint64_t sentTo(const SplitStats* s, uint32_t split, uint32_t target) {
  if (!s) return 0;
  auto it = s->find({split, target});
  return it == s->end() ? 0 : it->second.connects + it->second.datagrams;
}
// Sent in the window; counters that went down (an id given anew) count from zero.
uint64_t sentSince(const RouteReadings& in, uint32_t split, uint32_t target) {
  uint64_t now = sentTo(in.now, split, target), then = sentTo(in.before, split, target);
  return now >= then ? now - then : now;
}

// A backend service's line of its split's route; `total` the configured
// weights, `sent`/`window` this one's and the split's connections in the
// window.
view::RouteBackend routeBackend(uint32_t sid, const SplitTargetInfo& t, uint64_t total, const RouteReadings& in,
                                const std::map<std::string, GuardStatus>* guard) {
  view::RouteBackend b{.service = t.service,
                       .port = t.port,
                       .weight = t.weight,
                       .effectiveWeight = t.serviceId ? t.effectiveWeight : 0,
                       .resolved = t.serviceId != 0,
                       .configuredShare = total ? 100.0 * t.weight / static_cast<double>(total) : 0,
                       .connections = sentTo(in.now, sid, t.serviceId)};
  if (guard)
    if (auto g = guard->find(t.service); g != guard->end()) {
      b.guard = toString(g->second.state);
      b.guardTrips = g->second.trips;
      if (!g->second.reason.empty()) b.guardReason = g->second.reason;
      b.guardMetricMs = g->second.canaryMs;
      b.primaryMetricMs = g->second.primaryMs;
      b.guardSamples = g->second.canarySamples;
      b.primarySamples = g->second.primarySamples;
    }
  return b;
}

}  // namespace

namespace {
// Where the split `key` came from: the mesh route that made it, else the state file.
std::string splitSource(const std::vector<RouteNote>* routes, const std::string& key) {
  if (routes)
    for (const RouteNote& n : *routes)
      if (std::binary_search(n.splits.begin(), n.splits.end(), key)) return n.route;
  return "state file";
}
// A filter names a route's parent Service "ns/name" (or one of its ports, "name:port").
bool parentMatches(const ServiceFilter& f, const std::string& parent) {
  size_t slash = parent.find('/');
  std::string ns = parent.substr(0, slash), name = parent.substr(slash + 1);
  return (f.nameSpace.empty() || f.nameSpace == ns) && (f.name.empty() || f.name == name || f.name.rfind(name + ":", 0) == 0);
}
}  // namespace

view::Routes buildRoutes(const IdIndex& idx, const ServiceFilter& filter, const RouteReadings& in) {
  view::Routes out;
  for (auto& [sid, s] : idx.services) {
    if (s.split.empty() || !filter.matches(s)) continue;
    std::string key = s.nameSpace + "/" + s.name;
    view::Route r{.name = s.name,
                  .nameSpace = s.nameSpace,
                  .serviceId = sid,
                  .port = s.port.port,
                  .protocol = toString(s.port.protocol),
                  .source = splitSource(in.routes, key),
                  .windowSeconds = in.before ? in.windowSeconds : 0};
    const std::map<std::string, GuardStatus>* guard = nullptr;
    if (s.canaryGuard) {
      r.guardMetric = toString(s.canaryGuard->metric);
      r.primary = s.canaryGuard->primary.empty() ? s.split.front().service : s.nameSpace + "/" + s.canaryGuard->primary;
      if (in.guard)
        if (auto g = in.guard->find(key); g != in.guard->end()) guard = &g->second;
    }
    uint64_t total = 0, window = 0;
    for (auto& t : s.split) {
      total += t.weight;
      if (t.serviceId) window += sentSince(in, sid, t.serviceId);
    }
    for (auto& t : s.split) {
      view::RouteBackend b = routeBackend(sid, t, total, in, guard);
      if (in.before && window > 0 && t.serviceId)
        b.observedShare = 100.0 * static_cast<double>(sentSince(in, sid, t.serviceId)) / static_cast<double>(window);
      r.backends.push_back(std::move(b));
    }
    out.routes.push_back(std::move(r));
  }
  if (in.routes)
    for (const RouteNote& n : *in.routes)
      if (std::any_of(n.parents.begin(), n.parents.end(), [&](const std::string& p) { return parentMatches(filter, p); })) {
        view::MeshRoute m{.route = n.route, .state = toString(n.state), .parents = n.parents, .splits = n.splits,
                          .notes = n.notes};
        if (!n.pool.empty()) m.pool = n.pool;
        if (!n.pooled.empty()) m.pooled = n.pooled;
        out.meshRoutes.push_back(std::move(m));
      }
  return out;
}

}  // namespace aimesh
