// scale: what the agent costs at the size of a real cluster (issue 17). For
// each service count N (default 1,000 and 10,000), a state file of N
// services with --endpoints endpoints each; the agent starts on it, and the
// program measures:
//   - start to ready: from exec to the API saying ready (the state applied);
//   - memory: the agent's VmRSS and RssAnon once ready, and after one change;
//   - one change: a client in the sandbox connects to service 0's address in
//     a loop while the state file is rewritten with one more endpoint for
//     that service; the time from the rename to the first connection
//     answered by the new endpoint;
//   - one /metrics scrape: bytes, series (sample lines) and seconds, after a
//     client made kConnectsPerBusy connections to each of the first
//     kBusyServices services, whose endpoints are the four name servers: 100
//     endpoints carried traffic, as the target asks.
// Then the same cluster from the Kubernetes source (--kubernetes, on by
// default): Services and EndpointSlices in a fake API server, start to ready,
// RSS, and one watch event (the probe's EndpointSlice gains the new endpoint)
// to the first connection the new endpoint answers; then four more events
// (the median is printed), each replacing the probe's endpoint with another.
// Then (--pool-pods, 10,000 by default) the same cluster with an
// InferencePool behind the probe and that many pods: the agent watches the
// pods of the pool's namespace (every node's) while a pool exists; its RSS,
// start to ready, and a member pod's ready event to the first connection
// the member answers.
// Only the probe's and the busy services' endpoints exist (name servers in
// the backend namespace); the others are addresses nothing connects to. See
// docs/benchmarks.md.
//
// Everything runs in a sandbox of its own (tests/fixtures/sandbox.h), removed
// at exit, on error and on SIGINT/SIGTERM.
#include <arpa/inet.h>
#include <httplib.h>
#include <time.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fmt/format.h>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "fixtures/fake_apiserver.h"
#include "fixtures/net_client.h"
#include "fixtures/sandbox.h"
#include "support/bench_run.h"

namespace aimesh {
namespace {

using json = nlohmann::json;
using testing::AgentProcess;
using testing::Child;
using testing::Sandbox;
using Clock = std::chrono::steady_clock;

constexpr const char* kProbeVip = "10.96.0.10";
constexpr uint16_t kPort = 8000;
// Services 1..kBusyServices have the four name servers as endpoints, and get
// connections before the scrape (4 x 25 = 100 endpoints with traffic).
constexpr int kBusyServices = 25;
constexpr int kConnectsPerBusy = 24;
const char* const kServers[] = {"10.77.0.2", "10.77.0.3", "10.77.0.4", "10.77.0.5"};

std::string vipOf(int i) { return fmt::format("10.100.{}.{}", i / 250, i % 250 + 1); }

// The addresses of service i's endpoints: the four servers for the busy
// services, else addresses nothing answers on (10.120.0.0/14: distinct for
// up to 262,144 endpoints).
std::vector<std::string> endpointsOf(int i, int endpoints) {
  std::vector<std::string> out;
  if (i <= kBusyServices) return {kServers[0], kServers[1], kServers[2], kServers[3]};
  for (int e = 0; e < endpoints; ++e) {
    int n = i * endpoints + e;
    out.push_back(fmt::format("10.{}.{}.{}", 120 + n / 65536, (n / 256) % 256, n % 256));
  }
  return out;
}

// The state file: service 0 ("probe") with its real endpoints, then N - 1
// services of `endpoints` addresses each that nothing connects to.
std::string stateYaml(int services, int endpoints, bool withNewEndpoint) {
  std::string y = "services:\n  - name: probe\n    namespace: bench\n    vips: [";
  y += kProbeVip;
  y += "]\n    ports: [{port: 8000}]\n    endpoints:\n      - {address: 10.77.0.2, port: 8000}\n";
  if (withNewEndpoint) y += "      - {address: 10.77.0.3, port: 8000}\n";
  y.reserve(static_cast<size_t>(services) * (130 + 40 * endpoints));
  for (int i = 1; i < services; ++i) {
    y += fmt::format("  - name: svc-{}\n    namespace: bench\n    vips: [{}]\n    ports: [{{port: 8000}}]\n"
                     "    endpoints:\n",
                     i, vipOf(i));
    for (const std::string& a : endpointsOf(i, endpoints)) y += fmt::format("      - {{address: {}, port: 8000}}\n", a);
  }
  return y;
}

// "VmRSS" or "RssAnon" of a process, in MiB; -1 if unreadable.
double statusMiB(pid_t pid, const std::string& field) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(f, line);) {
    if (line.rfind(field + ":", 0) != 0) continue;
    std::istringstream in(line.substr(field.size() + 1));
    double kb = -1;
    in >> kb;
    return kb / 1024;
  }
  return -1;
}

