// `meshctl doctor`'s checks, as values. Each check*() here is pure: it takes
// what a probe read from the kernel or /proc (a release string, the CapEff
// line's text, libbpf's probe answers, the agent's status response) and
// returns one CheckResult. The probes that read the kernel live in
// probe/kernel_probe.h; collecting and printing them is commands/doctor.cc.
// Nothing here attaches or loads anything.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "util/result.h"

namespace aimesh {

enum class CheckState { kPass, kWarn, kFail };
const char* checkStateName(CheckState s);  // "pass", "warn", "fail"

struct CheckResult {
  std::string group;  // "kernel", "mounts", "program types", ... (the section it prints under)
  std::string name;   // "kernel version", "map type lru_hash", ...
  CheckState state = CheckState::kPass;
  std::string detail;  // what was found, e.g. "6.18.44 (need >= 5.18)"
  std::string hint;    // how to fix it; empty when the check passed
};

// A failed check fails the node: `meshctl doctor` exits non-zero. A warning
// is worth reading but aimesh can run (no agent yet, bpffs mounted by the
// agent itself, a probe that could not run).
int doctorExitCode(const std::vector<CheckResult>& checks);

// ---- kernel -----------------------------------------------------------------
// bpf_set_retval() from the cgroup connect hooks (ECONNREFUSED for a service
// without endpoints) arrived in 5.18; everything else we use is older
// (ringbuf 5.8, getpeername hooks 5.8, bpf_link for cgroups 5.7,
// bpf_redirect_neigh 5.10).
inline constexpr int kMinKernelMajor = 5;
inline constexpr int kMinKernelMinor = 18;

struct KernelVersion {
  int major = 0, minor = 0, patch = 0;
};
// "6.18.44-fc-v669" → {6, 18, 44}; "5.15" → {5, 15, 0}.
Result<KernelVersion> parseKernelRelease(const std::string& release);
CheckResult checkKernelVersion(const std::string& release);
// `types`: the number of types in vmlinux BTF, or why it could not be loaded.
CheckResult checkBtf(const Result<int>& types, const std::string& path);

// ---- mounts -----------------------------------------------------------------
// `cgroup2Root`: findCgroup2Root()'s answer.
CheckResult checkCgroup2(const Result<std::string>& cgroup2Root);
CheckResult checkBpffs(const std::string& dir, bool mounted);

// ---- BPF features (libbpf_probe_*: 1 supported, 0 not, < 0 could not probe) --
// One program type aimesh loads, with the helpers its programs call (the
// BPF_FUNC_* ids: every `call` in the objects, see kProgramHelpers).
struct HelperUse {
  int id;
  const char* name;  // without the bpf_ prefix, as in BPF_FUNC_<name>
};
struct ProgramTypeUse {
  int type;             // enum bpf_prog_type
  const char* name;     // libbpf's name, e.g. "cgroup_sock_addr"
  const char* objects;  // which of our programs have this type
  std::vector<HelperUse> helpers;
};
// Every program type aimesh loads and every helper each one calls (read from
// the compiled objects; tests/unit/cli/doctor_test.cc checks it against them).
const std::vector<ProgramTypeUse>& programTypesUsed();
// Every map type in bpf/lib/maps.h and bpf/*.bpf.c: {enum bpf_map_type, name}.
const std::vector<std::pair<int, const char*>>& mapTypesUsed();

CheckResult checkProgramType(const ProgramTypeUse& use, int probe);
CheckResult checkMapType(int type, const char* name, int probe);
// `probes[i]` is the answer for use.helpers[i].
CheckResult checkHelpers(const ProgramTypeUse& use, const std::vector<int>& probes);

// The connection lifecycle's socket iterators with bpf_sock_destroy (Linux
// >= 6.5): `probe` is whether they load. Without them aimesh still balances;
// it cannot close connections to removed endpoints or re-balance pooled
// clients, so this is a warning, not a failure.
CheckResult checkSocketIterators(const Status& probe);

// ---- capabilities ---------------------------------------------------------------
struct CapabilityUse {
  int bit;
  const char* name;
  const char* why;
};
// CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_PERFMON.
const std::vector<CapabilityUse>& capabilitiesNeeded();
// The CapEff mask from /proc/<pid>/status text ("CapEff:\t000001ffffffffff").
Result<uint64_t> parseCapEff(const std::string& statusText);
// Names of the needed capabilities missing from `capEff`, in capabilitiesNeeded() order.
std::vector<std::string> missingCapabilities(uint64_t capEff);
CheckResult checkCapabilities(const Result<std::string>& statusText);

// ---- agent and pins ---------------------------------------------------------------
// `status`: the agent's status response, or the error reaching it.
CheckResult checkAgent(const Result<nlohmann::json>& status, const std::string& socketPath);

struct PinCounts {
  bool dirExists = false;
  int maps = 0, links = 0, tcPrograms = 0;
};
// `agentReady`: the agent answered ready (pins are then expected).
CheckResult checkPins(const std::string& pinDir, const Result<PinCounts>& pins, bool agentReady);

}  // namespace aimesh
