// meshctl policy: the workload policy in force, per service port: enforced
// or open to everyone, the allowed cgroups and pods (and whether each has a
// cgroup now), and how many calls were denied.
#include <algorithm>
#include <vector>

#include "commands/commands.h"
#include "format/table.h"

namespace aimesh {

CommandOutput formatPolicy(const nlohmann::json& response, const std::string& service, OutputFormat format) {
  CommandOutput result;
  if (!checkResponse(response, "services", result)) return result;
  const nlohmann::json& all = response["services"];
  if (!all.is_array()) {
    return CommandOutput{kExitError, "", "meshctl: unexpected response from the agent (\"services\" is not a list)\n"};
  }
  std::vector<const nlohmann::json*> rows;
  for (const auto& s : all)
    if (service.empty() || cellText(s, "name") == service) rows.push_back(&s);
  if (!service.empty() && rows.empty()) {
    return CommandOutput{kExitError, "", "meshctl: no service named " + service + "\n"};
  }
  if (format == OutputFormat::kJson) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto* s : rows) out.push_back(*s);
    result.out = prettyJson(nlohmann::json{{"services", out}});
    return result;
  }
  if (rows.empty()) {
    result.err = "No services.\n";
    return result;
  }
  std::stable_sort(rows.begin(), rows.end(), [](const auto* a, const auto* b) {
    return std::tuple(cellText(*a, "namespace"), cellText(*a, "name"), cellText(*a, "port")) <
           std::tuple(cellText(*b, "namespace"), cellText(*b, "name"), cellText(*b, "port"));
  });
  Table table({"NAMESPACE", "NAME", "PORT", "POLICY", "ALLOWED", "DENIED"});
  for (const auto* s : rows) {
    bool enforced = s->value("enforced", false);
    std::string allowed;
    if (!enforced) {
      allowed = "(everyone)";
    } else if (!s->contains("allow") || !(*s)["allow"].is_array() || (*s)["allow"].empty()) {
      allowed = "(nobody)";
      if (s->contains("pod_selector")) allowed += ": no pod here is " + cellText(*s, "pod_selector");
    } else {
      for (const auto& a : (*s)["allow"]) {
        if (!allowed.empty()) allowed += ", ";
        bool pod = a.contains("pod");
        allowed += pod ? "pod " + cellText(a, "pod") : cellText(a, "cgroup");
        if (!a.value("resolved", true)) allowed += pod ? " (no cgroup yet)" : " (missing)";
      }
    }
    table.addRow({cellText(*s, "namespace"), cellText(*s, "name"),
                  cellText(*s, "port") + "/" + cellText(*s, "protocol"), enforced ? "allow-list" : "open", allowed,
                  cellText(*s, "denied")});
  }
  table.setAlign(5, Table::Align::kRight);
  result.out = table.render();
  return result;
}

CommandOutput runPolicy(const AgentCall& call, const std::string& service, OutputFormat format) {
  auto response = call(nlohmann::json{{"method", "policy"}});
  if (!response) return agentUnreachable(response.error());
  return formatPolicy(*response, service, format);
}

}  // namespace aimesh
