#include "probe/doctor_checks.h"

#include <linux/bpf.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sstream>

#include <fmt/format.h>

namespace aimesh {

const char* checkStateName(CheckState s) {
  switch (s) {
    case CheckState::kPass: return "pass";
    case CheckState::kWarn: return "warn";
    case CheckState::kFail: return "fail";
  }
  return "fail";
}

int doctorExitCode(const std::vector<CheckResult>& checks) {
  for (const auto& c : checks)
    if (c.state == CheckState::kFail) return 1;
  return 0;
}

namespace {

CheckResult pass(std::string group, std::string name, std::string detail) {
  return CheckResult{std::move(group), std::move(name), CheckState::kPass, std::move(detail), ""};
}
CheckResult fail(std::string group, std::string name, std::string detail, std::string hint) {
  return CheckResult{std::move(group), std::move(name), CheckState::kFail, std::move(detail), std::move(hint)};
}
CheckResult warn(std::string group, std::string name, std::string detail, std::string hint) {
  return CheckResult{std::move(group), std::move(name), CheckState::kWarn, std::move(detail), std::move(hint)};
}

// libbpf's probe answered < 0: the probe itself could not run (EPERM without
// CAP_BPF, ...). That says nothing about the kernel, so it is not a failure.
CheckResult probeError(std::string group, std::string name, int probe) {
  return warn(std::move(group), std::move(name), fmt::format("could not probe: {}", std::strerror(-probe)),
              "run meshctl doctor as root (or with CAP_BPF and CAP_SYS_ADMIN)");
}

const std::string kMinKernel = fmt::format("{}.{}", kMinKernelMajor, kMinKernelMinor);

}  // namespace

// ---- kernel -----------------------------------------------------------------

Result<KernelVersion> parseKernelRelease(const std::string& release) {
  KernelVersion v;
  int n = 0;
  int fields = std::sscanf(release.c_str(), "%d.%d%n", &v.major, &v.minor, &n);
  if (fields != 2 || v.major < 0 || v.minor < 0) return Error::msg("cannot parse kernel release \"" + release + "\"");
  if (static_cast<size_t>(n) < release.size() && release[n] == '.') {
    if (std::sscanf(release.c_str() + n + 1, "%d", &v.patch) != 1) v.patch = 0;
  }
  return v;
}

CheckResult checkKernelVersion(const std::string& release) {
  auto v = parseKernelRelease(release);
  if (!v) return fail("kernel", "kernel version", v.error().message(), "check `uname -r`");
  bool ok = v->major > kMinKernelMajor || (v->major == kMinKernelMajor && v->minor >= kMinKernelMinor);
  std::string detail = fmt::format("{} (need >= {})", release, kMinKernel);
  if (ok) return pass("kernel", "kernel version", detail);
  return fail("kernel", "kernel version", detail,
              "upgrade the kernel to " + kMinKernel + " or newer (bpf_set_retval in cgroup connect hooks)");
}

CheckResult checkBtf(const Result<int>& types, const std::string& path) {
  if (types) return pass("kernel", "BTF", fmt::format("{} ({} types)", path, *types));
  // Our objects carry their own BTF and use no CO-RE, so they load without
  // it; bpftool and most other BPF tools do need it.
  return warn("kernel", "BTF", path + ": " + types.error().message(),
              "build the kernel with CONFIG_DEBUG_INFO_BTF=y (aimesh loads without it; bpftool and CO-RE "
              "tools need it)");
}

// ---- mounts -----------------------------------------------------------------

CheckResult checkCgroup2(const Result<std::string>& root) {
  if (root) return pass("mounts", "cgroup v2", *root);
  return fail("mounts", "cgroup v2", root.error().message(),
              "mount cgroup v2, e.g. `mount -t cgroup2 none /sys/fs/cgroup/unified` (or boot with "
              "systemd.unified_cgroup_hierarchy=1); the socket programs attach to a cgroup v2 directory");
}

CheckResult checkBpffs(const std::string& dir, bool mounted) {
  if (mounted) return pass("mounts", "bpffs", dir);
  return warn("mounts", "bpffs", dir + " is not a bpffs mount",
              "mount -t bpf bpf " + dir + " (the agent mounts it at start, --bpffs; in a container, mount the "
              "host's " + dir + " so pins outlive the agent)");
}

// ---- BPF features -----------------------------------------------------------

const std::vector<ProgramTypeUse>& programTypesUsed() {
  // Every helper `call` in bpf/*.bpf.o, per program type (llvm-objdump -d:
  // `call N` with N a BPF_FUNC_* id). Keep it equal to the objects:
  // tests/unit/cli/doctor_test.cc reads them and compares.
  static const std::vector<ProgramTypeUse> kUses = {
      {BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
       "cgroup_sock_addr",
       "sock_lb: connect4/6, sendmsg4/6, recvmsg4/6, getpeername4/6",
       {{BPF_FUNC_map_lookup_elem, "map_lookup_elem"},
        {BPF_FUNC_map_update_elem, "map_update_elem"},
        {BPF_FUNC_ktime_get_ns, "ktime_get_ns"},
        {BPF_FUNC_get_prandom_u32, "get_prandom_u32"},
        {BPF_FUNC_get_socket_cookie, "get_socket_cookie"},
        {BPF_FUNC_get_current_cgroup_id, "get_current_cgroup_id"},
        {BPF_FUNC_get_current_ancestor_cgroup_id, "get_current_ancestor_cgroup_id"},
        {BPF_FUNC_sk_storage_get, "sk_storage_get"},
        {BPF_FUNC_ringbuf_reserve, "ringbuf_reserve"},
        {BPF_FUNC_ringbuf_submit, "ringbuf_submit"},
        {BPF_FUNC_ringbuf_query, "ringbuf_query"},
        {BPF_FUNC_set_retval, "set_retval"}}},
      {BPF_PROG_TYPE_SOCK_OPS,
       "sock_ops",
       "sock_ops: sockops",
       {{BPF_FUNC_map_lookup_elem, "map_lookup_elem"},
        {BPF_FUNC_map_update_elem, "map_update_elem"},
        {BPF_FUNC_ktime_get_ns, "ktime_get_ns"},
        {BPF_FUNC_sock_ops_cb_flags_set, "sock_ops_cb_flags_set"},
        {BPF_FUNC_sk_storage_get, "sk_storage_get"},
        {BPF_FUNC_ringbuf_reserve, "ringbuf_reserve"},
        {BPF_FUNC_ringbuf_submit, "ringbuf_submit"},
        {BPF_FUNC_ringbuf_query, "ringbuf_query"}}},
      {BPF_PROG_TYPE_CGROUP_SKB,
       "cgroup_skb",
       "sock_telemetry: skb_egress, skb_ingress",
       {{BPF_FUNC_map_lookup_elem, "map_lookup_elem"},
        {BPF_FUNC_map_update_elem, "map_update_elem"},
        {BPF_FUNC_ktime_get_ns, "ktime_get_ns"},
        {BPF_FUNC_skb_load_bytes, "skb_load_bytes"},
        {BPF_FUNC_sk_storage_get, "sk_storage_get"},
        {BPF_FUNC_loop, "loop"}}},
      {BPF_PROG_TYPE_SCHED_CLS,
       "sched_cls",
       "tc_lb: tc_ingress (only with --tc-interfaces)",
       {{BPF_FUNC_map_lookup_elem, "map_lookup_elem"},
        {BPF_FUNC_map_update_elem, "map_update_elem"},
        {BPF_FUNC_map_delete_elem, "map_delete_elem"},
        {BPF_FUNC_ktime_get_ns, "ktime_get_ns"},
        {BPF_FUNC_get_prandom_u32, "get_prandom_u32"},
        {BPF_FUNC_skb_store_bytes, "skb_store_bytes"},
        {BPF_FUNC_l3_csum_replace, "l3_csum_replace"},
        {BPF_FUNC_l4_csum_replace, "l4_csum_replace"},
        {BPF_FUNC_csum_diff, "csum_diff"},
        {BPF_FUNC_skb_pull_data, "skb_pull_data"},
        {BPF_FUNC_fib_lookup, "fib_lookup"},
        {BPF_FUNC_redirect_neigh, "redirect_neigh"}}},
  };
  return kUses;
}

const std::vector<std::pair<int, const char*>>& mapTypesUsed() {
  static const std::vector<std::pair<int, const char*>> kMaps = {
      {BPF_MAP_TYPE_HASH, "hash"},
      {BPF_MAP_TYPE_ARRAY, "array"},
      {BPF_MAP_TYPE_PERCPU_ARRAY, "percpu_array"},
      {BPF_MAP_TYPE_LRU_HASH, "lru_hash"},
      {BPF_MAP_TYPE_SK_STORAGE, "sk_storage"},
      {BPF_MAP_TYPE_RINGBUF, "ringbuf"},
      {BPF_MAP_TYPE_ARRAY_OF_MAPS, "array_of_maps"},
  };
  return kMaps;
}

CheckResult checkProgramType(const ProgramTypeUse& use, int probe) {
  std::string name = std::string("program type ") + use.name;
  if (probe < 0) return probeError("program types", name, probe);
  if (probe > 0) return pass("program types", name, use.objects);
  return fail("program types", name, std::string("not supported by this kernel (needed by ") + use.objects + ")",
              "use a kernel built with CONFIG_BPF_SYSCALL, CONFIG_CGROUP_BPF and CONFIG_NET_CLS_BPF (>= " +
                  kMinKernel + ")");
}

CheckResult checkMapType(int /*type*/, const char* name, int probe) {
  std::string n = std::string("map type ") + name;
  if (probe < 0) return probeError("map types", n, probe);
  if (probe > 0) return pass("map types", n, "supported");
  return fail("map types", n, "not supported by this kernel", "use a kernel >= " + kMinKernel);
}

CheckResult checkHelpers(const ProgramTypeUse& use, const std::vector<int>& probes) {
  std::string name = std::string("helpers of ") + use.name;
  std::vector<std::string> missing, unknown;
  int firstError = 0;
  for (size_t i = 0; i < use.helpers.size(); ++i) {
    int p = i < probes.size() ? probes[i] : -EINVAL;
    std::string h = std::string("bpf_") + use.helpers[i].name;
    if (p == 0) missing.push_back(h);
    if (p < 0) {
      unknown.push_back(h);
      if (firstError == 0) firstError = p;
    }
  }
  auto join = [](const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
    return s;
  };
  if (!missing.empty())
    return fail("helpers", name, "missing: " + join(missing),
                "use a kernel >= " + kMinKernel + " that offers these helpers to " + use.name + " programs");
  if (!unknown.empty())
    return warn("helpers", name, fmt::format("could not probe {}: {}", join(unknown), std::strerror(-firstError)),
                "run meshctl doctor as root (or with CAP_BPF and CAP_SYS_ADMIN)");
  return pass("helpers", name, fmt::format("{} of {} available", use.helpers.size(), use.helpers.size()));
}

// ---- capabilities -----------------------------------------------------------

const std::vector<CapabilityUse>& capabilitiesNeeded() {
  // Bit numbers from linux/capability.h (CAP_BPF and CAP_PERFMON are 5.8+,
  // older libc headers lack them).
  static const std::vector<CapabilityUse> kCaps = {
      {39, "CAP_BPF", "load programs, create maps"},
      {12, "CAP_NET_ADMIN", "attach to cgroups and TC"},
      {21, "CAP_SYS_ADMIN", "mount bpffs, read programs by id, BPF_ENABLE_STATS"},
      {38, "CAP_PERFMON", "pointer arithmetic and helpers the verifier reserves for it"},
  };
  return kCaps;
}

Result<uint64_t> parseCapEff(const std::string& statusText) {
  std::istringstream in(statusText);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("CapEff:", 0) != 0) continue;
    std::string hex = line.substr(7);
    size_t start = hex.find_first_not_of(" \t");
    if (start == std::string::npos) break;
    hex = hex.substr(start);
    size_t end = hex.find_first_not_of("0123456789abcdefABCDEF");
    if (end != std::string::npos) hex.resize(end);
    if (hex.empty() || hex.size() > 16) break;
    return static_cast<uint64_t>(std::stoull(hex, nullptr, 16));
  }
  return Error::msg("no CapEff line in the process status");
}

