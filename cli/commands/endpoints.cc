#include <fmt/format.h>

#include <algorithm>
#include <string>
#include <vector>

#include "commands/commands.h"
#include "commands/view_cells.h"
#include "format/table.h"

namespace aimesh {
namespace {

bool matches(const std::string& service, const std::string& ns, const EndpointsFilter& filter) {
  if (!filter.service.empty() && service != filter.service) return false;
  if (!filter.ns.empty() && ns != filter.ns) return false;
  return true;
}

std::string describe(const EndpointsFilter& filter) {
  std::string name = filter.ns.empty() ? filter.service : filter.ns + "/" + filter.service;
  return "service " + name;
}

using E = view::Endpoint;

// "ok", or what keeps the endpoint from full service: a failure back-off
// (with time left), a penalty from recent failed connects, a model-server queue.
std::string healthText(const Item<E>& item) {
  const E& e = item.view();
  std::vector<std::string> parts;
  if (e.ejected) parts.push_back(fmt::format("ejected {:.1f}s", e.ejectedForSeconds));
  if (e.failurePenalty > 0) parts.push_back(fmt::format("penalty {:g}", e.failurePenalty));
  if (e.consecutiveFailures > 0) parts.push_back(fmt::format("{} failed", e.consecutiveFailures));
  if (e.queuedRequests) parts.push_back(fmt::format("queue {}", *e.queuedRequests));
  // An agent without in-flight counts knows nothing of health either.
  if (parts.empty()) return item.has(&E::inFlight) ? "ok" : "-";
  std::string out = parts[0];
  for (size_t i = 1; i < parts.size(); ++i) out += ", " + parts[i];
  return out;
}

// Whether the services list names the filter's service.
bool knownService(const view::ServiceList& services, const EndpointsFilter& filter) {
  return std::any_of(services.services.begin(), services.services.end(),
                     [&](const view::Service& s) { return matches(s.name, s.nameSpace, filter); });
}

}  // namespace

CommandOutput formatEndpoints(const nlohmann::json& response, const nlohmann::json& services,
                              const EndpointsFilter& filter, OutputFormat format) {
  CommandOutput result;
  if (!checkResponse(response, "endpoints", result)) return result;
  if (!response["endpoints"].is_array()) {
    return CommandOutput{kExitError, "",
                         "meshctl: unexpected response from the agent (\"endpoints\" is not a list)\n"};
  }
  std::optional<view::EndpointList> parsed = parseResponse<view::EndpointList>(response, result);
  if (!parsed) return result;
  // The agent filters too; filtering again keeps the output right whatever
  // the agent did with the request.
  using L = view::EndpointList;
  Item<L> list(*parsed, response);
  std::vector<Item<E>> rows;
  for (std::size_t i = 0; i < parsed->endpoints.size(); ++i) {
    Item<E> e = itemAt(list, &L::endpoints, i);
    if (matches(e.view().service, e.view().nameSpace, filter)) rows.push_back(e);
  }

  // No rows for a named service: unknown, or known with no endpoints? Only the
  // services list can tell.
  if (rows.empty() && !filter.service.empty() && !services.is_null()) {
    CommandOutput failure;
    if (!checkResponse(services, "services", failure)) return failure;
    bool known = false;
    if (services["services"].is_array()) {
      std::optional<view::ServiceList> listed = parseResponse<view::ServiceList>(services, failure);
      if (!listed) return failure;
      known = knownService(*listed, filter);
    }
    if (!known) {
      std::string where = filter.ns.empty() ? "" : " in namespace " + filter.ns;
      return CommandOutput{kExitError, "",
                           "meshctl: service \"" + filter.service + "\" not found" + where +
                               " (see meshctl services)\n"};
    }
  }

  if (format == OutputFormat::kJson) {
    nlohmann::json filtered = nlohmann::json::array();
    for (const auto& e : rows) filtered.push_back(e.json());
    result.out = prettyJson(nlohmann::json{{"endpoints", filtered}});
    return result;
  }

  if (rows.empty()) {
    if (!filter.service.empty()) {
      result.err = "No endpoints for " + describe(filter) + ".\n";
    } else if (!filter.ns.empty()) {
      result.err = "No endpoints in namespace " + filter.ns + ".\n";
    } else {
      result.err = "No endpoints.\n";
    }
    return result;
  }
  // Group by service; within a service keep the agent's order (backend slots).
  std::stable_sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) {
    return std::pair(a.cell(&E::nameSpace), a.cell(&E::service)) < std::pair(b.cell(&E::nameSpace), b.cell(&E::service));
  });
  Table table({"NAMESPACE", "SERVICE", "ADDRESS", "PORT", "PROTO", "WEIGHT", "STATE",
               "IN-FLIGHT", "CONNECTIONS", "HEALTH"});
  for (const auto& e : rows) {
    table.addRow({e.cell(&E::nameSpace), e.cell(&E::service), e.cell(&E::address), e.cell(&E::port),
                  e.cell(&E::protocol), e.cell(&E::weight), e.cell(&E::state), e.cell(&E::inFlight),
                  e.cell(&E::connections), healthText(e)});
  }
  result.out = table.render();
  return result;
}

CommandOutput runEndpoints(const AgentCall& call, const EndpointsFilter& filter,
                           OutputFormat format) {
  nlohmann::json request{{"method", "endpoints"}};
  if (!filter.service.empty()) request["service"] = filter.service;
  if (!filter.ns.empty()) request["namespace"] = filter.ns;
  auto response = call(request);
  if (!response) return agentUnreachable(response.error());

  nlohmann::json services;  // fetched only when needed to name an unknown service
  if (!filter.service.empty() && response->is_object() && !response->contains("error")) {
    // A response that does not parse fails in formatEndpoints().
    auto parsed = view::parseView<view::EndpointList>(*response);
    bool any = parsed && std::any_of(parsed->endpoints.begin(), parsed->endpoints.end(), [&](const E& e) {
                 return matches(e.service, e.nameSpace, filter);
               });
    if (!any) {
      auto listed = call(nlohmann::json{{"method", "services"}});
      if (!listed) return agentUnreachable(listed.error());
      services = std::move(*listed);
    }
  }
  return formatEndpoints(*response, services, filter, format);
}

}  // namespace aimesh
