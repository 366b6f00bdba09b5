// Workload policy, pure parts: the state file's `policy:`, path -> id
// resolution, the plan's policy entries and the order diff() writes them in.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>

#include "fixtures/fake_map_writer.h"
#include "reconcile/diff.h"
#include "reconcile/plan.h"
#include "reconcile/policy_resolver.h"
#include "reconcile/reconciler.h"
#include "source/state_file.h"

namespace aimesh {
namespace {

std::string dump(const ParseResult& r) {
  std::string out;
  for (const auto& e : r.errors) out += "  " + e.toString() + "\n";
  return out;
}

const char* kHead = R"(services:
  - name: chat
    vips: [10.96.0.1]
    ports: [{port: 8000}]
    endpoints: [{address: 10.0.0.1}]
)";

TEST(PolicyStateFile, AllowListParsedAndAbsentMeansOpen) {
  ParseResult open = parseStateText(kHead, "s.yaml");
  ASSERT_TRUE(open.snapshot) << dump(open);
  EXPECT_FALSE(open.snapshot->services[0].policy.has_value());

  ParseResult r = parseStateText(std::string(kHead) + R"(    policy:
      allow_cgroups: [/sys/fs/cgroup/unified/team-a, "/sys/fs/cgroup/unified/team b/pod1"]
)",
                                 "s.yaml");
  ASSERT_TRUE(r.snapshot) << dump(r);
  ASSERT_TRUE(r.snapshot->services[0].policy.has_value());
  EXPECT_EQ(r.snapshot->services[0].policy->allowCgroups,
            (std::vector<std::string>{"/sys/fs/cgroup/unified/team-a", "/sys/fs/cgroup/unified/team b/pod1"}));
}

TEST(PolicyStateFile, EmptyAllowListDeniesEveryone) {
  for (const char* p : {"    policy: {allow_cgroups: []}\n", "    policy: {}\n"}) {
    ParseResult r = parseStateText(std::string(kHead) + p, "s.yaml");
    ASSERT_TRUE(r.snapshot) << dump(r);
    ASSERT_TRUE(r.snapshot->services[0].policy.has_value()) << p;
    EXPECT_TRUE(r.snapshot->services[0].policy->allowCgroups.empty());
  }
}

TEST(PolicyStateFile, BadPolicyIsAnErrorWithLineAndField) {
  struct Case {
    const char* text;
    int line;
    std::string field, message;
  } cases[] = {
      {"    policy:\n      allow_cgroups: [relative/path]\n", 7, "services[0].policy.allow_cgroups[0]",
       "absolute"},
      {"    policy:\n      allow_cgroups: [/sys/fs/cgroup/../etc]\n", 7, "services[0].policy.allow_cgroups[0]",
       "'..'"},
      {"    policy:\n      allow_cgroups: [/a, /a]\n", 7, "services[0].policy.allow_cgroups[1]", "duplicate"},
      {"    policy:\n      allow_cgroup: [/a]\n", 7, "services[0].policy.allow_cgroup", "unknown"},
      {"    policy:\n      allow_cgroups: /a\n", 7, "services[0].policy.allow_cgroups", "list"},
      {"    policy: [/a]\n", 6, "services[0].policy", "allow_cgroups"},
      {"    policy:\n      allow_cgroups: [{path: /a}]\n", 7, "services[0].policy.allow_cgroups[0]", "string"},
  };
  for (auto& c : cases) {
    SCOPED_TRACE(c.text);
    ParseResult r = parseStateText(std::string(kHead) + c.text, "s.yaml");
    EXPECT_FALSE(r.snapshot.has_value());
    ASSERT_EQ(r.errors.size(), 1u) << dump(r);
    EXPECT_EQ(r.errors[0].line, c.line) << r.errors[0].toString();
    EXPECT_EQ(r.errors[0].field, c.field) << r.errors[0].toString();
    EXPECT_NE(r.errors[0].message.find(c.message), std::string::npos) << r.errors[0].toString();
  }
}

