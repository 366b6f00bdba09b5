#include "flags.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <sstream>
#include <type_traits>
#include <utility>

#include "model/service_rules.h"

namespace aimesh {
namespace {

using Checks = std::vector<CLI::Validator>;
using json = nlohmann::json;

CLI::Option* withChecks(CLI::Option* o, const Checks& checks) {
  for (auto& c : checks) o->check(c);
  return o;
}

// `field` is a generic lambda, [](auto& f) -> auto& { return f.agent.x; },
// so one accessor serves the binder (AgentFlags&) and the printer (const).

// A field set as the flag gives it. A string field may take its default
// from the environment variable `env`; --help shows the built-in default.
template <typename Field>
FlagSpec plain(std::string name, std::string help, Field field, Checks checks = {}, std::string env = {}) {
  FlagSpec s;
  s.name = std::move(name);
  s.help = std::move(help);
  s.env = std::move(env);
  s.add = [field, checks](CLI::App& app, const FlagSpec& spec, AgentFlags& f) {
    auto& v = field(f);
    return withChecks(app.add_option(spec.name, v, spec.help)->capture_default_str(), checks);
  };
  if constexpr (std::is_assignable_v<decltype(field(std::declval<AgentFlags&>())), std::string>)
    if (!s.env.empty()) s.setFromEnv = [field](AgentFlags& f, const std::string& v) { field(f) = v; };
  s.value = [field](const AgentFlags& f) { return json(field(f)); };
  return s;
}

// A comma-separated list (the flag may also be repeated). CLI11 would show
// an empty default as "[]", so only a non-empty one is shown.
template <typename Field>
FlagSpec list(std::string name, std::string help, Field field) {
  FlagSpec s;
  s.name = std::move(name);
  s.help = std::move(help);
  s.add = [field](CLI::App& app, const FlagSpec& spec, AgentFlags& f) {
    auto* o = app.add_option(spec.name, field(f), spec.help)->delimiter(',');
    return field(f).empty() ? o : o->capture_default_str();
  };
  s.value = [field](const AgentFlags& f) { return json(field(f)); };
  return s;
}

// A switch that takes no value. An action (not a setting) is not printed
// by --check-config.
enum class Kind { kSetting, kAction };
template <typename Field>
FlagSpec toggle(std::string name, std::string help, Field field, Kind kind) {
  FlagSpec s;
  s.name = std::move(name);
  s.help = std::move(help);
  s.add = [field](CLI::App& app, const FlagSpec& spec, AgentFlags& f) {
    return app.add_flag(spec.name, field(f), spec.help);
  };
  if (kind == Kind::kSetting) s.value = [field](const AgentFlags& f) { return json(field(f)); };
  return s;
}

// A field kept in other units than the flag's: toFlag(field) is the flag's
// value (the default --help shows, and what --check-config prints);
// fromFlag(value) is what the field becomes.
template <typename FlagT, typename Field, typename ToFlag, typename FromFlag>
FlagSpec converted(std::string name, std::string help, Field field, ToFlag toFlag, FromFlag fromFlag,
                   Checks checks) {
  FlagSpec s;
  s.name = std::move(name);
  s.help = std::move(help);
  s.add = [field, toFlag, fromFlag, checks](CLI::App& app, const FlagSpec& spec, AgentFlags& f) {
    auto* target = &field(f);
    auto* o = app.add_option_function<FlagT>(
        spec.name, [target, fromFlag](const FlagT& v) { *target = fromFlag(v); }, spec.help);
    o->default_str(CLI::detail::to_string(toFlag(*target)));
    return withChecks(o, checks);
  };
  s.value = [field, toFlag](const AgentFlags& f) { return json(toFlag(field(f))); };
  return s;
}

// Nanoseconds (the data plane's unit) given in seconds, to the nearest
// nanosecond, so what --check-config prints is what was written.
template <typename Field>
FlagSpec seconds(std::string name, std::string help, Field field, Checks checks) {
  return converted<double>(
      std::move(name), std::move(help), field, [](uint64_t ns) { return static_cast<double>(ns) / 1e9; },
      [](double s) { return static_cast<uint64_t>(std::llround(s * 1e9)); }, std::move(checks));
}

// A std::chrono duration given as a count of Unit, read as a Rep (whose
// range is the flag's: an int flag refuses what does not fit an int).
template <typename Rep, typename Unit, typename Field>
FlagSpec count(std::string name, std::string help, Field field, Checks checks) {
  return converted<Rep>(
      std::move(name), std::move(help), field,
      [](auto d) { return static_cast<Rep>(std::chrono::duration_cast<Unit>(d).count()); },
      [](Rep v) { return Unit(v); }, std::move(checks));
}

// --config: CLI11's config file option, which sets the other flags.
FlagSpec configFile(std::string name, std::string help) {
  FlagSpec s;
  s.name = std::move(name);
  s.help = std::move(help);
  s.add = [](CLI::App& app, const FlagSpec& spec, AgentFlags&) { return app.set_config(spec.name, "", spec.help); };
  return s;
}

FlagSpec excluding(FlagSpec s, std::vector<std::string> flags) {
  s.excludes = std::move(flags);
  return s;
}

FlagSpec needing(FlagSpec s, std::string flag) {
  s.needs = std::move(flag);
  return s;
}

std::string namespaceSlashName(const std::string& v) {
  auto slash = v.find('/');
  return slash == std::string::npos || slash == 0 || slash + 1 == v.size() || v.find('/', slash + 1) != v.npos
             ? std::string("must be NAMESPACE/NAME")
             : std::string();
}

using std::chrono::milliseconds;
using Secs = std::chrono::seconds;

CLI::IsMember algorithmNames() {
  std::vector<std::string> names;
  for (Algorithm a : kAlgorithms) names.emplace_back(toString(a));
  return CLI::IsMember(names);
}

// The table in four parts, in --help order.

// What the process attaches, serves and pins, and the TC path.
std::vector<FlagSpec> processFlags() {
  const Checks kCtTimeout{CLI::Range(0.1, 86400.0)};
  return {
      plain("--cgroup", "cgroup v2 directory to attach to (default: the cgroup v2 root)",
            [](auto& f) -> auto& { return f.agent.cgroup; }),
      excluding(plain("--state-file", "YAML cluster state file (docs/state-file.md)",
                      [](auto& f) -> auto& { return f.agent.stateFile; }),
                {"--kubernetes", "--kubeconfig"}),
      plain("--metrics-addr", "HOST:PORT for /metrics, /healthz, /readyz (port 0: any)",
            [](auto& f) -> auto& { return f.agent.metricsAddr; }),
      plain("--histogram-buckets-per-octave",
            "classic /metrics histograms: `le` bounds per power of two (1, 2, 4 or 8; 8 is the kernel's own "
            "resolution). Scrapers that ask for native histograms get every kernel bucket",
            [](auto& f) -> auto& { return f.agent.histogramBucketsPerOctave; }, {CLI::IsMember({1, 2, 4, 8})}),
      plain("--metrics-idle-series",
            "/metrics: also export the series of services and endpoints nothing on this node has used (all "
            "zero); by default a scrape has series only for what carried traffic here (docs/metrics.md)",
            [](auto& f) -> auto& { return f.agent.metricsIdleSeries; }),
      plain("--client-top-k",
            "/metrics and meshctl top --clients: the (client, service) pairs with the most calls shown by client "
            "name (pod or cgroup); the others are summed per service as client=\"other\" (0: only \"other\")",
            [](auto& f) -> auto& { return f.agent.clientTopK; }, {CLI::Range(0, 10000)}),
      plain("--metrics-max-connections",
            "metrics listener: connections served at once; one more gets 503 and is closed",
            [](auto& f) -> auto& { return f.agent.http.maxConnections; }, {CLI::Range(1, 10000)}),
      count<long, milliseconds>(
          "--metrics-request-timeout-ms",
          "metrics listener: a request head must arrive within this (also the keep-alive idle time)",
          [](auto& f) -> auto& { return f.agent.http.requestTimeout; }, {CLI::Range(100, 600000)}),
      plain("--api-socket", "Unix socket of the local API (meshctl)",
            [](auto& f) -> auto& { return f.agent.apiSocket; }),
      plain("--pin-dir", "where maps and links are pinned", [](auto& f) -> auto& { return f.agent.pinDir; }),
      plain("--bpffs", "bpffs mount point (mounted if missing)", [](auto& f) -> auto& { return f.bpffs; }),
      count<int, Secs>("--resync-seconds", "re-apply the last good state this often",
                       [](auto& f) -> auto& { return f.agent.resync; }, {CLI::PositiveNumber}),
      plain("--log-level", "trace|debug|info|warn|error", [](auto& f) -> auto& { return f.logLevel; },
            {CLI::IsMember({"trace", "debug", "info", "warn", "error"})}),
      plain("--telemetry", "attach the latency/lifecycle telemetry programs (sock_ops, cgroup_skb)",
            [](auto& f) -> auto& { return f.agent.telemetry; }),
      plain("--connection-lifecycle",
            "close connections to removed endpoints, idle ones to draining or ejected endpoints, and re-balance "
            "pooled keep-alive connections (socket iterators, Linux >= 6.5; docs/load-balancing.md)",
            [](auto& f) -> auto& { return f.agent.lifecycle.enabled; }),
      plain("--netns-dir",
            "also walk the network namespaces whose files are in this directory (e.g. /var/run/netns) when "
            "looking for connections to close; the namespaces of the cgroup's processes are always walked",
            [](auto& f) -> auto& { return f.agent.lifecycle.netnsDir; }),
      list("--tc-interfaces",
           "attach the TC load balancer (packet-level, for traffic not from local sockets) at the ingress of "
           "these interfaces, comma-separated",
           [](auto& f) -> auto& { return f.agent.tcInterfaces; }),
      seconds("--ct-tcp-timeout-seconds", "TC path: forget an idle TCP flow after this",
              [](auto& f) -> auto& { return f.agent.tuning.ctTcpTimeoutNs; }, kCtTimeout),
      seconds("--ct-udp-timeout-seconds", "TC path: forget an idle UDP flow after this",
              [](auto& f) -> auto& { return f.agent.tuning.ctUdpTimeoutNs; }, kCtTimeout),
      seconds("--ct-closing-timeout-seconds", "TC path: forget a TCP flow this long after a FIN or RST",
              [](auto& f) -> auto& { return f.agent.tuning.ctClosingTimeoutNs; }, kCtTimeout),
      toggle("--cleanup", "detach and remove everything pinned under --pin-dir, then exit",
             [](auto& f) -> auto& { return f.cleanup; }, Kind::kAction),
  };
}

// The Kubernetes source (docs/install.md), and --config/--check-config.
std::vector<FlagSpec> kubernetesFlags() {
  return {
      excluding(toggle("--kubernetes", "take cluster state from the Kubernetes API, in-cluster (service account)",
                       [](auto& f) -> auto& { return f.kubernetes; }, Kind::kSetting),
                {"--kubeconfig"}),
      plain("--kubeconfig", "take cluster state from the Kubernetes API named in this kubeconfig file",
            [](auto& f) -> auto& { return f.kubeconfig; }),
      needing(plain("--kubernetes-context", "kubeconfig context (default: its current-context)",
                    [](auto& f) -> auto& { return f.kubeContext; }),
              "--kubeconfig"),
      plain("--kubernetes-selector", "label selector for the Services the mesh manages (default: all)",
            [](auto& f) -> auto& { return f.agent.kubeOptions.serviceSelector; }),
      converted<std::string>(
          "--default-algorithm",
          "algorithm of the Kubernetes Services that name none (aimesh.io/lb-algorithm; ClientIP affinity: maglev)",
          [](auto& f) -> auto& { return f.agent.kubeOptions.defaultAlgorithm; },
          [](Algorithm a) { return std::string(toString(a)); },
          [](const std::string& v) { return parseAlgorithmText(v).value(); }, {algorithmNames()}),
      count<int, Secs>("--kubernetes-watch-timeout-seconds",
                       "each watch asks the server to end after 1/2..1 times this; it is then resumed",
                       [](auto& f) -> auto& { return f.agent.kubeOptions.watchTimeout; }, {CLI::Range(1, 3600)}),
      count<int, milliseconds>("--kubernetes-backoff-max-ms", "longest wait between retries when the API fails",
                               [](auto& f) -> auto& { return f.agent.kubeOptions.backoffMax; },
                               {CLI::Range(10, 600000)}),
      plain("--node-name",
            "this node's name (default: $NODE_NAME): its pods are watched for the Services' workload "
            "policies (aimesh.io/allow-pods); without it such policies allow nobody",
            [](auto& f) -> auto& { return f.agent.kubeOptions.nodeName; }, {}, "NODE_NAME"),
      plain("--pod-cgroup-root", "where the kubelet's pod cgroups are, at any depth below (default: --cgroup)",
            [](auto& f) -> auto& { return f.agent.podCgroupRoot; }),
      plain("--daemonset",
            "NAMESPACE/NAME of the agent's DaemonSet: at exit, if it is gone or being deleted (uninstall), "
            "remove the data plane",
            [](auto& f) -> auto& { return f.agent.daemonSet; },
            {CLI::Validator(namespaceSlashName, "").non_modifying()}),
      configFile("--config", "read flags from this file: `name = value` lines, names as the long flags"),
      toggle("--check-config", "print the settings from the flags and --config as JSON, then exit",
             [](auto& f) -> auto& { return f.checkConfig; }, Kind::kAction),
  };
}

// Balancer feedback (docs/load-balancing.md).
std::vector<FlagSpec> feedbackFlags() {
  const Checks kTuningSeconds{CLI::Range(0.001, 3600.0)};
  return {
      seconds("--latency-decay-seconds", "latency algorithm: time constant of the peak-EWMA of time to first byte",
              [](auto& f) -> auto& { return f.agent.tuning.ewmaTauNs; }, kTuningSeconds),
      plain("--penalty-per-failure", "virtual connections added to an endpoint's load per failed connect",
            [](auto& f) -> auto& { return f.agent.tuning.penaltyPerFailure; }, {CLI::Range(0, 1000)}),
      seconds("--penalty-half-life-seconds", "the failure penalty halves this often",
              [](auto& f) -> auto& { return f.agent.tuning.penaltyHalfLifeNs; }, kTuningSeconds),
      plain("--eject-after", "consecutive failed connects before an endpoint is skipped for a back-off (0: never)",
            [](auto& f) -> auto& { return f.agent.tuning.ejectAfter; }, {CLI::Range(0, 1000)}),
      seconds("--eject-base-seconds", "first back-off; doubles with each further failure",
              [](auto& f) -> auto& { return f.agent.tuning.ejectBaseNs; }, kTuningSeconds),
      seconds("--eject-max-seconds", "longest back-off", [](auto& f) -> auto& { return f.agent.tuning.ejectMaxNs; },
              {CLI::Range(0.001, 86400.0)}),
      count<int, milliseconds>("--scrape-interval-ms", "model-server metrics: scrape every endpoint this often",
                               [](auto& f) -> auto& { return f.agent.scrapeInterval; }, {CLI::Range(50, 600000)}),
      count<int, milliseconds>("--scrape-timeout-ms", "model-server metrics: give up on one scrape after this",
                               [](auto& f) -> auto& { return f.agent.scrapeTimeout; }, {CLI::Range(10, 600000)}),
      plain("--scrape-netns",
            "model-server metrics: scrape from inside this network namespace (name under /var/run/netns)",
            [](auto& f) -> auto& { return f.agent.scrapeNetns; }),
  };
}

// Map sizes (docs/operations.md, "Sizing the maps").
std::vector<FlagSpec> mapSizeFlags() {
  return {
      plain("--max-services", "service ports the maps hold (frontends: 4x, weighted slots: 32x this)",
            [](auto& f) -> auto& { return f.agent.limits.services; },
            {CLI::Range(kMinServices, kMaxServicesLimit)}),
      plain("--max-backends", "endpoints (per service port) the maps hold; per-CPU counters grow with this",
            [](auto& f) -> auto& { return f.agent.limits.backends; },
            {CLI::Range(kMinBackends, kMaxBackendsLimit)}),
      plain("--max-flows", "TC path flow entries (two per flow: forward and reply)",
            [](auto& f) -> auto& { return f.agent.limits.flows; }, {CLI::Range(kMinFlows, kMaxFlowsLimit)}),
  };
}

std::vector<FlagSpec> buildTable() {
  std::vector<FlagSpec> table;
  for (auto part : {processFlags, kubernetesFlags, feedbackFlags, mapSizeFlags})
    for (auto& spec : part()) table.push_back(std::move(spec));
  return table;
}

// What follows from the flags rather than being one.
void derive(AgentOptions& a) {
  // Sweep idle TC flows at the default interval, or at half the shortest
  // timeout if that is less.
  auto shortest = std::chrono::nanoseconds(
      std::min({a.tuning.ctTcpTimeoutNs, a.tuning.ctUdpTimeoutNs, a.tuning.ctClosingTimeoutNs}));
  a.ctSweepInterval = std::min(a.ctSweepInterval, std::chrono::duration_cast<milliseconds>(shortest / 2));
  if (auto slash = a.daemonSet.find('/'); slash != std::string::npos) {
    a.kubeOptions.daemonSetNamespace = a.daemonSet.substr(0, slash);
    a.kubeOptions.daemonSetName = a.daemonSet.substr(slash + 1);
  }
}

}  // namespace

std::string FlagSpec::key() const {
  std::string k = name.substr(name.find_first_not_of('-'));
  std::replace(k.begin(), k.end(), '-', '_');
  return k;
}

const std::vector<FlagSpec>& agentFlagTable() {
  static const std::vector<FlagSpec> table = buildTable();
  return table;
}

ParsedFlags parseAgentFlags(int argc, const char* const* argv, const EnvLookup& env) {
  AgentFlags f;
  CLI::App app{"aimesh-agent: loads the aimesh data plane and keeps it in step with cluster state"};
  const auto& table = agentFlagTable();
  for (auto& spec : table) spec.add(app, spec, f);
  for (auto& spec : table) {
    auto* o = app.get_option(spec.name);
    for (auto& other : spec.excludes) o->excludes(app.get_option(other));
    if (!spec.needs.empty()) o->needs(app.get_option(spec.needs));
    // After add(): --help shows the built-in default, not the environment's.
    if (spec.setFromEnv)
      if (const char* v = env(spec.env.c_str())) spec.setFromEnv(f, v);
  }
  app.allow_config_extras(CLI::config_extras_mode::error);  // a misspelt key is an error, not ignored

  ParsedFlags r;
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    std::ostringstream out, err;
    r.exitCode = app.exit(e, out, err);
    r.out = out.str();
    r.err = err.str();
    return r;
  }
  derive(f.agent);
  if (!f.agent.daemonSet.empty() && !f.kubernetes && f.kubeconfig.empty()) {
    r.exitCode = 2;
    r.err = "--daemonset needs --kubernetes or --kubeconfig\n";
    return r;
  }
  r.flags = std::move(f);
  return r;
}

std::string checkConfigText(const AgentFlags& flags, unsigned possibleCpus) {
  json j = json::object();
  for (auto& spec : agentFlagTable())
    if (spec.isSetting()) j[spec.key()] = spec.value(flags);
  j["map_memory_bytes"] = mapMemoryBytes(flags.agent.limits, possibleCpus);
  j["histogram_bytes_per_endpoint"] = histogramBytes(1);
  return j.dump(2) + "\n";
}

}  // namespace aimesh
