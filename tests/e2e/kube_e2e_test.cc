// e2e: the real agent taking its cluster state from the fake Kubernetes API
// server (tests/fixtures/fake_apiserver.h) over HTTPS with a bearer token,
// attached to a test cgroup, balancing real connections from a client
// namespace to name servers in a backend namespace. Needs root.
#include <gtest/gtest.h>
#include <httplib.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>
#include <tuple>

#include "client/api_client.h"
#include "fixtures/agent_e2e.h"
#include "fixtures/fake_apiserver.h"
#include "fixtures/net_client.h"
#include "fixtures/sandbox.h"

namespace aimesh::testing {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

json service(const std::string& name, const std::string& ip, json annotations = json::object()) {
  return json{{"metadata", {{"name", name}, {"namespace", "ml"}, {"annotations", annotations}}},
              {"spec",
               {{"type", "ClusterIP"},
                {"clusterIP", ip},
                {"clusterIPs", {ip}},
                {"ports", {{{"name", "http"}, {"port", 8000}, {"protocol", "TCP"}, {"targetPort", 8000}}}}}}};
}

// addr → "ready" | "terminating" | "starting"
json slice(const std::string& name, const std::string& svc, const std::map<std::string, std::string>& eps) {
  json arr = json::array();
  for (auto& [a, st] : eps)
    arr.push_back({{"addresses", {a}},
                   {"conditions",
                    {{"ready", st == "ready"}, {"serving", st != "starting"}, {"terminating", st == "terminating"}}}});
  return json{{"metadata", {{"name", name}, {"namespace", "ml"}, {"labels", {{"kubernetes.io/service-name", svc}}}}},
              {"addressType", "IPv4"},
              {"ports", {{{"name", "http"}, {"port", 8000}, {"protocol", "TCP"}}}},
              {"endpoints", arr}};
}

long rssKiB(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

class KubeE2e : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    dir_ = tempDir();
    sandbox_ = std::make_unique<Sandbox>();
    FakeApiServer::Options o;
    o.tls = true;
    o.token = "e2e-token";
    fake_ = std::make_unique<FakeApiServer>(o);
    kubeconfig_ = dir_ + "/kubeconfig";
    writeFile(kubeconfig_, "apiVersion: v1\nkind: Config\ncurrent-context: test\n"
                           "clusters: [{name: fake, cluster: {server: \"" + fake_->url() +
                               "\", certificate-authority: \"" + fake_->caFile() +
                               "\"}}]\n"
                               "users: [{name: agent, user: {token: e2e-token}}]\n"
                               "contexts: [{name: test, context: {cluster: fake, user: agent}}]\n");
    for (auto [addr, name] : {std::pair{"10.77.0.2", "a"}, {"10.77.0.3", "b"}, {"10.77.0.4", "c"}})
      servers_.push_back(startNameServer(sandbox_->backend().name(), addr, 8000, name));
  }
  void TearDown() override {
    agent_.reset();
    fake_.reset();
    servers_.clear();
    sandbox_.reset();
    if (!dir_.empty()) removeTree(dir_);
  }

  void startAgent(std::vector<std::string> extra = {}, bool waitReady = true) {
    std::vector<std::string> args{"--kubeconfig", kubeconfig_, "--kubernetes-backoff-max-ms", "300"};
    args.insert(args.end(), extra.begin(), extra.end());
    agent_ = std::make_unique<AgentProcess>(sandbox_->cgroup().path(), "", dir_, args);
    agent_->start(waitReady);
  }
  json api(const std::string& method) {
    auto r = callAgent(agent_->apiSocket(), {{"method", method}}, 2000ms);
    EXPECT_TRUE(r.ok()) << (r ? "" : r.error().message());
    return r ? *r : json{};
  }
  // Answers by server name over n TCP connections to the VIP from the client namespace.
  std::map<std::string, int> spread(const std::string& vip, int n) {
    int st = 0;
    std::string out = runIn(sandbox_->cgroup().path(), sandbox_->client().name(), [&](int fd) {
      std::map<std::string, int> m;
      for (int i = 0; i < n; ++i) {
        Reply r = tcpAsk(vip, 8000, 500);
        m[r.err ? "error" : r.name]++;
      }
      std::string s = json(m).dump();
      (void)!::write(fd, s.data(), s.size());
      return 0;
    }, &st);
    EXPECT_EQ(st, 0);
    return json::parse(out).get<std::map<std::string, int>>();
  }
  // Polls until the VIP spreads n connections over exactly `names`.
  bool reaches(const std::string& vip, const std::set<std::string>& names, std::chrono::milliseconds timeout = 10s) {
    auto end = std::chrono::steady_clock::now() + timeout;
    std::map<std::string, int> got;
    while (std::chrono::steady_clock::now() < end) {
      got = spread(vip, 12);
      std::set<std::string> seen;
      for (auto& [k, v] : got) seen.insert(k);
      if (seen == names) return true;
      std::this_thread::sleep_for(100ms);
    }
    ADD_FAILURE() << vip << " reached " << json(got).dump();
    return false;
  }
  std::pair<int, std::string> httpGet(const std::string& path) {
    std::string hp = agent_->metricsUrlPath();
    auto colon = hp.rfind(':');
    httplib::Client c(hp.substr(0, colon), std::stoi(hp.substr(colon + 1)));
    auto r = c.Get(path.c_str());
    return r ? std::pair{r->status, r->body} : std::pair{0, std::string()};
  }

