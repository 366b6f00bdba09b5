// aimesh-agent: flags, signals, and the Agent's run loop.
#include <CLI/CLI.hpp>
#include <bpf/libbpf.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <iostream>
#include <nlohmann/json.hpp>

#include "agent.h"
#include "bpf/system.h"

namespace {
std::atomic<bool> gStop{false};
void onSignal(int) { gStop.store(true); }
}  // namespace

int main(int argc, char** argv) {
  using namespace aimesh;
  CLI::App app{"aimesh-agent: loads the aimesh data plane and keeps it in step with cluster state"};
  AgentOptions opts;
  std::string logLevel = "info", bpffs = "/sys/fs/bpf";
  bool cleanup = false;
  int resyncSeconds = 30;
  app.add_option("--cgroup", opts.cgroup, "cgroup v2 directory to attach to (default: the cgroup v2 root)");
  app.add_option("--state-file", opts.stateFile, "YAML cluster state file (docs/state-file.md)");
  app.add_option("--metrics-addr", opts.metricsAddr, "HOST:PORT for /metrics, /healthz, /readyz (port 0: any)")
      ->capture_default_str();
  size_t httpMaxConns = opts.http.maxConnections;
  long httpTimeoutMs = opts.http.requestTimeout.count();
  app.add_option("--metrics-max-connections", httpMaxConns,
                 "metrics listener: connections served at once; one more gets 503 and is closed")
      ->capture_default_str()
      ->check(CLI::Range(1, 10000));
  app.add_option("--metrics-request-timeout-ms", httpTimeoutMs,
                 "metrics listener: a request head must arrive within this (also the keep-alive idle time)")
      ->capture_default_str()
      ->check(CLI::Range(100, 600000));
  app.add_option("--api-socket", opts.apiSocket, "Unix socket of the local API (meshctl)")->capture_default_str();
  app.add_option("--pin-dir", opts.pinDir, "where maps and links are pinned")->capture_default_str();
  app.add_option("--bpffs", bpffs, "bpffs mount point (mounted if missing)")->capture_default_str();
  app.add_option("--resync-seconds", resyncSeconds, "re-apply the last good state this often")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--log-level", logLevel, "trace|debug|info|warn|error")
      ->capture_default_str()
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  app.add_option("--telemetry", opts.telemetry,
                 "attach the latency/lifecycle telemetry programs (sock_ops, cgroup_skb)")
      ->capture_default_str();
  app.add_option("--connection-lifecycle", opts.lifecycle.enabled,
                 "close connections to removed endpoints, idle ones to draining or ejected endpoints, and re-balance "
                 "pooled keep-alive connections (socket iterators, Linux >= 6.5; docs/load-balancing.md)")
      ->capture_default_str();
  app.add_option("--netns-dir", opts.lifecycle.netnsDir,
                 "also walk the network namespaces whose files are in this directory (e.g. /var/run/netns) when "
                 "looking for connections to close; the namespaces of the cgroup's processes are always walked");
  app.add_option("--tc-interfaces", opts.tcInterfaces,
                 "attach the TC load balancer (packet-level, for traffic not from local sockets) at the ingress of "
                 "these interfaces, comma-separated")
      ->delimiter(',');
  double ctTcpS = 300, ctUdpS = 60, ctClosingS = 10;
  app.add_option("--ct-tcp-timeout-seconds", ctTcpS, "TC path: forget an idle TCP flow after this")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 86400.0));
  app.add_option("--ct-udp-timeout-seconds", ctUdpS, "TC path: forget an idle UDP flow after this")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 86400.0));
  app.add_option("--ct-closing-timeout-seconds", ctClosingS, "TC path: forget a TCP flow this long after a FIN or RST")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 86400.0));
  app.add_flag("--cleanup", cleanup, "detach and remove everything pinned under --pin-dir, then exit");

  // Kubernetes source (docs/install.md).
  bool inCluster = false, checkConfig = false;
  std::string kubeconfig, kubeContext;
  int watchTimeoutS = 300, backoffMaxMs = 30000;
  auto* kubeOpt = app.add_flag("--kubernetes", inCluster,
                               "take cluster state from the Kubernetes API, in-cluster (service account)");
  auto* kubeconfigOpt = app.add_option("--kubeconfig", kubeconfig,
                                       "take cluster state from the Kubernetes API named in this kubeconfig file");
  app.add_option("--kubernetes-context", kubeContext, "kubeconfig context (default: its current-context)")
      ->needs(kubeconfigOpt);
  app.add_option("--kubernetes-selector", opts.kubeOptions.serviceSelector,
                 "label selector for the Services the mesh manages (default: all)");
  app.add_option("--kubernetes-watch-timeout-seconds", watchTimeoutS,
                 "each watch asks the server to end after 1/2..1 times this; it is then resumed")
      ->capture_default_str()
      ->check(CLI::Range(1, 3600));
  app.add_option("--kubernetes-backoff-max-ms", backoffMaxMs, "longest wait between retries when the API fails")
      ->capture_default_str()
      ->check(CLI::Range(10, 600000));
  if (const char* node = std::getenv("NODE_NAME")) opts.kubeOptions.nodeName = node;
  app.add_option("--node-name", opts.kubeOptions.nodeName,
                 "this node's name (default: $NODE_NAME): its pods are watched for the Services' workload "
                 "policies (aimesh.io/allow-pods); without it such policies allow nobody");
  app.add_option("--pod-cgroup-root", opts.podCgroupRoot,
                 "where the kubelet's pod cgroups are, at any depth below (default: --cgroup)");
  app.add_option("--daemonset", opts.daemonSet,
                 "NAMESPACE/NAME of the agent's DaemonSet: at exit, if it is gone or being deleted (uninstall), "
                 "remove the data plane")
      ->check([](const std::string& v) {
        auto slash = v.find('/');
        return slash == std::string::npos || slash == 0 || slash + 1 == v.size() || v.find('/', slash + 1) != v.npos
                   ? std::string("must be NAMESPACE/NAME")
                   : std::string();
      });
  kubeOpt->excludes(kubeconfigOpt);
  app.get_option("--state-file")->excludes(kubeOpt)->excludes(kubeconfigOpt);
  app.set_config("--config", "", "read flags from this file: `name = value` lines, names as the long flags");
  app.allow_config_extras(CLI::config_extras_mode::error);  // a misspelt key is an error, not ignored
  app.add_flag("--check-config", checkConfig, "print the settings from the flags and --config as JSON, then exit");

  // Balancer feedback (docs/load-balancing.md).
  double latencyDecayS = 10, penaltyHalfLifeS = 5, ejectBaseS = 1, ejectMaxS = 30;
  int scrapeIntervalMs = 500, scrapeTimeoutMs = 300;
  app.add_option("--latency-decay-seconds", latencyDecayS,
                 "latency algorithm: time constant of the peak-EWMA of time to first byte")
      ->capture_default_str()
      ->check(CLI::Range(0.001, 3600.0));
  app.add_option("--penalty-per-failure", opts.tuning.penaltyPerFailure,
                 "virtual connections added to an endpoint's load per failed connect")
      ->capture_default_str()
      ->check(CLI::Range(0, 1000));
  app.add_option("--penalty-half-life-seconds", penaltyHalfLifeS, "the failure penalty halves this often")
      ->capture_default_str()
      ->check(CLI::Range(0.001, 3600.0));
  app.add_option("--eject-after", opts.tuning.ejectAfter,
                 "consecutive failed connects before an endpoint is skipped for a back-off (0: never)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1000));
  app.add_option("--eject-base-seconds", ejectBaseS, "first back-off; doubles with each further failure")
      ->capture_default_str()
      ->check(CLI::Range(0.001, 3600.0));
  app.add_option("--eject-max-seconds", ejectMaxS, "longest back-off")
      ->capture_default_str()
      ->check(CLI::Range(0.001, 86400.0));
  app.add_option("--scrape-interval-ms", scrapeIntervalMs, "model-server metrics: scrape every endpoint this often")
      ->capture_default_str()
      ->check(CLI::Range(50, 600000));
  app.add_option("--scrape-timeout-ms", scrapeTimeoutMs, "model-server metrics: give up on one scrape after this")
      ->capture_default_str()
      ->check(CLI::Range(10, 600000));
  app.add_option("--scrape-netns", opts.scrapeNetns,
                 "model-server metrics: scrape from inside this network namespace (name under /var/run/netns)");

  // Map sizes (docs/operations.md, "Sizing the maps").
  app.add_option("--max-services", opts.limits.services,
                 "service ports the maps hold (frontends: 4x, weighted slots: 32x this)")
      ->capture_default_str()
      ->check(CLI::Range(kMinServices, kMaxServicesLimit));
  app.add_option("--max-backends", opts.limits.backends,
                 "endpoints (per service port) the maps hold; per-CPU counters grow with this")
      ->capture_default_str()
      ->check(CLI::Range(kMinBackends, kMaxBackendsLimit));
  app.add_option("--max-flows", opts.limits.flows, "TC path flow entries (two per flow: forward and reply)")
      ->capture_default_str()
      ->check(CLI::Range(kMinFlows, kMaxFlowsLimit));
  CLI11_PARSE(app, argc, argv);
  auto ns = [](double s) { return static_cast<uint64_t>(s * 1e9); };
  opts.tuning.ewmaTauNs = ns(latencyDecayS);
  opts.tuning.penaltyHalfLifeNs = ns(penaltyHalfLifeS);
  opts.tuning.ejectBaseNs = ns(ejectBaseS);
  opts.tuning.ejectMaxNs = ns(ejectMaxS);
  opts.tuning.ctTcpTimeoutNs = ns(ctTcpS);
  opts.tuning.ctUdpTimeoutNs = ns(ctUdpS);
  opts.tuning.ctClosingTimeoutNs = ns(ctClosingS);
  // Sweep idle TC flows every 5 s, or at half the shortest timeout if less.
  opts.ctSweepInterval = std::chrono::milliseconds(
      static_cast<long>(std::min({5.0, ctTcpS / 2, ctUdpS / 2, ctClosingS / 2}) * 1000));
  opts.http.maxConnections = httpMaxConns;
  opts.http.requestTimeout = std::chrono::milliseconds(httpTimeoutMs);
  opts.scrapeInterval = std::chrono::milliseconds(scrapeIntervalMs);
  opts.scrapeTimeout = std::chrono::milliseconds(scrapeTimeoutMs);
  opts.kubeOptions.watchTimeout = std::chrono::seconds(watchTimeoutS);
  opts.kubeOptions.backoffMax = std::chrono::milliseconds(backoffMaxMs);
  if (auto slash = opts.daemonSet.find('/'); slash != std::string::npos) {
    opts.kubeOptions.daemonSetNamespace = opts.daemonSet.substr(0, slash);
    opts.kubeOptions.daemonSetName = opts.daemonSet.substr(slash + 1);
  }
  if (!opts.daemonSet.empty() && !inCluster && kubeconfig.empty()) {
    std::cerr << "--daemonset needs --kubernetes or --kubeconfig\n";
    return 2;
  }
  if (checkConfig) {
    nlohmann::json j{{"cgroup", opts.cgroup},
                     {"state_file", opts.stateFile},
                     {"kubernetes", inCluster},
                     {"kubeconfig", kubeconfig},
                     {"kubernetes_context", kubeContext},
                     {"kubernetes_selector", opts.kubeOptions.serviceSelector},
                     {"kubernetes_watch_timeout_seconds", watchTimeoutS},
                     {"kubernetes_backoff_max_ms", backoffMaxMs},
                     {"daemonset", opts.daemonSet},
                     {"node_name", opts.kubeOptions.nodeName},
                     {"pod_cgroup_root", opts.podCgroupRoot},
                     {"metrics_addr", opts.metricsAddr},
                     {"metrics_max_connections", opts.http.maxConnections},
                     {"metrics_request_timeout_ms", httpTimeoutMs},
                     {"api_socket", opts.apiSocket},
                     {"pin_dir", opts.pinDir},
                     {"bpffs", bpffs},
                     {"resync_seconds", resyncSeconds},
                     {"log_level", logLevel},
                     {"telemetry", opts.telemetry},
                     {"connection_lifecycle", opts.lifecycle.enabled},
                     {"netns_dir", opts.lifecycle.netnsDir},
                     {"tc_interfaces", opts.tcInterfaces},
                     {"ct_tcp_timeout_seconds", ctTcpS},
                     {"ct_udp_timeout_seconds", ctUdpS},
                     {"ct_closing_timeout_seconds", ctClosingS},
                     {"latency_decay_seconds", latencyDecayS},
                     {"penalty_per_failure", opts.tuning.penaltyPerFailure},
                     {"penalty_half_life_seconds", penaltyHalfLifeS},
                     {"eject_after", opts.tuning.ejectAfter},
                     {"eject_base_seconds", ejectBaseS},
                     {"eject_max_seconds", ejectMaxS},
                     {"scrape_interval_ms", scrapeIntervalMs},
                     {"scrape_timeout_ms", scrapeTimeoutMs},
                     {"scrape_netns", opts.scrapeNetns},
                     {"max_services", opts.limits.services},
                     {"max_backends", opts.limits.backends},
                     {"max_flows", opts.limits.flows},
                     {"map_memory_bytes", mapMemoryBytes(opts.limits, static_cast<unsigned>(std::max(1, libbpf_num_possible_cpus())))}};
    std::cout << j.dump(2) << "\n";
    return 0;
  }

  spdlog::set_level(spdlog::level::from_str(logLevel));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  routeLibbpfLogs();
  opts.resync = std::chrono::seconds(resyncSeconds);

  if (cleanup) {
    auto n = Datapath::cleanup(opts.pinDir);
    if (!n) {
      spdlog::error("cleanup: {}", n.error().message());
      return 1;
    }
    spdlog::info("cleanup: removed {} pin(s) under {}", *n, opts.pinDir);
    return 0;
  }

  if (inCluster || !kubeconfig.empty()) {
    auto kc = inCluster ? inClusterConfig() : loadKubeconfig(kubeconfig, kubeContext);
    if (!kc) {
      spdlog::error("{}", kc.error().message());
      return 1;
    }
    opts.kube = std::move(kc.value());
  }

  auto mounted = ensureBpffs(bpffs);
  if (!mounted) {
    spdlog::error("{} (is this running as root with CAP_SYS_ADMIN?)", mounted.error().message());
    return 1;
  }
  if (*mounted) spdlog::info("mounted bpffs at {}", bpffs);
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
    auto n = Datapath::cleanup(opts.pinDir);
    if (!n) {
      spdlog::error("cleanup: {}", n.error().message());
      return 1;
    }
    spdlog::info("uninstalled: removed {} pin(s) under {}", *n, opts.pinDir);
    return 0;
  }
  spdlog::info("stopping; the data plane stays attached (run --cleanup to remove it)");
  return 0;
}
