#include <fmt/format.h>

#include <algorithm>
#include <string>
#include <vector>

#include "commands/commands.h"
#include "format/table.h"

namespace aimesh {
namespace {

bool matches(const nlohmann::json& item, const char* serviceKey, const EndpointsFilter& filter) {
  if (!filter.service.empty() && cellText(item, serviceKey) != filter.service) return false;
  if (!filter.ns.empty() && cellText(item, "namespace") != filter.ns) return false;
  return true;
}

std::string describe(const EndpointsFilter& filter) {
  std::string name = filter.ns.empty() ? filter.service : filter.ns + "/" + filter.service;
  return "service " + name;
}

// "ok", or what keeps the endpoint from full service: a failure back-off
// (with time left), a penalty from recent failed connects, a model-server queue.
std::string healthText(const nlohmann::json& e) {
  std::vector<std::string> parts;
  if (e.value("ejected", false))
    parts.push_back(fmt::format("ejected {:.1f}s", e.value("ejected_for_seconds", 0.0)));
  if (double p = e.value("failure_penalty", 0.0); p > 0) parts.push_back(fmt::format("penalty {:g}", p));
  if (int f = e.value("consecutive_failures", 0); f > 0) parts.push_back(fmt::format("{} failed", f));
  if (e.contains("queued_requests")) parts.push_back(fmt::format("queue {}", e.value("queued_requests", 0)));
  if (parts.empty()) return e.contains("in_flight") ? "ok" : "-";
  std::string out = parts[0];
  for (size_t i = 1; i < parts.size(); ++i) out += ", " + parts[i];
  return out;
}

}  // namespace

CommandOutput formatEndpoints(const nlohmann::json& response, const nlohmann::json& services,
                              const EndpointsFilter& filter, OutputFormat format) {
  CommandOutput result;
  if (!checkResponse(response, "endpoints", result)) return result;
  const nlohmann::json& all = response["endpoints"];
  if (!all.is_array()) {
    return CommandOutput{kExitError, "",
                         "meshctl: unexpected response from the agent (\"endpoints\" is not a list)\n"};
  }
  // The agent filters too; filtering again keeps the output right whatever
  // the agent did with the request.
  std::vector<const nlohmann::json*> rows;
  for (const auto& e : all) {
    if (matches(e, "service", filter)) rows.push_back(&e);
  }

  // No rows for a named service: unknown, or known with no endpoints? Only the
  // services list can tell.
  if (rows.empty() && !filter.service.empty() && !services.is_null()) {
    CommandOutput failure;
    if (!checkResponse(services, "services", failure)) return failure;
    bool known = false;
    if (services["services"].is_array()) {
      for (const auto& s : services["services"]) known = known || matches(s, "name", filter);
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
    for (const auto* e : rows) filtered.push_back(*e);
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
  std::stable_sort(rows.begin(), rows.end(), [](const auto* a, const auto* b) {
    return std::pair(cellText(*a, "namespace"), cellText(*a, "service")) <
           std::pair(cellText(*b, "namespace"), cellText(*b, "service"));
  });
  Table table({"NAMESPACE", "SERVICE", "ADDRESS", "PORT", "PROTO", "WEIGHT", "STATE",
               "IN-FLIGHT", "CONNECTIONS", "HEALTH"});
  for (const auto* e : rows) {
    table.addRow({cellText(*e, "namespace"), cellText(*e, "service"), cellText(*e, "address"),
                  cellText(*e, "port"), cellText(*e, "protocol"), cellText(*e, "weight"),
                  cellText(*e, "state"), cellText(*e, "in_flight"), cellText(*e, "connections"),
                  healthText(*e)});
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
    bool any = false;
    if (auto it = response->find("endpoints"); it != response->end() && it->is_array()) {
      for (const auto& e : *it) any = any || matches(e, "service", filter);
    }
    if (!any) {
      auto listed = call(nlohmann::json{{"method", "services"}});
      if (!listed) return agentUnreachable(listed.error());
      services = std::move(*listed);
    }
  }
  return formatEndpoints(*response, services, filter, format);
}

}  // namespace aimesh