  std::string dir_, kubeconfig_;
  std::unique_ptr<Sandbox> sandbox_;
  std::unique_ptr<FakeApiServer> fake_;
  std::vector<Child> servers_;
  std::unique_ptr<AgentProcess> agent_;
};

TEST_F(KubeE2e, ServicesAndEndpointSlicesReachTheKernelAndFollowChanges) {
  fake_->upsert(Resource::kServices, service("chat", "10.96.0.20", {{"aimesh.io/lb-algorithm", "least_conn"},
                                                                    {"aimesh.io/model", "llama-3-8b"}}));
  fake_->upsert(Resource::kEndpointSlices, slice("chat-1", "chat", {{"10.77.0.2", "ready"}}));
  startAgent();
  EXPECT_EQ(spread("10.96.0.20", 6), (std::map<std::string, int>{{"a", 6}}));
  json svcs = api("services")["services"];
  ASSERT_EQ(svcs.size(), 1u);
  EXPECT_EQ(svcs[0]["algorithm"], "least_conn");
  EXPECT_EQ(svcs[0]["model"], "llama-3-8b");
  EXPECT_EQ(api("status")["source"], "kubernetes");

  // A second slice adds b; c is not ready yet.
  fake_->upsert(Resource::kEndpointSlices, slice("chat-2", "chat", {{"10.77.0.3", "ready"}, {"10.77.0.4", "starting"}}));
  EXPECT_TRUE(reaches("10.96.0.20", {"a", "b"}));
  // c becomes ready, a starts terminating: draining in the kernel, no new connections.
  fake_->upsert(Resource::kEndpointSlices, slice("chat-2", "chat", {{"10.77.0.3", "ready"}, {"10.77.0.4", "ready"}}));
  fake_->upsert(Resource::kEndpointSlices, slice("chat-1", "chat", {{"10.77.0.2", "terminating"}}));
  EXPECT_TRUE(reaches("10.96.0.20", {"b", "c"}));
  bool draining = false;
  json eps = api("endpoints");
  for (auto& e : eps["endpoints"]) draining |= e["address"] == "10.77.0.2" && e["state"] == "draining";
  EXPECT_TRUE(draining) << eps.dump();

  // A second service, then the first is deleted: its VIP leads nowhere.
  fake_->upsert(Resource::kServices, service("embed", "10.96.0.21"));
  fake_->upsert(Resource::kEndpointSlices, slice("embed-1", "embed", {{"10.77.0.4", "ready"}}));
  EXPECT_TRUE(reaches("10.96.0.21", {"c"}));
  fake_->remove(Resource::kServices, "ml", "chat");
  EXPECT_TRUE(reaches("10.96.0.20", {"error"}));
  EXPECT_EQ(api("services")["services"].size(), 1u);
}

