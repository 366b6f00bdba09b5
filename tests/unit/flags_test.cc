// The agent's flag table (agent/flags.h): defaults are the option structs'
// own, every flag sets its field, bad values are refused naming the flag,
// and --check-config and --help walk the same table.
#include "flags.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "fixtures/sandbox.h"

namespace aimesh {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
using Env = std::map<std::string, std::string>;

ParsedFlags parse(std::vector<std::string> args, Env env = {}) {
  args.insert(args.begin(), "aimesh-agent");
  std::vector<const char*> argv;
  for (auto& a : args) argv.push_back(a.c_str());
  return parseAgentFlags(static_cast<int>(argv.size()), argv.data(), [&env](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  });
}

// Parses, failing the test (with CLI11's message) if the flags are refused.
AgentFlags flagsOf(std::vector<std::string> args, Env env = {}) {
  auto p = parse(std::move(args), std::move(env));
  EXPECT_TRUE(p.flags) << "exit " << p.exitCode << ": " << p.err;
  return p.flags ? *p.flags : AgentFlags{};
}

json checkConfig(const AgentFlags& f) { return json::parse(checkConfigText(f, 4)); }

const FlagSpec* spec(const std::string& name) {
  for (auto& s : agentFlagTable())
    if (s.name == name) return &s;
  return nullptr;
}

TEST(AgentFlags, DefaultsAreTheOptionStructsOwn) {
  AgentFlags f = flagsOf({});
  const AgentOptions& a = f.agent;
  const AgentOptions defaults;
  EXPECT_EQ(a.cgroup, defaults.cgroup);
  EXPECT_EQ(a.stateFile, defaults.stateFile);
  EXPECT_EQ(a.metricsAddr, defaults.metricsAddr);
  EXPECT_EQ(a.apiSocket, defaults.apiSocket);
  EXPECT_EQ(a.pinDir, DatapathOptions{}.pinDir);
  EXPECT_EQ(a.resync, defaults.resync);
  EXPECT_EQ(a.telemetry, DatapathOptions{}.telemetry);
  EXPECT_TRUE(a.tcInterfaces.empty());
  // The default flow timeouts are long enough not to shorten the sweep.
  EXPECT_EQ(a.ctSweepInterval, defaults.ctSweepInterval);

  // Balancer feedback and TC flow timeouts: abi.h's defaults.
  EXPECT_EQ(a.tuning.ewmaTauNs, AIMESH_DEFAULT_EWMA_TAU_NS);
  EXPECT_EQ(a.tuning.penaltyHalfLifeNs, AIMESH_DEFAULT_PENALTY_HALF_LIFE_NS);
  EXPECT_EQ(a.tuning.ejectBaseNs, AIMESH_DEFAULT_EJECT_BASE_NS);
  EXPECT_EQ(a.tuning.ejectMaxNs, AIMESH_DEFAULT_EJECT_MAX_NS);
  EXPECT_EQ(a.tuning.penaltyPerFailure, static_cast<uint32_t>(AIMESH_DEFAULT_PENALTY_PER_FAILURE));
  EXPECT_EQ(a.tuning.ejectAfter, static_cast<uint32_t>(AIMESH_DEFAULT_EJECT_AFTER));
  EXPECT_EQ(a.tuning.ctTcpTimeoutNs, AIMESH_CT_TCP_TIMEOUT_NS);
  EXPECT_EQ(a.tuning.ctUdpTimeoutNs, AIMESH_CT_UDP_TIMEOUT_NS);
  EXPECT_EQ(a.tuning.ctClosingTimeoutNs, AIMESH_CT_CLOSING_TIMEOUT_NS);

  // Map sizes: the compiled-in AIMESH_MAX_*.
  EXPECT_EQ(a.limits.services, MapLimits{}.services);
  EXPECT_EQ(a.limits.backends, MapLimits{}.backends);
  EXPECT_EQ(a.limits.flows, MapLimits{}.flows);

  // The scraper's, the metrics listener's, the Kubernetes source's and the
  // lifecycle's own defaults.
  EXPECT_EQ(a.scrapeInterval, ModelScraper::Options{}.interval);
  EXPECT_EQ(a.scrapeTimeout, ModelScraper::Options{}.timeout);
  EXPECT_EQ(a.scrapeNetns, ModelScraper::Options{}.netns);
  EXPECT_EQ(a.http.maxConnections, HttpServerOptions::kMaxConnections);
  EXPECT_EQ(a.http.requestTimeout, HttpServerOptions::kRequestTimeout);
  const KubeSourceOptions kube;
  EXPECT_EQ(a.kubeOptions.serviceSelector, kube.serviceSelector);
  EXPECT_EQ(a.kubeOptions.watchTimeout, kube.watchTimeout);
  EXPECT_EQ(a.kubeOptions.backoffMax, kube.backoffMax);
  EXPECT_EQ(a.kubeOptions.nodeName, kube.nodeName);
  EXPECT_EQ(a.kubeOptions.daemonSetNamespace, kube.daemonSetNamespace);
  EXPECT_EQ(a.kubeOptions.daemonSetName, kube.daemonSetName);
  EXPECT_EQ(a.lifecycle.enabled, LifecycleOptions{}.enabled);
  EXPECT_EQ(a.lifecycle.netnsDir, LifecycleOptions{}.netnsDir);
  EXPECT_FALSE(a.kube);

  const AgentFlags process;
  EXPECT_EQ(f.bpffs, process.bpffs);
  EXPECT_EQ(f.logLevel, process.logLevel);
  EXPECT_FALSE(f.kubernetes);
  EXPECT_EQ(f.kubeconfig, "");
  EXPECT_EQ(f.kubeContext, "");
  EXPECT_FALSE(f.cleanup);
  EXPECT_FALSE(f.checkConfig);
}

// --check-config prints the defaults in the flags' units, from the same
// fields: no second copy of any default.
TEST(AgentFlags, CheckConfigPrintsTheDefaultsInTheFlagsUnits) {
  json j = checkConfig(flagsOf({}));
  EXPECT_DOUBLE_EQ(j.at("latency_decay_seconds").get<double>(), AIMESH_DEFAULT_EWMA_TAU_NS / 1e9);
  EXPECT_DOUBLE_EQ(j.at("eject_max_seconds").get<double>(), AIMESH_DEFAULT_EJECT_MAX_NS / 1e9);
  EXPECT_DOUBLE_EQ(j.at("ct_udp_timeout_seconds").get<double>(), AIMESH_CT_UDP_TIMEOUT_NS / 1e9);
  EXPECT_EQ(j.at("eject_after"), AIMESH_DEFAULT_EJECT_AFTER);
  EXPECT_EQ(j.at("resync_seconds"), std::chrono::duration_cast<std::chrono::seconds>(AgentOptions{}.resync).count());
  EXPECT_EQ(j.at("metrics_request_timeout_ms"), HttpServerOptions::kRequestTimeout.count());
  EXPECT_EQ(j.at("kubernetes_watch_timeout_seconds"), KubeSourceOptions{}.watchTimeout.count());
  EXPECT_EQ(j.at("kubernetes_backoff_max_ms"), KubeSourceOptions{}.backoffMax.count());
  EXPECT_EQ(j.at("scrape_interval_ms"), ModelScraper::Options{}.interval.count());
  EXPECT_EQ(j.at("max_flows"), MapLimits{}.flows);
  EXPECT_EQ(j.at("pin_dir"), DatapathOptions{}.pinDir);
  EXPECT_EQ(j.at("bpffs"), AgentFlags{}.bpffs);
  EXPECT_EQ(j.at("tc_interfaces"), json::array());
  EXPECT_EQ(j.at("map_memory_bytes"), mapMemoryBytes(MapLimits{}, 4));
  EXPECT_EQ(j.at("histogram_bytes_per_endpoint"), histogramBytes(1));
}

// Every setting in the table is printed under its flag's name ('_' for
// '-'), and nothing else but the derived map_memory_bytes; the actions are
// not settings.
TEST(AgentFlags, CheckConfigListsEveryFlagInTheTable) {
  json j = checkConfig(flagsOf({}));
  std::set<std::string> want{"map_memory_bytes", "histogram_bytes_per_endpoint"}, got, actions;
  for (auto& s : agentFlagTable()) {
    std::string key = s.name.substr(2);
    std::replace(key.begin(), key.end(), '-', '_');
    EXPECT_EQ(s.key(), key);
    if (s.isSetting())
      want.insert(key);
    else
      actions.insert(s.name);
  }
  for (auto& [k, v] : j.items()) got.insert(k);
  EXPECT_EQ(got, want);
  EXPECT_EQ(actions, (std::set<std::string>{"--cleanup", "--config", "--check-config"}));
  EXPECT_GE(want.size(), 39u);
}

TEST(AgentFlags, FlagNamesAreUniqueAndConstraintsNameFlagsOfTheTable) {
  std::set<std::string> names;
  for (auto& s : agentFlagTable()) {
    EXPECT_TRUE(names.insert(s.name).second) << s.name << " twice";
    EXPECT_EQ(s.name.rfind("--", 0), 0u) << s.name;
    EXPECT_FALSE(s.help.empty()) << s.name;
  }
  for (auto& s : agentFlagTable()) {
    for (auto& x : s.excludes) EXPECT_TRUE(names.count(x)) << s.name << " excludes " << x;
    EXPECT_TRUE(s.needs.empty() || names.count(s.needs)) << s.name << " needs " << s.needs;
  }
}

// --help lists every flag with its help text, and shows each setting's
// default as --check-config prints it.
TEST(AgentFlags, HelpShowsEveryFlagAndTheDefaultsOfTheFields) {
  auto p = parse({"--help"});
  ASSERT_FALSE(p.flags);
  EXPECT_EQ(p.exitCode, 0);
  EXPECT_EQ(p.err, "");
  json defaults = checkConfig(flagsOf({}));
  std::map<std::string, std::string> lineOf;  // "--eject-after" -> its first help line
  std::istringstream lines(p.out);
  for (std::string l; std::getline(lines, l);)
    if (l.rfind("  --", 0) == 0) lineOf[l.substr(2, l.find_first_of(" =", 2) - 2)] = l;
  for (auto& s : agentFlagTable()) {
    SCOPED_TRACE(s.name);
    EXPECT_NE(p.out.find(s.help), std::string::npos);
    ASSERT_TRUE(lineOf.count(s.name));
    if (!s.isSetting()) continue;
    const json& v = defaults.at(s.key());
    if (s.name == "--kubernetes") continue;  // a switch: no value to show
    std::ostringstream shown;                // as CLI11 shows it: streamed, bools as 1/0
    if (v.is_boolean())
      shown << (v.get<bool>() ? 1 : 0);
    else if (v.is_number_float())
      shown << v.get<double>();
    else if (v.is_string())
      shown << v.get<std::string>();
    else if (v.is_number())
      shown << v.dump();
    // Nothing shown for an empty default, else "=VALUE" after the type.
    std::string want = shown.str().empty() ? "=" : "=" + shown.str();
    EXPECT_EQ(lineOf[s.name].find(want) != std::string::npos, !shown.str().empty()) << lineOf[s.name];
  }
}

struct SetCase {
  std::vector<std::string> args;
  std::function<void(const AgentFlags&)> check;
};

const std::vector<SetCase>& setCases() {
  static const std::vector<SetCase> cases = {
      {{"--cgroup", "/cg"}, [](auto& f) { EXPECT_EQ(f.agent.cgroup, "/cg"); }},
      {{"--state-file", "/s.yaml"}, [](auto& f) { EXPECT_EQ(f.agent.stateFile, "/s.yaml"); }},
      {{"--metrics-addr", "127.0.0.1:1"}, [](auto& f) { EXPECT_EQ(f.agent.metricsAddr, "127.0.0.1:1"); }},
      {{"--metrics-max-connections", "7"}, [](auto& f) { EXPECT_EQ(f.agent.http.maxConnections, 7u); }},
      {{"--histogram-buckets-per-octave", "8"}, [](auto& f) { EXPECT_EQ(f.agent.histogramBucketsPerOctave, 8); }},
      {{"--client-top-k", "5"}, [](auto& f) { EXPECT_EQ(f.agent.clientTopK, 5u); }},
      {{"--metrics-idle-series", "true"}, [](auto& f) { EXPECT_TRUE(f.agent.metricsIdleSeries); }},
      {{"--metrics-request-timeout-ms", "1234"}, [](auto& f) { EXPECT_EQ(f.agent.http.requestTimeout, 1234ms); }},
      {{"--api-socket", "/a.sock"}, [](auto& f) { EXPECT_EQ(f.agent.apiSocket, "/a.sock"); }},
      {{"--pin-dir", "/p"}, [](auto& f) { EXPECT_EQ(f.agent.pinDir, "/p"); }},
      {{"--bpffs", "/b"}, [](auto& f) { EXPECT_EQ(f.bpffs, "/b"); }},
      {{"--resync-seconds", "9"}, [](auto& f) { EXPECT_EQ(f.agent.resync, 9s); }},
      {{"--log-level", "debug"}, [](auto& f) { EXPECT_EQ(f.logLevel, "debug"); }},
      {{"--telemetry", "false"}, [](auto& f) { EXPECT_FALSE(f.agent.telemetry); }},
      {{"--connection-lifecycle", "false"}, [](auto& f) { EXPECT_FALSE(f.agent.lifecycle.enabled); }},
      {{"--netns-dir", "/n"}, [](auto& f) { EXPECT_EQ(f.agent.lifecycle.netnsDir, "/n"); }},
      {{"--tc-interfaces", "a,b", "--tc-interfaces", "c"},
       [](auto& f) { EXPECT_EQ(f.agent.tcInterfaces, (std::vector<std::string>{"a", "b", "c"})); }},
      // A flow timeout under twice the sweep interval shortens the sweep to half of it.
      {{"--ct-tcp-timeout-seconds", "1.5"},
       [](auto& f) {
         EXPECT_EQ(f.agent.tuning.ctTcpTimeoutNs, 1'500'000'000u);
         EXPECT_EQ(f.agent.ctSweepInterval, 750ms);
       }},
      {{"--ct-udp-timeout-seconds", "2.5"},
       [](auto& f) {
         EXPECT_EQ(f.agent.tuning.ctUdpTimeoutNs, 2'500'000'000u);
         EXPECT_EQ(f.agent.ctSweepInterval, 1250ms);
       }},
      {{"--ct-closing-timeout-seconds", "0.5"},
       [](auto& f) {
         EXPECT_EQ(f.agent.tuning.ctClosingTimeoutNs, 500'000'000u);
         EXPECT_EQ(f.agent.ctSweepInterval, 250ms);
       }},
      {{"--cleanup"}, [](auto& f) { EXPECT_TRUE(f.cleanup); }},
      {{"--kubernetes"}, [](auto& f) { EXPECT_TRUE(f.kubernetes); }},
      {{"--kubeconfig", "/k"}, [](auto& f) { EXPECT_EQ(f.kubeconfig, "/k"); }},
      {{"--kubernetes-context", "ctx", "--kubeconfig", "/k"}, [](auto& f) { EXPECT_EQ(f.kubeContext, "ctx"); }},
      {{"--kubernetes-selector", "app=x"}, [](auto& f) { EXPECT_EQ(f.agent.kubeOptions.serviceSelector, "app=x"); }},
      {{"--default-algorithm", "least_conn"},
       [](auto& f) { EXPECT_EQ(f.agent.kubeOptions.defaultAlgorithm, Algorithm::kLeastConn); }},
      {{"--kubernetes-watch-timeout-seconds", "5"}, [](auto& f) { EXPECT_EQ(f.agent.kubeOptions.watchTimeout, 5s); }},
      {{"--kubernetes-backoff-max-ms", "100"}, [](auto& f) { EXPECT_EQ(f.agent.kubeOptions.backoffMax, 100ms); }},
      {{"--node-name", "n1"}, [](auto& f) { EXPECT_EQ(f.agent.kubeOptions.nodeName, "n1"); }},
      {{"--pod-cgroup-root", "/pods"}, [](auto& f) { EXPECT_EQ(f.agent.podCgroupRoot, "/pods"); }},
      {{"--daemonset", "ns/ds", "--kubernetes"},
       [](auto& f) {
         EXPECT_EQ(f.agent.daemonSet, "ns/ds");
         EXPECT_EQ(f.agent.kubeOptions.daemonSetNamespace, "ns");
         EXPECT_EQ(f.agent.kubeOptions.daemonSetName, "ds");
       }},
      {{"--check-config"}, [](auto& f) { EXPECT_TRUE(f.checkConfig); }},
      {{"--latency-decay-seconds", "0.25"}, [](auto& f) { EXPECT_EQ(f.agent.tuning.ewmaTauNs, 250'000'000u); }},
      {{"--penalty-per-failure", "9"}, [](auto& f) { EXPECT_EQ(f.agent.tuning.penaltyPerFailure, 9u); }},
      {{"--penalty-half-life-seconds", "3"},
       [](auto& f) { EXPECT_EQ(f.agent.tuning.penaltyHalfLifeNs, 3'000'000'000u); }},
      {{"--eject-after", "0"}, [](auto& f) { EXPECT_EQ(f.agent.tuning.ejectAfter, 0u); }},
      {{"--eject-base-seconds", "2"}, [](auto& f) { EXPECT_EQ(f.agent.tuning.ejectBaseNs, 2'000'000'000u); }},
      // Seconds to the nearest nanosecond (67.791638673 * 1e9 is just below 67791638673).
      {{"--eject-max-seconds", "67.791638673"},
       [](auto& f) { EXPECT_EQ(f.agent.tuning.ejectMaxNs, 67'791'638'673u); }},
      {{"--scrape-interval-ms", "60"}, [](auto& f) { EXPECT_EQ(f.agent.scrapeInterval, 60ms); }},
      {{"--scrape-timeout-ms", "20"}, [](auto& f) { EXPECT_EQ(f.agent.scrapeTimeout, 20ms); }},
      {{"--scrape-netns", "ns1"}, [](auto& f) { EXPECT_EQ(f.agent.scrapeNetns, "ns1"); }},
      {{"--max-services", "32"}, [](auto& f) { EXPECT_EQ(f.agent.limits.services, 32u); }},
      {{"--max-backends", "64"}, [](auto& f) { EXPECT_EQ(f.agent.limits.backends, 64u); }},
      {{"--max-flows", "2048"}, [](auto& f) { EXPECT_EQ(f.agent.limits.flows, 2048u); }},
  };
  return cases;
}

TEST(AgentFlags, EachFlagSetsItsField) {
  for (auto& c : setCases()) {
    SCOPED_TRACE(c.args[0]);
    auto p = parse(c.args);
    ASSERT_TRUE(p.flags) << p.err;
    c.check(*p.flags);
  }
}

// A flag added to the table without a case above fails here.
TEST(AgentFlags, EveryFlagHasACase) {
  std::set<std::string> covered{"--config"};  // ConfigFileSetsTheSameFlags
  for (auto& c : setCases())
    for (auto& a : c.args)
      if (a.rfind("--", 0) == 0) covered.insert(a);
  std::set<std::string> table;
  for (auto& s : agentFlagTable()) table.insert(s.name);
  EXPECT_EQ(covered, table);
}

// What --check-config prints, written back as a --config file, gives the
// same settings: the printed values are in the flags' own units and names.
TEST(AgentFlags, CheckConfigOutputReadsBackAsAConfigFile) {
  // Every case at once, with --kubeconfig (given with --kubernetes-context)
  // as the source; the actions are not settings.
  const std::set<std::string> skip{"--kubernetes", "--kubeconfig", "--state-file", "--cleanup", "--check-config"};
  std::vector<std::string> args;
  for (auto& c : setCases())
    if (!skip.count(c.args[0]))
      for (auto& a : c.args)
        if (a != "--kubernetes") args.push_back(a);
  json first = checkConfig(flagsOf(args));
  EXPECT_EQ(first.at("kubeconfig"), "/k");
  EXPECT_EQ(first.at("daemonset"), "ns/ds");
  EXPECT_EQ(first.at("eject_max_seconds"), 67.791638673);

  // The settings that differ from the defaults, as agent.conf lines (a
  // line for a default would count as given: "" for --state-file would
  // exclude --kubeconfig).
  json defaults = checkConfig(flagsOf({}));
  std::string conf;
  for (auto& [k, v] : first.items()) {
    if (k == "map_memory_bytes" || defaults.at(k) == v) continue;
    std::string name = k;
    std::replace(name.begin(), name.end(), '_', '-');
    conf += name + " = " + v.dump() + "\n";
  }
  testing::ScratchDir dir;
  auto p = parse({"--config", dir.write("agent.conf", conf)});
  ASSERT_TRUE(p.flags) << p.err << "\n" << conf;
  EXPECT_EQ(checkConfig(*p.flags), first) << conf;
}

TEST(AgentFlags, ConfigFileSetsTheSameFlagsAndTheCommandLineWins) {
  testing::ScratchDir dir;
  std::string ok =
      dir.write("ok.conf", "kubernetes = true\neject-max-seconds = 12.5\ntc-interfaces = [\"eth0\",\"eth1\"]\n");
  auto fromFile = parse({"--config", ok});
  auto overridden = parse({"--config", ok, "--eject-max-seconds", "20"});
  auto typo = parse({"--config", dir.write("typo.conf", "kubernetes = true\neject-afterr = 3\n")});
  auto missing = parse({"--config", dir.path() + "/missing.conf"});

  ASSERT_TRUE(fromFile.flags) << fromFile.err;
  EXPECT_TRUE(fromFile.flags->kubernetes);
  EXPECT_EQ(fromFile.flags->agent.tuning.ejectMaxNs, 12'500'000'000u);
  EXPECT_EQ(fromFile.flags->agent.tcInterfaces, (std::vector<std::string>{"eth0", "eth1"}));
  ASSERT_TRUE(overridden.flags) << overridden.err;
  EXPECT_EQ(overridden.flags->agent.tuning.ejectMaxNs, 20'000'000'000u);
  // A misspelt key is refused by name, not ignored.
  EXPECT_FALSE(typo.flags);
  EXPECT_NE(typo.exitCode, 0);
  EXPECT_NE(typo.err.find("eject-afterr"), std::string::npos) << typo.err;
  EXPECT_FALSE(missing.flags);
  EXPECT_NE(missing.err.find("missing.conf"), std::string::npos) << missing.err;
}

// $NODE_NAME is the default of --node-name; --config and the flag override it.
TEST(AgentFlags, NodeNameDefaultsToTheEnvironment) {
  EXPECT_EQ(flagsOf({}, {{"NODE_NAME", "env-node"}}).agent.kubeOptions.nodeName, "env-node");
  EXPECT_EQ(flagsOf({"--node-name", "flag-node"}, {{"NODE_NAME", "env-node"}}).agent.kubeOptions.nodeName,
            "flag-node");
  testing::ScratchDir dir;
  auto p = parse({"--config", dir.write("n.conf", "node-name = \"file-node\"\n")}, {{"NODE_NAME", "env-node"}});
  ASSERT_TRUE(p.flags) << p.err;
  EXPECT_EQ(p.flags->agent.kubeOptions.nodeName, "file-node");
  EXPECT_EQ(spec("--node-name")->env, "NODE_NAME");
  // Other variables are not read.
  EXPECT_EQ(flagsOf({}, {{"BPFFS", "/x"}, {"LOG_LEVEL", "trace"}}).bpffs, AgentFlags{}.bpffs);
}

struct BadCase {
  std::vector<std::string> args;
  std::string named;  // the error names this
};

TEST(AgentFlags, BadValuesAreRefusedNamingTheFlag) {
  std::vector<BadCase> cases = {
      {{"--metrics-max-connections", "0"}, "--metrics-max-connections"},
      {{"--histogram-buckets-per-octave", "3"}, "--histogram-buckets-per-octave"},
      {{"--client-top-k", "10001"}, "--client-top-k"},
      {{"--metrics-idle-series", "some"}, "--metrics-idle-series"},
      {{"--metrics-max-connections", "10001"}, "--metrics-max-connections"},
      {{"--metrics-request-timeout-ms", "99"}, "--metrics-request-timeout-ms"},
      {{"--resync-seconds", "0"}, "--resync-seconds"},
      {{"--resync-seconds", "1.5"}, "--resync-seconds"},
      {{"--resync-seconds", "99999999999"}, "--resync-seconds"},  // does not fit the flag's int
      {{"--log-level", "verbose"}, "--log-level"},
      {{"--default-algorithm", "round_robin"}, "--default-algorithm"},
      {{"--telemetry", "maybe"}, "--telemetry"},
      {{"--ct-tcp-timeout-seconds", "0"}, "--ct-tcp-timeout-seconds"},
      {{"--ct-udp-timeout-seconds", "86401"}, "--ct-udp-timeout-seconds"},
      {{"--ct-closing-timeout-seconds", "x"}, "--ct-closing-timeout-seconds"},
      {{"--kubernetes-watch-timeout-seconds", "3601"}, "--kubernetes-watch-timeout-seconds"},
      {{"--kubernetes-backoff-max-ms", "9"}, "--kubernetes-backoff-max-ms"},
      {{"--kubernetes", "--daemonset", "nos"}, "--daemonset"},
      {{"--kubernetes", "--daemonset", "/x"}, "--daemonset"},
      {{"--kubernetes", "--daemonset", "a/b/c"}, "--daemonset"},
      {{"--latency-decay-seconds", "0"}, "--latency-decay-seconds"},
      {{"--penalty-per-failure", "-1"}, "--penalty-per-failure"},
      {{"--penalty-half-life-seconds", "3601"}, "--penalty-half-life-seconds"},
      {{"--eject-after", "1001"}, "--eject-after"},
      {{"--eject-base-seconds", "0"}, "--eject-base-seconds"},
      {{"--eject-max-seconds", "86401"}, "--eject-max-seconds"},
      {{"--scrape-interval-ms", "49"}, "--scrape-interval-ms"},
      {{"--scrape-timeout-ms", "9"}, "--scrape-timeout-ms"},
      {{"--max-services", "15"}, "--max-services"},
      {{"--max-backends", "1048577"}, "--max-backends"},
      {{"--max-flows", "1023"}, "--max-flows"},
      {{"--eject-max-seconds", "1", "--eject-max-seconds", "2"}, "--eject-max-seconds"},
      {{"--metrics-addr"}, "--metrics-addr"},
      {{"--bogus"}, "--bogus"},
      {{"--kubernetes", "--kubeconfig", "/k"}, "--kubeconfig"},
      {{"--state-file", "/s", "--kubernetes"}, "--state-file"},
      {{"--kubernetes-context", "c"}, "--kubeconfig"},
  };
  for (auto& c : cases) {
    SCOPED_TRACE(c.args[0] + (c.args.size() > 1 ? " " + c.args[1] : ""));
    auto p = parse(c.args);
    EXPECT_FALSE(p.flags);
    EXPECT_NE(p.exitCode, 0);
    EXPECT_EQ(p.out, "");
    EXPECT_NE(p.err.find(c.named), std::string::npos) << p.err;
  }
}

// The one combination CLI11 cannot say: --daemonset is only watched through
// a Kubernetes source.
TEST(AgentFlags, DaemonSetNeedsAKubernetesSource) {
  auto p = parse({"--daemonset", "ns/ds"});
  EXPECT_FALSE(p.flags);
  EXPECT_EQ(p.exitCode, 2);
  EXPECT_EQ(p.err, "--daemonset needs --kubernetes or --kubeconfig\n");
  EXPECT_TRUE(parse({"--daemonset", "ns/ds", "--kubeconfig", "/k"}).flags);
}

}  // namespace
}  // namespace aimesh
