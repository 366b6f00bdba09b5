// aimesh-agent: flags (flags.h), logging, signals, and the Agent's run loop.
#include <bpf/libbpf.h>
#include <malloc.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdlib>
#include <iostream>

#include "agent.h"
#include "bpf/system.h"
#include "flags.h"

namespace {
std::atomic<bool> gStop{false};
void onSignal(int) { gStop.store(true); }

// Detaches and removes the pinned data plane; `what` names the occasion.
int removeDataPlane(const std::string& pinDir, const char* what) {
  auto n = aimesh::Datapath::cleanup(pinDir);
  if (!n) {
    spdlog::error("cleanup: {}", n.error().message());
    return 1;
  }
  spdlog::info("{}: removed {} pin(s) under {}", what, *n, pinDir);
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  using namespace aimesh;
  auto parsed = parseAgentFlags(argc, argv, [](const char* name) { return std::getenv(name); });
  if (!parsed.flags) {
    std::cout << parsed.out;
    std::cerr << parsed.err;
    return parsed.exitCode;
  }
  AgentFlags& flags = *parsed.flags;
  AgentOptions& opts = flags.agent;
  if (flags.checkConfig) {
    std::cout << checkConfigText(flags, static_cast<unsigned>(std::max(1, libbpf_num_possible_cpus())));
    return 0;
  }

  // Large blocks (a state file's parse tree, the plan's vectors) always get
  // their own mapping, returned to the kernel when freed. glibc otherwise
  // raises its mmap threshold after the first such free and serves the next
  // parse from the heap, where freed holes between long-lived objects stay
  // resident: 79 MiB instead of 67 after one change at 10,000 services.
  ::mallopt(M_MMAP_THRESHOLD, 256 * 1024);
  spdlog::set_level(spdlog::level::from_str(flags.logLevel));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  routeLibbpfLogs();
  if (!flags.cleanup) spdlog::info("aimesh-agent {} starting (pid {})", AIMESH_VERSION, ::getpid());
  if (flags.cleanup) return removeDataPlane(opts.pinDir, "cleanup");

  if (flags.kubernetes || !flags.kubeconfig.empty()) {
    auto kc = flags.kubernetes ? inClusterConfig() : loadKubeconfig(flags.kubeconfig, flags.kubeContext);
    if (!kc) {
      spdlog::error("{}", kc.error().message());
      return 1;
    }
    opts.kube = std::move(kc.value());
  }
  auto mounted = ensureBpffs(flags.bpffs);
  if (!mounted) {
    spdlog::error("{} (is this running as root with CAP_SYS_ADMIN?)", mounted.error().message());
    return 1;
  }
  if (*mounted) spdlog::info("mounted bpffs at {}", flags.bpffs);
  if (opts.cgroup.empty()) {
    auto root = findCgroup2Root();
    if (!root) {
      spdlog::error("{}", root.error().message());
      return 1;
    }
    opts.cgroup = *root;
  }
  if (opts.podCgroupRoot.empty()) opts.podCgroupRoot = opts.cgroup;

  std::signal(SIGINT, onSignal);
  std::signal(SIGTERM, onSignal);
  std::signal(SIGPIPE, SIG_IGN);
  auto agent = Agent::start(opts);
  if (!agent) {
    spdlog::error("start: {}", agent.error().message());
    return 1;
  }
  (*agent)->run(gStop);
  if ((*agent)->uninstalling()) {
    agent->reset();  // closes our link and map fds; the pins still hold them
    return removeDataPlane(opts.pinDir, "uninstalled");
  }
  spdlog::info("stopping; the data plane stays attached (run --cleanup to remove it)");
  return 0;
}