TEST_F(KubeE2e, ReadyOnlyAfterTheFirstFullSyncAndKeepsTheDataPlaneWhileTheApiIsAway) {
  fake_->upsert(Resource::kServices, service("chat", "10.96.0.20"));
  fake_->upsert(Resource::kEndpointSlices, slice("chat-1", "chat", {{"10.77.0.2", "ready"}}));
  fake_->setDelay(1500ms);  // the first lists take a while
  startAgent({}, /*waitReady=*/false);
  EXPECT_EQ(httpGet("/readyz").first, 503);
  EXPECT_EQ(httpGet("/healthz").first, 200);
  EXPECT_FALSE(api("status")["ready"].get<bool>());
  fake_->setDelay(0ms);
  auto end = std::chrono::steady_clock::now() + 15s;
  while (httpGet("/readyz").first != 200 && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(50ms);
  EXPECT_EQ(httpGet("/readyz").first, 200);
  EXPECT_EQ(spread("10.96.0.20", 4), (std::map<std::string, int>{{"a", 4}}));

  // The API server goes away: the agent retries, the data plane stays.
  fake_.reset();
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(spread("10.96.0.20", 4), (std::map<std::string, int>{{"a", 4}}));
  json st = api("status");
  EXPECT_TRUE(st["ready"].get<bool>());
  EXPECT_GE(st["kubernetes"]["errors"].get<int>(), 1);
  EXPECT_NE(st["kubernetes"]["last_error"].get<std::string>(), "");
  auto [code, metrics] = httpGet("/metrics");
  EXPECT_EQ(code, 200);
  EXPECT_NE(metrics.find("aimesh_agent_kubernetes_synced{resource=\"services\"} 1"), std::string::npos);
}

TEST_F(KubeE2e, EveryInjectedFaultRecoversWithNothingLost) {
  fake_->upsert(Resource::kServices, service("chat", "10.96.0.20"));
  fake_->upsert(Resource::kEndpointSlices, slice("chat-1", "chat", {{"10.77.0.2", "ready"}}));
  startAgent();
  ASSERT_TRUE(fake_->waitForWatches(Resource::kEndpointSlices, 1, 5s));

  // A stream cut in the middle of the event that adds b.
  fake_->dropWatchesMidEvent(Resource::kEndpointSlices);
  fake_->upsert(Resource::kEndpointSlices, slice("chat-1", "chat", {{"10.77.0.2", "ready"}, {"10.77.0.3", "ready"}}));
  EXPECT_TRUE(reaches("10.96.0.20", {"a", "b"}));

  // 500s, then a 429, on the resumed watch of the change that adds c.
  ASSERT_TRUE(fake_->waitForWatches(Resource::kEndpointSlices, 1, 5s));
  fake_->failNext(Resource::kEndpointSlices, 500, 2);
  fake_->closeWatches(Resource::kEndpointSlices);
  fake_->upsert(Resource::kEndpointSlices,
                slice("chat-1", "chat", {{"10.77.0.2", "ready"}, {"10.77.0.3", "ready"}, {"10.77.0.4", "ready"}}));
  EXPECT_TRUE(reaches("10.96.0.20", {"a", "b", "c"}));

  // The history is compacted while the watch is away: 410, a fresh list.
  ASSERT_TRUE(fake_->waitForWatches(Resource::kEndpointSlices, 1, 5s));
  fake_->failNext(Resource::kEndpointSlices, 503, 2);
  fake_->dropWatchesMidEvent(Resource::kEndpointSlices);
  fake_->upsert(Resource::kEndpointSlices, slice("chat-1", "chat", {{"10.77.0.3", "ready"}}));
  fake_->compact();
  EXPECT_TRUE(reaches("10.96.0.20", {"b"}));

  // A slow server (answers after 700 ms) for the next change.
  ASSERT_TRUE(fake_->waitForWatches(Resource::kServices, 1, 5s));
  fake_->setDelay(700ms);
  fake_->closeWatches(Resource::kServices);
  fake_->upsert(Resource::kServices, service("embed", "10.96.0.21"));
  fake_->upsert(Resource::kEndpointSlices, slice("embed-1", "embed", {{"10.77.0.4", "ready"}}));
  EXPECT_TRUE(reaches("10.96.0.21", {"c"}));
  fake_->setDelay(0ms);

  json k = api("status")["kubernetes"];
  EXPECT_GE(k["relists"].get<int>(), 1);
  EXPECT_GE(k["watch_restarts"].get<int>(), 4);
  EXPECT_GE(k["errors"].get<int>(), 4);
  EXPECT_TRUE(k["synced"].get<bool>());
  auto [code, metrics] = httpGet("/metrics");
  EXPECT_NE(metrics.find("aimesh_agent_kubernetes_relists_total{resource=\"endpointslices\"} 1"), std::string::npos);
}

TEST_F(KubeE2e, ALongWatchWithManyEventsKeepsTheAgentsMemoryFlat) {
#ifdef AIMESH_SANITIZED
  GTEST_SKIP() << "sanitizer build: ASan's quarantine holds freed memory, so RSS grows by design";
#endif
  fake_->upsert(Resource::kServices, service("chat", "10.96.0.20"));
  fake_->upsert(Resource::kEndpointSlices, slice("chat-1", "chat", {{"10.77.0.2", "ready"}}));
  startAgent();
  ASSERT_TRUE(fake_->waitForWatches(Resource::kEndpointSlices, 1, 5s));
  // Slices of services that flip between one and three endpoints, and come
  // and go: each round is 40 events.
  auto round = [&](int i) {
    for (int s = 0; s < 20; ++s) {
      std::string name = "churn-" + std::to_string(s);
      if (i % 2)
        fake_->upsert(Resource::kEndpointSlices,
                      slice(name, "chat", {{"10.77.0.2", "ready"}, {"10.77.0.3", "ready"}, {"10.77.0.4", "starting"}}));
      else
        fake_->upsert(Resource::kEndpointSlices, slice(name, "chat", {{"10.77.0.2", "ready"}}));
      fake_->upsert(Resource::kServices, service("svc-" + std::to_string(s), "10.96.1." + std::to_string(s + 1)));
    }
    if (i % 10 == 9)
      for (int s = 0; s < 20; ++s) fake_->remove(Resource::kServices, "ml", "svc-" + std::to_string(s));
  };
  for (int i = 0; i < 100; ++i) round(i);  // warm-up: 4000+ events
  std::this_thread::sleep_for(1000ms);
  long before = rssKiB(agent_->pid());
  for (int i = 100; i < 600; ++i) {
    round(i);
    if (i % 50 == 0) std::this_thread::sleep_for(50ms);
  }
  // The last round (599) left chat with a and b (c not ready) and removed
  // the svc-* Services: wait until the agent shows that, then measure.
  EXPECT_TRUE(reaches("10.96.0.20", {"a", "b"}, 30s));
  auto end = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < end && api("status")["services"].get<int>() != 1)
    std::this_thread::sleep_for(100ms);
  std::this_thread::sleep_for(1000ms);
  long after = rssKiB(agent_->pid());
  ASSERT_GT(before, 0);
  auto [code, metrics] = httpGet("/metrics");
  EXPECT_NE(metrics.find("aimesh_agent_kubernetes_events_total{resource=\"endpointslices\",type=\"modified\"}"),
            std::string::npos);
  std::cerr << "agent RSS: " << before << " KiB after ~4200 events, " << after << " KiB after 21000 more; status "
            << api("status")["kubernetes"].dump() << "\n";
  EXPECT_LT(after - before, 4096) << "RSS grew from " << before << " to " << after << " KiB over 20000 events";
}

