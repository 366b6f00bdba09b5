#include "telemetry/metrics.h"

#include <fmt/format.h>

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

void family(std::string& out, const char* name, const char* type, const char* help) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

std::string serviceLabels(const ServiceInfo& s) {
  return fmt::format("service=\"{}\",namespace=\"{}\",model=\"{}\",port=\"{}\",protocol=\"{}\"", escapeLabel(s.name),
                     escapeLabel(s.nameSpace), escapeLabel(s.model), s.port.port, toString(s.port.protocol));
}

std::string endpointLabel(const BackendInfo& b) {
  const IpAddr& a = b.endpoint.address;
  return a.isV4() ? fmt::format("{}:{}", a.toString(), b.targetPort)
                  : fmt::format("[{}]:{}", a.toString(), b.targetPort);
}

}  // namespace

std::string renderMetrics(const MetricsInput& in) {
  std::string out;
  const IdIndex& idx = *in.index;
  const DatapathStats& st = *in.stats;

  auto svcCounter = [&](const char* name, const char* help, uint64_t ServiceCounters::*field) {
    family(out, name, "counter", help);
    for (auto& [id, s] : idx.services) {
      auto it = st.services.find(id);
      uint64_t v = it == st.services.end() ? 0 : it->second.*field;
      out += fmt::format("{}{{{}}} {}\n", name, serviceLabels(s), v);
    }
  };
  svcCounter("aimesh_service_connections_total", "Connections to a service address sent to a backend by connect().",
             &ServiceCounters::connects);
  svcCounter("aimesh_service_datagrams_total", "Unconnected datagrams to a service address sent to a backend.",
             &ServiceCounters::datagrams);
  svcCounter("aimesh_service_refused_total", "Calls to a service address refused (ECONNREFUSED): no usable backend.",
             &ServiceCounters::refused);

  auto beMetric = [&](const char* name, const char* type, const char* help, auto value) {
    family(out, name, type, help);
    for (auto& [id, b] : idx.backends) {
      auto sit = idx.services.find(b.serviceId);
      if (sit == idx.services.end()) continue;
      auto it = st.backends.find(id);
      BackendCounters c = it == st.backends.end() ? BackendCounters{} : it->second;
      out += fmt::format("{}{{{},endpoint=\"{}\"}} {}\n", name, serviceLabels(sit->second), endpointLabel(b),
                         value(b, c));
    }
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

  family(out, "aimesh_datapath_reasons_total", "counter",
         "Data-plane events by reason: refusals, skipped picks, failed bookkeeping.");
  for (uint32_t r = 0; r < AIMESH_R_MAX; ++r)
    out += fmt::format("aimesh_datapath_reasons_total{{reason=\"{}\"}} {}\n", reasonName(r), st.reasons[r]);

  family(out, "aimesh_services", "gauge", "Service ports programmed into the data plane.");
  out += fmt::format("aimesh_services {}\n", idx.services.size());
  family(out, "aimesh_endpoints", "gauge", "Endpoints programmed into the data plane.");
  out += fmt::format("aimesh_endpoints {}\n", idx.backends.size());

  family(out, "aimesh_map_entries", "gauge", "Entries in a BPF map.");
  for (auto& m : in.maps) out += fmt::format("aimesh_map_entries{{map=\"{}\"}} {}\n", m.map, m.entries);
  family(out, "aimesh_map_capacity", "gauge", "Maximum entries of a BPF map.");
  for (auto& m : in.maps) out += fmt::format("aimesh_map_capacity{{map=\"{}\"}} {}\n", m.map, m.capacity);

  const AgentCounters& a = in.agent;
  family(out, "aimesh_agent_reconciles_total", "counter", "Reconcile runs that completed.");
  out += fmt::format("aimesh_agent_reconciles_total {}\n", a.reconciles);
  family(out, "aimesh_agent_reconcile_errors_total", "counter", "Reconcile runs that failed to apply.");
  out += fmt::format("aimesh_agent_reconcile_errors_total {}\n", a.reconcileErrors);
  family(out, "aimesh_agent_reconcile_duration_seconds_total", "counter", "Time spent in completed reconcile runs.");
  out += fmt::format("aimesh_agent_reconcile_duration_seconds_total {:.9f}\n", a.reconcileSecondsTotal);
  family(out, "aimesh_agent_last_reconcile_duration_seconds", "gauge", "Duration of the last completed reconcile run.");
  out += fmt::format("aimesh_agent_last_reconcile_duration_seconds {:.9f}\n", a.lastReconcileSeconds);
  family(out, "aimesh_agent_state_file_errors_total", "counter",
         "State file loads rejected as invalid (the last good state stayed in force).");
  out += fmt::format("aimesh_agent_state_file_errors_total {}\n", a.stateFileErrors);
  family(out, "aimesh_agent_state_file_valid", "gauge", "1 if the state file as it is now on disk is valid.");
  out += fmt::format("aimesh_agent_state_file_valid {}\n", a.lastStateFileOk ? 1 : 0);
  family(out, "aimesh_agent_ready", "gauge", "1 once the first state has been applied to the data plane.");
  out += fmt::format("aimesh_agent_ready {}\n", a.ready ? 1 : 0);
  family(out, "aimesh_agent_start_time_seconds", "gauge", "Start time of the agent since the Unix epoch.");
  out += fmt::format("aimesh_agent_start_time_seconds {:.3f}\n", a.startTimeSeconds);
  family(out, "aimesh_build_info", "gauge", "Build information; always 1.");
  out += fmt::format("aimesh_build_info{{version=\"{}\"}} 1\n", escapeLabel(in.version));
  return out;
}

}  // namespace aimesh
