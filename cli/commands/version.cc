#include <optional>

#include "commands/commands.h"
#include "commands/view_cells.h"

namespace aimesh {

CommandOutput formatVersion(const Result<nlohmann::json>* agentStatus, OutputFormat format) {
  CommandOutput result;
  nlohmann::json doc{{"client", {{"version", AIMESH_VERSION}}}};
  std::string agentLine;
  if (agentStatus != nullptr) {
    if (!agentStatus->ok()) {
      doc["agent"] = {{"error", agentStatus->error().message()}};
      result.err = "meshctl: " + agentStatus->error().message() + "\n";
    } else {
      CommandOutput failure;
      std::optional<view::Status> status;
      if (checkResponse(agentStatus->value(), "version", failure)) {
        status = parseResponse<view::Status>(agentStatus->value(), failure);
      }
      if (!status) {
        std::string text = failure.err;
        if (text.rfind("meshctl: ", 0) == 0) text.erase(0, 9);
        if (!text.empty() && text.back() == '\n') text.pop_back();
        doc["agent"] = {{"error", text}};
        result.err = failure.err;
      } else {
        std::string v = cellOf(status->version);
        doc["agent"] = {{"version", v}};
        agentLine = "agent:   " + v + "\n";
      }
    }
  }
  if (format == OutputFormat::kJson) {
    result.out = prettyJson(doc);
  } else {
    result.out = std::string("meshctl: ") + AIMESH_VERSION + "\n" + agentLine;
  }
  return result;
}

CommandOutput runVersion(const AgentCall* call, OutputFormat format) {
  if (call == nullptr) return formatVersion(nullptr, format);
  Result<nlohmann::json> status = (*call)(nlohmann::json{{"method", "status"}});
  return formatVersion(&status, format);
}

}  // namespace aimesh