Service svc(const std::string& name, const char* vip, std::optional<std::vector<std::string>> allow) {
  Service s;
  s.name = name;
  s.vips = {*IpAddr::parse(vip)};
  s.ports = {PortSpec{8000, Protocol::kTcp}, PortSpec{8001, Protocol::kUdp}};
  s.endpoints = {Endpoint{*IpAddr::parse("10.0.0.1"), 0, 1, EndpointState::kActive}};
  if (allow) {
    s.policy = PolicySpec{};
    s.policy->allowCgroups = *allow;
  }
  return s;
}

CgroupLookup table(std::map<std::string, uint64_t> ids) {
  return [ids](const std::string& path, std::string* reason) -> std::optional<uint64_t> {
    auto it = ids.find(path);
    if (it == ids.end()) {
      *reason = "no such cgroup";
      return std::nullopt;
    }
    return it->second;
  };
}

TEST(PolicyResolver, IdsSortedAndUniqueMissingPathsReported) {
  Snapshot s{{svc("a", "10.96.0.1", std::vector<std::string>{"/cg/x", "/cg/gone", "/cg/y", "/cg/x-link"}),
              svc("b", "10.96.0.2", std::nullopt)}};
  auto missing = resolvePolicies(s, table({{"/cg/x", 30}, {"/cg/y", 20}, {"/cg/x-link", 30}}));
  EXPECT_EQ(s.services[0].policy->allowCgroupIds, (std::vector<uint64_t>{20, 30}));
  EXPECT_FALSE(s.services[1].policy.has_value());
  ASSERT_EQ(missing.size(), 1u);
  EXPECT_EQ(missing[0].service, "default/a");
  EXPECT_EQ(missing[0].path, "/cg/gone");
  EXPECT_EQ(missing[0].reason, "no such cgroup");
}

TEST(PodCgroupName, BothKubeletDriversEveryQosClassAndNothingElse) {
  const std::string uid = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
  // systemd driver: '-' separates slice levels, so the uid has '_'.
  EXPECT_EQ(podUidOfCgroupDir("kubepods-pod1b4e28ba_2fa1_11d2_883f_0016d3cca427.slice"), uid);
  EXPECT_EQ(podUidOfCgroupDir("kubepods-besteffort-pod1b4e28ba_2fa1_11d2_883f_0016d3cca427.slice"), uid);
  EXPECT_EQ(podUidOfCgroupDir("kubelet-kubepods-burstable-pod1b4e28ba_2fa1_11d2_883f_0016d3cca427.slice"), uid);
  // cgroupfs driver.
  EXPECT_EQ(podUidOfCgroupDir("pod1b4e28ba-2fa1-11d2-883f-0016d3cca427"), uid);
  // Not pods: QoS and top slices, containers, near misses.
  for (const char* name : {"kubepods.slice", "kubepods-besteffort.slice", "kubepods", "burstable",
                           "cri-containerd-0123456789abcdef.scope", "pod", "pod.slice",
                           "pod1b4e28ba-2fa1-11d2-883f-0016d3cca42",              // short
                           "pod1b4e28ba-2fa1-11d2-883f-0016d3cca4270",            // long
                           "pod1B4E28BA-2fa1-11d2-883f-0016d3cca427",             // upper case
                           "pod1b4e28ba_2fa1_11d2_883f_0016d3cca427",             // '_' without .slice
                           "kubepods-pod1b4e28ba-2fa1-11d2-883f-0016d3cca427.slice",  // '-' in a slice
                           "xpod1b4e28ba-2fa1-11d2-883f-0016d3cca427"})
    EXPECT_EQ(podUidOfCgroupDir(name), "") << name;
}

Service podService(const std::string& name, std::vector<AllowedPod> pods) {
  Service s = svc(name, "10.96.0.9", std::vector<std::string>{});
  s.policy->allowPods = std::move(pods);
  return s;
}

