#include <utility>
#include <vector>

#include <fmt/format.h>

#include "commands/commands.h"
#include "commands/view_cells.h"
#include "format/table.h"

namespace aimesh {

CommandOutput formatStatus(const nlohmann::json& response, OutputFormat format) {
  CommandOutput result;
  if (!checkResponse(response, "version", result)) return result;
  std::optional<view::Status> parsed = parseResponse<view::Status>(response, result);
  if (!parsed) return result;
  if (format == OutputFormat::kJson) {
    result.out = prettyJson(response);
    return result;
  }

  using S = view::Status;
  Item<S> s(*parsed, response);
  std::vector<std::pair<std::string, std::string>> items = {
      {"version", s.cell(&S::version)},
      {"pid", s.cell(&S::pid)},
      {"ready", s.cell(&S::ready)},
      {"uptime", s.has(&S::uptimeSeconds) ? formatDuration(parsed->uptimeSeconds) : "-"},
      {"cgroup", s.cell(&S::cgroup)},
      {"pin dir", s.cell(&S::pinDir)},
      {"state file", s.cell(&S::stateFile)},
      {"metrics", s.cell(&S::metricsAddr)},
      {"services", s.cell(&S::services)},
      {"endpoints", s.cell(&S::endpoints)},
      {"reconciles", s.cell(&S::reconciles)},
      {"reconcile errors", s.cell(&S::reconcileErrors)},
  };
  // Whether aimesh can close connections (socket iterators, Linux >= 6.5).
  if (const auto& lc = parsed->connectionLifecycle) {
    using L = view::LifecycleStatus;
    Item<L> l(*lc, response.at(viewKey(&S::connectionLifecycle)));
    if (lc->available)
      items.emplace_back("connection lifecycle",
                         fmt::format("on ({} passes, {} namespaces)", lc->passes, lc->namespaces));
    else
      items.emplace_back("connection lifecycle",
                         "unavailable: " + (l.has(&L::reason) ? lc->reason : std::string("?")));
  }
  // The last error is only news when there is one.
  if (!parsed->lastError.empty()) items.emplace_back("last error", parsed->lastError);
  result.out = renderKeyValues(items);

  if (!parsed->programs.empty()) {
    using P = view::Program;
    Table table({"NAME", "ATTACHED", "LINK"});
    for (std::size_t i = 0; i < parsed->programs.size(); ++i) {
      Item<P> p = itemAt(s, &S::programs, i);
      table.addRow({p.cell(&P::name), p.cell(&P::attached), p.cell(&P::linkId)});
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
