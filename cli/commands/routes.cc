// meshctl routes: the splits, per backend service: its configured and
// effective weight, configured and observed share, the connections it got,
// and this node's canary guard; then the guard's recent transitions.
#include <fmt/format.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "commands/commands.h"
#include "commands/view_cells.h"
#include "format/table.h"

namespace aimesh {

namespace {

using R = view::Route;
using B = view::RouteBackend;

std::string pct(double x) { return fmt::format("{:.1f}%", x); }

// The guard's word on a backend: primary, ok, or its state with trips and reason.
std::string guardText(const R& r, const B& b) {
  if (r.primary && *r.primary == b.service) return "primary";
  if (!b.guard) return r.guardMetric ? "-" : "";
  std::string out = *b.guard;
  if (b.guardTrips && *b.guardTrips) out += fmt::format(" ({} trips)", *b.guardTrips);
  if (*b.guard != "ok" && b.guardReason) out += ": " + *b.guardReason;
  return out;
}

}  // namespace

CommandOutput formatRoutes(const nlohmann::json& response, const std::string& service, OutputFormat format) {
  CommandOutput result;
  if (!checkResponse(response, "routes", result)) return result;
  std::optional<view::Routes> parsed = parseResponse<view::Routes>(response, result);
  if (!parsed) return result;
  std::vector<const R*> rows;
  for (const R& r : parsed->routes)
    if (service.empty() || r.name == service || r.nameSpace + "/" + r.name == service) rows.push_back(&r);
  if (!service.empty() && rows.empty())
    return CommandOutput{kExitError, "", "meshctl: no split named " + service + "\n"};
  if (format == OutputFormat::kJson) {
    view::Routes out;
    for (const R* r : rows) out.routes.push_back(*r);
    out.guardEvents = parsed->guardEvents;
    result.out = prettyJson(nlohmann::json(out));
    return result;
  }
  if (rows.empty()) {
    result.err = "No splits.\n";
    return result;
  }
  std::stable_sort(rows.begin(), rows.end(),
                   [](const R* a, const R* b) { return std::tie(a->nameSpace, a->name, a->port) < std::tie(b->nameSpace, b->name, b->port); });
  Table table({"NAMESPACE", "SPLIT", "PORT", "SOURCE", "BACKEND", "WEIGHT", "NOW", "SHARE", "OBSERVED", "CONNECTIONS",
               "GUARD"});
  for (const R* r : rows)
    for (const B& b : r->backends)
      table.addRow({r->nameSpace, r->name, fmt::format("{}/{}", r->port, r->protocol), r->source,
                    b.service + (b.resolved ? "" : " (missing)"), std::to_string(b.weight),
                    std::to_string(b.effectiveWeight), pct(b.configuredShare),
                    b.observedShare ? pct(*b.observedShare) : "-", std::to_string(b.connections), guardText(*r, b)});
  for (size_t c : {5u, 6u, 7u, 8u, 9u}) table.setAlign(c, Table::Align::kRight);
  result.out = table.render();
  if (!rows.front()->backends.empty() && rows.front()->windowSeconds > 0)
    result.out += fmt::format("OBSERVED: share of the split's connections in the last {:.0f} s on this node.\n",
                              rows.front()->windowSeconds);
  if (!parsed->guardEvents.empty()) {
    result.out += "\nCanary guard on this node (most recent last):\n";
    size_t from = parsed->guardEvents.size() > 10 ? parsed->guardEvents.size() - 10 : 0;
    for (size_t i = from; i < parsed->guardEvents.size(); ++i) {
      const view::GuardEvent& e = parsed->guardEvents[i];
      result.out += fmt::format("  {} {}: {} -> {}: {}\n", e.split, e.backend, e.from, e.to, e.reason);
    }
  }
  return result;
}

CommandOutput runRoutes(const AgentCall& call, const std::string& service, OutputFormat format) {
  auto response = call(nlohmann::json{{"method", "routes"}});
  if (!response) return agentUnreachable(response.error());
  return formatRoutes(*response, service, format);
}

}  // namespace aimesh
