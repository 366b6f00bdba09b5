#include <utility>
#include <vector>

#include <fmt/format.h>

#include "commands/commands.h"
#include "format/table.h"

namespace aimesh {

CommandOutput formatStatus(const nlohmann::json& response, OutputFormat format) {
  CommandOutput result;
  if (!checkResponse(response, "version", result)) return result;
  if (format == OutputFormat::kJson) {
    result.out = prettyJson(response);
    return result;
  }

  std::string uptime = "-";
  if (auto it = response.find("uptime_seconds"); it != response.end() && it->is_number()) {
    uptime = formatDuration(it->get<double>());
  }
  std::vector<std::pair<std::string, std::string>> items = {
      {"version", cellText(response, "version")},
      {"pid", cellText(response, "pid")},
      {"ready", cellText(response, "ready")},
      {"uptime", uptime},
      {"cgroup", cellText(response, "cgroup")},
      {"pin dir", cellText(response, "pin_dir")},
      {"state file", cellText(response, "state_file")},
      {"metrics", cellText(response, "metrics_addr")},
      {"services", cellText(response, "services")},
      {"endpoints", cellText(response, "endpoints")},
      {"reconciles", cellText(response, "reconciles")},
      {"reconcile errors", cellText(response, "reconcile_errors")},
  };
  // Whether aimesh can close connections (socket iterators, Linux >= 6.5).
  if (auto lc = response.find("connection_lifecycle"); lc != response.end() && lc->is_object()) {
    if (lc->value("available", false))
      items.emplace_back("connection lifecycle", fmt::format("on ({} passes, {} namespaces)",
                                                             lc->value("passes", 0), lc->value("namespaces", 0)));
    else
      items.emplace_back("connection lifecycle", "unavailable: " + lc->value("reason", std::string("?")));
  }
  // The last error is only news when there is one.
  if (std::string last = cellText(response, "last_error"); last != "-" && !last.empty()) {
    items.emplace_back("last error", last);
  }
  result.out = renderKeyValues(items);

  auto programs = response.find("programs");
  if (programs != response.end() && programs->is_array() && !programs->empty()) {
    Table table({"NAME", "ATTACHED", "LINK"});
    for (const auto& p : *programs) {
      table.addRow({cellText(p, "name"), cellText(p, "attached"), cellText(p, "link_id")});
    }
    result.out += "programs:\n";
    // Indent the program table under its key.
    std::string rendered = table.render();
    std::size_t start = 0;
    while (start < rendered.size()) {
      std::size_t nl = rendered.find('\n', start);
      result.out += "  " + rendered.substr(start, nl - start + 1);
      start = nl + 1;
    }
  }
  return result;
}

CommandOutput runStatus(const AgentCall& call, OutputFormat format) {
  auto response = call(nlohmann::json{{"method", "status"}});
  if (!response) return agentUnreachable(response.error());
  return formatStatus(*response, format);
}

}  // namespace aimesh