std::vector<std::string> missingCapabilities(uint64_t capEff) {
  std::vector<std::string> out;
  for (const auto& c : capabilitiesNeeded())
    if ((capEff & (uint64_t{1} << c.bit)) == 0) out.emplace_back(c.name);
  return out;
}

CheckResult checkSocketIterators(const Status& probe) {
  CheckResult r{"program types", "socket iterators + bpf_sock_destroy", CheckState::kPass, "", ""};
  if (probe) {
    r.detail = "iter/tcp and iter/udp load and may destroy sockets (connection lifecycle)";
    return r;
  }
  r.state = CheckState::kWarn;
  r.detail = "unavailable: " + probe.error().message();
  r.hint = "Linux >= 6.5 with BTF is needed to close connections to removed endpoints and re-balance pooled "
           "keep-alive connections; balancing works without it";
  return r;
}

CheckResult checkCapabilities(const Result<std::string>& statusText) {
  if (!statusText) return warn("process", "capabilities", statusText.error().message(), "");
  auto caps = parseCapEff(*statusText);
  if (!caps) return warn("process", "capabilities", caps.error().message(), "");
  auto missing = missingCapabilities(*caps);
  std::string all;
  for (const auto& c : capabilitiesNeeded()) all += (all.empty() ? "" : ", ") + std::string(c.name);
  if (missing.empty()) return pass("process", "capabilities", all);
  std::string m;
  for (const auto& c : missing) m += (m.empty() ? "" : ", ") + c;
  return fail("process", "capabilities", "missing " + m + fmt::format(" (CapEff {:016x})", *caps),
              "run as root, or grant " + all +
                  " (the Helm chart's securityContext does this for the agent)");
}

