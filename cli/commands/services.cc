#include <algorithm>
#include <vector>

#include "commands/commands.h"
#include "format/table.h"

namespace aimesh {

CommandOutput formatServices(const nlohmann::json& response, const std::string& ns,
                             OutputFormat format) {
  CommandOutput result;
  if (!checkResponse(response, "services", result)) return result;
  const nlohmann::json& all = response["services"];
  if (!all.is_array()) {
    return CommandOutput{kExitError, "",
                         "meshctl: unexpected response from the agent (\"services\" is not a list)\n"};
  }

  std::vector<const nlohmann::json*> rows;
  for (const auto& s : all) {
    if (ns.empty() || cellText(s, "namespace") == ns) rows.push_back(&s);
  }

  if (format == OutputFormat::kJson) {
    if (ns.empty()) {
      result.out = prettyJson(response);
    } else {
      nlohmann::json filtered = nlohmann::json::array();
      for (const auto* s : rows) filtered.push_back(*s);
      result.out = prettyJson(nlohmann::json{{"services", filtered}});
    }
    return result;
  }

  if (rows.empty()) {
    result.err = ns.empty() ? "No services.\n" : "No services in namespace " + ns + ".\n";
    return result;
  }
  std::stable_sort(rows.begin(), rows.end(), [](const auto* a, const auto* b) {
    return std::pair(cellText(*a, "namespace"), cellText(*a, "name")) <
           std::pair(cellText(*b, "namespace"), cellText(*b, "name"));
  });
  Table table({"NAMESPACE", "NAME", "MODEL", "ALGORITHM", "FRONTENDS", "ENDPOINTS", "CONNECTIONS",
               "REFUSED"});
  for (const auto* s : rows) {
    table.addRow({cellText(*s, "namespace"), cellText(*s, "name"), cellText(*s, "model"),
                  cellText(*s, "algorithm"), cellText(*s, "frontends"),
                  cellText(*s, "active_endpoints") + "/" + cellText(*s, "endpoints"),
                  cellText(*s, "connections"), cellText(*s, "refused")});
  }
  // "2/3" active/total; "-/-" if the agent left the counts out.
  table.setAlign(5, Table::Align::kRight);
  result.out = table.render();
  return result;
}

CommandOutput runServices(const AgentCall& call, const std::string& ns, OutputFormat format) {
  auto response = call(nlohmann::json{{"method", "services"}});
  if (!response) return agentUnreachable(response.error());
  return formatServices(*response, ns, format);
}

}  // namespace aimesh
