#include <algorithm>
#include <vector>

#include "commands/commands.h"
#include "commands/view_cells.h"
#include "format/table.h"

namespace aimesh {

CommandOutput formatServices(const nlohmann::json& response, const std::string& ns,
                             OutputFormat format) {
  CommandOutput result;
  if (!checkResponse(response, "services", result)) return result;
  if (!response["services"].is_array()) {
    return CommandOutput{kExitError, "",
                         "meshctl: unexpected response from the agent (\"services\" is not a list)\n"};
  }
  std::optional<view::ServiceList> parsed = parseResponse<view::ServiceList>(response, result);
  if (!parsed) return result;

  using L = view::ServiceList;
  using S = view::Service;
  Item<L> list(*parsed, response);
  std::vector<Item<S>> rows;
  for (std::size_t i = 0; i < parsed->services.size(); ++i) {
    Item<S> s = itemAt(list, &L::services, i);
    if (ns.empty() || s.view().nameSpace == ns) rows.push_back(s);
  }

  if (format == OutputFormat::kJson) {
    if (ns.empty()) {
      result.out = prettyJson(response);
    } else {
      nlohmann::json filtered = nlohmann::json::array();
      for (const auto& s : rows) filtered.push_back(s.json());
      result.out = prettyJson(nlohmann::json{{"services", filtered}});
    }
    return result;
  }

  if (rows.empty()) {
    result.err = ns.empty() ? "No services.\n" : "No services in namespace " + ns + ".\n";
    return result;
  }
  std::stable_sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) {
    return std::pair(a.cell(&S::nameSpace), a.cell(&S::name)) < std::pair(b.cell(&S::nameSpace), b.cell(&S::name));
  });
  Table table({"NAMESPACE", "NAME", "MODEL", "ALGORITHM", "FRONTENDS", "ENDPOINTS", "CONNECTIONS",
               "REFUSED"});
  for (const auto& s : rows) {
    std::string algorithm = s.cell(&S::algorithm) + (s.view().failClose.value_or(false) ? " (fail close)" : "");
    table.addRow({s.cell(&S::nameSpace), s.cell(&S::name), s.cell(&S::model), algorithm,
                  s.cell(&S::frontends), s.cell(&S::activeEndpoints) + "/" + s.cell(&S::endpoints),
                  s.cell(&S::connections), s.cell(&S::refused)});
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
