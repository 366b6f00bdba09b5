// meshctl commands. Each command is split in two so tests need no agent:
//   format*(): the agent's JSON response → text and an exit code (pure);
//   run*():    asks the agent through an AgentCall, then calls format*().
// main.cc only parses flags and dispatches. Table rendering lives in
// format/table.h; the socket protocol in client/api_client.h.
#pragma once

#include <chrono>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "util/result.h"

namespace aimesh {

// Exit codes (documented in docs/cli.md).
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;             // agent error, unknown service, bad response
inline constexpr int kExitAgentUnreachable = 2;  // agent not running / not answering

enum class OutputFormat { kTable, kJson };

// What a command prints: `out` goes to stdout, `err` to stderr.
struct CommandOutput {
  int exitCode = kExitOk;
  std::string out;
  std::string err;
};

// "table" or "json".
Result<OutputFormat> parseOutputFormat(const std::string& name);

struct EndpointsFilter {
  std::string service;  // empty: every service
  std::string ns;       // empty: every namespace
};

// ---- pure formatting ---------------------------------------------------------
// Each takes the agent's response; {"error": ...} or a response of the wrong
// shape gives kExitError and a message on `err`.

// status as "key: value" lines, then the attached programs.
CommandOutput formatStatus(const nlohmann::json& response, OutputFormat format);
// services table; `ns` non-empty keeps only that namespace.
CommandOutput formatServices(const nlohmann::json& response, const std::string& ns,
                             OutputFormat format);
// endpoints table. `services` is the agent's services response, used to tell an
// unknown service (kExitError) from one that has no endpoints (kExitOk); pass
// a null json when it was not fetched.
CommandOutput formatEndpoints(const nlohmann::json& response, const nlohmann::json& services,
                              const EndpointsFilter& filter, OutputFormat format);
// meshctl's own version plus the agent's; `agentStatus` is the agent's status
// response or the error reaching it, nullptr for --client (no agent call).
// Not reaching the agent is reported on `err` but is not a failure here:
// the client version was printed.
CommandOutput formatVersion(const Result<nlohmann::json>* agentStatus, OutputFormat format);

// The message and exit code for a failure to reach the agent.
CommandOutput agentUnreachable(const Error& err);

// ---- commands ----------------------------------------------------------------
using AgentCall = std::function<Result<nlohmann::json>(const nlohmann::json& request)>;

// An AgentCall that talks to the agent at `socketPath` (callAgent()).
AgentCall agentAt(std::string socketPath, std::chrono::milliseconds timeout);

CommandOutput runStatus(const AgentCall& call, OutputFormat format);
CommandOutput runServices(const AgentCall& call, const std::string& ns, OutputFormat format);
CommandOutput runEndpoints(const AgentCall& call, const EndpointsFilter& filter,
                           OutputFormat format);
// `call` nullptr: client version only.
CommandOutput runVersion(const AgentCall* call, OutputFormat format);

// ---- helpers shared by the commands (exposed for tests) ------------------------
// A JSON value as a table cell: strings bare, numbers as JSON prints them,
// booleans yes/no, arrays comma-joined; missing, null, "" and [] are "-".
std::string cellText(const nlohmann::json& object, const char* key);
// Checks an agent response before formatting: {"error": text}, a response
// that is not an object or one without `requiredKey` fills `failure`
// (kExitError, message on err) and returns false.
bool checkResponse(const nlohmann::json& response, const char* requiredKey,
                   CommandOutput& failure);
// -o json output: indented, one trailing newline.
std::string prettyJson(const nlohmann::json& value);
// 12.5 → "12.5s", 3725 → "1h2m5s", 200000 → "2d7h33m".
std::string formatDuration(double seconds);

}  // namespace aimesh