TEST_F(KubeE2e, SigtermKeepsTheDataPlaneForAnUpdateAndRemovesItOnUninstall) {
  fake_->upsert(Resource::kServices, service("chat", "10.96.0.20"));
  fake_->upsert(Resource::kEndpointSlices, slice("chat-1", "chat", {{"10.77.0.2", "ready"}}));
  fake_->setDaemonSet("kube-system", "aimesh", true);
  startAgent({"--daemonset", "kube-system/aimesh"});
  std::string pins = agent_->pinDir();
  EXPECT_EQ(agent_->terminate(), 0);
  EXPECT_FALSE(std::filesystem::is_empty(pins)) << "a rolling update must leave the pins for the next agent";
  EXPECT_EQ(spread("10.96.0.20", 3), (std::map<std::string, int>{{"a", 3}}));  // still balanced with no agent

  // The next agent adopts them; then the DaemonSet is deleted (helm uninstall).
  agent_->start();
  fake_->setDaemonSet("kube-system", "aimesh", false);
  EXPECT_EQ(agent_->terminate(), 0);
  EXPECT_FALSE(std::filesystem::exists(pins) && !std::filesystem::is_empty(pins)) << "pins left in " << pins;
  EXPECT_EQ(spread("10.96.0.20", 2), (std::map<std::string, int>{{"error", 2}}));  // nothing rewrites the VIP now
}

TEST_F(KubeE2e, AnUninstallSeenByTheWatchCountsWhenTheApiNoLongerAnswers) {
  // helm uninstall deletes the DaemonSet and then the RBAC objects: the
  // question at SIGTERM goes unanswered, but the watch saw the deletion.
  fake_->upsert(Resource::kServices, service("chat", "10.96.0.20"));
  fake_->upsert(Resource::kEndpointSlices, slice("chat-1", "chat", {{"10.77.0.2", "ready"}}));
  fake_->setDaemonSet("kube-system", "aimesh", true);
  startAgent({"--daemonset", "kube-system/aimesh"});
  ASSERT_TRUE(fake_->waitForWatches(Resource::kDaemonSets, 1, 5s));
  bool fieldSelector = false;
  for (auto& l : fake_->requestLog())
    fieldSelector |= l.find("daemonsets?fieldSelector=metadata.name%3Daimesh") != std::string::npos;
  EXPECT_TRUE(fieldSelector) << "the watch must name the DaemonSet (RBAC allows only that one)";
  std::string pins = agent_->pinDir();
  fake_->setDaemonSet("kube-system", "aimesh", false);  // DELETED on the watch
  std::this_thread::sleep_for(300ms);
  fake_.reset();  // and then nothing answers
  EXPECT_EQ(agent_->terminate(), 0);
  EXPECT_FALSE(std::filesystem::exists(pins) && !std::filesystem::is_empty(pins)) << "pins left in " << pins;
}

TEST_F(KubeE2e, NoAnswerAndNoDeletionSeenKeepsTheDataPlane) {
  fake_->upsert(Resource::kServices, service("chat", "10.96.0.20"));
  fake_->upsert(Resource::kEndpointSlices, slice("chat-1", "chat", {{"10.77.0.2", "ready"}}));
  fake_->setDaemonSet("kube-system", "aimesh", true);
  startAgent({"--daemonset", "kube-system/aimesh"});
  ASSERT_TRUE(fake_->waitForWatches(Resource::kDaemonSets, 1, 5s));
  std::string pins = agent_->pinDir();
  fake_.reset();  // the API is simply away: not an uninstall
  EXPECT_EQ(agent_->terminate(), 0);
  EXPECT_FALSE(std::filesystem::is_empty(pins));
  EXPECT_EQ(spread("10.96.0.20", 2), (std::map<std::string, int>{{"a", 2}}));
}

// ---- workload policy by pod labels -------------------------------------------

json pod(const std::string& name, const std::string& uid, const std::string& app, const std::string& node = "node-1") {
  return json{{"metadata", {{"name", name}, {"namespace", "ml"}, {"uid", uid}, {"labels", {{"app", app}}}}},
              {"spec", {{"nodeName", node}, {"containers", {{{"name", "main"}, {"image", "client"}}}}}},
              {"status", {{"phase", "Running"}, {"qosClass", "BestEffort"}}}};
}

std::string underscored(std::string uid) {
  std::replace(uid.begin(), uid.end(), '-', '_');
  return uid;
}

// errno of a TCP connect to 10.96.0.20:8000 from cgroup `cg` in the client namespace.
int connectErrno(const std::string& cg, const std::string& ns) {
  int st = 0;
  std::string out = runIn(cg, ns, [](int fd) {
    std::string s = std::to_string(tcpAsk("10.96.0.20", 8000, 500).err);
    (void)!::write(fd, s.data(), s.size());
    return 0;
  }, &st);
  EXPECT_EQ(st, 0);
  return out.empty() ? -1 : std::stoi(out);
}