uint64_t monoNs() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// In the sandbox: rewrite the state file with the new endpoint, then connect
// to the probe service until the new endpoint answers. Milliseconds from the
// rename to that answer; -1 if it did not within 30 s.
double oneChangeMs(const Sandbox& sb, const std::string& stateFile, const std::string& changed) {
  std::string out = testing::runIn(sb.cgroup().path(), sb.client().name(), [&](int fd) {
    uint64_t t0 = monoNs();
    testing::writeFile(stateFile, changed);  // write + rename, as an editor or a config tool does
    uint64_t t1 = 0;
    while (monoNs() - t0 < 30'000'000'000ull) {
      if (testing::tcpAsk(kProbeVip, kPort, 500).name == "new") {
        t1 = monoNs();
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));  // leave the CPUs to the agent
    }
    std::string r = t1 ? std::to_string((t1 - t0) / 1e6) : "-1";
    return ::write(fd, r.data(), r.size()) == static_cast<ssize_t>(r.size()) ? 0 : 1;
  });
  return out.empty() ? -1 : std::stod(out);
}

// In the sandbox: kConnectsPerBusy connections to each busy service; how
// many were answered.
int busyTraffic(const Sandbox& sb, int services) {
  std::string out = testing::runIn(sb.cgroup().path(), sb.client().name(), [&](int fd) {
    int answered = 0;
    for (int i = 1; i <= std::min(kBusyServices, services - 1); ++i)
      for (int c = 0; c < kConnectsPerBusy; ++c) answered += !testing::tcpAsk(vipOf(i), kPort, 500).name.empty();
    std::string r = std::to_string(answered);
    return ::write(fd, r.data(), r.size()) == static_cast<ssize_t>(r.size()) ? 0 : 1;
  });
  return out.empty() ? -1 : std::stoi(out);
}

struct Scrape {
  double bytes = 0, seconds = 0;
  long series = 0;
};

Scrape scrape(const AgentProcess& agent) {
  std::string addr = agent.metricsUrlPath();
  auto colon = addr.rfind(':');
  if (colon == std::string::npos) throw std::runtime_error("agent status has no metrics address");
  httplib::Client c(addr.substr(0, colon), std::stoi(addr.substr(colon + 1)));
  c.set_read_timeout(120, 0);
  auto t0 = Clock::now();
  auto res = c.Get("/metrics");
  Scrape s;
  s.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  if (!res || res->status != 200) throw std::runtime_error("GET /metrics failed");
  s.bytes = static_cast<double>(res->body.size());
  std::istringstream in(res->body);
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && line[0] != '#') ++s.series;
  return s;
}

