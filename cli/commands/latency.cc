#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <vector>

#include <fmt/format.h>

#include "commands/commands.h"
#include "commands/view_cells.h"
#include "format/bars.h"

namespace aimesh {
namespace {

// The order metrics are shown in: a request's life, then the network.
constexpr std::array<const char*, 6> kMetrics = {"connect", "ttfb",     "ttft",
                                                 "gap",     "duration", "rtt"};

// Upper bounds from here on mean "no upper bound" (the kernel's last finite
// bucket edge is 2^7 s, 128 s).
constexpr double kOpenEndedSeconds = 1e9;

using EL = view::EndpointLatency;
using H = view::Histogram;

// The view's buckets as BarBuckets; empty ones are left out.
std::vector<BarBucket> barBuckets(const H& histogram) {
  std::vector<BarBucket> out;
  for (const view::Bucket& b : histogram.buckets) {
    // The overflow bucket's upper bound: null (infinity), or UINT64_MAX ns
    // (~585 years) as histBucketUpper() gives it.
    double upper = b.upper < kOpenEndedSeconds ? b.upper : std::numeric_limits<double>::infinity();
    if (b.count > 0) out.push_back(BarBucket{b.lower, upper, b.count});
  }
  return out;
}

std::string endpointLine(const Item<EL>& e) {
  std::string line = e.cell(&EL::nameSpace) + "/" + e.cell(&EL::service) + "  " + e.cell(&EL::endpoint);
  if (std::string model = e.cell(&EL::model); model != "-") line += "  model=" + model;
  if (std::string id = e.cell(&EL::backendId); id != "-") line += "  backend=" + id;
  return line + "\n";
}

std::string quantile(const Item<H>& h, double H::* member) {
  return latencyText(h.has(member) ? h.view().*member : std::numeric_limits<double>::quiet_NaN());
}

std::string metricBlock(const char* name, const Item<H>& h) {
  std::string block = fmt::format("  {}  n={}  p50={} p90={} p99={}\n", name, h.cell(&H::count),
                                  quantile(h, &H::p50), quantile(h, &H::p90), quantile(h, &H::p99));
  std::vector<BarBucket> rows = mergeBuckets(barBuckets(h.view()), kLatencyMaxRows);
  return block + renderBars(rows, 40, "    ");
}

}  // namespace

CommandOutput formatLatency(const nlohmann::json& response, const LatencyQuery& query,
                            OutputFormat format) {
  CommandOutput result;
  if (!checkResponse(response, "endpoints", result)) return result;
  if (!response["endpoints"].is_array()) {
    return CommandOutput{
        kExitError, "",
        "meshctl: unexpected response from the agent (\"endpoints\" is not a list)\n"};
  }
  std::optional<view::Latency> parsed = parseResponse<view::Latency>(response, result);
  if (!parsed) return result;
  if (format == OutputFormat::kJson) {
    result.out = prettyJson(response);
    return result;
  }
  if (parsed->endpoints.empty()) {
    std::string name = query.ns.empty() ? query.service : query.ns + "/" + query.service;
    result.err = "No endpoints for service " + name + ".\n";
    return result;
  }
  Item<view::Latency> all(*parsed, response);
  for (std::size_t i = 0; i < parsed->endpoints.size(); ++i) {
    if (i > 0) result.out += "\n";
    Item<EL> e = itemAt(all, &view::Latency::endpoints, i);
    result.out += endpointLine(e);
    bool any = false;
    for (const char* name : kMetrics) {
      auto it = e.view().metrics.find(name);
      if (it == e.view().metrics.end() || !(it->second.count > 0)) continue;
      result.out += metricBlock(name, Item<H>(it->second, e.json().at(viewKey(&EL::metrics)).at(name)));
      any = true;
    }
    if (!any) result.out += "  no samples yet\n";
  }
  return result;
}

CommandOutput runLatency(const AgentCall& call, const LatencyQuery& query, OutputFormat format) {
  nlohmann::json request{{"method", "latency"}, {"service", query.service}};
  if (!query.ns.empty()) request["namespace"] = query.ns;
  auto response = call(request);
  if (!response) return agentUnreachable(response.error());
  return formatLatency(*response, query, format);
}

}  // namespace aimesh