// The kubelet's pod cgroups under the agent's cgroup (--pod-cgroup-root
// defaults to --cgroup): pod A with the systemd driver's names, B and C with
// the cgroupfs driver's, each with a container cgroup the client runs in.
TEST_F(KubeE2e, PodLabelPolicyAdmitsTheSelectedPodsOfThisNodeAndFollowsThem) {
  const std::string uidA = "0a1b2c3d-0000-4000-8000-00000000000a", uidB = "0a1b2c3d-0000-4000-8000-00000000000b",
                    uidC = "0a1b2c3d-0000-4000-8000-00000000000c", uidD = "0a1b2c3d-0000-4000-8000-00000000000d";
  const std::string root = sandbox_->cgroup().path(), ns = sandbox_->client().name();
  std::vector<std::unique_ptr<ChildCgroup>> dirs;  // removed in reverse order at the end
  auto mk = [&](const std::string& path) {
    dirs.push_back(std::make_unique<ChildCgroup>(path));
    return path;
  };
  mk(root + "/kubepods.slice");
  mk(root + "/kubepods.slice/kubepods-besteffort.slice");
  std::string podA = mk(root + "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + underscored(uidA) + ".slice");
  std::string ctrA = mk(podA + "/cri-containerd-a.scope");
  mk(root + "/kubepods");
  mk(root + "/kubepods/burstable");
  std::string podB = mk(root + "/kubepods/burstable/pod" + uidB);
  std::string ctrB = mk(podB + "/ctr-b");
  std::string podD = mk(root + "/kubepods/burstable/pod" + uidD);  // matches, but the API puts it on another node

  fake_->upsert(Resource::kServices, service("chat", "10.96.0.20", {{"aimesh.io/allow-pods", "app=client"}}));
  fake_->upsert(Resource::kEndpointSlices, slice("chat-1", "chat", {{"10.77.0.2", "ready"}}));
  fake_->upsert(Resource::kPods, pod("client-a", uidA, "client"));
  fake_->upsert(Resource::kPods, pod("web-b", uidB, "web"));
  fake_->upsert(Resource::kPods, pod("client-d", uidD, "client", "node-2"));
  startAgent({"--node-name", "node-1"});

  EXPECT_EQ(connectErrno(ctrA, ns), 0) << "a container of a selected pod";
  EXPECT_EQ(connectErrno(podA, ns), 0) << "the selected pod's own cgroup";
  EXPECT_EQ(connectErrno(ctrB, ns), EPERM) << "a pod the selector does not pick";
  EXPECT_EQ(connectErrno(podD, ns), EPERM) << "a pod of another node";
  EXPECT_EQ(connectErrno(root, ns), EPERM) << "not in a pod at all";
  json pol = api("policy")["services"][0];
  EXPECT_EQ(pol["pod_selector"], "app=client in ml");
  ASSERT_EQ(pol["allow"].size(), 1u) << pol.dump();
  EXPECT_EQ(pol["allow"][0]["pod"], "ml/client-a");
  EXPECT_EQ(pol["allow"][0]["cgroup"], podA);
  EXPECT_EQ(api("status")["kubernetes"]["pods"], 2) << "only node-1's pods are held";

  // Who called, by pod name where the pod is known (a container's cgroup and
  // the pod's own are one client), else by cgroup path.
  std::map<std::string, json> byClient;
  json clients = api("clients");
  for (auto& r : clients["clients"]) byClient[r["client"].get<std::string>()] = r;
  EXPECT_EQ(byClient["ml/client-a"]["connections"], 2) << clients.dump();
  EXPECT_EQ(byClient["ml/web-b"]["denied"], 1) << clients.dump();
  EXPECT_EQ(byClient["/kubepods/burstable/pod" + uidD]["denied"], 1) << "another node's pod: not watched";
  EXPECT_EQ(byClient["/"]["denied"], 1) << clients.dump();

  auto until = [&](const std::string& cg, int want, const char* what) {
    int got = -1;
    for (int i = 0; i < 100 && got != want; ++i) {
      got = connectErrno(cg, ns);
      if (got != want) std::this_thread::sleep_for(100ms);
    }
    EXPECT_EQ(got, want) << what;
  };
  // Relabelled into the selector: admitted.
  fake_->upsert(Resource::kPods, pod("web-b", uidB, "client"));
  until(ctrB, 0, "a pod relabelled into the selector");
  // A new pod whose cgroup the kubelet has not made yet: listed as having
  // none, admitted once it appears (the agent looks again every second).
  fake_->upsert(Resource::kPods, pod("client-c", uidC, "client"));
  bool sawPending = false;
  for (int i = 0; i < 50 && !sawPending; ++i) {
    json allow = api("policy")["services"][0]["allow"];  // a copy: a range-for over part of a temporary dangles
    for (auto& a : allow) sawPending |= a["pod"] == "ml/client-c" && a["resolved"] == false;
    if (!sawPending) std::this_thread::sleep_for(100ms);
  }
  EXPECT_TRUE(sawPending);
  std::string podC = mk(root + "/kubepods/burstable/pod" + uidC);
  std::string ctrC = mk(podC + "/ctr-c");
  until(ctrC, 0, "a pod whose cgroup appeared after the policy was applied");
  // Deleted from the API: refused again, the others unaffected.
  fake_->remove(Resource::kPods, "ml", "client-a");
  until(ctrA, EPERM, "a deleted pod");
  EXPECT_EQ(connectErrno(ctrB, ns), 0);

  std::string meshctl = std::string(AIMESH_BINARY_DIR) + "/meshctl --socket " + agent_->apiSocket();
  auto [rc, out] = capture(meshctl + " policy");
  EXPECT_EQ(rc, 0);
  EXPECT_NE(out.find("pod ml/client-c, pod ml/web-b"), std::string::npos) << out;
  // The annotation removed: open to everyone again.
  fake_->upsert(Resource::kServices, service("chat", "10.96.0.20"));
  until(root, 0, "the policy removed");
  agent_.reset();
  while (!dirs.empty()) dirs.pop_back();
}

TEST_F(KubeE2e, PodPolicyWithoutANodeNameAllowsNobody) {
  const std::string uidA = "0a1b2c3d-0000-4000-8000-00000000000a";
  const std::string root = sandbox_->cgroup().path(), ns = sandbox_->client().name();
  ChildCgroup kubepods(root + "/kubepods");
  ChildCgroup podA(root + "/kubepods/pod" + uidA);
  fake_->upsert(Resource::kServices, service("chat", "10.96.0.20", {{"aimesh.io/allow-pods", "app=client"}}));
  fake_->upsert(Resource::kEndpointSlices, slice("chat-1", "chat", {{"10.77.0.2", "ready"}}));
  fake_->upsert(Resource::kPods, pod("client-a", uidA, "client"));
  startAgent();  // no --node-name, no NODE_NAME
  EXPECT_EQ(connectErrno(podA.path(), ns), EPERM);
  EXPECT_EQ(fake_->listRequests(Resource::kPods), 0);
  json pol = api("policy")["services"][0];
  EXPECT_TRUE(pol["enforced"].get<bool>());
  EXPECT_NE(pol["pod_selector"].get<std::string>().find("not in force"), std::string::npos) << pol.dump();
  agent_.reset();
}

// ---- Gateway API mesh routes -------------------------------------------------

// A GAMMA HTTPRoute: parent Service `parent` port 8000, one rule with the
// default match, backendRefs (name, weight) on port 8000.
json meshRoute(const std::string& name, const std::string& parent, std::vector<std::pair<std::string, int>> backends,
               json matches = json::array({{{"path", {{"type", "PathPrefix"}, {"value", "/"}}}}})) {
  json refs = json::array();
  for (auto& [b, w] : backends) refs.push_back({{"group", ""}, {"kind", "Service"}, {"name", b}, {"port", 8000}, {"weight", w}});
  return json{{"apiVersion", "gateway.networking.k8s.io/v1"},
              {"kind", "HTTPRoute"},
              {"metadata", {{"name", name}, {"namespace", "ml"}}},
              {"spec",
               {{"parentRefs", json::array({{{"group", ""}, {"kind", "Service"}, {"name", parent}, {"port", 8000}}})},
                {"rules", json::array({{{"matches", matches}, {"backendRefs", refs}}})}}}};
}

class KubeRoutesE2e : public KubeE2e {
 protected:
  // llama (10.96.0.30) → a; llama-v1 (.31) → b; llama-v2 (.32) → c.
  void canaryServices() {
    for (auto [name, ip, addr] : {std::tuple{"llama", "10.96.0.30", "10.77.0.2"},
                                  {"llama-v1", "10.96.0.31", "10.77.0.3"}, {"llama-v2", "10.96.0.32", "10.77.0.4"}}) {
      fake_->upsert(Resource::kServices, service(name, ip));
      fake_->upsert(Resource::kEndpointSlices, slice(std::string(name) + "-1", name, {{addr, "ready"}}));
    }
  }
  // The routes API's mesh route `name`, once it is there (null after 5 s).
  json meshRouteNamed(const std::string& name) {
    json last;
    for (int i = 0; i < 100; ++i) {
      last = api("routes");
      for (auto& m : last["mesh_routes"])
        if (m["route"] == name) return m;
      std::this_thread::sleep_for(50ms);
    }
    ADD_FAILURE() << "no mesh route " << name << " in " << last.dump();
    return nullptr;
  }
  std::string metric(const std::string& series) {
    auto [code, body] = httpGet("/metrics");
    EXPECT_EQ(code, 200);
    auto at = body.find("\n" + series + " ");
    if (at == std::string::npos) return "";
    at += series.size() + 2;
    return body.substr(at, body.find('\n', at) - at);
  }
};

TEST_F(KubeRoutesE2e, AnHttpRouteSplitsItsParentServiceAndFollowsWeightEdits) {
  canaryServices();
  startAgent();
  EXPECT_EQ(spread("10.96.0.30", 6), (std::map<std::string, int>{{"a", 6}}));  // no route: its own endpoint

  json canary = meshRoute("llama-canary", "llama", {{"llama-v1", 90}, {"llama-v2", 10}});
  canary["metadata"]["annotations"] = {{"aimesh.io/canary-guard", "metric=ttft_p50,min_samples=50,window=30s"}};
  fake_->upsert(Resource::kHttpRoutes, canary);
  json m = meshRouteNamed("HTTPRoute ml/llama-canary");
  ASSERT_FALSE(m.is_null());
  EXPECT_EQ(m["state"], "applied") << m.dump();
  EXPECT_EQ(m["splits"], json::array({"ml/llama"}));
  json routes = api("routes")["routes"];
  ASSERT_EQ(routes.size(), 1u);
  EXPECT_EQ(routes[0]["source"], "HTTPRoute ml/llama-canary");
  EXPECT_EQ(routes[0]["guard_metric"], "ttft_p50") << "the route's aimesh.io/canary-guard";
  EXPECT_EQ(routes[0]["primary"], "ml/llama-v1") << "unset: the first backendRef";
  EXPECT_EQ(metric("aimesh_mesh_routes{state=\"applied\"}"), "1");

  // 90/10 over 2,000 fresh connects: the parent's own endpoint gets none.
  auto got = spread("10.96.0.30", 2000);
  EXPECT_EQ(got.count("a"), 0u) << json(got).dump();
  EXPECT_EQ(got.count("error"), 0u) << json(got).dump();
  EXPECT_NEAR(got["c"] / 2000.0, 0.10, 0.025) << json(got).dump();  // 10 % ± ~4 standard deviations

  // Weight edits are watch events: all to v2, then back to v1.
  fake_->upsert(Resource::kHttpRoutes, meshRoute("llama-canary", "llama", {{"llama-v1", 0}, {"llama-v2", 100}}));
  EXPECT_TRUE(reaches("10.96.0.30", {"c"}));
  fake_->upsert(Resource::kHttpRoutes, meshRoute("llama-canary", "llama", {{"llama-v1", 1}, {"llama-v2", 0}}));
  EXPECT_TRUE(reaches("10.96.0.30", {"b"}));

  // The route deleted: the parent balances its own endpoints again.
  fake_->remove(Resource::kHttpRoutes, "ml", "llama-canary");
  EXPECT_TRUE(reaches("10.96.0.30", {"a"}));
  EXPECT_TRUE(api("routes")["routes"].empty());
}

TEST_F(KubeRoutesE2e, ARouteWithUnsupportedMatchesIsReportedAndNotHalfApplied) {
  canaryServices();
  startAgent();
  json headers = json::array({{{"headers", json::array({{{"name", "x-model-version"}, {"value", "v2"}}})}}});
  fake_->upsert(Resource::kHttpRoutes, meshRoute("by-header", "llama", {{"llama-v2", 1}}, headers));
  json m = meshRouteNamed("HTTPRoute ml/by-header");
  ASSERT_FALSE(m.is_null());
  EXPECT_EQ(m["state"], "not_applied");
  ASSERT_EQ(m["notes"].size(), 1u) << m.dump();
  EXPECT_NE(m["notes"][0].get<std::string>().find("spec.rules[0].matches"), std::string::npos) << m.dump();
  // Nothing of it reached the kernel: the parent keeps its own endpoint.
  EXPECT_EQ(spread("10.96.0.30", 20), (std::map<std::string, int>{{"a", 20}}));
  EXPECT_TRUE(api("routes")["routes"].empty());
  EXPECT_EQ(metric("aimesh_mesh_routes{state=\"not_applied\"}"), "1");
  std::ifstream log(dir_ + "/agent.log");
  std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("HTTPRoute ml/by-header: not applied: spec.rules[0].matches"), std::string::npos);
}