json measureOne(const Sandbox& sb, const std::string& dir, int services, int endpoints, const std::string& keepLogs,
                const std::string& logLevel) {
  std::string stateFile = dir + "/state-" + std::to_string(services) + ".yaml";
  testing::writeFile(stateFile, stateYaml(services, endpoints, false));
  std::string changed = stateYaml(services, endpoints, true);
  std::string work = dir + "/agent-" + std::to_string(services);
  testing::sh("mkdir -p " + work);
  uint32_t maxServices = 16, maxBackends = 16;
  while (maxServices < static_cast<uint32_t>(services) + 16) maxServices *= 2;
  while (maxBackends < static_cast<uint32_t>(services * endpoints) + 16) maxBackends *= 2;
  AgentProcess agent(sb.cgroup().path(), stateFile, work,
                     {"--log-level", logLevel, "--max-services", std::to_string(maxServices), "--max-backends",
                      std::to_string(maxBackends)});
  auto t0 = Clock::now();
  agent.start(true);  // polls the API every 50 ms
  double readySeconds = std::chrono::duration<double>(Clock::now() - t0).count();
  testing::checkInterrupted();
  double rss = statusMiB(agent.pid(), "VmRSS"), anon = statusMiB(agent.pid(), "RssAnon");
  // A few seconds on: the agent's loops (lifecycle passes, the resync) have
  // run over the whole state by then.
  std::this_thread::sleep_for(std::chrono::seconds(3));
  double rssSettled = statusMiB(agent.pid(), "VmRSS");
  int answered = busyTraffic(sb, services);
  Scrape s = scrape(agent);
  testing::checkInterrupted();
  double changeMs = oneChangeMs(sb, stateFile, changed);
  // After the change settled (the agent returns the parse's heap once the
  // update is applied): the steady RSS, not the parse's peak.
  std::this_thread::sleep_for(std::chrono::seconds(1));
  double rssAfter = statusMiB(agent.pid(), "VmRSS");
  double rssFile = statusMiB(agent.pid(), "RssFile"), rssShmem = statusMiB(agent.pid(), "RssShmem");
  fmt::print("{:>8} {:>9} {:>12.2f} {:>9.1f} {:>9.1f} {:>14.0f} {:>11.1f} {:>10.2f} {:>9}\n", services,
             services * endpoints, readySeconds, rss, anon, changeMs, s.bytes / 1e6, s.seconds, s.series);
  std::fflush(stdout);
  if (!keepLogs.empty())
    testing::writeFile(fmt::format("{}/agent-{}.log", keepLogs, services), testing::readFile(work + "/agent.log"));
  return json{{"services", services},
              {"endpoints", services * endpoints},
              {"start_to_ready_s", readySeconds},
              {"rss_mib", rss},
              {"rss_anon_mib", anon},
              {"rss_settled_mib", rssSettled},
              {"rss_after_change_mib", rssAfter},
              {"rss_file_mib", rssFile},
              {"rss_shmem_mib", rssShmem},
              {"one_change_file_ms", changeMs},
              {"metrics_bytes", s.bytes},
              {"metrics_seconds", s.seconds},
              {"metrics_series", s.series},
              {"busy_connections_answered", answered}};
}

// ---- the Kubernetes source --------------------------------------------------
// The same cluster as Services and EndpointSlices in a fake API server
// (tests/fixtures/fake_apiserver.h, plain HTTP on 127.0.0.1); the agent
// starts with --kubeconfig. One change: the probe's EndpointSlice gains the
// new endpoint (one watch event).

json kubeService(const std::string& name, const std::string& ip) {
  return json{{"metadata", {{"name", name}, {"namespace", "bench"}}},
              {"spec",
               {{"type", "ClusterIP"},
                {"clusterIP", ip},
                {"clusterIPs", {ip}},
                {"ports", {{{"name", "http"}, {"port", kPort}, {"protocol", "TCP"}, {"targetPort", kPort}}}}}}};
}

json kubeSlice(const std::string& svc, const std::vector<std::string>& addrs) {
  json eps = json::array();
  for (auto& a : addrs)
    eps.push_back({{"addresses", {a}}, {"conditions", {{"ready", true}, {"serving", true}, {"terminating", false}}}});
  return json{{"metadata", {{"name", svc + "-s1"}, {"namespace", "bench"}, {"labels", {{"kubernetes.io/service-name", svc}}}}},
              {"addressType", "IPv4"},
              {"ports", {{{"name", "http"}, {"port", kPort}, {"protocol", "TCP"}}}},
              {"endpoints", eps}};
}

double monoMs() { return static_cast<double>(monoNs()) / 1e6; }