TEST(PolicyResolver, PodsResolveThroughTheirCgroupAndMissingOnesAreReported) {
  Snapshot s{{podService("a", {AllowedPod{"ml/client-0", "u0", ""}, AllowedPod{"ml/client-1", "u1", ""},
                               AllowedPod{"ml/starting", "u2", ""}})}};
  PodCgroupLookup pods = [](const std::string& uid, std::string* reason) -> std::optional<std::string> {
    if (uid == "u0") return "/cg/kubepods/pod-u0";
    if (uid == "u1") return "/cg/kubepods/pod-u1";
    *reason = "no cgroup of pod uid " + uid;
    return std::nullopt;
  };
  auto missing = resolvePolicies(s, table({{"/cg/kubepods/pod-u0", 7}, {"/cg/kubepods/pod-u1", 5}}), pods);
  const PolicySpec& p = *s.services[0].policy;
  EXPECT_EQ(p.allowCgroupIds, (std::vector<uint64_t>{5, 7}));
  EXPECT_EQ(p.allowPods[0].cgroup, "/cg/kubepods/pod-u0");
  EXPECT_EQ(p.allowPods[1].cgroup, "/cg/kubepods/pod-u1");
  EXPECT_EQ(p.allowPods[2].cgroup, "");
  ASSERT_EQ(missing.size(), 1u);
  EXPECT_EQ(missing[0].path, "pod ml/starting");
  EXPECT_EQ(missing[0].reason, "no cgroup of pod uid u2");

  // Without a pod lookup nothing of a pod resolves: the policy stays closed.
  Snapshot t{{podService("a", {AllowedPod{"ml/client-0", "u0", ""}})}};
  auto m2 = resolvePolicies(t, table({{"/cg/kubepods/pod-u0", 7}}));
  EXPECT_TRUE(t.services[0].policy->allowCgroupIds.empty());
  ASSERT_EQ(m2.size(), 1u);
  EXPECT_EQ(m2[0].path, "pod ml/client-0");
}

TEST(PolicyResolver, PodCgroupWalkFindsPodsOfEitherDriverAtAnyDepthAndNotBelowThem) {
  namespace fs = std::filesystem;
  fs::path root = fs::temp_directory_path() / ("aimesh-podcg-" + std::to_string(::getpid()));
  fs::remove_all(root);
  const std::string a = "0a000000-0000-4000-8000-00000000000a", b = "0b000000-0000-4000-8000-00000000000b",
                    c = "0c000000-0000-4000-8000-00000000000c", deep = "0d000000-0000-4000-8000-00000000000d";
  auto underscore = [](std::string u) {
    std::replace(u.begin(), u.end(), '-', '_');
    return u;
  };
  fs::path pa = root / "kubepods.slice" / "kubepods-besteffort.slice" / ("kubepods-besteffort-pod" + underscore(a) + ".slice");
  fs::path pb = root / "kubepods.slice" / ("kubepods-pod" + underscore(b) + ".slice");
  fs::path pc = root / "kubepods" / "burstable" / ("pod" + c);
  // A pod-named directory inside a pod's (a container cgroup) is not a pod.
  fs::path inner = pc / ("pod" + deep);
  // Deeper than the walk goes.
  fs::path tooDeep = root / "1" / "2" / "3" / "4" / "5" / "6" / ("pod" + deep);
  for (auto& d : {pa / "cri-containerd-1.scope", pb, inner, tooDeep}) fs::create_directories(d);

  PodCgroupLookup look = systemPodCgroupLookup(root.string());
  std::string reason;
  EXPECT_EQ(look(a, &reason), pa.string());
  EXPECT_EQ(look(b, &reason), pb.string());
  EXPECT_EQ(look(c, &reason), pc.string());
  EXPECT_EQ(look(deep, &reason), std::nullopt);
  EXPECT_NE(reason.find("no cgroup of pod uid " + deep + " under " + root.string()), std::string::npos) << reason;
  // The index is built once: a pod created afterwards needs a new lookup.
  fs::path late = root / "kubepods" / ("pod" + deep);
  fs::create_directories(late);
  EXPECT_EQ(look(deep, &reason), std::nullopt);
  EXPECT_EQ(systemPodCgroupLookup(root.string())(deep, &reason), late.string());
  // A root that does not exist finds nothing, without throwing.
  EXPECT_EQ(systemPodCgroupLookup((root / "nope").string())(a, &reason), std::nullopt);
  fs::remove_all(root);
}