// ---- agent and pins -----------------------------------------------------------

CheckResult checkAgent(const Result<nlohmann::json>& status, const std::string& socketPath) {
  if (!status) {
    const std::string& msg = status.error().context;
    if (msg.rfind("aimesh agent is not running", 0) == 0) {
      return warn("agent", "agent", "not running at " + socketPath,
                  "start it: sudo aimesh-agent --api-socket " + socketPath +
                      " (or point meshctl at its socket with --socket / AIMESH_SOCKET)");
    }
    return fail("agent", "agent", status.error().message(),
                "the socket exists but the agent does not answer: check its log, and run meshctl as its user");
  }
  const nlohmann::json& s = *status;
  if (!s.is_object() || s.contains("error") || !s.contains("version")) {
    return fail("agent", "agent", "unexpected status response: " + s.dump(),
                "meshctl and the agent may be different versions (meshctl version)");
  }
  std::string pid = s.contains("pid") ? s["pid"].dump() : "?";
  std::string version = s.value("version", "?");
  if (s.value("ready", false)) {
    return pass("agent", "agent", fmt::format("ready (version {}, pid {}, {})", version, pid, socketPath));
  }
  std::string last = s.value("last_error", "");
  return fail("agent", "agent",
              fmt::format("running but not ready (pid {}){}", pid, last.empty() ? "" : ": " + last),
              "see meshctl status and the agent's log; a bad state file names its line and field");
}

CheckResult checkPins(const std::string& pinDir, const Result<PinCounts>& pins, bool agentReady) {
  if (!pins) return fail("agent", "pins", pins.error().message(), "run meshctl doctor as root");
  if (!pins->dirExists || (pins->maps == 0 && pins->links == 0 && pins->tcPrograms == 0)) {
    std::string detail = pinDir + (pins->dirExists ? " is empty" : " does not exist");
    if (agentReady)
      return fail("agent", "pins", detail,
                  "the agent is ready but pins nothing here: pass its --pin-dir to meshctl (meshctl status "
                  "shows it)");
    return warn("agent", "pins", detail + " (no data plane loaded)",
                "start the agent; pinned maps and links keep the data plane working while it restarts");
  }
  std::string detail = fmt::format("{}: {} maps, {} links, {} tc programs", pinDir, pins->maps, pins->links,
                                   pins->tcPrograms);
  if (pins->links == 0)
    return warn("agent", "pins", detail + " (no program attached)",
                "the maps are pinned but nothing uses them: start the agent, or aimesh-agent --cleanup");
  return pass("agent", "pins", detail);
}

}  // namespace aimesh
