// e2e: the Helm chart (helm/aimesh) as the real helm renders it. The chart
// is packaged first (`helm package`, as CI ships it) and `helm lint` and
// `helm template` run on the .tgz, over the default values and two non-default value
// sets; the rendered multi-document YAML is parsed with yaml-cpp and checked
// object by object (capabilities, mounts, RBAC rules, the agent's config
// file, ...); values.schema.json must reject bad values with a non-zero exit;
// and the real aimesh-agent must accept the rendered agent.conf and
// arguments (--check-config) and report the settings the chart meant.
//
// helm comes from $AIMESH_HELM, <repo>/.tools/bin/helm (scripts/install-helm.sh)
// or PATH. It runs with HOME and the XDG/helm dirs inside a temporary
// directory and needs no network and no cluster.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "fixtures/sandbox.h"

extern char** environ;

namespace aimesh::testing {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Strings = std::vector<std::string>;

const std::string kChart = AIMESH_SOURCE_DIR "/helm/aimesh";
const std::string kAgent = AIMESH_BINARY_DIR "/aimesh-agent";
constexpr const char* kConfigPath = "/etc/aimesh/agent.conf";

// ---- running programs --------------------------------------------------------

struct ProcResult {
  int status = -1;  // exit code; -1: killed or not started
  std::string out, err;
};

// Runs argv[0] (a path) with `env` added to this process's environment,
// capturing stdout and stderr; kills it after `timeout`.
ProcResult runProgram(const Strings& argv, const std::map<std::string, std::string>& env = {},
               std::chrono::seconds timeout = std::chrono::seconds(60)) {
  // Everything exec needs is built before fork.
  std::vector<std::string> envStrings;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string kv = *e;
    if (!env.count(kv.substr(0, kv.find('=')))) envStrings.push_back(kv);
  }
  for (auto& [k, v] : env) envStrings.push_back(k + "=" + v);
  std::vector<char*> envp, args;
  for (auto& s : envStrings) envp.push_back(s.data());
  envp.push_back(nullptr);
  Strings argCopy = argv;
  for (auto& a : argCopy) args.push_back(a.data());
  args.push_back(nullptr);

  int outPipe[2], errPipe[2];
  ProcResult r;
  if (::pipe2(outPipe, O_CLOEXEC) != 0) return r;
  if (::pipe2(errPipe, O_CLOEXEC) != 0) {
    ::close(outPipe[0]);
    ::close(outPipe[1]);
    return r;
  }
  pid_t pid = ::fork();
  if (pid == 0) {
    int devnull = ::open("/dev/null", O_RDONLY);
    ::dup2(devnull, 0);
    ::dup2(outPipe[1], 1);
    ::dup2(errPipe[1], 2);
    ::execve(args[0], args.data(), envp.data());
    ::_exit(127);
  }
  ::close(outPipe[1]);
  ::close(errPipe[1]);
  if (pid < 0) {
    ::close(outPipe[0]);
    ::close(errPipe[0]);
    return r;
  }
  auto deadline = std::chrono::steady_clock::now() + timeout;
  pollfd fds[2] = {{outPipe[0], POLLIN, 0}, {errPipe[0], POLLIN, 0}};
  std::string* sinks[2] = {&r.out, &r.err};
  int open = 2;
  bool killed = false;
  while (open > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      ::kill(pid, SIGKILL);
      killed = true;
      break;
    }
    if (::poll(fds, 2, static_cast<int>(left.count())) < 0) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[8192];
      ssize_t n = ::read(fds[i].fd, buf, sizeof(buf));
      if (n > 0) {
        sinks[i]->append(buf, n);
      } else {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open;
      }
    }
  }
  for (auto& f : fds)
    if (f.fd >= 0) ::close(f.fd);
  int st = 0;
  ::waitpid(pid, &st, 0);
  r.status = (!killed && WIFEXITED(st)) ? WEXITSTATUS(st) : -1;
  if (killed) r.err += "\n(killed after " + std::to_string(timeout.count()) + "s)";
  return r;
}

bool executable(const std::string& p) { return !p.empty() && ::access(p.c_str(), X_OK) == 0; }

// $AIMESH_HELM, else <repo>/.tools/bin/helm, else helm on PATH; "" if none
// (or if $AIMESH_HELM names something that is not executable).
std::string findHelm() {
  if (const char* e = std::getenv("AIMESH_HELM"); e != nullptr && *e != '\0') return executable(e) ? e : "";
  std::string local = AIMESH_SOURCE_DIR "/.tools/bin/helm";
  if (executable(local)) return local;
  if (const char* path = std::getenv("PATH")) {
    std::stringstream ss(path);
    std::string dir;
    while (std::getline(ss, dir, ':'))
      if (!dir.empty() && executable(dir + "/helm")) return dir + "/helm";
  }
  return "";
}

// ---- the chart ------------------------------------------------------------------

struct Rendered {
  std::vector<YAML::Node> docs;

  std::vector<YAML::Node> all(const std::string& kind) const {
    std::vector<YAML::Node> out;
    for (auto& d : docs)
      if (d["kind"] && d["kind"].as<std::string>() == kind) out.push_back(d);
    return out;
  }
  // The one object of `kind`; a null node (and a failure) if not exactly one.
  YAML::Node one(const std::string& kind) const {
    auto v = all(kind);
    if (v.size() != 1) {
      ADD_FAILURE() << "expected exactly one " << kind << ", rendered " << v.size();
      return YAML::Node();
    }
    return v[0];
  }
  std::multiset<std::string> kinds() const {
    std::multiset<std::string> k;
    for (auto& d : docs) k.insert(d["kind"].as<std::string>());
    return k;
  }
};

// Runs helm with HOME, the XDG dirs and helm's own inside `dir` (no user
// config, no network, no cluster).
ProcResult runHelm(const std::string& helm, const std::string& dir, const Strings& args) {
  Strings argv{helm};
  argv.insert(argv.end(), args.begin(), args.end());
  return runProgram(argv, {{"HOME", dir + "/home"},
                           {"XDG_CONFIG_HOME", dir + "/config"},
                           {"XDG_CACHE_HOME", dir + "/cache"},
                           {"XDG_DATA_HOME", dir + "/data"},
                           {"HELM_CONFIG_HOME", dir + "/config/helm"},
                           {"HELM_CACHE_HOME", dir + "/cache/helm"},
                           {"HELM_DATA_HOME", dir + "/data/helm"},
                           {"KUBECONFIG", dir + "/no-kubeconfig"}});
}

std::string makeHelmDir() {
  std::string dir = tempDir();
  for (auto sub : {"home", "config", "cache", "data"}) fs::create_directories(dir + "/" + sub);
  return dir;
}