TEST(PolicyPlan, EveryPortOfAServiceGetsTheFlagAndTheEntries) {
  Snapshot s{{svc("a", "10.96.0.1", std::vector<std::string>{"/cg/x"}), svc("b", "10.96.0.2", std::nullopt)}};
  resolvePolicies(s, table({{"/cg/x", 77}}));
  Plan p = makePlan(s, {});
  // a: service ids 1 and 2 (two ports); b: 3 and 4.
  EXPECT_TRUE(p.desired.services.at(1).policy);
  EXPECT_TRUE(p.desired.services.at(2).policy);
  EXPECT_FALSE(p.desired.services.at(3).policy);
  EXPECT_EQ(p.desired.policy, (std::map<PolicyKey, uint32_t>{{PolicyKey{77, 1}, 1}, {PolicyKey{77, 2}, 1}}));
}

std::vector<std::string> opsOf(const KernelState& from, const KernelState& to) {
  std::vector<std::string> out;
  for (auto& op : diff(from, to)) out.push_back(describe(op));
  return out;
}

size_t indexOf(const std::vector<std::string>& ops, const std::string& prefix) {
  for (size_t i = 0; i < ops.size(); ++i)
    if (ops[i].rfind(prefix, 0) == 0) return i;
  return ops.size();
}

TEST(PolicyDiff, AllowEntriesGoInBeforeTheFlagAndOutAfterIt) {
  Snapshot open{{svc("a", "10.96.0.1", std::nullopt)}};
  Snapshot locked{{svc("a", "10.96.0.1", std::vector<std::string>{"/cg/x"})}};
  resolvePolicies(locked, table({{"/cg/x", 77}}));
  Plan p0 = makePlan(open, {});
  Plan p1 = makePlan(locked, p0.desired);
  // Turning the policy on: the allow entries, then the services with the
  // flag; never a moment with the flag on and the entry missing.
  auto on = opsOf(p0.desired, p1.desired);
  EXPECT_EQ(on, (std::vector<std::string>{
                    "upsert-policy cgroup=77 svc=1", "upsert-policy cgroup=77 svc=2",
                    "upsert-service 1 slots=1 backends=1 gen=0 alg=random policy",
                    "upsert-service 2 slots=1 backends=1 gen=0 alg=random policy"}));
  // Turning it off: the flag goes first, then the entries.
  auto off = opsOf(p1.desired, makePlan(open, p1.desired).desired);
  EXPECT_LT(indexOf(off, "upsert-service 1"), indexOf(off, "delete-policy cgroup=77 svc=1"));
  EXPECT_LT(indexOf(off, "upsert-service 2"), indexOf(off, "delete-policy cgroup=77 svc=2"));
  // Deleting the service: frontend and service first, entries after.
  auto gone = opsOf(p1.desired, makePlan(Snapshot{}, p1.desired).desired);
  EXPECT_LT(indexOf(gone, "delete-service 1"), indexOf(gone, "delete-policy cgroup=77 svc=1"));
  EXPECT_LT(indexOf(gone, "delete-frontend"), indexOf(gone, "delete-policy"));
}

TEST(PolicyDiff, ReconcilingConvergesAndIsIdempotent) {
  testing::FakeMapWriter w;
  Reconciler r(w);
  IdIndex idx;
  Snapshot locked{{svc("a", "10.96.0.1", std::vector<std::string>{"/cg/x", "/cg/y"})}};
  resolvePolicies(locked, table({{"/cg/x", 77}, {"/cg/y", 78}}));
  ASSERT_TRUE(r.reconcile(locked, idx).ok());
  EXPECT_EQ(w.state.policy.size(), 4u);  // 2 cgroups x 2 ports
  auto again = r.reconcile(locked, idx);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->ops, 0u);
  ASSERT_TRUE(idx.services.at(1).policy.has_value());
  EXPECT_EQ(idx.services.at(1).policy->allowCgroups.size(), 2u);
  // One cgroup dropped from the list: only its entries go.
  Snapshot fewer{{svc("a", "10.96.0.1", std::vector<std::string>{"/cg/y"})}};
  resolvePolicies(fewer, table({{"/cg/y", 78}}));
  ASSERT_TRUE(r.reconcile(fewer, idx).ok());
  EXPECT_EQ(w.state.policy, (std::map<PolicyKey, uint32_t>{{PolicyKey{78, 1}, 1}, {PolicyKey{78, 2}, 1}}));
}

}  // namespace
}  // namespace aimesh
