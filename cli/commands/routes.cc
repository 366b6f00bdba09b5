// meshctl routes: the splits, per backend service: its configured and
// effective weight, configured and observed share, the connections it got,
// and this node's canary guard; the Kubernetes mesh routes and what each
// became (applied, in part, not, and why); then the guard's recent
// transitions.
#include <fmt/format.h>
#include <fmt/ranges.h>

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

// The Kubernetes mesh routes: what each became, and why not all of it.
std::string meshRoutesText(const std::vector<const view::MeshRoute*>& mesh) {
  Table table({"ROUTE", "STATE", "PARENT", "SPLITS", "POOL"});
  for (const view::MeshRoute* m : mesh)
    table.addRow({m->route, m->state, fmt::format("{}", fmt::join(m->parents, ",")),
                  m->splits.empty() ? "-" : fmt::format("{}", fmt::join(m->splits, ",")), m->pool.value_or("-")});
  std::string out = table.render();
  for (const view::MeshRoute* m : mesh) {
    if (m->notes.empty()) continue;
    out += fmt::format("{} ({}):\n", m->route, m->state == "not_applied" ? "not applied" : "applied in part");
    for (const std::string& n : m->notes) out += "  - " + n + "\n";
  }
  return out;
}

std::string guardEventsText(const std::vector<view::GuardEvent>& events) {
  std::string out = "\nCanary guard on this node (most recent last):\n";
  size_t from = events.size() > 10 ? events.size() - 10 : 0;
  for (size_t i = from; i < events.size(); ++i) {
    const view::GuardEvent& e = events[i];
    out += fmt::format("  {} {}: {} -> {}: {}\n", e.split, e.backend, e.from, e.to, e.reason);
  }
  return out;
}

std::string splitsText(std::vector<const R*> rows) {
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
  std::string out = table.render();
  if (!rows.front()->backends.empty() && rows.front()->windowSeconds > 0)
    out += fmt::format("OBSERVED: share of the split's connections in the last {:.0f} s on this node.\n",
                       rows.front()->windowSeconds);
  return out;
}

}  // namespace

CommandOutput formatRoutes(const nlohmann::json& response, const std::string& service, OutputFormat format) {
  CommandOutput result;
  if (!checkResponse(response, "routes", result)) return result;
  std::optional<view::Routes> parsed = parseResponse<view::Routes>(response, result);
  if (!parsed) return result;
  // The agent filtered by the service (runRoutes() asks it to): splits by
  // name, mesh routes by their parents.
  std::vector<const R*> rows;
  for (const R& r : parsed->routes) rows.push_back(&r);
  std::vector<const view::MeshRoute*> mesh;
  for (const view::MeshRoute& m : parsed->meshRoutes) mesh.push_back(&m);
  if (!service.empty() && rows.empty() && mesh.empty())
    return CommandOutput{kExitError, "", "meshctl: no split or route for " + service + "\n"};
  if (format == OutputFormat::kJson) {
    view::Routes out;
    for (const R* r : rows) out.routes.push_back(*r);
    for (const view::MeshRoute* m : mesh) out.meshRoutes.push_back(*m);
    out.guardEvents = parsed->guardEvents;
    result.out = prettyJson(nlohmann::json(out));
    return result;
  }
  if (rows.empty() && mesh.empty()) {
    result.err = "No splits.\n";
    return result;
  }
  if (!rows.empty()) result.out = splitsText(rows);
  if (!mesh.empty()) result.out += (rows.empty() ? "" : "\n") + std::string("Kubernetes routes:\n") + meshRoutesText(mesh);
  if (!parsed->guardEvents.empty()) result.out += guardEventsText(parsed->guardEvents);
  return result;
}

CommandOutput runRoutes(const AgentCall& call, const std::string& service, OutputFormat format) {
  nlohmann::json request{{"method", "routes"}};
  if (auto slash = service.find('/'); slash != std::string::npos) {
    request["namespace"] = service.substr(0, slash);
    request["service"] = service.substr(slash + 1);
  } else if (!service.empty()) {
    request["service"] = service;
  }
  auto response = call(request);
  if (!response) return agentUnreachable(response.error());
  return formatRoutes(*response, service, format);
}

}  // namespace aimesh
