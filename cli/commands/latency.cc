#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <vector>

#include <fmt/format.h>

#include "commands/commands.h"
#include "format/bars.h"

namespace aimesh {
namespace {

// The order metrics are shown in: a request's life, then the network.
constexpr std::array<const char*, 6> kMetrics = {"connect", "ttfb",     "ttft",
                                                 "gap",     "duration", "rtt"};

// Upper bounds from here on mean "no upper bound" (the kernel's last finite
// bucket edge is 2^37 ns, ~137 s).
constexpr double kOpenEndedSeconds = 1e9;

double number(const nlohmann::json& object, const char* key) {
  if (!object.is_object()) return std::numeric_limits<double>::quiet_NaN();
  auto it = object.find(key);
  if (it == object.end() || !it->is_number()) return std::numeric_limits<double>::quiet_NaN();
  return it->get<double>();
}

// [[lower, upper, count], ...] → BarBuckets; malformed entries are skipped.
std::vector<BarBucket> barBuckets(const nlohmann::json& histogram) {
  std::vector<BarBucket> out;
  auto it = histogram.find("buckets");
  if (it == histogram.end() || !it->is_array()) return out;
  for (const auto& b : *it) {
    if (!b.is_array() || b.size() != 3 || !b[0].is_number() || !b[2].is_number()) continue;
    BarBucket bar;
    bar.lower = b[0].get<double>();
    // The overflow bucket's upper bound: null, or UINT64_MAX ns (~585 years)
    // as histBucketUpper() gives it.
    bar.upper = b[1].is_number() && b[1].get<double>() < kOpenEndedSeconds
                    ? b[1].get<double>()
                    : std::numeric_limits<double>::infinity();
    bar.count = b[2].is_number_unsigned()
                    ? b[2].get<uint64_t>()
                    : static_cast<uint64_t>(std::llround(std::max(0.0, b[2].get<double>())));
    if (bar.count > 0) out.push_back(bar);
  }
  return out;
}

std::string endpointLine(const nlohmann::json& e) {
  std::string line =
      cellText(e, "namespace") + "/" + cellText(e, "service") + "  " + cellText(e, "endpoint");
  if (std::string model = cellText(e, "model"); model != "-") line += "  model=" + model;
  if (std::string id = cellText(e, "backend_id"); id != "-") line += "  backend=" + id;
  return line + "\n";
}

std::string metricBlock(const char* name, const nlohmann::json& h) {
  std::string block = fmt::format("  {}  n={}  p50={} p90={} p99={}\n", name, cellText(h, "count"),
                                  latencyText(number(h, "p50")), latencyText(number(h, "p90")),
                                  latencyText(number(h, "p99")));
  std::vector<BarBucket> rows = mergeBuckets(barBuckets(h), kLatencyMaxRows);
  return block + renderBars(rows, 40, "    ");
}

}  // namespace

CommandOutput formatLatency(const nlohmann::json& response, const LatencyQuery& query,
                            OutputFormat format) {
  CommandOutput result;
  if (!checkResponse(response, "endpoints", result)) return result;
  const nlohmann::json& endpoints = response["endpoints"];
  if (!endpoints.is_array()) {
    return CommandOutput{
        kExitError, "",
        "meshctl: unexpected response from the agent (\"endpoints\" is not a list)\n"};
  }
  if (format == OutputFormat::kJson) {
    result.out = prettyJson(response);
    return result;
  }
  if (endpoints.empty()) {
    std::string name = query.ns.empty() ? query.service : query.ns + "/" + query.service;
    result.err = "No endpoints for service " + name + ".\n";
    return result;
  }
  bool first = true;
  for (const auto& e : endpoints) {
    if (!first) result.out += "\n";
    first = false;
    result.out += endpointLine(e);
    const nlohmann::json* metrics = nullptr;
    if (auto it = e.find("metrics"); e.is_object() && it != e.end() && it->is_object()) {
      metrics = &*it;
    }
    bool any = false;
    for (const char* name : kMetrics) {
      if (metrics == nullptr) break;
      auto it = metrics->find(name);
      if (it == metrics->end() || !it->is_object()) continue;
      double count = number(*it, "count");
      if (!(count > 0)) continue;
      result.out += metricBlock(name, *it);
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
