// Prometheus text exposition (format 0.0.4), or OpenMetrics 1.0 text when
// asked, of the data-plane counters, the kernel-measured latency histograms,
// the agent's own metrics and the standard process_* families. Pure: takes
// values, returns text. docs/metrics.md lists every family printed here.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "lifecycle/lifecycle.h"
#include "source/kube_source.h"
#include "telemetry/datapath_reader.h"
#include "telemetry/http_server.h"
#include "telemetry/process_metrics.h"
#include "reconcile/plan.h"
#include "telemetry/stats.h"
#include "telemetry/telemetry.h"
#include "telemetry/views.h"

namespace aimesh {

struct AgentCounters {
  uint64_t reconciles = 0;
  uint64_t reconcileErrors = 0;
  uint64_t stateFileErrors = 0;
  double lastReconcileSeconds = 0;
  double reconcileSecondsTotal = 0;
  bool ready = false;
  bool lastStateFileOk = true;
  double startTimeSeconds = 0;  // unix time
  uint64_t modelScrapesOk = 0;
  uint64_t modelScrapesFailed = 0;
  uint64_t tcFlows = 0;         // aimesh_ct entries at the last sweep (both directions)
  uint64_t tcFlowsExpired = 0;  // idle entries the sweeps deleted
};

struct MetricsInput {
  const IdIndex* index = nullptr;
  const DatapathStats* stats = nullptr;
  AgentCounters agent;
  std::vector<MapOccupancy> maps;
  std::string version;
  // Per-backend telemetry (sock_ops, cgroup_skb); null when not attached.
  const std::map<uint32_t, BackendTelemetry>* telemetry = nullptr;
  uint64_t events = 0;       // flow events read from the ring buffer
  bool openMetrics = false;  // OpenMetrics 1.0 text instead of Prometheus 0.0.4
  int bucketsPerOctave = 2;  // classic histogram `le` bounds per power of two (1, 2, 4, 8)
  bool histograms = true;    // the latency histogram families (metrics_proto.h renders its own)
  // Series for every service and endpoint of the index, not only those that
  // carried traffic on this node (--metrics-idle-series).
  bool idleSeries = false;
  // The Kubernetes source's counters; null with a state file (all zero then).
  const KubeSourceStats* kube = nullptr;
  // The metrics listener's own counters; null: all zero.
  const HttpServerCounters* http = nullptr;
  // Connections the lifecycle closed, per endpoint and reason (endpoints that
  // left the state included), and its own counters; null: none.
  const std::vector<ClosedSeries>* closed = nullptr;
  const LifecycleStats* lifecycle = nullptr;
  // Who calls which service (the top clients and "other"); null: none.
  const view::Clients* clients = nullptr;
  // Splits, their backend services and the canary guard; null: none.
  const view::Routes* routes = nullptr;
  // This process's CPU, memory, fds, threads and start time (the process_*
  // families, readProcessStats()); null: none printed.
  const ProcessStats* process = nullptr;
};

std::string renderMetrics(const MetricsInput& in);

// The latency histogram families, in the order /metrics prints them.
struct HistogramFamily {
  uint32_t metric;  // enum aimesh_metric
  const char* name;
  const char* help;
};
const std::vector<HistogramFamily>& histogramFamilies();

// The labels of a service's series, unescaped: service, namespace, model,
// port, protocol; an endpoint's add endpoint. The one definition of them:
// the text formats join these, the protobuf format sends them as they are.
using LabelPairs = std::vector<std::pair<std::string, std::string>>;
LabelPairs serviceLabelPairs(const ServiceInfo& s);
LabelPairs endpointLabelPairs(const EndpointRow& r);

// Escapes a label value (backslash, double quote, newline).
std::string escapeLabel(const std::string& v);

}  // namespace aimesh
