// The agent's command line: one table of flags, each defined once with its
// name, help text, the option field it sets and how --check-config prints
// it. Defaults are the option structs' own member defaults (AgentOptions and
// what it holds, AgentFlags below), read from the bound field, never
// restated here. parseAgentFlags() builds the CLI11 parser from the table
// (a --config file sets the same flags); checkConfigText() walks the same
// table. Starting the agent from the result is main.cc's job, not this
// file's.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent.h"

namespace CLI {
class App;
class Option;
}  // namespace CLI

namespace aimesh {

// Everything the command line sets: what Agent::start takes, and what only
// the process uses (main.cc).
struct AgentFlags {
  AgentOptions agent;
  std::string bpffs = "/sys/fs/bpf";  // mounted if missing
  std::string logLevel = "info";
  bool kubernetes = false;  // in-cluster Kubernetes source (service account)
  std::string kubeconfig;   // Kubernetes source from this kubeconfig file
  std::string kubeContext;  // its context ("" = current-context)
  // Actions: not settings, so --check-config does not print them.
  bool cleanup = false;      // remove the pinned data plane, then exit
  bool checkConfig = false;  // print the settings, then exit
};

// One flag.
struct FlagSpec {
  std::string name;  // "--eject-max-seconds"
  std::string help;
  // Adds the option to `app`, bound to its field of `flags` (which holds the
  // default --help shows), with its validators.
  std::function<CLI::Option*(CLI::App& app, const FlagSpec& spec, AgentFlags& flags)> add;
  // The field's value in the flag's units, as --check-config prints it;
  // empty for an action (--cleanup, --config, --check-config).
  std::function<nlohmann::json(const AgentFlags&)> value;
  // An environment variable that, when set, replaces the default (before
  // --config and the command line), and how it does.
  std::string env;
  std::function<void(AgentFlags&, const std::string&)> setFromEnv;
  std::vector<std::string> excludes;  // flags that cannot be given with this one
  std::string needs;                  // a flag this one cannot be given without

  bool isSetting() const { return static_cast<bool>(value); }
  // Its --check-config key: the name without "--", '_' for '-'.
  std::string key() const;
};

// Every flag, in --help order.
const std::vector<FlagSpec>& agentFlagTable();

// What parsing decided: settings to run with, or (flags unset) text to print
// and the exit code (0 after --help; CLI11's code for a bad flag; 2 for a
// combination only the agent checks).
struct ParsedFlags {
  std::optional<AgentFlags> flags;
  int exitCode = 0;
  std::string out, err;  // for stdout and stderr
};

// `env` looks up the process environment (std::getenv; injected so tests
// need not change theirs).
using EnvLookup = std::function<const char*(const char*)>;
ParsedFlags parseAgentFlags(int argc, const char* const* argv, const EnvLookup& env);

// The effective settings as JSON, one key per setting in the table plus
// map_memory_bytes (for `possibleCpus` CPUs), and a newline.
std::string checkConfigText(const AgentFlags& flags, unsigned possibleCpus);

}  // namespace aimesh