// A temporary HOME for helm, value files, config files; removed at the end.
// The chart the tests lint and render is the package `helm package` makes
// of helm/aimesh once per suite (chart_), what CI publishes and a release
// installs: a file the package leaves out (.helmignore) fails here.
class HelmChart : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string helm = findHelm();
    if (helm.empty() || !fs::is_directory(kChart)) return;  // SetUp says why
    packageDir_ = makeHelmDir();
    ProcResult r = runHelm(helm, packageDir_, {"package", kChart, "--destination", packageDir_ + "/out"});
    if (r.status != 0) {
      packageError_ = r.out + r.err;
      return;
    }
    for (auto& e : fs::directory_iterator(packageDir_ + "/out"))
      if (e.path().extension() == ".tgz") chart_ = e.path().string();
    if (chart_.empty()) packageError_ = "no .tgz in " + packageDir_ + "/out:\n" + r.out;
  }
  static void TearDownTestSuite() {
    if (!packageDir_.empty()) removeTree(packageDir_);
    packageDir_.clear();
    chart_.clear();
    packageError_.clear();
  }

  void SetUp() override {
    helm_ = findHelm();
    const char* env = std::getenv("AIMESH_HELM");
    ASSERT_FALSE(helm_.empty() && env != nullptr && *env != '\0') << "AIMESH_HELM=" << env << " is not executable";
    ASSERT_FALSE(helm_.empty()) << "helm not found (no AIMESH_HELM, no " AIMESH_SOURCE_DIR
                                   "/.tools/bin/helm, none on PATH): run scripts/install-helm.sh, which installs "
                                   "it into <repo>/.tools/bin";
    ASSERT_TRUE(fs::is_directory(kChart)) << kChart;
    ASSERT_FALSE(chart_.empty()) << "helm package " << kChart << " failed:\n" << packageError_;
    dir_ = makeHelmDir();
  }
  void TearDown() override {
    if (!dir_.empty()) removeTree(dir_);
  }

  ProcResult helm(const Strings& args) { return runHelm(helm_, dir_, args); }

  // A values file in the temp dir; returns {"-f", path}.
  Strings values(const std::string& name, const std::string& yaml) {
    std::string p = dir_ + "/" + name;
    writeFile(p, yaml);
    return {"-f", p};
  }

  // `helm template RELEASE CHART -n NAMESPACE args...` of the package, parsed.
  Rendered render(const Strings& args, const std::string& release = "aimesh",
                  const std::string& ns = "kube-system") {
    Strings a{"template", release, chart_, "--namespace", ns};
    a.insert(a.end(), args.begin(), args.end());
    ProcResult r = helm(a);
    Rendered out;
    EXPECT_EQ(r.status, 0) << "helm template failed:\n" << r.err;
    if (r.status != 0) return out;
    try {
      for (auto& d : YAML::LoadAll(r.out))
        if (d.IsMap()) out.docs.push_back(d);
    } catch (const YAML::Exception& e) {
      ADD_FAILURE() << "helm template printed invalid YAML: " << e.what() << "\n" << r.out;
    }
    return out;
  }

  std::string helm_, dir_;
  static inline std::string packageDir_, chart_, packageError_;
};

// ---- YAML helpers --------------------------------------------------------------

std::string str(const YAML::Node& n) { return n && n.IsScalar() ? n.as<std::string>() : std::string("<missing>"); }

Strings strings(const YAML::Node& seq) {
  Strings out;
  if (seq && seq.IsSequence())
    for (auto x : seq) out.push_back(x.as<std::string>());
  return out;
}

std::set<std::string> stringSet(const YAML::Node& seq) {
  auto v = strings(seq);
  return {v.begin(), v.end()};
}

// The element of `seq` whose name is `name`, or a null node: test with
// IsMap()/IsNull(), a null node converts to true.
YAML::Node named(const YAML::Node& seq, const std::string& name) {
  if (seq && seq.IsSequence())
    for (auto x : seq)
      if (str(x["name"]) == name) return x;
  return YAML::Node();
}

YAML::Node podSpec(const Rendered& r) { return r.one("DaemonSet")["spec"]["template"]["spec"]; }
YAML::Node agentContainer(const Rendered& r) {
  auto spec = podSpec(r);
  auto c = named(spec["containers"], "agent");
  EXPECT_TRUE(c.IsMap()) << "no container named agent";
  return c;
}

std::map<std::string, std::string> envOf(const YAML::Node& container) {
  std::map<std::string, std::string> env;
  for (auto e : container["env"]) {
    std::string v = e["value"] ? e["value"].as<std::string>()
                    : e["valueFrom"]["fieldRef"] ? "fieldRef:" + e["valueFrom"]["fieldRef"]["fieldPath"].as<std::string>()
                                                 : "<other>";
    env[e["name"].as<std::string>()] = v;
  }
  return env;
}

// agent.conf as written: key -> raw value text ("\"x\"", true, 3, [..]).
std::map<std::string, std::string> agentConf(const Rendered& r, std::string* text = nullptr) {
  std::map<std::string, std::string> conf;
  auto cm = r.one("ConfigMap");
  std::string body = str(cm["data"]["agent.conf"]);
  if (text) *text = body;
  std::istringstream in(body);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    auto eq = line.find(" = ");
    if (eq == std::string::npos) {
      ADD_FAILURE() << "agent.conf line is not `key = value`: " << line;
      continue;
    }
    std::string key = line.substr(0, eq);
    EXPECT_EQ(conf.count(key), 0u) << "agent.conf sets " << key << " twice";
    conf[key] = line.substr(eq + 3);
  }
  return conf;
}

std::string q(const std::string& s) { return "\"" + s + "\""; }

// ---- value sets -------------------------------------------------------------------

// Selector, ServiceMonitor, custom image/resources/tolerations/priority, no
// bpffs init container, no connection lifecycle, tuning and extra config.
constexpr const char* kValuesCustom = R"(
image:
  repository: registry.example.com/ml/aimesh
  tag: 0.2.0-rc.1
  pullPolicy: Always
imagePullSecrets:
  - name: regcred
agent:
  logLevel: debug
  telemetry: false
  connectionLifecycle: false
  kubernetesSelector: "tier=inference"
  defaultAlgorithm: latency
  resyncSeconds: 60
  tuning:
    ejectAfter: 5
    latencyDecaySeconds: 2.5
    scrapeIntervalMs: 1000
  extraConfig:
    scrape-netns: models
  extraArgs: ["--eject-max-seconds", "20"]
  extraEnv:
    - name: HTTPS_PROXY
      value: http://proxy:3128
bpf:
  autoMount:
    enabled: false
metrics:
  serviceMonitor:
    enabled: true
    interval: 15s
    labels:
      release: prometheus
resources:
  requests: {cpu: 250m, memory: 256Mi}
  limits: {cpu: "2", memory: 1Gi}
tolerations:
  - key: nvidia.com/gpu
    operator: Exists
    effect: NoSchedule
nodeSelector:
  kubernetes.io/os: linux
  accelerator: gpu
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
        - matchExpressions:
            - {key: node-role.kubernetes.io/inference, operator: Exists}
priorityClassName: aimesh-critical
updateStrategy:
  maxUnavailable: 25%
terminationGracePeriodSeconds: 45
podAnnotations:
  example.com/team: ml
)";

// Hybrid cgroup node, other pin dir, socket dir, netns dir, metrics port and
// names.
constexpr const char* kValuesPaths = R"(
fullnameOverride: mesh-agent
serviceAccount:
  name: mesh-sa
agent:
  netnsDir: /var/run/docker/netns/
cgroup:
  root: /sys/fs/cgroup/unified
bpf:
  pinDir: /sys/fs/bpf/mesh-prod
apiSocket:
  hostDir: /var/run/aimesh-prod
metrics:
  bindAddress: "::"
  port: 19464
  service:
    enabled: false
)";

// ---- tests ------------------------------------------------------------------------

TEST_F(HelmChart, LintPassesForEveryValueSet) {
  for (const Strings& extra : {Strings{}, values("custom.yaml", kValuesCustom), values("paths.yaml", kValuesPaths)}) {
    Strings a{"lint", chart_, "--strict", "--namespace", "kube-system"};
    a.insert(a.end(), extra.begin(), extra.end());
    ProcResult r = helm(a);
    EXPECT_EQ(r.status, 0) << "helm lint " << (extra.empty() ? "(defaults)" : extra[1]) << ":\n"
                           << r.out << r.err;
  }
}

// The package is named after Chart.yaml and renders exactly as the folder
// does (a template or values file left out of it would show here).
TEST_F(HelmChart, PackageRendersLikeTheChartFolder) {
  auto meta = YAML::LoadFile(kChart + "/Chart.yaml");
  EXPECT_EQ(fs::path(chart_).filename().string(), str(meta["name"]) + "-" + str(meta["version"]) + ".tgz");
  for (const Strings& extra : {Strings{}, values("custom.yaml", kValuesCustom)}) {
    Strings fromDir{"template", "aimesh", kChart, "--namespace", "kube-system"};
    Strings fromPackage{"template", "aimesh", chart_, "--namespace", "kube-system"};
    fromDir.insert(fromDir.end(), extra.begin(), extra.end());
    fromPackage.insert(fromPackage.end(), extra.begin(), extra.end());
    ProcResult d = helm(fromDir), p = helm(fromPackage);
    ASSERT_EQ(d.status, 0) << d.err;
    ASSERT_EQ(p.status, 0) << p.err;
    EXPECT_EQ(p.out, d.out) << "helm template of " << chart_ << " differs from " << kChart
                            << (extra.empty() ? " (defaults)" : " with " + extra[1]);
  }
}

