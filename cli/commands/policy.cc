// meshctl policy: the workload policy in force, per service port: enforced
// or open to everyone, the allowed cgroups and pods (and whether each has a
// cgroup now), and how many calls were denied.
#include <algorithm>
#include <tuple>
#include <vector>

#include "commands/commands.h"
#include "commands/view_cells.h"
#include "format/table.h"

namespace aimesh {

namespace {

using S = view::ServicePolicy;
using A = view::PolicyAllow;

// Who may call: everyone (no policy), nobody, or the allowed cgroups and pods.
std::string allowedText(const Item<S>& s) {
  if (!s.view().enforced) return "(everyone)";
  if (s.view().allow.empty()) {
    std::string out = "(nobody)";
    if (s.view().podSelector) out += ": no pod here is " + cellOf(s.view().podSelector);
    return out;
  }
  std::string out;
  for (std::size_t i = 0; i < s.view().allow.size(); ++i) {
    Item<A> a = itemAt(s, &S::allow, i);
    if (!out.empty()) out += ", ";
    bool pod = a.view().pod.has_value();
    out += pod ? "pod " + cellOf(a.view().pod) : cellOf(a.view().cgroup);
    // An agent that does not say is taken to have resolved it.
    if (a.has(&A::resolved) && !a.view().resolved) out += pod ? " (no cgroup yet)" : " (missing)";
  }
  return out;
}

}  // namespace

CommandOutput formatPolicy(const nlohmann::json& response, const std::string& service, OutputFormat format) {
  CommandOutput result;
  if (!checkResponse(response, "services", result)) return result;
  if (!response["services"].is_array()) {
    return CommandOutput{kExitError, "", "meshctl: unexpected response from the agent (\"services\" is not a list)\n"};
  }
  std::optional<view::Policy> parsed = parseResponse<view::Policy>(response, result);
  if (!parsed) return result;
  using P = view::Policy;
  Item<P> policy(*parsed, response);
  std::vector<Item<S>> rows;
  for (std::size_t i = 0; i < parsed->services.size(); ++i) {
    Item<S> s = itemAt(policy, &P::services, i);
    if (service.empty() || s.view().name == service) rows.push_back(s);
  }
  if (!service.empty() && rows.empty()) {
    return CommandOutput{kExitError, "", "meshctl: no service named " + service + "\n"};
  }
  if (format == OutputFormat::kJson) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& s : rows) out.push_back(s.json());
    result.out = prettyJson(nlohmann::json{{"services", out}});
    return result;
  }
  if (rows.empty()) {
    result.err = "No services.\n";
    return result;
  }
  auto key = [](const Item<S>& s) { return std::tuple(s.cell(&S::nameSpace), s.cell(&S::name), s.cell(&S::port)); };
  std::stable_sort(rows.begin(), rows.end(), [&](const auto& a, const auto& b) { return key(a) < key(b); });
  Table table({"NAMESPACE", "NAME", "PORT", "POLICY", "ALLOWED", "DENIED"});
  for (const auto& s : rows) {
    table.addRow({s.cell(&S::nameSpace), s.cell(&S::name), s.cell(&S::port) + "/" + s.cell(&S::protocol),
                  s.view().enforced ? "allow-list" : "open", allowedText(s), s.cell(&S::denied)});
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