TEST_F(KubeRoutesE2e, WithoutTheGatewayApiCrdsTheAgentRunsAndTurnsRoutesOnWhenTheyAppear) {
  for (auto r : {Resource::kHttpRoutes, Resource::kGrpcRoutes, Resource::kTcpRoutes, Resource::kReferenceGrants})
    fake_->setInstalled(r, false);
  canaryServices();
  startAgent();  // ready without them
  EXPECT_EQ(spread("10.96.0.30", 6), (std::map<std::string, int>{{"a", 6}}));
  EXPECT_EQ(metric("aimesh_agent_kubernetes_resource_absent{resource=\"httproutes\"}"), "1");
  EXPECT_EQ(metric("aimesh_agent_kubernetes_synced{resource=\"httproutes\"}"), "1");

  // The CRDs installed later (the agent looks again every --kubernetes-backoff-max-ms, 300 ms here).
  for (auto r : {Resource::kHttpRoutes, Resource::kGrpcRoutes, Resource::kTcpRoutes, Resource::kReferenceGrants})
    fake_->setInstalled(r, true);
  fake_->upsert(Resource::kHttpRoutes, meshRoute("llama-canary", "llama", {{"llama-v2", 1}}));
  EXPECT_TRUE(reaches("10.96.0.30", {"c"}));
  EXPECT_EQ(metric("aimesh_agent_kubernetes_resource_absent{resource=\"httproutes\"}"), "0");
  // And uninstalled again: the split goes with its route.
  fake_->setInstalled(Resource::kHttpRoutes, false);
  EXPECT_TRUE(reaches("10.96.0.30", {"a"}));
}