TEST_F(HelmChart, DefaultsRenderTheAgentObjectsAndNoServiceMonitor) {
  auto r = render({});
  EXPECT_EQ(r.kinds(), (std::multiset<std::string>{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap",
                                                    "Service", "DaemonSet"}));
  for (auto& d : r.docs) {
    auto labels = d["metadata"]["labels"];
    SCOPED_TRACE(str(d["kind"]));
    EXPECT_EQ(str(labels["app.kubernetes.io/name"]), "aimesh");
    EXPECT_EQ(str(labels["app.kubernetes.io/instance"]), "aimesh");
    EXPECT_EQ(str(labels["app.kubernetes.io/version"]), "0.1.0");
    EXPECT_EQ(str(labels["app.kubernetes.io/managed-by"]), "Helm");
    EXPECT_EQ(str(labels["helm.sh/chart"]), "aimesh-0.1.0");
    if (str(d["kind"]).rfind("ClusterRole", 0) != 0) {
      EXPECT_EQ(str(d["metadata"]["namespace"]), "kube-system");
    }
  }
  auto ds = r.one("DaemonSet");
  EXPECT_EQ(str(ds["metadata"]["name"]), "aimesh");  // so that `kubectl exec ds/aimesh` works
}

TEST_F(HelmChart, AgentIsNotPrivilegedAndHasExactlyTheBpfCapabilities) {
  for (const Strings& set : {Strings{}, values("custom.yaml", kValuesCustom)}) {
    auto r = render(set);
    auto sc = agentContainer(r)["securityContext"];
    ASSERT_TRUE(sc) << "agent has no securityContext";
    EXPECT_FALSE(sc["privileged"] && sc["privileged"].as<bool>()) << "agent must not be privileged";
    EXPECT_EQ(stringSet(sc["capabilities"]["drop"]), (std::set<std::string>{"ALL"}));
    auto add = strings(sc["capabilities"]["add"]);
    EXPECT_EQ(add.size(), 4u) << "capabilities.add has duplicates or extras";
    EXPECT_EQ(stringSet(sc["capabilities"]["add"]), (std::set<std::string>{"BPF", "NET_ADMIN", "SYS_ADMIN", "PERFMON"}));
    // Kubernetes refuses allowPrivilegeEscalation: false next to SYS_ADMIN.
    EXPECT_FALSE(sc["allowPrivilegeEscalation"]);
    EXPECT_TRUE(sc["readOnlyRootFilesystem"].as<bool>());
  }
}

TEST_F(HelmChart, MountsAndPropagationWithTheBpffsInitContainer) {
  auto r = render({});
  auto spec = podSpec(r);
  auto agent = agentContainer(r);
  auto mounts = agent["volumeMounts"];
  auto bpffs = named(mounts, "bpffs");
  EXPECT_EQ(str(bpffs["mountPath"]), "/sys/fs/bpf");
  EXPECT_EQ(str(bpffs["mountPropagation"]), "HostToContainer");
  auto cgroup = named(mounts, "cgroup");
  EXPECT_EQ(str(cgroup["mountPath"]), "/host/sys/fs/cgroup");
  EXPECT_TRUE(cgroup["readOnly"].as<bool>());
  EXPECT_EQ(str(named(mounts, "run")["mountPath"]), "/run/aimesh");
  auto config = named(mounts, "config");
  EXPECT_EQ(str(config["mountPath"]), "/etc/aimesh");

  auto vols = spec["volumes"];
  EXPECT_EQ(str(named(vols, "bpffs")["hostPath"]["path"]), "/sys/fs/bpf");
  EXPECT_EQ(str(named(vols, "bpffs")["hostPath"]["type"]), "DirectoryOrCreate");
  EXPECT_EQ(str(named(vols, "cgroup")["hostPath"]["path"]), "/sys/fs/cgroup");
  EXPECT_EQ(str(named(vols, "cgroup")["hostPath"]["type"]), "Directory");
  EXPECT_EQ(str(named(vols, "run")["hostPath"]["path"]), "/run/aimesh");
  EXPECT_EQ(str(named(vols, "config")["configMap"]["name"]), "aimesh");

  ASSERT_TRUE(spec["initContainers"]) << "the bpffs init container is on by default";
  ASSERT_EQ(spec["initContainers"].size(), 1u);
  auto init = spec["initContainers"][0];
  EXPECT_EQ(str(init["name"]), "mount-bpffs");
  // Bidirectional propagation is only allowed in privileged containers.
  EXPECT_TRUE(init["securityContext"]["privileged"].as<bool>());
  auto initMount = named(init["volumeMounts"], "bpffs");
  EXPECT_EQ(str(initMount["mountPath"]), "/sys/fs/bpf");
  EXPECT_EQ(str(initMount["mountPropagation"]), "Bidirectional");
  std::string script = strings(init["command"]).back();
  EXPECT_NE(script.find("mount -t bpf bpf /sys/fs/bpf"), std::string::npos) << script;
  EXPECT_EQ(str(init["image"]), str(agent["image"]));

  // Only the init container is privileged or Bidirectional.
  for (auto c : spec["containers"]) {
    for (auto m : c["volumeMounts"]) EXPECT_NE(str(m["mountPropagation"]), "Bidirectional");
  }
}

// The connection lifecycle walks the pods' network namespaces through their
// files in agent.netnsDir: the DaemonSet mounts that host directory at the
// same path, and namespaces the runtime bind-mounts there after the agent
// started must appear in the container (HostToContainer).
TEST_F(HelmChart, NetnsDirIsMountedReadOnlyWithHostToContainerPropagation) {
  for (const Strings& set : {Strings{}, Strings{"--set", "agent.netnsDir=/run/containerd/netns/"}}) {
    std::string dir = set.empty() ? "/var/run/netns" : "/run/containerd/netns";
    SCOPED_TRACE(dir);
    auto r = render(set);
    auto vol = named(podSpec(r)["volumes"], "netns");
    ASSERT_TRUE(vol.IsMap()) << "no netns volume";
    EXPECT_EQ(str(vol["hostPath"]["path"]), dir);
    // A node without the directory still runs the agent.
    EXPECT_EQ(str(vol["hostPath"]["type"]), "DirectoryOrCreate");
    auto mount = named(agentContainer(r)["volumeMounts"], "netns");
    ASSERT_TRUE(mount.IsMap()) << "no netns mount in the agent";
    EXPECT_EQ(str(mount["mountPath"]), dir);
    EXPECT_EQ(str(mount["mountPropagation"]), "HostToContainer");
    EXPECT_TRUE(mount["readOnly"] && mount["readOnly"].as<bool>());
    auto conf = agentConf(r);
    EXPECT_EQ(conf["connection-lifecycle"], "true");
    EXPECT_EQ(conf["netns-dir"], q(dir)) << "the agent walks the directory it has mounted";
    // Not in the init container: it only mounts bpffs.
    for (auto init : podSpec(r)["initContainers"]) EXPECT_TRUE(named(init["volumeMounts"], "netns").IsNull());
  }
}

// Without a directory, or without the lifecycle, nothing is mounted and the
// agent is given no directory to walk.
TEST_F(HelmChart, NoNetnsMountWithoutADirOrWithoutTheLifecycle) {
  struct Case {
    Strings set;
    std::string lifecycle;
  };
  for (auto& c : {Case{{"--set", "agent.netnsDir="}, "true"},
                  Case{{"--set", "agent.connectionLifecycle=false"}, "false"},
                  Case{{"--set", "agent.connectionLifecycle=false", "--set", "agent.netnsDir=/run/netns"}, "false"}}) {
    SCOPED_TRACE(c.set.back());
    auto r = render(c.set);
    EXPECT_TRUE(named(podSpec(r)["volumes"], "netns").IsNull());
    for (auto m : agentContainer(r)["volumeMounts"]) {
      EXPECT_NE(str(m["name"]), "netns");
      EXPECT_EQ(str(m["mountPath"]).find("netns"), std::string::npos) << str(m["mountPath"]);
    }
    auto conf = agentConf(r);
    EXPECT_EQ(conf["connection-lifecycle"], c.lifecycle);
    EXPECT_EQ(conf.count("netns-dir"), 0u);
  }
}

