// meshctl: inspect the aimesh agent on this node through its local API.
// Flag parsing and dispatch only; the commands live in commands/.
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include <unistd.h>

#include <CLI/CLI.hpp>

#include "client/api_client.h"
#include "commands/commands.h"

int main(int argc, char** argv) {
  using namespace aimesh;

  CLI::App app{"meshctl: inspect the aimesh agent on this node"};
  app.name("meshctl");
  app.require_subcommand(1);
  // Global flags may also follow the subcommand: `meshctl services -o json`.
  app.fallthrough();

  const char* env = std::getenv("AIMESH_SOCKET");
  std::string socketPath = (env != nullptr && *env != '\0') ? env : kDefaultAgentSocket;
  app.add_option("--socket", socketPath,
                 "agent API socket (default " + std::string(kDefaultAgentSocket) +
                     ", or $AIMESH_SOCKET)")
      ->capture_default_str();
  std::string output = "table";
  app.add_option("-o,--output", output, "output format")
      ->check(CLI::IsMember({"table", "json"}))
      ->capture_default_str();
  double timeoutSeconds = 5.0;
  app.add_option("--timeout", timeoutSeconds, "seconds to wait for the agent")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();

  auto* status = app.add_subcommand("status", "agent state: readiness, programs, reconciles");
  auto* services = app.add_subcommand("services", "services the agent balances");
  std::string servicesNs;
  services->add_option("-n,--namespace", servicesNs, "only this namespace");
  auto* endpoints = app.add_subcommand("endpoints", "backends of every service, or of SERVICE");
  EndpointsFilter filter;
  endpoints->add_option("SERVICE", filter.service, "service name");
  endpoints->add_option("-n,--namespace", filter.ns, "namespace of the service");
  auto* connections = app.add_subcommand(
      "connections", "connections open now to each endpoint, and those aimesh closed");
  ConnectionsQuery connectionsQuery;
  connections->add_option("SERVICE", connectionsQuery.service, "service name");
  connections->add_option("-n,--namespace", connectionsQuery.ns, "namespace of the service");
  connections->add_flag("--each", connectionsQuery.each,
                        "list every connection under its endpoint (table output)");
  auto* policy = app.add_subcommand("policy", "workload policy in force: allowed client cgroups, denied calls");
  std::string policyService;
  policy->add_option("SERVICE", policyService, "only this service");
  auto* version = app.add_subcommand("version", "meshctl and agent versions");
  bool clientOnly = false;
  version->add_flag("--client", clientOnly, "do not ask the agent");

  auto* latency = app.add_subcommand("latency", "latency histograms of SERVICE's endpoints");
  LatencyQuery latencyQuery;
  latency->add_option("SERVICE", latencyQuery.service, "service name")->required();
  latency->add_option("-n,--namespace", latencyQuery.ns, "namespace of the service");
  auto* top = app.add_subcommand("top", "live per-endpoint load and latency, redrawn until Ctrl-C");
  TopOptions topOptions;
  top->add_option("--interval", topOptions.intervalSeconds, "seconds between polls")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  top->add_option("--iterations", topOptions.iterations, "frames to draw (0: until Ctrl-C)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  auto* flows = app.add_subcommand("flows", "connection events: open, close, refused, ...");
  FlowsOptions flowsOptions;
  flows->add_flag("-f,--follow", flowsOptions.follow, "keep printing new events until Ctrl-C");
  flows->add_option("--interval", flowsOptions.intervalSeconds, "seconds between polls with -f")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  auto* doctor = app.add_subcommand("doctor", "check this node can run aimesh (works without the agent)");
  DoctorOptions doctorOptions;
  doctor->add_option("--bpffs", doctorOptions.bpffs, "where bpffs should be mounted")->capture_default_str();
  doctor->add_option("--pin-dir", doctorOptions.pinDir, "pin dir to look at (default: the agent's, else " +
                                                            std::string(kDefaultPinDir) + ")");
  auto* bpf = app.add_subcommand("bpf", "programs and maps pinned under the pin dir (works without the agent)");
  BpfOptions bpfOptions;
  bpf->add_option("--pin-dir", bpfOptions.pinDir, "the agent's --pin-dir")->capture_default_str();
  bpf->add_option("--stats", bpfOptions.statsSeconds, "turn on run-time stats for SECONDS and show the delta")
      ->check(CLI::Range(0.001, 3600.0));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Help prints and exits 0; usage errors exit kExitError (2 is reserved
    // for "agent not running").
    int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitError;
  }

  auto format = parseOutputFormat(output);
  if (!format) {
    std::cerr << "meshctl: " << format.error().message() << "\n";
    return kExitError;
  }
  auto timeout = std::chrono::milliseconds(static_cast<long long>(timeoutSeconds * 1000));
  AgentCall call = agentAt(socketPath, timeout);

  CommandOutput result;
  if (*status) {
    result = runStatus(call, *format);
  } else if (*services) {
    result = runServices(call, servicesNs, *format);
  } else if (*endpoints) {
    result = runEndpoints(call, filter, *format);
  } else if (*connections) {
    result = runConnections(call, connectionsQuery, *format);
  } else if (*policy) {
    result = runPolicy(call, policyService, *format);
  } else if (*version) {
    result = runVersion(clientOnly ? nullptr : &call, *format);
  } else if (*latency) {
    result = runLatency(call, latencyQuery, *format);
  } else if (*top) {
    // Frames stream out as they come, so these two write directly.
    topOptions.clearScreen = ::isatty(STDOUT_FILENO) == 1;
    return runTop(call, topOptions, *format, std::cout, std::cerr, sigintPollLoop());
  } else if (*doctor) {
    doctorOptions.socketPath = socketPath;
    result = runDoctor(call, doctorOptions, *format);
  } else if (*bpf) {
    result = runBpf(bpfOptions, *format);
  } else if (*flows) {
    return runFlows(call, flowsOptions, *format, systemFlowClock(), std::cout, std::cerr,
                    sigintPollLoop());
  }
  std::cout << result.out << std::flush;
  std::cerr << result.err << std::flush;
  return result.exitCode;
}