// One watch event: ~300 ms after the client in the sandbox starts asking,
// `event` changes the fake API server (the probe's EndpointSlice, say);
// milliseconds from it to the first answer from `expect` (-1 if none
// within 30 s).
double kubeEventMs(const Sandbox& sb, const std::function<void()>& event, const std::string& expect) {
  double sentMs = 0;
  std::thread change([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    sentMs = monoMs();
    event();
  });
  std::string out = testing::runIn(sb.cgroup().path(), sb.client().name(), [&](int fd) {
    uint64_t start = monoNs();
    std::string r = "-1";
    while (monoNs() - start < 30'000'000'000ull)
      if (testing::tcpAsk(kProbeVip, kPort, 500).name == expect) {
        r = fmt::format("{:.3f}", monoMs());
        break;
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    return ::write(fd, r.data(), r.size()) == static_cast<ssize_t>(r.size()) ? 0 : 1;
  });
  change.join();
  double answeredMs = out.empty() ? -1 : std::stod(out);
  return answeredMs < 0 ? -1 : answeredMs - sentMs;
}

// The bench cluster in the fake API server: the probe (one endpoint, the
// name server "old") and services - 1 others.
void kubeCluster(testing::FakeApiServer& fake, int services, int endpoints) {
  fake.upsert(testing::Resource::kServices, kubeService("probe", kProbeVip));
  fake.upsert(testing::Resource::kEndpointSlices, kubeSlice("probe", {"10.77.0.2"}));
  for (int i = 1; i < services; ++i) {
    std::string name = "svc-" + std::to_string(i);
    fake.upsert(testing::Resource::kServices, kubeService(name, vipOf(i)));
    fake.upsert(testing::Resource::kEndpointSlices, kubeSlice(name, endpointsOf(i, endpoints)));
  }
}

// An agent on `fake`, started (ready) in `work`; its log copied to
// keepLogs/agent-<tag>.log at the end (and when the start fails).
struct KubeAgent {
  std::unique_ptr<AgentProcess> agent;
  double readySeconds = 0;
  std::function<void()> keepLog;
};
KubeAgent startKubeAgent(const Sandbox& sb, const std::string& work, const testing::FakeApiServer& fake,
                         uint32_t maxServices, uint32_t maxBackends, const std::string& logLevel,
                         const std::string& keepLogs, const std::string& tag) {
  testing::sh("mkdir -p " + work);
  testing::writeFile(work + "/kubeconfig",
                     "apiVersion: v1\nkind: Config\ncurrent-context: bench\nclusters: [{name: fake, cluster: {server: \"" +
                         fake.url() + "\"}}]\nusers: [{name: agent, user: {}}]\n"
                         "contexts: [{name: bench, context: {cluster: fake, user: agent}}]\n");
  KubeAgent k;
  k.agent = std::make_unique<AgentProcess>(
      sb.cgroup().path(), "", work,
      std::vector<std::string>{"--kubeconfig", work + "/kubeconfig", "--log-level", logLevel, "--max-services",
                               std::to_string(maxServices), "--max-backends", std::to_string(maxBackends)});
  k.keepLog = [=] {
    if (!keepLogs.empty())
      testing::writeFile(fmt::format("{}/agent-{}.log", keepLogs, tag), testing::readFile(work + "/agent.log"));
  };
  auto t0 = Clock::now();
  try {
    k.agent->start(true, std::chrono::seconds(120));
  } catch (...) {
    k.keepLog();
    throw;
  }
  k.readySeconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return k;
}

// Start to ready, RSS and one watch event's latency with the Kubernetes
// source at N services.
json measureKube(const Sandbox& sb, const std::string& dir, int services, int endpoints, uint32_t maxServices,
                 uint32_t maxBackends, const std::string& logLevel, const std::string& keepLogs) {
  testing::FakeApiServer fake;
  kubeCluster(fake, services, endpoints);
  KubeAgent k = startKubeAgent(sb, dir + "/agent-kube-" + std::to_string(services), fake, maxServices, maxBackends,
                               logLevel, keepLogs, "kube-" + std::to_string(services));
  AgentProcess& agent = *k.agent;
  auto keepLog = k.keepLog;
  double readySeconds = k.readySeconds;
  testing::checkInterrupted();
  double rss = statusMiB(agent.pid(), "VmRSS");
  // The first event after the start, then four more, each replacing the
  // probe's endpoints with one that was not in them (so its first answer
  // marks the change): the first one after a start pays for memory the
  // start's full apply returned to the kernel; the next ones are the steady
  // state of a cluster whose endpoints change.
  auto slice = [&](std::vector<std::string> addrs) {
    return [&fake, addrs] { fake.upsert(testing::Resource::kEndpointSlices, kubeSlice("probe", addrs)); };
  };
  double changeMs = kubeEventMs(sb, slice({"10.77.0.2", "10.77.0.3"}), "new");
  std::vector<double> next;
  const std::pair<const char*, const char*> steps[] = {
      {"10.77.0.4", "four"}, {"10.77.0.5", "five"}, {"10.77.0.2", "old"}, {"10.77.0.4", "four"}};
  for (auto& [addr, name] : steps) next.push_back(kubeEventMs(sb, slice({addr}), name));
  keepLog();
  std::sort(next.begin(), next.end());
  double nextMs = next[next.size() / 2];
  if (next.front() < 0) nextMs = -1;
  return json{{"kube_start_to_ready_s", readySeconds},
              {"kube_rss_mib", rss},
              {"one_change_kube_ms", changeMs},
              {"next_changes_kube_ms", nextMs}};
}

// A pod of the cluster for the InferencePool run: `app` labels it; ready.
json kubePod(const std::string& ns, const std::string& name, const std::string& ip, const std::string& app) {
  return json{{"metadata",
               {{"name", name},
                {"namespace", ns},
                {"uid", "uid-" + ns + "-" + name},
                {"labels", {{"app", app}, {"pod-template-hash", "7d9c5b6f8"}}}}},
              {"spec", {{"nodeName", "node-" + std::to_string(name.size() % 7)}}},
              {"status",
               {{"phase", "Running"},
                {"podIP", ip},
                {"podIPs", json::array({{{"ip", ip}}})},
                {"conditions", json::array({{{"type", "Ready"}, {"status", "True"}}})}}}};
}

// The same cluster with an InferencePool behind the probe (an HTTPRoute from
// the probe to it, one member pod: the name server "old") and `pods` pods in
// all (the rest are not members: a tenth in the pool's namespace, the others
// in 50 more): the agent then watches the pods of the pool's namespace, on
// every node. Start to ready, RSS, and one pod event (a second
// member turns ready) to the first connection it answers.
json measureKubePool(const Sandbox& sb, const std::string& dir, int services, int endpoints, int pods,
                     uint32_t maxServices, uint32_t maxBackends, const std::string& logLevel,
                     const std::string& keepLogs) {
  testing::FakeApiServer fake;
  kubeCluster(fake, services, endpoints);
  fake.upsert(testing::Resource::kInferencePools,
              json{{"metadata", {{"name", "probe-pool"}, {"namespace", "bench"}}},
                   {"spec",
                    {{"selector", {{"matchLabels", {{"app", "probe-pool"}}}}},
                     {"targetPorts", json::array({{{"number", kPort}}})},
                     {"endpointPickerRef", {{"name", "probe-epp"}, {"failureMode", "FailClose"}}}}}});
  fake.upsert(testing::Resource::kHttpRoutes,
              json{{"metadata", {{"name", "probe-route"}, {"namespace", "bench"}}},
                   {"spec",
                    {{"parentRefs", json::array({{{"group", ""}, {"kind", "Service"}, {"name", "probe"}}})},
                     {"rules", json::array({{{"backendRefs", json::array({{{"group", "inference.networking.k8s.io"},
                                                                          {"kind", "InferencePool"},
                                                                          {"name", "probe-pool"}}})}}})}}}});
  fake.upsert(testing::Resource::kPods, kubePod("bench", "member-0", "10.77.0.2", "probe-pool"));
  for (int i = 1; i < pods; ++i)
    fake.upsert(testing::Resource::kPods,
                kubePod(i % 10 == 0 ? "bench" : "ns-" + std::to_string(i % 50), "pod-" + std::to_string(i),
                        fmt::format("10.{}.{}.{}", 100 + i / 65536, (i / 256) % 256, i % 256),
                        "app-" + std::to_string(i % 1000)));
  KubeAgent k = startKubeAgent(sb, dir + "/agent-pool-" + std::to_string(services), fake, maxServices, maxBackends,
                               logLevel, keepLogs, "pool-" + std::to_string(services));
  testing::checkInterrupted();
  double rss = statusMiB(k.agent->pid(), "VmRSS");
  double eventMs = kubeEventMs(
      sb, [&] { fake.upsert(testing::Resource::kPods, kubePod("bench", "member-1", "10.77.0.3", "probe-pool")); },
      "new");
  k.keepLog();
  return json{{"kube_pool_pods", pods},
              {"kube_pool_start_to_ready_s", k.readySeconds},
              {"kube_pool_rss_mib", rss},
              {"one_change_kube_pool_ms", eventMs}};
}

json run(const std::vector<int>& counts, int endpoints, const std::string& keepLogs, const std::string& logLevel,
         bool kube, int poolPods) {
  std::string agentBin = std::string(AIMESH_BINARY_DIR) + "/aimesh-agent";
  if (::access(agentBin.c_str(), X_OK) != 0)
    throw std::runtime_error(agentBin + " not found: build the aimesh-agent target first");
  testing::ScratchDir scratch;
  Sandbox sb;
  Child oldEp = testing::startNameServer(sb.backend().name(), "10.77.0.2", kPort, "old");
  Child newEp = testing::startNameServer(sb.backend().name(), "10.77.0.3", kPort, "new");
  Child ep4 = testing::startNameServer(sb.backend().name(), "10.77.0.4", kPort, "four");
  Child ep5 = testing::startNameServer(sb.backend().name(), "10.77.0.5", kPort, "five");
  fmt::print("{:>8} {:>9} {:>12} {:>9} {:>9} {:>14} {:>11} {:>10} {:>9}\n", "services", "endpoints",
             "ready (s)", "RSS MiB", "anon MiB", "change (ms)", "metrics MB", "scrape (s)", "series");
  json rows = json::array();
  for (int n : counts) rows.push_back(measureOne(sb, scratch.path(), n, endpoints, keepLogs, logLevel));
  if (kube) {
    fmt::print("\nKubernetes source (a fake API server):\n{:>8} {:>12} {:>9} {:>18} {:>22}\n", "services", "ready (s)",
               "RSS MiB", "watch event (ms)", "next 4 events, median");
    for (size_t i = 0; i < counts.size(); ++i) {
      uint32_t maxServices = 16, maxBackends = 16;
      while (maxServices < static_cast<uint32_t>(counts[i]) + 16) maxServices *= 2;
      while (maxBackends < static_cast<uint32_t>(counts[i] * endpoints) + 16) maxBackends *= 2;
      json k = measureKube(sb, scratch.path(), counts[i], endpoints, maxServices, maxBackends, logLevel, keepLogs);
      fmt::print("{:>8} {:>12.2f} {:>9.1f} {:>18.1f} {:>22.1f}\n", counts[i], k["kube_start_to_ready_s"].get<double>(),
                 k["kube_rss_mib"].get<double>(), k["one_change_kube_ms"].get<double>(),
                 k["next_changes_kube_ms"].get<double>());
      std::fflush(stdout);
      rows[i].update(k);
    }
  }
  if (kube && poolPods > 0) {
    fmt::print("\nKubernetes source with an InferencePool behind the probe, and {} pods (a tenth in its namespace):\n"
               "{:>8} {:>12} {:>9} {:>24}\n",
               poolPods, "services", "ready (s)", "RSS MiB", "member ready event (ms)");
    for (size_t i = 0; i < counts.size(); ++i) {
      uint32_t maxServices = 16, maxBackends = 16;
      while (maxServices < static_cast<uint32_t>(counts[i]) + 16) maxServices *= 2;
      while (maxBackends < static_cast<uint32_t>(counts[i] * endpoints) + 16) maxBackends *= 2;
      json k = measureKubePool(sb, scratch.path(), counts[i], endpoints, poolPods, maxServices, maxBackends, logLevel,
                               keepLogs);
      fmt::print("{:>8} {:>12.2f} {:>9.1f} {:>24.1f}\n", counts[i], k["kube_pool_start_to_ready_s"].get<double>(),
                 k["kube_pool_rss_mib"].get<double>(), k["one_change_kube_pool_ms"].get<double>());
      std::fflush(stdout);
      rows[i].update(k);
    }
  }
  return json{{"rows", rows}};
}

}  // namespace
}  // namespace aimesh