// `helm upgrade --reuse-values` renders this chart with the values of the
// release's older chart, which has neither value; --set KEY=null removes a
// value the same way. Both count as their defaults, not as off.
TEST_F(HelmChart, LifecycleValuesMissingFromAnOlderReleaseKeepTheirDefaults) {
  auto r = render({"--set", "agent.connectionLifecycle=null", "--set", "agent.netnsDir=null"});
  auto conf = agentConf(r);
  EXPECT_EQ(conf["connection-lifecycle"], "true");
  EXPECT_EQ(conf["netns-dir"], q("/var/run/netns"));
  EXPECT_EQ(str(named(agentContainer(r)["volumeMounts"], "netns")["mountPath"]), "/var/run/netns");
  EXPECT_EQ(str(named(podSpec(r)["volumes"], "netns")["hostPath"]["path"]), "/var/run/netns");
}

TEST_F(HelmChart, PodSpecDefaults) {
  auto r = render({});
  auto ds = r.one("DaemonSet");
  auto spec = podSpec(r);
  EXPECT_TRUE(spec["hostNetwork"].as<bool>());
  EXPECT_EQ(str(spec["dnsPolicy"]), "ClusterFirstWithHostNet");
  EXPECT_EQ(str(spec["priorityClassName"]), "system-node-critical");
  EXPECT_EQ(str(spec["serviceAccountName"]), "aimesh");
  EXPECT_EQ(spec["terminationGracePeriodSeconds"].as<int>(), 30);
  ASSERT_EQ(spec["tolerations"].size(), 1u);
  EXPECT_EQ(str(spec["tolerations"][0]["operator"]), "Exists");
  EXPECT_FALSE(spec["tolerations"][0]["key"]) << "the default tolerates every taint";
  EXPECT_EQ(str(spec["nodeSelector"]["kubernetes.io/os"]), "linux");
  EXPECT_FALSE(spec["affinity"]);
  EXPECT_FALSE(spec["imagePullSecrets"]);

  EXPECT_EQ(str(ds["spec"]["updateStrategy"]["type"]), "RollingUpdate");
  EXPECT_EQ(str(ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"]), "1");
  // The selector matches the pod template's labels.
  for (auto kv : ds["spec"]["selector"]["matchLabels"])
    EXPECT_EQ(str(ds["spec"]["template"]["metadata"]["labels"][kv.first.as<std::string>()]), str(kv.second));
  auto annotations = ds["spec"]["template"]["metadata"]["annotations"];
  EXPECT_EQ(str(annotations["checksum/config"]).size(), 64u);
  EXPECT_EQ(str(annotations["kubectl.kubernetes.io/default-container"]), "agent");

  auto agent = agentContainer(r);
  EXPECT_EQ(str(agent["image"]), "ghcr.io/aimesh/aimesh:0.1.0");
  EXPECT_EQ(str(agent["imagePullPolicy"]), "IfNotPresent");
  EXPECT_EQ(strings(agent["command"]), (Strings{"aimesh-agent"}));
  EXPECT_EQ(strings(agent["args"]), (Strings{"--config", kConfigPath}));
  auto port = named(agent["ports"], "metrics");
  EXPECT_EQ(port["containerPort"].as<int>(), 9464);
  EXPECT_EQ(str(port["protocol"]), "TCP");
  for (auto [probe, path] : {std::pair{"livenessProbe", "/healthz"}, std::pair{"readinessProbe", "/readyz"}}) {
    SCOPED_TRACE(probe);
    auto get = agent[probe]["httpGet"];
    EXPECT_EQ(str(get["path"]), path);
    EXPECT_TRUE(str(get["port"]) == "metrics" || str(get["port"]) == "9464") << str(get["port"]);
    EXPECT_GE(agent[probe]["periodSeconds"].as<int>(), 1);
  }
  auto env = envOf(agent);
  EXPECT_EQ(env["POD_NAMESPACE"], "fieldRef:metadata.namespace");
  EXPECT_EQ(env["NODE_NAME"], "fieldRef:spec.nodeName");
  EXPECT_EQ(env["AIMESH_SOCKET"], "/run/aimesh/agent.sock");  // meshctl's default too
  EXPECT_FALSE(env.count("KUBERNETES_SERVICE_HOST"));
  EXPECT_EQ(str(agent["resources"]["requests"]["cpu"]), "100m");
  EXPECT_EQ(str(agent["resources"]["limits"]["memory"]), "512Mi");
}

TEST_F(HelmChart, RbacIsExactlyWhatTheAgentReads) {
  auto r = render({});
  auto role = r.one("ClusterRole");
  // apiGroup -> resource -> verbs
  std::map<std::string, std::map<std::string, std::set<std::string>>> rules;
  for (auto rule : role["rules"]) {
    auto groups = strings(rule["apiGroups"]);
    ASSERT_EQ(groups.size(), 1u);
    for (auto& res : strings(rule["resources"])) {
      EXPECT_EQ(rules[groups[0]].count(res), 0u) << res << " appears in two rules";
      rules[groups[0]][res] = stringSet(rule["verbs"]);
    }
    EXPECT_FALSE(rule["nonResourceURLs"]);
    if (groups[0] == "apps") {
      EXPECT_EQ(strings(rule["resourceNames"]), (Strings{"aimesh"})) << "only its own DaemonSet";
    } else {
      EXPECT_FALSE(rule["resourceNames"]);
    }
  }
  std::set<std::string> read{"get", "list", "watch"};
  decltype(rules) want{{"", {{"services", read}, {"pods", read}}},
                       {"discovery.k8s.io", {{"endpointslices", read}}},
                       {"apps", {{"daemonsets", read}}},
                       {"gateway.networking.k8s.io",
                        {{"httproutes", read}, {"grpcroutes", read}, {"tcproutes", read}, {"referencegrants", read}}},
                       {"inference.networking.k8s.io", {{"inferencepools", read}}}};
  EXPECT_EQ(rules, want);

  auto binding = r.one("ClusterRoleBinding");
  EXPECT_EQ(str(binding["roleRef"]["kind"]), "ClusterRole");
  EXPECT_EQ(str(binding["roleRef"]["name"]), str(role["metadata"]["name"]));
  ASSERT_EQ(binding["subjects"].size(), 1u);
  EXPECT_EQ(str(binding["subjects"][0]["kind"]), "ServiceAccount");
  EXPECT_EQ(str(binding["subjects"][0]["name"]), str(r.one("ServiceAccount")["metadata"]["name"]));
  EXPECT_EQ(str(binding["subjects"][0]["namespace"]), "kube-system");
  EXPECT_EQ(str(podSpec(r)["serviceAccountName"]), str(r.one("ServiceAccount")["metadata"]["name"]));
}

TEST_F(HelmChart, ConfigMapHoldsTheAgentSettings) {
  auto r = render({});
  auto conf = agentConf(r);
  std::map<std::string, std::string> want{
      {"kubernetes", "true"},
      {"daemonset", q("kube-system/aimesh")},
      {"metrics-addr", q("0.0.0.0:9464")},
      {"api-socket", q("/run/aimesh/agent.sock")},
      {"bpffs", q("/sys/fs/bpf")},
      {"pin-dir", q("/sys/fs/bpf/aimesh")},
      {"cgroup", q("/host/sys/fs/cgroup")},  // the cgroup volume's mountPath
      {"log-level", q("info")},
      {"telemetry", "true"},
      {"resync-seconds", "30"},
      {"connection-lifecycle", "true"},
      {"netns-dir", q("/var/run/netns")},  // the netns volume's mountPath
      // Opt-in by label, least_conn unless a Service says otherwise.
      {"kubernetes-selector", q("aimesh.io/mesh=enabled")},
      {"default-algorithm", q("least_conn")},
  };
  EXPECT_EQ(conf, want);
  EXPECT_EQ(str(r.one("ConfigMap")["metadata"]["name"]), "aimesh");
}

TEST_F(HelmChart, CustomValues) {
  auto r = render(values("custom.yaml", kValuesCustom));
  EXPECT_EQ(r.kinds(), (std::multiset<std::string>{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap",
                                                    "Service", "DaemonSet", "ServiceMonitor"}));
  auto ds = r.one("DaemonSet");
  auto spec = podSpec(r);
  auto agent = agentContainer(r);
  EXPECT_EQ(str(agent["image"]), "registry.example.com/ml/aimesh:0.2.0-rc.1");
  EXPECT_EQ(str(agent["imagePullPolicy"]), "Always");
  EXPECT_EQ(str(spec["imagePullSecrets"][0]["name"]), "regcred");
  EXPECT_EQ(str(ds["metadata"]["labels"]["app.kubernetes.io/version"]), "0.2.0-rc.1");
  EXPECT_FALSE(spec["initContainers"]) << "bpf.autoMount.enabled=false";
  EXPECT_EQ(str(named(agent["volumeMounts"], "bpffs")["mountPropagation"]), "HostToContainer");
  EXPECT_EQ(str(spec["priorityClassName"]), "aimesh-critical");
  EXPECT_EQ(spec["terminationGracePeriodSeconds"].as<int>(), 45);
  EXPECT_EQ(str(ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"]), "25%");
  ASSERT_EQ(spec["tolerations"].size(), 1u);
  EXPECT_EQ(str(spec["tolerations"][0]["key"]), "nvidia.com/gpu");
  EXPECT_EQ(str(spec["tolerations"][0]["effect"]), "NoSchedule");
  EXPECT_EQ(str(spec["nodeSelector"]["accelerator"]), "gpu");
  EXPECT_EQ(str(spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
                    [0]["matchExpressions"][0]["key"]),
            "node-role.kubernetes.io/inference");
  EXPECT_EQ(str(agent["resources"]["requests"]["cpu"]), "250m");
  EXPECT_EQ(str(agent["resources"]["limits"]["memory"]), "1Gi");
  EXPECT_EQ(str(ds["spec"]["template"]["metadata"]["annotations"]["example.com/team"]), "ml");
  EXPECT_EQ(strings(agent["args"]), (Strings{"--config", kConfigPath, "--eject-max-seconds", "20"}));
  EXPECT_EQ(envOf(agent)["HTTPS_PROXY"], "http://proxy:3128");

  auto conf = agentConf(r);
  EXPECT_EQ(conf["kubernetes-selector"], q("tier=inference"));
  EXPECT_EQ(conf["default-algorithm"], q("latency"));
  EXPECT_EQ(conf["log-level"], q("debug"));
  EXPECT_EQ(conf["telemetry"], "false");
  EXPECT_EQ(conf["connection-lifecycle"], "false");
  EXPECT_EQ(conf.count("netns-dir"), 0u) << "no lifecycle, no namespaces to walk";
  EXPECT_TRUE(named(spec["volumes"], "netns").IsNull());
  EXPECT_EQ(conf["resync-seconds"], "60");
  EXPECT_EQ(conf["eject-after"], "5");
  EXPECT_EQ(conf["latency-decay-seconds"], "2.5");
  EXPECT_EQ(conf["scrape-interval-ms"], "1000");
  EXPECT_EQ(conf["scrape-netns"], q("models"));
  EXPECT_EQ(conf.count("eject-base-seconds"), 0u) << "unset tuning keeps the agent's default";

  auto svc = r.one("Service");
  auto sm = r.one("ServiceMonitor");
  EXPECT_EQ(str(sm["apiVersion"]), "monitoring.coreos.com/v1");
  EXPECT_EQ(str(sm["metadata"]["labels"]["release"]), "prometheus");
  ASSERT_EQ(sm["spec"]["endpoints"].size(), 1u);
  auto ep = sm["spec"]["endpoints"][0];
  EXPECT_EQ(str(ep["port"]), "metrics");
  EXPECT_EQ(str(ep["path"]), "/metrics");
  EXPECT_EQ(str(ep["interval"]), "15s");
  EXPECT_EQ(strings(sm["spec"]["namespaceSelector"]["matchNames"]), (Strings{"kube-system"}));
  // The ServiceMonitor selects the metrics Service.
  for (auto kv : sm["spec"]["selector"]["matchLabels"])
    EXPECT_EQ(str(svc["metadata"]["labels"][kv.first.as<std::string>()]), str(kv.second)) << kv.first;
}

TEST_F(HelmChart, MetricsServiceSelectsTheAgents) {
  auto r = render({});
  auto svc = r.one("Service");
  EXPECT_EQ(str(svc["metadata"]["name"]), "aimesh-metrics");
  EXPECT_EQ(str(svc["spec"]["clusterIP"]), "None");
  ASSERT_EQ(svc["spec"]["ports"].size(), 1u);
  auto port = svc["spec"]["ports"][0];
  EXPECT_EQ(str(port["name"]), "metrics");
  EXPECT_EQ(port["port"].as<int>(), 9464);
  EXPECT_EQ(str(port["targetPort"]), "metrics");
  auto podLabels = r.one("DaemonSet")["spec"]["template"]["metadata"]["labels"];
  ASSERT_GT(svc["spec"]["selector"].size(), 0u);
  for (auto kv : svc["spec"]["selector"])
    EXPECT_EQ(str(podLabels[kv.first.as<std::string>()]), str(kv.second)) << kv.first;
}

TEST_F(HelmChart, CgroupRootPinDirAndSocketOverrides) {
  auto r = render(values("paths.yaml", kValuesPaths), "prod", "mesh-system");
  EXPECT_EQ(r.kinds(), (std::multiset<std::string>{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap",
                                                    "DaemonSet"}));
  auto ds = r.one("DaemonSet");
  EXPECT_EQ(str(ds["metadata"]["name"]), "mesh-agent");
  EXPECT_EQ(str(ds["metadata"]["namespace"]), "mesh-system");
  auto spec = podSpec(r);
  auto agent = agentContainer(r);
  auto vols = spec["volumes"];
  auto mounts = agent["volumeMounts"];
  EXPECT_EQ(str(named(vols, "cgroup")["hostPath"]["path"]), "/sys/fs/cgroup/unified");
  EXPECT_EQ(str(named(mounts, "cgroup")["mountPath"]), "/host/sys/fs/cgroup/unified");
  EXPECT_EQ(str(named(vols, "run")["hostPath"]["path"]), "/var/run/aimesh-prod");
  EXPECT_EQ(str(named(mounts, "run")["mountPath"]), "/var/run/aimesh-prod");
  EXPECT_EQ(str(named(vols, "netns")["hostPath"]["path"]), "/var/run/docker/netns");
  EXPECT_EQ(str(named(mounts, "netns")["mountPath"]), "/var/run/docker/netns");
  EXPECT_EQ(named(agent["ports"], "metrics")["containerPort"].as<int>(), 19464);
  EXPECT_EQ(envOf(agent)["AIMESH_SOCKET"], "/var/run/aimesh-prod/agent.sock");
  EXPECT_EQ(str(spec["serviceAccountName"]), "mesh-sa");
  EXPECT_EQ(str(r.one("ServiceAccount")["metadata"]["name"]), "mesh-sa");
  EXPECT_EQ(str(r.one("ClusterRoleBinding")["subjects"][0]["name"]), "mesh-sa");
  EXPECT_EQ(str(r.one("ClusterRoleBinding")["subjects"][0]["namespace"]), "mesh-system");
  for (auto rule : r.one("ClusterRole")["rules"]) {
    if (strings(rule["apiGroups"]) == Strings{"apps"}) {
      EXPECT_EQ(strings(rule["resourceNames"]), (Strings{"mesh-agent"}));
    }
  }

  auto conf = agentConf(r);
  EXPECT_EQ(conf["cgroup"], q("/host/sys/fs/cgroup/unified"));
  EXPECT_EQ(conf["pin-dir"], q("/sys/fs/bpf/mesh-prod"));
  EXPECT_EQ(conf["api-socket"], q("/var/run/aimesh-prod/agent.sock"));
  EXPECT_EQ(conf["netns-dir"], q("/var/run/docker/netns"));
  EXPECT_EQ(conf["metrics-addr"], q("[::]:19464"));
  EXPECT_EQ(conf["daemonset"], q("mesh-system/mesh-agent"));
}

TEST_F(HelmChart, ChecksumAnnotationFollowsTheConfig) {
  auto sum = [&](const Strings& set) {
    auto r = render(set);
    return str(r.one("DaemonSet")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]);
  };
  std::string base = sum({});
  ASSERT_EQ(base.size(), 64u);
  EXPECT_EQ(sum({}), base) << "rendering is deterministic";
  EXPECT_NE(sum({"--set", "agent.logLevel=debug"}), base);
  EXPECT_NE(sum({"--set", "agent.tuning.ejectAfter=7"}), base);
  EXPECT_NE(sum({"--set", "agent.kubernetesSelector=mesh=on"}), base);
  EXPECT_NE(sum({"--set", "agent.connectionLifecycle=false"}), base);
  EXPECT_NE(sum({"--set", "agent.netnsDir=/run/docker/netns"}), base);
  EXPECT_NE(sum({"--set", "metrics.port=9500"}), base);
  // Not part of agent.conf: the pods roll for their own reasons, or not at all.
  EXPECT_EQ(sum({"--set", "podAnnotations.team=ml"}), base);
  EXPECT_EQ(sum({"--set", "resources.requests.cpu=200m"}), base);
}

TEST_F(HelmChart, ServiceMonitorOnlyWhenEnabled) {
  EXPECT_TRUE(render({}).all("ServiceMonitor").empty());
  EXPECT_EQ(render({"--set", "metrics.serviceMonitor.enabled=true"}).all("ServiceMonitor").size(), 1u);
  EXPECT_TRUE(render({"--set", "metrics.service.enabled=false"}).all("Service").empty());
}

TEST_F(HelmChart, AppArmorUnconfinedByFieldOrByAnnotationPerKubeVersion) {
  auto recent = render({"--kube-version", "1.31.0"});
  EXPECT_EQ(str(agentContainer(recent)["securityContext"]["appArmorProfile"]["type"]), "Unconfined");
  auto older = render({"--kube-version", "1.29.0"});
  EXPECT_FALSE(agentContainer(older)["securityContext"]["appArmorProfile"]);
  EXPECT_EQ(str(older.one("DaemonSet")["spec"]["template"]["metadata"]["annotations"]
                    ["container.apparmor.security.beta.kubernetes.io/agent"]),
            "unconfined");
  auto off = render({"--set", "agent.appArmorUnconfined=false"});
  EXPECT_FALSE(agentContainer(off)["securityContext"]["appArmorProfile"]);
}

// Every Service through the mesh is a deliberate choice: both values, or
// neither.
TEST_F(HelmChart, MeshingAllServicesTakesBothValues) {
  auto all = agentConf(render({"--set", "agent.kubernetesSelector=", "--set", "agent.meshAllServices=true"}));
  EXPECT_EQ(all.count("kubernetes-selector"), 0u) << "no selector: every Service";
  ProcResult empty = helm({"template", "aimesh", chart_, "--set", "agent.kubernetesSelector="});
  EXPECT_NE(empty.status, 0);
  EXPECT_NE(empty.err.find("agent.meshAllServices"), std::string::npos) << empty.err;
  ProcResult both = helm({"template", "aimesh", chart_, "--set", "agent.meshAllServices=true"});
  EXPECT_NE(both.status, 0);
  EXPECT_NE(both.err.find("agent.kubernetesSelector"), std::string::npos) << both.err;
}

TEST_F(HelmChart, RefusesKubernetesBefore121) {
  ProcResult r = helm({"template", "aimesh", chart_, "--kube-version", "1.20.0"});
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("kubeVersion"), std::string::npos) << r.err;
}

TEST_F(HelmChart, SchemaAndTemplatesRejectBadValues) {
  struct Bad {
    Strings args;
    std::string mentions;  // in helm's error
  };
  std::vector<Bad> bad{
      {{"--set-string", "metrics.port=abc"}, "metrics.port"},
      {{"--set", "metrics.port=70000"}, "metrics.port"},
      {{"--set", "metrics.port=0"}, "metrics.port"},
      {{"--set", "metrics.bindAddress=localhost"}, "metrics.bindAddress"},
      {{"--set", "agent.logLevel=verbose"}, "agent.logLevel"},
      {{"--set", "agent.defaultAlgorithm=round_robin"}, "agent.defaultAlgorithm"},
      {{"--set-string", "agent.telemetry=yes"}, "agent.telemetry"},
      {{"--set-string", "agent.connectionLifecycle=yes"}, "agent.connectionLifecycle"},
      {{"--set", "agent.netnsDir=var/run/netns"}, "agent.netnsDir"},
      {{"--set", "agent.netnsDir=/"}, "agent.netnsDir"},
      {{"--set", "agent.extraConfig.netns-dir=/run/netns"}, "agent.netnsDir"},
      {{"--set", "agent.extraConfig.connection-lifecycle=false"}, "agent.connectionLifecycle"},
      {{"--set", "agent.resyncSeconds=0"}, "agent.resyncSeconds"},
      {{"--set", "agent.tuning.ejectAfter=5000"}, "agent.tuning.ejectAfter"},
      {{"--set", "agent.tuning.scrapeIntervalMs=10"}, "agent.tuning.scrapeIntervalMs"},
      {{"--set", "agent.tuning.noSuchKnob=1"}, "noSuchKnob"},
      {{"--set", "agent.extraConfig.Not_A_Flag=1"}, "Not_A_Flag"},
      {{"--set", "agent.extraConfig.pin-dir=/sys/fs/bpf/x"}, "bpf.pinDir"},
      {{"--set", "agent.extraConfig.daemonset=a/b"}, "daemonset"},
      {{"--set", "updateStrategy.maxUnavailable=0"}, "updateStrategy.maxUnavailable"},
      {{"--set-string", "updateStrategy.maxUnavailable=half"}, "updateStrategy.maxUnavailable"},
      {{"--set", "image.pullPolicy=Sometimes"}, "image.pullPolicy"},
      {{"--set", "image.digest=sha256:1234"}, "image.digest"},
      {{"--set", "tolerations[0].operator=Maybe"}, "operator"},
      {{"--set", "cgroup.root=relative/path"}, "cgroup.root"},
      {{"--set", "bpf.pinDir=/var/lib/aimesh"}, "bpf.pinDir"},
      {{"--set", "terminationGracePeriodSeconds=-1"}, "terminationGracePeriodSeconds"},
      {{"--set", "metrics.serviceMonitor.interval=often"}, "interval"},
      {{"--set", "noSuchValue=1"}, "noSuchValue"},
  };
  for (auto& b : bad) {
    std::string what = b.args[1];
    Strings t{"template", "aimesh", chart_};
    t.insert(t.end(), b.args.begin(), b.args.end());
    ProcResult r = helm(t);
    EXPECT_NE(r.status, 0) << "helm template accepted " << what << ":\n" << r.out;
    EXPECT_NE(r.err.find(b.mentions), std::string::npos) << what << ": error does not name " << b.mentions << ":\n"
                                                         << r.err;
  }
  // helm lint fails on the same schema errors.
  for (const char* set : {"metrics.port=70000", "agent.logLevel=verbose"}) {
    ProcResult r = helm({"lint", chart_, "--set", set});
    EXPECT_NE(r.status, 0) << "helm lint accepted " << set << ":\n" << r.out;
  }
  ProcResult r = helm({"lint", chart_, "--set-string", "metrics.port=abc"});
  EXPECT_NE(r.status, 0) << "helm lint accepted metrics.port=abc";
}

// Whitespace-separated words of `text` between the line that contains
// `from` and the next line that contains `to`, without comments and
// shell/Dockerfile punctuation.
std::set<std::string> wordsBetween(const std::string& text, const std::string& from, const std::string& to) {
  std::set<std::string> out;
  std::istringstream in(text);
  std::string line;
  bool inside = false;
  while (std::getline(in, line)) {
    if (!inside) {
      inside = line.find(from) != std::string::npos;
      if (inside) line = line.substr(line.find(from) + from.size());
      else continue;
    } else if (line.find(to) != std::string::npos) {
      break;
    }
    if (auto hash = line.find('#'); hash != std::string::npos) line = line.substr(0, hash);
    std::istringstream words(line);
    std::string w;
    while (words >> w)
      if (w != "\\" && w != "&&" && w[0] != '-') out.insert(w);
  }
  return out;
}

// The image the chart pulls by default is the one the Dockerfile documents,
// tagged with the project's version, built from the same packages as
// scripts/install-deps.sh's build section.
TEST_F(HelmChart, ImageTagAndBuildPackagesMatchTheProject) {
  std::string cmake = readFile(AIMESH_SOURCE_DIR "/CMakeLists.txt");
  auto at = cmake.find("project(aimesh VERSION ");
  ASSERT_NE(at, std::string::npos);
  std::string version = cmake.substr(at + 23, cmake.find_first_of(" )", at + 23) - (at + 23));
  auto chart = YAML::LoadFile(kChart + "/Chart.yaml");
  EXPECT_EQ(str(chart["appVersion"]), version) << "Chart.yaml appVersion vs CMakeLists.txt VERSION";
  auto values = YAML::LoadFile(kChart + "/values.yaml");
  std::string image = str(values["image"]["repository"]) + ":" + version;
  EXPECT_EQ(str(agentContainer(render({}))["image"]), image);

  std::string docker = readFile(AIMESH_SOURCE_DIR "/Dockerfile");
  EXPECT_NE(docker.find("docker build -t " + image + " ."), std::string::npos) << "Dockerfile documents " << image;
  EXPECT_NE(docker.find("ARG VERSION=" + version + "\n"), std::string::npos);
  EXPECT_NE(docker.find("ENTRYPOINT [\"aimesh-agent\"]"), std::string::npos);
  std::string install = readFile(AIMESH_SOURCE_DIR "/docs/install.md");
  EXPECT_NE(install.find("docker build -t " + image + " ."), std::string::npos) << "docs/install.md documents " << image;

  auto deps = wordsBetween(readFile(AIMESH_SOURCE_DIR "/scripts/install-deps.sh"), "# build", "# tests and demo");
  auto stage = wordsBetween(docker, "apt-get install", "rm -rf /var/lib/apt/lists");
  ASSERT_FALSE(deps.empty());
  EXPECT_EQ(stage, deps) << "the Dockerfile's build stage installs other packages than install-deps.sh's build section";
}

// The agent must understand every line the chart writes: run the real binary
// on the rendered agent.conf and arguments with --check-config and compare
// the effective settings it prints with the file.
class HelmChartAgent : public HelmChart {};

// A config value as written ("\"x\"", true, 2.5) as JSON.
json confValue(const std::string& raw) {
  if (raw.size() >= 2 && raw.front() == '"' && raw.back() == '"') return raw.substr(1, raw.size() - 2);
  if (raw == "true") return true;
  if (raw == "false") return false;
  return json::parse(raw);  // numbers
}

TEST_F(HelmChartAgent, CheckConfigAcceptsTheRenderedConfigAndArgs) {
  ASSERT_TRUE(executable(kAgent)) << kAgent << " is not built";
  struct Case {
    std::string name;
    Strings values;
    std::string release, ns, daemonset;
    bool lifecycle;
    std::string netnsDir;  // "": no netns-dir line, the agent's default
  };
  std::vector<Case> cases{
      {"defaults", {}, "aimesh", "kube-system", "kube-system/aimesh", true, "/var/run/netns"},
      {"custom", values("custom.yaml", kValuesCustom), "aimesh", "kube-system", "kube-system/aimesh", false, ""},
      {"paths", values("paths.yaml", kValuesPaths), "prod", "mesh-system", "mesh-system/mesh-agent", true,
       "/var/run/docker/netns"},
  };
  for (auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto r = render(c.values, c.release, c.ns);
    std::string text;
    auto conf = agentConf(r, &text);
    auto agent = agentContainer(r);
    std::string confFile = dir_ + "/agent-" + c.name + ".conf";
    writeFile(confFile, text);

    Strings argv{kAgent};
    auto args = strings(agent["args"]);
    for (auto& a : args) argv.push_back(a == kConfigPath ? confFile : a);
    ASSERT_EQ(std::count(argv.begin(), argv.end(), confFile), 1) << "the DaemonSet passes --config " << kConfigPath;
    argv.push_back("--check-config");
    ProcResult run = runProgram(argv, {}, std::chrono::seconds(30));
    ASSERT_EQ(run.status, 0) << "aimesh-agent --check-config rejected the chart's config:\n"
                             << run.err << run.out << "\nagent.conf:\n"
                             << text;
    json got;
    try {
      got = json::parse(run.out);
    } catch (const json::exception& e) {
      FAIL() << "--check-config did not print JSON: " << e.what() << "\n" << run.out;
    }
    EXPECT_EQ(got.value("kubernetes", false), true) << got.dump(2);
    EXPECT_EQ(got.value("daemonset", std::string()), c.daemonset) << got.dump(2);
    // The lifecycle's settings are in the file, so the loop below checks
    // them too; a setting the chart leaves out keeps the agent's default.
    EXPECT_EQ(conf.count("connection-lifecycle"), 1u);
    EXPECT_EQ(conf.count("netns-dir"), c.netnsDir.empty() ? 0u : 1u);
    EXPECT_EQ(got.value("connection_lifecycle", !c.lifecycle), c.lifecycle) << got.dump(2);
    EXPECT_EQ(got.value("netns_dir", std::string("<missing>")), c.netnsDir) << got.dump(2);
    // Every line of agent.conf took effect (check-config names the settings
    // like the flags, with '_' for '-').
    for (auto& [key, raw] : conf) {
      std::string jkey = key;
      std::replace(jkey.begin(), jkey.end(), '-', '_');
      if (!got.contains(jkey)) {
        ADD_FAILURE() << "--check-config does not report " << jkey << " (agent.conf: " << key << " = " << raw << ")";
        continue;
      }
      json want = confValue(raw);
      if (want.is_number() && got[jkey].is_number())
        EXPECT_DOUBLE_EQ(got[jkey].get<double>(), want.get<double>()) << key;
      else
        EXPECT_EQ(got[jkey], want) << key;
    }
    if (c.name == "custom") {
      // agent.extraArgs come after --config, so they win over the file.
      EXPECT_DOUBLE_EQ(got.value("eject_max_seconds", 0.0), 20.0) << got.dump(2);
    }
  }
}

}  // namespace
}  // namespace aimesh::testing

