// meshctl doctor: can this node run aimesh, and is it running? Collects the
// checks of probe/doctor_checks.h from thin probes (probe/kernel_probe.h,
// probe/pinned.h) and prints them. Works without the agent.
#include <algorithm>

#include <fmt/format.h>

#include "bpf/sock_iter.h"
#include "bpf/system.h"
#include "commands/commands.h"
#include "format/table.h"
#include "probe/kernel_probe.h"
#include "probe/pinned.h"

namespace aimesh {

CommandOutput formatDoctor(const std::vector<CheckResult>& checks, OutputFormat format) {
  CommandOutput result;
  result.exitCode = doctorExitCode(checks) == 0 ? kExitOk : kExitError;
  int counts[3] = {0, 0, 0};
  for (const auto& c : checks) ++counts[static_cast<int>(c.state)];

  if (format == OutputFormat::kJson) {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& c : checks) {
      list.push_back({{"group", c.group},
                      {"name", c.name},
                      {"status", checkStateName(c.state)},
                      {"detail", c.detail},
                      {"hint", c.hint}});
    }
    result.out = prettyJson({{"ok", result.exitCode == kExitOk},
                             {"summary", {{"pass", counts[0]}, {"warn", counts[1]}, {"fail", counts[2]}}},
                             {"checks", list}});
    return result;
  }

  std::size_t nameWidth = 0;
  for (const auto& c : checks) nameWidth = std::max(nameWidth, Table::displayWidth(c.name));
  std::string group;
  for (const auto& c : checks) {
    if (c.group != group) {
      group = c.group;
      result.out += group + "\n";
    }
    std::string line = fmt::format("  [{}] {}", checkStateName(c.state), c.name);
    if (!c.detail.empty()) {
      line.append(nameWidth - Table::displayWidth(c.name) + 2, ' ');
      line += c.detail;
    }
    result.out += line + "\n";
    if (c.state != CheckState::kPass && !c.hint.empty()) result.out += "         fix: " + c.hint + "\n";
  }
  result.out += fmt::format("{} passed, {} warning{}, {} failed\n", counts[0], counts[1], counts[1] == 1 ? "" : "s",
                            counts[2]);
  return result;
}

std::vector<CheckResult> collectDoctorChecks(const AgentCall& call, const DoctorOptions& options) {
  std::vector<CheckResult> checks;
  checks.push_back(checkKernelVersion(kernelRelease()));
  checks.push_back(checkBtf(loadVmlinuxBtf(), "/sys/kernel/btf/vmlinux"));

  checks.push_back(checkCgroup2(findCgroup2Root()));
  checks.push_back(checkBpffs(options.bpffs, isMountedAs(options.bpffs, "bpf", "/proc/self/mounts")));

  checks.push_back(checkCapabilities(readTextFile("/proc/self/status")));

  for (const auto& use : programTypesUsed()) checks.push_back(checkProgramType(use, probeProgramType(use.type)));
  for (const auto& [type, name] : mapTypesUsed()) checks.push_back(checkMapType(type, name, probeMapType(type)));
  for (const auto& use : programTypesUsed()) {
    std::vector<int> probes;
    for (const auto& h : use.helpers) probes.push_back(probeHelper(use.type, h.id));
    checks.push_back(checkHelpers(use, probes));
  }

  checks.push_back(checkSocketIterators(SockIter::probe()));

  Result<nlohmann::json> status = call(nlohmann::json{{"method", "status"}});
  checks.push_back(checkAgent(status, options.socketPath));
  bool ready = status && status->is_object() && status->value("ready", false);
  // The pins to look at: --pin-dir, else the running agent's, else the default.
  std::string pinDir = options.pinDir;
  if (pinDir.empty() && status && status->is_object()) pinDir = status->value("pin_dir", "");
  if (pinDir.empty()) pinDir = kDefaultPinDir;
  checks.push_back(checkPins(pinDir, countPins(pinDir), ready));
  return checks;
}

CommandOutput runDoctor(const AgentCall& call, const DoctorOptions& options, OutputFormat format) {
  return formatDoctor(collectDoctorChecks(call, options), format);
}

}  // namespace aimesh