int main(int argc, char** argv) {
  CLI::App app{"scale: the agent's memory, start-to-ready, one-change latency and /metrics size at N services"};
  std::vector<int> counts{1000, 10000};
  int endpoints = 4;
  bool wantJson = false, kube = true;
  int poolPods = 10000;
  std::string keepLogs, logLevel = "info";
  app.add_option("--services", counts, "service counts to measure, one agent start each (e.g. 1000,10000)")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::Range(1, 60000));
  app.add_option("--endpoints", endpoints, "endpoints per service")->capture_default_str()->check(CLI::Range(1, 4));
  app.add_option("--keep-logs", keepLogs, "copy each agent's log to DIR/agent-N.log (for timing its phases)")
      ->check(CLI::ExistingDirectory);
  app.add_option("--agent-log-level", logLevel, "the agent's --log-level (debug: its phases' timings in the log)")
      ->capture_default_str()
      ->check(CLI::IsMember({"debug", "info", "warn"}));
  app.add_option("--kubernetes", kube, "also measure the Kubernetes source (a fake API server)")
      ->capture_default_str();
  app.add_option("--pool-pods", poolPods,
                 "with --kubernetes: also measure an InferencePool with this many pods in the cluster (0: not)")
      ->capture_default_str()
      ->check(CLI::Range(0, 200000));
  app.add_flag("--json", wantJson, "also print the results as one JSON object after the table");
  CLI11_PARSE(app, argc, argv);
  return aimesh::testing::runBenchMain(
      {.name = "scale", .needsRootFor = "cgroups, network namespaces, BPF", .removed = "sandbox removed"}, wantJson,
      [&] { return aimesh::run(counts, endpoints, keepLogs, logLevel, kube, poolPods); });
}