namespace aimesh::testing {
namespace {

// A misspelt key in agent.conf (or agent.extraConfig) must stop the agent
// with the key named, not be ignored.
TEST_F(HelmChartAgent, AMisspeltConfigKeyIsRefusedByName) {
  ASSERT_TRUE(executable(kAgent)) << kAgent << " is not built";
  std::string conf = dir_ + "/typo.conf";
  writeFile(conf, "kubernetes = true\neject-afterr = 3\n");
  ProcResult run = runProgram({kAgent, "--config", conf, "--check-config"}, {}, std::chrono::seconds(30));
  EXPECT_NE(run.status, 0) << run.out;
  EXPECT_NE((run.err + run.out).find("eject-afterr"), std::string::npos) << run.err << run.out;
}

}  // namespace
}  // namespace aimesh::testing

namespace aimesh::testing {
namespace {

// No Docker engine here to build the image, so check its runtime stage the
// other way round: every shared library the built binaries link directly
// (ELF NEEDED) comes from a Debian package that stage installs, or from the
// base image's own (libc6, libgcc-s1, libstdc++6: apt needs them). Libraries
// those need come with apt's dependencies.
TEST_F(HelmChart, ImageRuntimeStageInstallsThePackageOfEveryLibraryTheBinariesLink) {
#ifdef AIMESH_SANITIZED
  GTEST_SKIP() << "sanitizer build: the binaries link libasan/libubsan, which no image ships";
#endif
  std::string docker = readFile(AIMESH_SOURCE_DIR "/Dockerfile");
  auto runtimeAt = docker.find("FROM debian:${DEBIAN_RELEASE}-slim");
  ASSERT_NE(runtimeAt, std::string::npos) << "no bookworm-slim runtime stage";
  auto runtime = wordsBetween(docker.substr(runtimeAt), "apt-get install", "rm -rf /var/lib/apt/lists");
  ASSERT_FALSE(runtime.empty());
  std::set<std::string> base{"libc6", "libgcc-s1", "libstdc++6"};
  for (std::string bin : {kAgent, std::string(AIMESH_BINARY_DIR "/meshctl")}) {
    SCOPED_TRACE(bin);
    // soname, path, package, one per line.
    std::string script =
        "set -e; b=\"$1\"; for so in $(readelf -d \"$b\" | awk '/NEEDED/{gsub(/[][]/,\"\",$5); print $5}'); do "
        "p=$(ldd \"$b\" | awk -v s=\"$so\" '$1==s{print $3}'); "
        "pkg=$(dpkg -S \"$p\" 2>/dev/null || dpkg -S \"/usr$p\" 2>/dev/null || dpkg -S \"${p#/usr}\" 2>/dev/null "
        "|| echo '?'); echo \"$so $p ${pkg%%:*}\"; done";
    ProcResult run = runProgram({"/bin/sh", "-c", script, "sh", bin}, {}, std::chrono::seconds(30));
    ASSERT_EQ(run.status, 0) << run.err;
    std::istringstream lines(run.out);
    std::string so, path, pkg;
    int n = 0;
    while (lines >> so >> path >> pkg) {
      ++n;
      EXPECT_TRUE(runtime.count(pkg) || base.count(pkg))
          << so << " (" << path << ") comes from package '" << pkg << "', which the runtime stage does not install";
    }
    EXPECT_GE(n, 5) << run.out;
  }
}

}  // namespace
}  // namespace aimesh::testing

