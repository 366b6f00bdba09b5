// meshctl: inspect the aimesh agent on this node through its local API.
// Flag parsing and dispatch only; the commands live in commands/.
#include <cstdio>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <string>

#include <unistd.h>

#include <CLI/CLI.hpp>

#include "client/api_client.h"
#include "commands/commands.h"

namespace aimesh {
namespace {

// Every flag and subcommand, filled by CLI11.
struct Args {
  std::string socketPath;
  std::string output = "table";
  double timeoutSeconds = 5.0;

  CLI::App* status = nullptr;
  CLI::App* services = nullptr;
  std::string servicesNs;
  CLI::App* endpoints = nullptr;
  EndpointsFilter filter;
  CLI::App* connections = nullptr;
  ConnectionsQuery connectionsQuery;
  CLI::App* policy = nullptr;
  std::string policyService;
  CLI::App* routes = nullptr;
  std::string routesService;
  CLI::App* version = nullptr;
  bool clientOnly = false;

  CLI::App* latency = nullptr;
  LatencyQuery latencyQuery;
  CLI::App* top = nullptr;
  TopOptions topOptions;
  CLI::App* flows = nullptr;
  FlowsOptions flowsOptions;

  CLI::App* doctor = nullptr;
  DoctorOptions doctorOptions;
  CLI::App* bpf = nullptr;
  BpfOptions bpfOptions;
};

void addGlobalFlags(CLI::App& app, Args& args) {
  const char* env = std::getenv("AIMESH_SOCKET");
  args.socketPath = (env != nullptr && *env != '\0') ? env : kDefaultAgentSocket;
  app.add_option("--socket", args.socketPath,
                 "agent API socket (default " + std::string(kDefaultAgentSocket) +
                     ", or $AIMESH_SOCKET)")
      ->capture_default_str();
  app.add_option("-o,--output", args.output, "output format")
      ->check(CLI::IsMember({"table", "json"}))
      ->capture_default_str();
  app.add_option("--timeout", args.timeoutSeconds, "seconds to wait for the agent")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
}

// The commands that show the agent's state.
void addStateCommands(CLI::App& app, Args& args) {
  args.status = app.add_subcommand("status", "agent state: readiness, programs, reconciles");
  args.services = app.add_subcommand("services", "services the agent balances");
  args.services->add_option("-n,--namespace", args.servicesNs, "only this namespace");
  args.endpoints = app.add_subcommand("endpoints", "backends of every service, or of SERVICE");
  args.endpoints->add_option("SERVICE", args.filter.service, "service name");
  args.endpoints->add_option("-n,--namespace", args.filter.ns, "namespace of the service");
  args.connections = app.add_subcommand(
      "connections", "connections open now to each endpoint, and those aimesh closed");
  args.connections->add_option("SERVICE", args.connectionsQuery.service, "service name");
  args.connections->add_option("-n,--namespace", args.connectionsQuery.ns, "namespace of the service");
  args.connections->add_flag("--each", args.connectionsQuery.each,
                             "list every connection under its endpoint (table output)");
  args.policy = app.add_subcommand("policy", "workload policy in force: allowed client cgroups, denied calls");
  args.policy->add_option("SERVICE", args.policyService, "only this service");
  args.routes = app.add_subcommand("routes", "traffic splits: weights, observed shares, the canary guard");
  args.routes->add_option("SERVICE", args.routesService, "only this split (NAME or NAMESPACE/NAME)");
  args.version = app.add_subcommand("version", "meshctl and agent versions");
  args.version->add_flag("--client", args.clientOnly, "do not ask the agent");
}

// The commands that show the kernel's telemetry through the agent.
void addTelemetryCommands(CLI::App& app, Args& args) {
  args.latency = app.add_subcommand("latency", "latency histograms of SERVICE's endpoints");
  args.latency->add_option("SERVICE", args.latencyQuery.service, "service name")->required();
  args.latency->add_option("-n,--namespace", args.latencyQuery.ns, "namespace of the service");
  args.top = app.add_subcommand("top", "live per-endpoint load and latency, redrawn until Ctrl-C");
  args.top->add_option("--interval", args.topOptions.intervalSeconds, "seconds between polls")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  args.top->add_option("--iterations", args.topOptions.iterations, "frames to draw (0: until Ctrl-C)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  args.top->add_flag("--clients", args.topOptions.clients,
                     "who calls which service: per client (pod or cgroup) and service, the top K and \"other\"");
  args.flows = app.add_subcommand("flows", "connection events: open, close, refused, ...");
  args.flows->add_flag("-f,--follow", args.flowsOptions.follow, "keep printing new events until Ctrl-C");
  args.flows->add_option("--interval", args.flowsOptions.intervalSeconds, "seconds between polls with -f")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
}

// The commands that read the node itself and work without the agent.
void addNodeCommands(CLI::App& app, Args& args) {
  args.doctor = app.add_subcommand("doctor", "check this node can run aimesh (works without the agent)");
  args.doctor->add_option("--bpffs", args.doctorOptions.bpffs, "where bpffs should be mounted")
      ->capture_default_str();
  args.doctor->add_option("--pin-dir", args.doctorOptions.pinDir,
                          "pin dir to look at (default: the agent's, else " + std::string(kDefaultPinDir) + ")");
  args.bpf = app.add_subcommand("bpf", "programs and maps pinned under the pin dir (works without the agent)");
  args.bpf->add_option("--pin-dir", args.bpfOptions.pinDir, "the agent's --pin-dir")->capture_default_str();
  args.bpf->add_option("--stats", args.bpfOptions.statsSeconds, "turn on run-time stats for SECONDS and show the delta")
      ->check(CLI::Range(0.001, 3600.0));
}

// Runs the chosen subcommand and returns meshctl's exit code.
int dispatch(Args& args, OutputFormat format) {
  auto timeout = std::chrono::milliseconds(static_cast<long long>(args.timeoutSeconds * 1000));
  AgentCall call = agentAt(args.socketPath, timeout);

  CommandOutput result;
  if (*args.status) {
    result = runStatus(call, format);
  } else if (*args.services) {
    result = runServices(call, args.servicesNs, format);
  } else if (*args.endpoints) {
    result = runEndpoints(call, args.filter, format);
  } else if (*args.connections) {
    result = runConnections(call, args.connectionsQuery, format);
  } else if (*args.policy) {
    result = runPolicy(call, args.policyService, format);
  } else if (*args.routes) {
    result = runRoutes(call, args.routesService, format);
  } else if (*args.version) {
    result = runVersion(args.clientOnly ? nullptr : &call, format);
  } else if (*args.latency) {
    result = runLatency(call, args.latencyQuery, format);
  } else if (*args.top) {
    // Frames stream out as they come, so these two write directly.
    args.topOptions.clearScreen = ::isatty(STDOUT_FILENO) == 1;
    return runTop(call, args.topOptions, format, std::cout, std::cerr, sigintPollLoop());
  } else if (*args.doctor) {
    args.doctorOptions.socketPath = args.socketPath;
    result = runDoctor(call, args.doctorOptions, format);
  } else if (*args.bpf) {
    result = runBpf(args.bpfOptions, format);
  } else if (*args.flows) {
    return runFlows(call, args.flowsOptions, format, systemFlowClock(), std::cout, std::cerr,
                    sigintPollLoop());
  }
  std::cout << result.out << std::flush;
  std::cerr << result.err << std::flush;
  return result.exitCode;
}

}  // namespace
}  // namespace aimesh

int main(int argc, char** argv) {
  using namespace aimesh;

  CLI::App app{"meshctl: inspect the aimesh agent on this node"};
  app.name("meshctl");
  app.require_subcommand(1);
  // Global flags may also follow the subcommand: `meshctl services -o json`.
  app.fallthrough();

  Args args;
  addGlobalFlags(app, args);
  addStateCommands(app, args);
  addTelemetryCommands(app, args);
  addNodeCommands(app, args);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Help prints and exits 0; usage errors exit kExitError (2 is reserved
    // for "agent not running").
    int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitError;
  }

  auto format = parseOutputFormat(args.output);
  if (!format) {
    std::cerr << "meshctl: " << format.error().message() << "\n";
    return kExitError;
  }
  return dispatch(args, *format);
}