// ---- InferencePool -------------------------------------------------------------

// A member pod of llama-pool (label app=vllm-llama) on another node.
json poolPod(const std::string& name, const std::string& ip, bool ready) {
  return json{{"metadata", {{"name", name}, {"namespace", "ml"}, {"uid", "uid-" + name},
                            {"labels", {{"app", "vllm-llama"}}}}},
              {"spec", {{"nodeName", "node-b"}}},
              {"status",
               {{"phase", "Running"},
                {"podIP", ip},
                {"podIPs", json::array({{{"ip", ip}}})},
                {"conditions", json::array({{{"type", "Ready"}, {"status", ready ? "True" : "False"}}})}}}};
}

json inferencePool(const std::string& failureMode) {
  return json{{"apiVersion", "inference.networking.k8s.io/v1"},
              {"kind", "InferencePool"},
              {"metadata", {{"name", "llama-pool"}, {"namespace", "ml"}}},
              {"spec",
               {{"selector", {{"matchLabels", {{"app", "vllm-llama"}}}}},
                {"targetPorts", json::array({{{"number", 8000}}})},
                {"endpointPickerRef", {{"name", "llama-epp"}, {"port", {{"number", 9002}}}, {"failureMode", failureMode}}}}}};
}

TEST_F(KubeRoutesE2e, AnInferencePoolsPodsBecomeTheMembersAndItsFailureModeHolds) {
  fake_->upsert(Resource::kServices, service("llama", "10.96.0.30"));
  fake_->upsert(Resource::kEndpointSlices, slice("llama-1", "llama", {{"10.77.0.2", "ready"}}));
  fake_->upsert(Resource::kPods, poolPod("vllm-0", "10.77.0.3", true));
  fake_->upsert(Resource::kPods, poolPod("vllm-1", "10.77.0.4", false));
  fake_->upsert(Resource::kInferencePools, inferencePool("FailClose"));
  // The pool's members are scraped for model-server metrics: from the test's namespace.
  startAgent({"--scrape-netns", sandbox_->client().name()});
  EXPECT_EQ(spread("10.96.0.30", 6), (std::map<std::string, int>{{"a", 6}}));  // no route: its own endpoint

  json route = meshRoute("llama-pool-route", "llama", {});
  route["spec"]["rules"][0]["backendRefs"] =
      json::array({{{"group", "inference.networking.k8s.io"}, {"kind", "InferencePool"}, {"name", "llama-pool"}}});
  fake_->upsert(Resource::kHttpRoutes, route);
  json m = meshRouteNamed("HTTPRoute ml/llama-pool-route");
  ASSERT_FALSE(m.is_null());
  EXPECT_EQ(m["state"], "applied") << m.dump();
  EXPECT_EQ(m["pool"], "ml/llama-pool") << m.dump();
  EXPECT_EQ(m["pooled"], json::array({"ml/llama"})) << m.dump();
  // Only the ready member: the parent's own endpoint and the starting pod get nothing.
  EXPECT_TRUE(reaches("10.96.0.30", {"b"}));
  auto got = spread("10.96.0.30", 200);
  EXPECT_EQ(got, (std::map<std::string, int>{{"b", 200}}));
  json svcs = api("services"), svc;
  for (auto& s : svcs["services"])
    if (s["name"] == "llama") svc = s;
  EXPECT_EQ(svc["algorithm"], "latency") << svcs.dump();
  EXPECT_EQ(metric("aimesh_agent_kubernetes_objects{resource=\"pool_pods\"}"), "2");

  // The second pod turns ready (a watch event): both members take connections.
  fake_->upsert(Resource::kPods, poolPod("vllm-1", "10.77.0.4", true));
  EXPECT_TRUE(reaches("10.96.0.30", {"b", "c"}));

  // No member ready and FailClose: refused, not sent to a pod that is not ready.
  fake_->upsert(Resource::kPods, poolPod("vllm-0", "10.77.0.3", false));
  fake_->upsert(Resource::kPods, poolPod("vllm-1", "10.77.0.4", false));
  EXPECT_TRUE(reaches("10.96.0.30", {"error"}));
  // FailOpen: the same pods are used.
  fake_->upsert(Resource::kInferencePools, inferencePool("FailOpen"));
  EXPECT_TRUE(reaches("10.96.0.30", {"b", "c"}));
  // A member ready again: FailOpen picks it alone.
  fake_->upsert(Resource::kPods, poolPod("vllm-1", "10.77.0.4", true));
  EXPECT_TRUE(reaches("10.96.0.30", {"c"}));

  // The pool deleted: the route cannot be applied and the parent has its own endpoint back.
  fake_->remove(Resource::kInferencePools, "ml", "llama-pool");
  EXPECT_TRUE(reaches("10.96.0.30", {"a"}));
}

}  // namespace
}  // namespace aimesh::testing