// ---- the PrometheusRule and the Grafana dashboard ConfigMap ------------------

namespace aimesh::testing {
namespace {

// yaml-cpp node -> JSON with every scalar as a string: compares documents
// regardless of key order and formatting.
json yamlAsJson(const YAML::Node& n) {
  if (n.IsMap()) {
    json o = json::object();
    for (auto kv : n) o[kv.first.as<std::string>()] = yamlAsJson(kv.second);
    return o;
  }
  if (n.IsSequence()) {
    json a = json::array();
    for (auto x : n) a.push_back(yamlAsJson(x));
    return a;
  }
  if (n.IsScalar()) return n.as<std::string>();
  return nullptr;
}

// Off by default; on, the PrometheusRule's spec is files/alerts.yaml (the
// file promtool tests) and the dashboard ConfigMap holds files/dashboard.json
// under the Grafana sidecar's label; label, namespace and job overrides.
TEST_F(HelmChart, PrometheusRuleAndDashboardConfigMapWhenEnabled) {
  const std::string alertsFile = kChart + "/files/alerts.yaml", dashboardFile = kChart + "/files/dashboard.json";
  auto defaults = render({});
  EXPECT_TRUE(defaults.all("PrometheusRule").empty());
  EXPECT_EQ(defaults.all("ConfigMap").size(), 1u) << "the dashboard ConfigMap is off by default";

  auto r = render({"--set", "metrics.prometheusRule.enabled=true", "--set", "metrics.dashboard.enabled=true", "--set",
                   "metrics.prometheusRule.labels.release=kps"});
  auto rule = r.one("PrometheusRule");
  ASSERT_TRUE(rule.IsMap());
  EXPECT_EQ(str(rule["apiVersion"]), "monitoring.coreos.com/v1");
  EXPECT_EQ(str(rule["metadata"]["name"]), "aimesh");
  EXPECT_EQ(str(rule["metadata"]["namespace"]), "kube-system");
  EXPECT_EQ(str(rule["metadata"]["labels"]["app.kubernetes.io/name"]), "aimesh");
  EXPECT_EQ(str(rule["metadata"]["labels"]["app.kubernetes.io/managed-by"]), "Helm");
  EXPECT_EQ(str(rule["metadata"]["labels"]["release"]), "kps");
  YAML::Node file = YAML::LoadFile(alertsFile);
  EXPECT_EQ(yamlAsJson(rule["spec"]), yamlAsJson(file)) << "the PrometheusRule's spec is not files/alerts.yaml";
  size_t rules = 0;
  for (auto g : rule["spec"]["groups"])
    for (auto a : g["rules"]) {
      ++rules;
      SCOPED_TRACE(str(a["alert"]));
      EXPECT_FALSE(str(a["expr"]).empty());
      EXPECT_TRUE(str(a["labels"]["severity"]) == "critical" || str(a["labels"]["severity"]) == "warning" ||
                  str(a["labels"]["severity"]) == "info");
      EXPECT_FALSE(str(a["annotations"]["summary"]).empty());
      EXPECT_FALSE(str(a["annotations"]["description"]).empty());
    }
  EXPECT_GE(rules, 10u);

  std::vector<YAML::Node> dashboards;
  for (auto& cm : r.all("ConfigMap"))
    if (cm["data"]["aimesh.json"]) dashboards.push_back(cm);
  ASSERT_EQ(dashboards.size(), 1u);
  auto cm = dashboards[0];
  EXPECT_EQ(str(cm["metadata"]["name"]), "aimesh-dashboard");
  EXPECT_EQ(str(cm["metadata"]["namespace"]), "kube-system");
  EXPECT_EQ(str(cm["metadata"]["labels"]["grafana_dashboard"]), "1");
  EXPECT_EQ(str(cm["metadata"]["labels"]["app.kubernetes.io/name"]), "aimesh");
  json dash = json::parse(str(cm["data"]["aimesh.json"]), nullptr, false);
  ASSERT_FALSE(dash.is_discarded()) << "the ConfigMap's aimesh.json is not JSON";
  EXPECT_EQ(dash, json::parse(readFile(dashboardFile)));
  EXPECT_GE(dash.value("schemaVersion", 0), 36);
  EXPECT_FALSE(dash.value("uid", "").empty());
  EXPECT_GT(dash["panels"].size(), 10u);

  // Overrides: the sidecar's label and Grafana's namespace; with
  // nameOverride the ServiceMonitor's job label changes, and the rules follow.
  auto o = render({"--set", "metrics.prometheusRule.enabled=true", "--set", "metrics.dashboard.enabled=true", "--set",
                   "metrics.dashboard.label.key=grafana.io/dashboard", "--set-string",
                   "metrics.dashboard.label.value=aimesh", "--set", "metrics.dashboard.namespace=monitoring", "--set",
                   "metrics.dashboard.annotations.grafana_folder=Mesh", "--set", "nameOverride=mesh"});
  for (auto& c : o.all("ConfigMap")) {
    if (!c["data"]["aimesh.json"]) continue;
    EXPECT_EQ(str(c["metadata"]["namespace"]), "monitoring");
    EXPECT_EQ(str(c["metadata"]["labels"]["grafana.io/dashboard"]), "aimesh");
    EXPECT_FALSE(c["metadata"]["labels"]["grafana_dashboard"]);
    EXPECT_EQ(str(c["metadata"]["annotations"]["grafana_folder"]), "Mesh");
    std::string text = str(c["data"]["aimesh.json"]);
    EXPECT_NE(text.find(R"(job=\"mesh\")"), std::string::npos);
    EXPECT_EQ(text.find(R"(job=\"aimesh\")"), std::string::npos);
    EXPECT_FALSE(json::parse(text, nullptr, false).is_discarded());
  }
  auto renamed = o.one("PrometheusRule");
  std::string exprs;
  for (auto g : renamed["spec"]["groups"])
    for (auto a : g["rules"]) exprs += str(a["expr"]) + "\n";
  EXPECT_NE(exprs.find("up{job=\"mesh\"}"), std::string::npos) << exprs;
  EXPECT_EQ(exprs.find("job=\"aimesh\""), std::string::npos) << exprs;

  ProcResult lint = helm({"lint", chart_, "--strict", "--set", "metrics.prometheusRule.enabled=true", "--set",
                          "metrics.dashboard.enabled=true"});
  EXPECT_EQ(lint.status, 0) << lint.out << lint.err;
  for (Strings bad : {Strings{"--set-string", "metrics.prometheusRule.enabled=yes"},
                      Strings{"--set", "metrics.prometheusRule.for=5m"},
                      Strings{"--set", "metrics.dashboard.label.key=bad key"},
                      Strings{"--set", "metrics.dashboard.namespace=Not_A_Namespace"}}) {
    ProcResult t = helm({"template", "aimesh", chart_, bad[0], bad[1]});
    EXPECT_NE(t.status, 0) << "helm template accepted " << bad[1];
  }
}

}  // namespace
}  // namespace aimesh::testing
