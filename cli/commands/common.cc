#include <cmath>
#include <cstdio>

#include <fmt/format.h>

#include "client/api_client.h"
#include "commands/commands.h"

namespace aimesh {

Result<OutputFormat> parseOutputFormat(const std::string& name) {
  if (name == "table") return OutputFormat::kTable;
  if (name == "json") return OutputFormat::kJson;
  return Error::msg("unknown output format \"" + name + "\" (want table or json)");
}

CommandOutput agentUnreachable(const Error& err) {
  return CommandOutput{kExitAgentUnreachable, "", "meshctl: " + err.message() + "\n"};
}

AgentCall agentAt(std::string socketPath, std::chrono::milliseconds timeout) {
  return [path = std::move(socketPath), timeout](const nlohmann::json& request) {
    return callAgent(path, request, timeout);
  };
}

std::string formatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "-";
  if (seconds < 60) {
    std::string s = fmt::format("{:.1f}", seconds);
    if (s.size() > 2 && s.compare(s.size() - 2, 2, ".0") == 0) s.resize(s.size() - 2);
    return s + "s";
  }
  auto total = static_cast<long long>(seconds);
  long long d = total / 86400, h = total % 86400 / 3600, m = total % 3600 / 60, sec = total % 60;
  if (d > 0) return fmt::format("{}d{}h{}m", d, h, m);
  if (h > 0) return fmt::format("{}h{}m{}s", h, m, sec);
  return fmt::format("{}m{}s", m, sec);
}

}  // namespace aimesh

namespace aimesh {

bool checkResponse(const nlohmann::json& response, const char* requiredKey,
                   CommandOutput& failure) {
  if (response.is_object()) {
    if (auto it = response.find("error"); it != response.end()) {
      std::string text = it->is_string() ? it->get<std::string>() : it->dump();
      failure = CommandOutput{kExitError, "", "meshctl: agent error: " + text + "\n"};
      return false;
    }
    if (response.contains(requiredKey)) return true;
  }
  failure = CommandOutput{kExitError, "",
                          fmt::format("meshctl: unexpected response from the agent (no \"{}\")\n",
                                      requiredKey)};
  return false;
}

std::string prettyJson(const nlohmann::json& value) {
  return value.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

}  // namespace aimesh
