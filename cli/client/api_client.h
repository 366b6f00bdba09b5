// callAgent: meshctl's side of the agent's local API (protocol in
// docs/cli.md). One call = one connection: write the request object and a
// newline, read one JSON object back. Turning responses into text is not here
// (see commands/).
#pragma once

#include <chrono>
#include <string>

#include <nlohmann/json.hpp>

#include "util/result.h"

namespace aimesh {

// Default agent socket; the AIMESH_SOCKET environment variable overrides it.
inline constexpr const char* kDefaultAgentSocket = "/run/aimesh/agent.sock";

// Sends `request` to the agent at `socketPath` and returns its response
// (which may itself be {"error": ...}; that is the caller's to interpret).
// When nothing is listening (no such file / connection refused) the Error's
// message says the agent is not running at that path and how to start it.
// `timeout` bounds the whole call (connect, send and receive).
Result<nlohmann::json> callAgent(const std::string& socketPath, const nlohmann::json& request,
                                 std::chrono::milliseconds timeout);

}  // namespace aimesh
