#include "telemetry/metrics.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>
#include <string_view>

#include "model/snapshot.h"
#include "telemetry/views.h"

namespace aimesh {

std::string escapeLabel(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

namespace {

// Set at the start of each render; thread_local because scrapes run on
// several HTTP worker threads at once.
thread_local bool gOpenMetrics = false;

// HELP and TYPE of a family. OpenMetrics names a counter family without its
// _total suffix (the samples keep it).
void family(std::string& out, const char* name, const char* type, const char* help) {
  std::string n = name;
  if (gOpenMetrics && std::string_view(type) == "counter" && n.size() > 6 && n.ends_with("_total"))
    n.resize(n.size() - 6);
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", n, help, n, type);
}

// Label pairs as the text formats print them: k="v",... with v escaped.
std::string joinLabels(const LabelPairs& labels) {
  std::string out;
  for (auto& [k, v] : labels) out += fmt::format("{}{}=\"{}\"", out.empty() ? "" : ",", k, escapeLabel(v));
  return out;
}

std::string serviceLabels(const ServiceInfo& s) { return joinLabels(serviceLabelPairs(s)); }

// An endpoint row with its labels, formatted once per scrape.
struct Labelled {
  const EndpointRow* row;
  std::string labels;
  // An endpoint without telemetry read has all zeros (idle series).
  const BackendTelemetry& tel() const {
    static const BackendTelemetry kNone{};
    return row->telemetry ? *row->telemetry : kNone;
  }
};

std::string fmtSeconds(double s) { return fmt::format("{}", s); }

// Closed connections by reason: "other" (the client or the server closed
// it: every close the kernel counted less those it counted as aimesh's), and
// aimesh's own reasons, as the lifecycle counted them since the agent
// started, for endpoints in the state and for those that left it.
void renderClosed(std::string& out, const std::vector<Labelled>& eps,
                  const std::vector<ClosedSeries>* closed) {
  family(out, "aimesh_endpoint_connections_closed_total", "counter",
         "Connections to the endpoint that closed, by reason: other (closed by the client or the server), or "
         "closed by aimesh: removed, drained, ejected, rebalanced, max_age, max_requests.");
  std::map<std::tuple<std::string, std::string, uint16_t, uint8_t, std::string>, const ClosedSeries*> byKey;
  if (closed)
    for (auto& c : *closed)
      byKey[{c.nameSpace, c.service, c.port.port, static_cast<uint8_t>(c.port.protocol), c.endpoint}] = &c;
  for (const Labelled& e : eps) {
    const EndpointRow* r = e.row;
    const std::string& labels = e.labels;
    const ServiceInfo& s = *r->service;
    const aimesh_be_tel& c = e.tel().counters;
    uint64_t ours = 0;
    for (uint32_t reason = 1; reason < AIMESH_CLOSE_MAX; ++reason) ours += c.closed_by[reason];
    out += fmt::format("aimesh_endpoint_connections_closed_total{{{},reason=\"other\"}} {}\n", labels,
                       c.closed > ours ? c.closed - ours : 0);
    auto k = byKey.find({s.nameSpace, s.name, s.port.port, static_cast<uint8_t>(s.port.protocol), r->name});
    for (uint8_t reason = 1; reason < AIMESH_CLOSE_MAX; ++reason)
      out += fmt::format("aimesh_endpoint_connections_closed_total{{{},reason=\"{}\"}} {}\n", labels,
                         closeReasonName(reason), k == byKey.end() ? 0 : k->second->byReason[reason]);
    if (k != byKey.end()) byKey.erase(k);
  }
  // Endpoints no longer in the state: their connections closed by aimesh.
  for (auto& [key, c] : byKey) {
    ServiceInfo s;
    s.name = c->service;
    s.nameSpace = c->nameSpace;
    s.model = c->model;
    s.port = c->port;
    for (uint8_t r = 1; r < AIMESH_CLOSE_MAX; ++r)
      if (c->byReason[r])
        out += fmt::format("aimesh_endpoint_connections_closed_total{{{},destination_endpoint=\"{}\",reason=\"{}\"}} {}\n",
                           serviceLabels(s), escapeLabel(c->endpoint), closeReasonName(r), c->byReason[r]);
  }
}

// The latency histograms that have samples, in classic Prometheus buckets. A
// histogram with none has no series (the kernel has not created it yet): an
// endpoint that nothing on this node talked to costs no series.
void renderHistograms(std::string& out, const std::vector<Labelled>& eps, int perOctave) {
  std::vector<std::string> les;
  for (double b : promBoundsSeconds(perOctave)) les.push_back(fmtSeconds(b));
  for (const HistogramFamily& h : histogramFamilies()) {
    family(out, h.name, "histogram", h.help);
    for (const Labelled& e : eps) {
      const std::string& labels = e.labels;
      const Histogram& hist = e.tel().hist[h.metric];
      if (hist.empty()) continue;
      auto cum = promCumulative(hist, perOctave);
      for (size_t i = 0; i < les.size(); ++i)
        out += fmt::format("{}_bucket{{{},le=\"{}\"}} {}\n", h.name, labels, les[i], cum[i]);
      out += fmt::format("{}_bucket{{{},le=\"+Inf\"}} {}\n", h.name, labels, hist.count);
      out += fmt::format("{}_sum{{{}}} {}\n", h.name, labels, hist.sumNs / 1e9);
      out += fmt::format("{}_count{{{}}} {}\n", h.name, labels, hist.count);
    }
  }
}

// The endpoints with telemetry (rows: the index's endpoints, in id order).
void renderTelemetry(std::string& out, const std::vector<Labelled>& rows, const std::vector<ClosedSeries>* closed,
                     int perOctave, bool histograms, bool idleSeries) {
  std::vector<Labelled> eps;
  for (const Labelled& r : rows)
    if (r.row->telemetry || idleSeries) eps.push_back(r);
  // One sample per endpoint: value(t).
  auto each = [&](const char* name, const char* type, const char* help, auto value) {
    family(out, name, type, help);
    for (auto& e : eps) out += fmt::format("{}{{{}}} {}\n", name, e.labels, value(e.tel()));
  };
  auto counter = [&](const char* name, const char* help, __u64 aimesh_be_tel::*field) {
    each(name, "counter", help, [field](const BackendTelemetry& t) { return t.counters.*field; });
  };
  each("aimesh_endpoint_active_connections", "gauge", "Open TCP connections to the endpoint through a service.",
       [](const BackendTelemetry& t) { return std::max<int64_t>(0, t.active); });
  each("aimesh_endpoint_ttft_peak_ewma_seconds", "gauge",
       "The latency balancer's peak-EWMA of time to first token (0: no sample yet).",
       [](const BackendTelemetry& t) { return t.ewmaTtftNs / 1e9; });
  each("aimesh_endpoint_failure_penalty", "gauge",
       "Extra load (virtual connections) the balancer adds after failed connects; halves every half-life.",
       [](const BackendTelemetry& t) { return t.penalty; });
  each("aimesh_endpoint_consecutive_failures", "gauge", "Failed connects to the endpoint since the last success.",
       [](const BackendTelemetry& t) { return t.failStreak; });
  each("aimesh_endpoint_ejected", "gauge",
       "1 while the endpoint is in failure back-off and gets no new connections.",
       [](const BackendTelemetry& t) { return t.ejected ? 1 : 0; });
  counter("aimesh_endpoint_ejections_total", "Failure back-offs started for the endpoint.", &aimesh_be_tel::ejections);
  // Model-server signals: only endpoints scraped successfully have a sample.
  auto scraped = [&](const char* name, const char* help, auto value) {
    family(out, name, "gauge", help);
    for (auto& e : eps)
      if (e.tel().signal.valid) out += fmt::format("{}{{{}}} {}\n", name, e.labels, value(e.tel().signal));
  };
  scraped("aimesh_endpoint_queued_requests",
          "Requests waiting in the model server's queue (scraped; only for services with model_metrics).",
          [](const aimesh_be_signal& g) { return g.queue_depth; });
  scraped("aimesh_endpoint_running_requests",
          "Requests the model server is running (scraped; only for services with model_metrics).",
          [](const aimesh_be_signal& g) { return g.running; });
  scraped("aimesh_endpoint_kv_cache_usage_ratio",
          "The model server's KV-cache use, 0 to 1 (scraped; only for services with model_metrics).",
          [](const aimesh_be_signal& g) { return g.kv_cache_permille / 1000.0; });
  counter("aimesh_endpoint_connections_opened_total", "TCP connections to the endpoint that reached ESTABLISHED.",
          &aimesh_be_tel::opened);
  renderClosed(out, eps, closed);
  each("aimesh_endpoint_idle_connections", "gauge",
       "Open connections to the endpoint idle between requests (an HTTP/1.x response ended, no request since).",
       [](const BackendTelemetry& t) { return std::clamp<int64_t>(t.idle, 0, std::max<int64_t>(0, t.active)); });
  family(out, "aimesh_endpoint_connection_failures_total", "counter",
         "Connections that failed: refused (RST to the SYN), timeout (no answer), reset (RST after ESTABLISHED).");
  for (auto& e : eps) {
    const aimesh_be_tel& c = e.tel().counters;
    for (auto [reason, v] : {std::pair{"refused", c.failed_refused}, {"timeout", c.failed_timeout}, {"reset", c.reset}})
      out += fmt::format("aimesh_endpoint_connection_failures_total{{{},reason=\"{}\"}} {}\n", e.labels, reason, v);
  }
  counter("aimesh_endpoint_requests_total", "Requests started (first payload sent after the previous response began).",
          &aimesh_be_tel::requests);
  counter("aimesh_endpoint_responses_total", "Responses ended (at their last byte for HTTP/1.x with a length or chunked framing, "
          "else by the next request or the close).",
          &aimesh_be_tel::responses);
  counter("aimesh_endpoint_response_chunks_total", "Response payload segments received.", &aimesh_be_tel::chunks);
  counter("aimesh_endpoint_sent_bytes_total", "Bytes sent to the endpoint and acknowledged (counted at close).",
          &aimesh_be_tel::bytes_sent);
  counter("aimesh_endpoint_received_bytes_total", "Bytes received from the endpoint (counted at close).",
          &aimesh_be_tel::bytes_received);
  counter("aimesh_endpoint_retransmits_total", "TCP retransmissions on connections to the endpoint (at close).",
          &aimesh_be_tel::retransmits);
  each("aimesh_endpoint_connection_seconds_total", "counter",
       "Time connections to the endpoint spent established (at close).",
       [](const BackendTelemetry& t) { return t.counters.conn_ns / 1e9; });

  if (histograms) renderHistograms(out, eps, perOctave);
}

}  // namespace

namespace {
// The Kubernetes source, per resource (services, endpointslices, pods, and
// the Gateway API's routes and grants).
void renderKube(std::string& out, const KubeSourceStats* k) {
  KubeSourceStats none;
  const KubeSourceStats& st = k ? *k : none;
  auto each = [&](const char* name, const char* type, const char* help, auto value) {
    family(out, name, type, help);
    for (auto r : kAllKubeResources)
      out += fmt::format("{}{{resource=\"{}\"}} {}\n", name, toString(r), value(st.resources[static_cast<int>(r)]));
  };
  each("aimesh_agent_kubernetes_synced", "gauge",
       "1 once the resource has been listed from the Kubernetes API (0 with a state file; pods: 0 without "
       "--node-name).",
       [](const KubeResourceStats& s) { return s.synced ? 1 : 0; });
  each("aimesh_agent_kubernetes_resource_absent", "gauge",
       "1 while the API server does not serve the resource (a Gateway API CRD not installed) or forbids listing it: "
       "routes of that kind are off.",
       [](const KubeResourceStats& s) { return s.absent ? 1 : 0; });
  each("aimesh_agent_kubernetes_objects", "gauge", "Objects of the resource the agent holds from the Kubernetes API.",
       [](const KubeResourceStats& s) { return s.objects; });
  each("aimesh_agent_kubernetes_lists_total", "counter", "Successful list requests to the Kubernetes API.",
       [](const KubeResourceStats& s) { return s.lists; });
  each("aimesh_agent_kubernetes_relists_total", "counter",
       "Lists after the first (a watch expired with 410 Gone, or could not resume).",
       [](const KubeResourceStats& s) { return s.relists; });
  each("aimesh_agent_kubernetes_watch_restarts_total", "counter",
       "Watch streams opened after the first (server timeouts, dropped streams, errors).",
       [](const KubeResourceStats& s) { return s.watchRestarts; });
  each("aimesh_agent_kubernetes_errors_total", "counter",
       "Failed list or watch requests (transport errors and error statuses).",
       [](const KubeResourceStats& s) { return s.errors; });
  each("aimesh_agent_kubernetes_decode_errors_total", "counter",
       "Objects from the Kubernetes API skipped because they could not be decoded.",
       [](const KubeResourceStats& s) { return s.decodeErrors; });
  family(out, "aimesh_agent_kubernetes_events_total", "counter", "Watch events received, by resource and type.");
  for (auto r : kAllKubeResources) {
    const auto& s = st.resources[static_cast<int>(r)];
    for (auto [type, v] : {std::pair{"added", s.added}, {"modified", s.modified}, {"deleted", s.deleted},
                           {"bookmark", s.bookmarks}})
      out += fmt::format("aimesh_agent_kubernetes_events_total{{resource=\"{}\",type=\"{}\"}} {}\n", toString(r),
                         type, v);
  }
}
// The metrics listener itself: who it served, who it turned away and why.
void renderHttp(std::string& out, const HttpServerCounters* c) {
  HttpServerCounters none;
  const HttpServerCounters& h = c ? *c : none;
  family(out, "aimesh_agent_http_connections_total", "counter", "Connections the metrics listener accepted and served.");
  out += fmt::format("aimesh_agent_http_connections_total {}\n", h.accepted.load());
  family(out, "aimesh_agent_http_connections_open", "gauge", "Connections the metrics listener is serving now.");
  out += fmt::format("aimesh_agent_http_connections_open {}\n", h.open.load());
  family(out, "aimesh_agent_http_requests_total", "counter", "Requests the metrics listener answered, any status.");
  out += fmt::format("aimesh_agent_http_requests_total {}\n", h.requests.load());
  family(out, "aimesh_agent_http_rejected_total", "counter",
         "Clients the metrics listener turned away: evicted (waiting for a request head when a new connection "
         "needed its place under --metrics-max-connections), busy (over the limit with every connection "
         "mid-answer, 503), timeout (no complete request head within --metrics-request-timeout-ms), bad_request "
         "(400, 405, 413, 414, 431).");
  for (auto [reason, v] : {std::pair{"evicted", h.evicted.load()}, {"busy", h.rejectedBusy.load()},
                           {"timeout", h.timedOut.load()}, {"bad_request", h.badRequests.load()}})
    out += fmt::format("aimesh_agent_http_rejected_total{{reason=\"{}\"}} {}\n", reason, v);
}
}  // namespace

namespace {

// A family with one unlabelled sample.
void scalar(std::string& out, const char* name, const char* type, const char* help, const std::string& value) {
  family(out, name, type, help);
  out += fmt::format("{} {}\n", name, value);
}

// The service ports that get series: those with a count of their own or an
// endpoint that has series; every one with idle series.
void renderServiceCounters(std::string& out, const IdIndex& idx, const DatapathStats& st,
                           const std::set<const ServiceInfo*>* withData) {
  auto svcCounter = [&](const char* name, const char* help, uint64_t ServiceCounters::*field) {
    family(out, name, "counter", help);
    for (auto& [id, s] : idx.services) {
      const ServiceCounters* c = serviceCounters(&st, id);
      if (withData && !c && !withData->count(&s)) continue;
      out += fmt::format("{}{{{}}} {}\n", name, serviceLabels(s), c ? c->*field : 0);
    }
  };
  svcCounter("aimesh_service_connections_total", "Connections to a service address sent to a backend by connect().",
             &ServiceCounters::connects);
  svcCounter("aimesh_service_datagrams_total", "Unconnected datagrams to a service address sent to a backend.",
             &ServiceCounters::datagrams);
  svcCounter("aimesh_service_refused_total", "Calls to a service address refused (ECONNREFUSED): no usable backend.",
             &ServiceCounters::refused);
  svcCounter("aimesh_service_policy_denied_total",
             "Calls to a service address refused (EPERM) because the service's policy does not allow the client.",
             &ServiceCounters::denied);
}

// Splits: per backend service, what was sent there and its weights; per
// guarded canary, the guard's state and trips.
void renderRoutes(std::string& out, const view::Routes* routes) {
  static const view::Routes kNone;
  std::vector<std::pair<const view::RouteBackend*, std::string>> rows;
  for (const view::Route& r : (routes ? *routes : kNone).routes)
    for (const view::RouteBackend& b : r.backends)
      rows.emplace_back(&b, joinLabels({{"destination_service", r.name},
                                        {"destination_namespace", r.nameSpace},
                                        {"port", std::to_string(r.port)},
                                        {"protocol", r.protocol},
                                        {"backend_service", b.service}}));
  auto metric = [&](const char* name, const char* type, const char* help, auto value, bool guardedOnly = false) {
    family(out, name, type, help);
    for (auto& [b, labels] : rows)
      if (!guardedOnly || b->guard) out += fmt::format("{}{{{}}} {}\n", name, labels, value(*b));
  };
  metric("aimesh_split_backend_connections_total", "counter",
         "Connections (and datagrams) a split sent to this backend service.",
         [](const view::RouteBackend& b) { return b.connections; });
  metric("aimesh_split_backend_weight", "gauge", "A split backend service's configured weight.",
         [](const view::RouteBackend& b) { return b.weight; });
  metric("aimesh_split_backend_effective_weight", "gauge",
         "A split backend service's weight in the kernel on this node (the canary guard's, else the configured one; "
         "0 when it does not resolve).",
         [](const view::RouteBackend& b) { return b.effectiveWeight; });
  metric("aimesh_split_guard_state", "gauge",
         "The canary guard's state of a split backend service on this node: 0 ok, 1 probing, 2 tripped.",
         [](const view::RouteBackend& b) { return *b.guard == "tripped" ? 2 : *b.guard == "probing" ? 1 : 0; }, true);
  metric("aimesh_split_guard_trips_total", "counter",
         "Times the canary guard tripped a split backend service on this node (since the agent started).",
         [](const view::RouteBackend& b) { return b.guardTrips.value_or(0); }, true);
  family(out, "aimesh_mesh_routes", "gauge",
         "Kubernetes mesh routes (HTTPRoute, GRPCRoute, TCPRoute with a Service parent) by what the agent made of "
         "them: applied, partial (applied, with parts ignored or dropped), not_applied.");
  for (const char* state : {"applied", "partial", "not_applied"}) {
    const auto& mesh = (routes ? *routes : kNone).meshRoutes;
    auto n = std::count_if(mesh.begin(), mesh.end(), [&](const view::MeshRoute& m) { return m.state == state; });
    out += fmt::format("aimesh_mesh_routes{{state=\"{}\"}} {}\n", state, n);
  }
}

void renderEndpointCounters(std::string& out, const std::vector<Labelled>& rows) {
  auto beMetric = [&](const char* name, const char* type, const char* help, auto value) {
    family(out, name, type, help);
    for (auto& [r, labels] : rows)
      out += fmt::format("{}{{{}}} {}\n", name, labels, value(*r->backend, r->counters ? *r->counters : BackendCounters{}));
  };
  beMetric("aimesh_endpoint_connections_total", "counter", "Connections sent to this endpoint by connect().",
           [](const BackendInfo&, const BackendCounters& c) { return c.connects; });
  beMetric("aimesh_endpoint_datagrams_total", "counter", "Unconnected datagrams sent to this endpoint.",
           [](const BackendInfo&, const BackendCounters& c) { return c.datagrams; });
  beMetric("aimesh_endpoint_weight", "gauge", "Configured weight of the endpoint.",
           [](const BackendInfo& b, const BackendCounters&) { return static_cast<uint64_t>(b.endpoint.weight); });
  beMetric("aimesh_endpoint_active", "gauge", "1 if the endpoint takes new connections (active), 0 if draining or terminating.",
           [](const BackendInfo& b, const BackendCounters&) {
             return static_cast<uint64_t>(b.endpoint.state == EndpointState::kActive && b.endpoint.weight > 0);
           });
}

// Reasons, what is programmed, and how full the maps are.
void renderDatapath(std::string& out, const MetricsInput& in) {
  family(out, "aimesh_datapath_reasons_total", "counter",
         "Data-plane events by reason: refusals, skipped picks, failed bookkeeping.");
  for (uint32_t r = 0; r < AIMESH_R_MAX; ++r)
    out += fmt::format("aimesh_datapath_reasons_total{{reason=\"{}\"}} {}\n", reasonName(r), in.stats->reasons[r]);
  scalar(out, "aimesh_services", "gauge", "Service ports programmed into the data plane.",
         std::to_string(in.index->services.size()));
  scalar(out, "aimesh_endpoints", "gauge", "Endpoints programmed into the data plane.",
         std::to_string(in.index->backends.size()));
  family(out, "aimesh_map_entries", "gauge", "Entries in a BPF map.");
  for (auto& m : in.maps) out += fmt::format("aimesh_map_entries{{map=\"{}\"}} {}\n", m.map, m.entries);
  family(out, "aimesh_map_capacity", "gauge", "Maximum entries of a BPF map.");
  for (auto& m : in.maps) out += fmt::format("aimesh_map_capacity{{map=\"{}\"}} {}\n", m.map, m.capacity);
}

// The lifecycle's own counters and what it closed, summed over endpoints.
void renderLifecycle(std::string& out, const LifecycleStats* stats, const std::vector<ClosedSeries>* closed) {
  LifecycleStats none;
  const LifecycleStats& lc = stats ? *stats : none;
  scalar(out, "aimesh_agent_connection_lifecycle_available", "gauge",
         "1 if the socket iterators and bpf_sock_destroy loaded (Linux >= 6.5): aimesh can close connections.",
         lc.available ? "1" : "0");
  scalar(out, "aimesh_agent_connection_passes_total", "counter",
         "Passes of the socket iterators over the network namespaces of the agent's cgroup.", std::to_string(lc.passes));
  scalar(out, "aimesh_agent_connection_pass_errors_total", "counter", "Passes that failed in every namespace.",
         std::to_string(lc.passErrors));
  scalar(out, "aimesh_agent_connection_pass_seconds_total", "counter", "Time spent in passes.",
         fmt::format("{:.9f}", lc.passSeconds));
  scalar(out, "aimesh_agent_connection_namespaces", "gauge", "Network namespaces the last pass walked.",
         std::to_string(lc.namespaces));
  family(out, "aimesh_agent_connections_closed_total", "counter",
         "Connections aimesh closed on this node since the agent started, by reason (all endpoints).");
  std::array<uint64_t, AIMESH_CLOSE_MAX> sum{};
  if (closed)
    for (auto& c : *closed)
      for (uint8_t r = 1; r < AIMESH_CLOSE_MAX; ++r) sum[r] += c.byReason[r];
  for (uint8_t r = 1; r < AIMESH_CLOSE_MAX; ++r)
    out += fmt::format("aimesh_agent_connections_closed_total{{reason=\"{}\"}} {}\n", closeReasonName(r), sum[r]);
}

// The agent's own counters: TC flow sweeps, reconciles, the state file.
void renderAgent(std::string& out, const AgentCounters& a, uint64_t events) {
  scalar(out, "aimesh_tc_flow_entries", "gauge",
         "TC path: flow table entries (forward and reply) after the agent's last sweep.", std::to_string(a.tcFlows));
  scalar(out, "aimesh_agent_tc_flows_expired_total", "counter",
         "TC path: idle flow table entries deleted by the agent's sweeps.", std::to_string(a.tcFlowsExpired));
  scalar(out, "aimesh_agent_reconciles_total", "counter", "Reconcile runs that completed.",
         std::to_string(a.reconciles));
  scalar(out, "aimesh_agent_reconcile_errors_total", "counter", "Reconcile runs that failed to apply.",
         std::to_string(a.reconcileErrors));
  scalar(out, "aimesh_agent_reconcile_duration_seconds_total", "counter", "Time spent in completed reconcile runs.",
         fmt::format("{:.9f}", a.reconcileSecondsTotal));
  scalar(out, "aimesh_agent_last_reconcile_duration_seconds", "gauge", "Duration of the last completed reconcile run.",
         fmt::format("{:.9f}", a.lastReconcileSeconds));
  scalar(out, "aimesh_agent_state_file_errors_total", "counter",
         "State file loads rejected as invalid (the last good state stayed in force).",
         std::to_string(a.stateFileErrors));
  scalar(out, "aimesh_agent_state_file_valid", "gauge", "1 if the state file as it is now on disk is valid.",
         a.lastStateFileOk ? "1" : "0");
  scalar(out, "aimesh_agent_ready", "gauge", "1 once the first state has been applied to the data plane.",
         a.ready ? "1" : "0");
  scalar(out, "aimesh_agent_start_time_seconds", "gauge", "Start time of the agent since the Unix epoch.",
         fmt::format("{:.3f}", a.startTimeSeconds));
  scalar(out, "aimesh_agent_flow_events_total", "counter", "Connection events read from the kernel ring buffer.",
         std::to_string(events));
}

// Who calls which service: a series per (client, service) row of the view
// (the top clients by name, the rest as client="other"). No rows, no series.
void renderClients(std::string& out, const view::Clients* clients) {
  static const std::vector<view::ClientRow> kNone;
  const std::vector<view::ClientRow>& rows = clients ? clients->clients : kNone;
  std::vector<std::string> labels;
  for (const view::ClientRow& r : rows)
    labels.push_back(joinLabels({{"client", r.client},
                                 {"destination_service", r.service},
                                 {"destination_namespace", r.nameSpace},
                                 {"port", std::to_string(r.port)},
                                 {"protocol", r.protocol}}));
  auto counter = [&](const char* name, const char* help, uint64_t view::ClientRow::* member) {
    family(out, name, "counter", help);
    for (size_t i = 0; i < rows.size(); ++i)
      out += fmt::format("{}{{{}}} {}\n", name, labels[i], rows[i].*member);
  };
  counter("aimesh_client_connections_total",
          "TCP connections a client (a pod or cgroup on this node) made to the service, sent to an endpoint.",
          &view::ClientRow::connections);
  counter("aimesh_client_datagrams_total", "Unconnected UDP sends of a client to the service, sent to an endpoint.",
          &view::ClientRow::datagrams);
  counter("aimesh_client_requests_total", "Requests of a client to the service, on sampled TCP connections.",
          &view::ClientRow::requests);
  family(out, "aimesh_client_refused_total", "counter",
         "Calls of a client to the service that failed: no_backend (ECONNREFUSED) or denied by policy (EPERM).");
  for (size_t i = 0; i < rows.size(); ++i) {
    out += fmt::format("aimesh_client_refused_total{{{},reason=\"no_backend\"}} {}\n", labels[i], rows[i].refused);
    out += fmt::format("aimesh_client_refused_total{{{},reason=\"denied\"}} {}\n", labels[i], rows[i].denied);
  }
  family(out, "aimesh_client_pairs", "gauge",
         "(client cgroup, service) pairs the kernel counts calls of (aimesh_clients); those past --client-top-k "
         "are summed as client=\"other\".");
  out += fmt::format("aimesh_client_pairs {}\n", clients ? clients->pairs : 0);
}

// The process collector's families, as client_golang and prometheus_client
// export them, so dashboards and alerts written for any target work here. A
// value /proc did not give leaves its family out of this scrape.
void renderProcess(std::string& out, const ProcessStats& p) {
  auto gauge = [&](const char* name, const char* help, const std::optional<uint64_t>& v) {
    if (v) scalar(out, name, "gauge", help, std::to_string(*v));
  };
  if (p.cpuSeconds)
    scalar(out, "process_cpu_seconds_total", "counter", "User and system CPU time the process has used, in seconds.",
           fmt::format("{}", *p.cpuSeconds));
  gauge("process_resident_memory_bytes", "Resident memory (RSS) of the process, in bytes.", p.residentBytes);
  gauge("process_virtual_memory_bytes", "Virtual memory size of the process, in bytes.", p.virtualBytes);
  gauge("process_open_fds", "File descriptors the process has open.", p.openFds);
  gauge("process_max_fds", "Most file descriptors the process may open (soft RLIMIT_NOFILE).", p.maxFds);
  gauge("process_threads", "OS threads of the process.", p.threads);
  if (p.startTimeSeconds)
    scalar(out, "process_start_time_seconds", "gauge", "Start time of the process since the Unix epoch, in seconds.",
           fmt::format("{:.2f}", *p.startTimeSeconds));
}

}  // namespace

std::string renderMetrics(const MetricsInput& in) {
  std::string out;
  gOpenMetrics = in.openMetrics;
  // Each endpoint's labels are formatted once per scrape, for every family.
  // Cardinality (docs/metrics.md): an endpoint has series once something on
  // this node used it (a count, a connection, a sample, a scraped signal);
  // its service port too. The readers leave out all-zero entries, so the
  // rows are the ids they returned (in id order, as endpointRows() has them).
  std::vector<EndpointRow> rows;
  std::set<const ServiceInfo*> withData;
  if (in.idleSeries) {
    rows = endpointRows(*in.index, {}, in.stats, in.telemetry);
  } else {
    std::set<uint32_t> ids;
    if (in.stats)
      for (auto& [id, c] : in.stats->backends) ids.insert(id);
    if (in.telemetry)
      for (auto& [id, t] : *in.telemetry) ids.insert(id);
    for (uint32_t id : ids)
      if (in.index->backends.count(id)) rows.push_back(endpointRow(*in.index, id, in.stats, in.telemetry));
    for (const EndpointRow& r : rows) withData.insert(r.service);
  }
  std::vector<Labelled> labelled;
  labelled.reserve(rows.size());
  for (const EndpointRow& r : rows) labelled.push_back({&r, joinLabels(endpointLabelPairs(r))});
  renderServiceCounters(out, *in.index, *in.stats, in.idleSeries ? nullptr : &withData);
  renderRoutes(out, in.routes);
  renderEndpointCounters(out, labelled);
  if (in.telemetry) renderTelemetry(out, labelled, in.closed, in.bucketsPerOctave, in.histograms, in.idleSeries);
  renderDatapath(out, in);
  const AgentCounters& a = in.agent;
  family(out, "aimesh_agent_model_scrapes_total", "counter",
         "Scrapes of endpoints' model-server metrics (services with model_metrics), by result.");
  out += fmt::format("aimesh_agent_model_scrapes_total{{result=\"ok\"}} {}\n", a.modelScrapesOk);
  out += fmt::format("aimesh_agent_model_scrapes_total{{result=\"failed\"}} {}\n", a.modelScrapesFailed);
  renderKube(out, in.kube);
  renderHttp(out, in.http);
  renderLifecycle(out, in.lifecycle, in.closed);
  renderClients(out, in.clients);
  renderAgent(out, a, in.events);
  family(out, "aimesh_build_info", "gauge", "Build information; always 1.");
  out += fmt::format("aimesh_build_info{{version=\"{}\"}} 1\n", escapeLabel(in.version));
  if (in.process) renderProcess(out, *in.process);
  if (in.openMetrics) out += "# EOF\n";
  return out;
}

const std::vector<HistogramFamily>& histogramFamilies() {
  static const std::vector<HistogramFamily> families = {
      {AIMESH_M_CONNECT, "aimesh_endpoint_connect_seconds", "Time from connect() to ESTABLISHED."},
      {AIMESH_M_TTFB, "aimesh_endpoint_ttfb_seconds", "Time from request start to the first response byte."},
      {AIMESH_M_TTFT, "aimesh_endpoint_ttft_seconds",
       "Time from request start to the first response body byte (first token when streaming)."},
      {AIMESH_M_GAP, "aimesh_endpoint_chunk_gap_seconds",
       "Time between response payload segments (inter-token latency when streaming)."},
      {AIMESH_M_DURATION, "aimesh_endpoint_response_duration_seconds",
       "Time from request start to the last response byte."},
      {AIMESH_M_RTT, "aimesh_endpoint_rtt_seconds", "Smoothed TCP round-trip time, sampled at close."}};
  return families;
}

LabelPairs serviceLabelPairs(const ServiceInfo& s) {
  return {{"destination_service", s.name},
          {"destination_namespace", s.nameSpace},
          {"model", s.model},
          {"port", std::to_string(s.port.port)},
          {"protocol", toString(s.port.protocol)}};
}

LabelPairs endpointLabelPairs(const EndpointRow& r) {
  LabelPairs out = serviceLabelPairs(*r.service);
  out.emplace_back("destination_endpoint", r.name);
  if (r.backend && !r.backend->endpoint.pod.empty()) out.emplace_back("destination_pod", r.backend->endpoint.pod.str());
  return out;
}

}  // namespace aimesh
