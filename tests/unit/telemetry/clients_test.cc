// Who calls which service: the client naming (telemetry/clients.h), the
// cgroup index over a real directory tree, and the top-K fold of the clients
// view (buildClients, telemetry/views.h) on hand-made kernel entries.
#include "telemetry/clients.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "telemetry/metrics.h"
#include "telemetry/views.h"

namespace aimesh {
namespace {

constexpr const char* kUid = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";

PodNameLookup onePod() {
  return [](const std::string& uid) -> std::optional<std::string> {
    if (uid == kUid) return std::string("ml/client-0");
    return std::nullopt;
  };
}

TEST(ClientNameTest, APodsCgroupOrAContainerInItIsNamedAfterThePod) {
  EXPECT_EQ(clientName(std::string("/kubepods/burstable/pod") + kUid, onePod()), "ml/client-0");
  EXPECT_EQ(clientName(std::string("/kubepods/burstable/pod") + kUid + "/cri-containerd-abc", onePod()),
            "ml/client-0");
  // The systemd driver's slice names.
  EXPECT_EQ(clientName("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod"
                       "1b4e28ba_2fa1_11d2_883f_0016d3cca427.slice/cri-containerd-abc.scope",
                       onePod()),
            "ml/client-0");
}

TEST(ClientNameTest, OtherCgroupsAreNamedByTheirPath) {
  EXPECT_EQ(clientName("/clients/a", onePod()), "/clients/a");
  EXPECT_EQ(clientName("/", onePod()), "/");
  EXPECT_EQ(clientName("", onePod()), "/");
  // A pod directory of a pod the watch does not know, or no pod watch at all.
  std::string unknown = "/kubepods/pod2b4e28ba-2fa1-11d2-883f-0016d3cca427";
  EXPECT_EQ(clientName(unknown, onePod()), unknown);
  EXPECT_EQ(clientName(std::string("/kubepods/pod") + kUid, nullptr), std::string("/kubepods/pod") + kUid);
}

uint64_t inodeOf(const std::filesystem::path& p) {
  struct stat st {};
  EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
  return st.st_ino;
}

// The index works on any directory tree (a cgroup id is its directory's
// inode number): a real one in a temporary directory.
TEST(CgroupIndexTest, FindsDirectoriesByInodeAndTellsWhenOneIsGone) {
  namespace fs = std::filesystem;
  fs::path root = fs::temp_directory_path() / ("aimesh-cgindex-" + std::to_string(::getpid()));
  fs::remove_all(root);
  fs::create_directories(root / "a" / "b");
  fs::create_directories(root / "c");
  uint64_t a = inodeOf(root / "a"), b = inodeOf(root / "a" / "b"), c = inodeOf(root / "c");
  CgroupIndex idx(root.string(), std::chrono::milliseconds(0));
  EXPECT_FALSE(idx.byHandle()) << "not a cgroup v2 file system: walked";
  EXPECT_EQ(idx.path(inodeOf(root)), "/");
  EXPECT_EQ(idx.path(a), "/a");
  EXPECT_EQ(idx.path(b), "/a/b");
  EXPECT_EQ(idx.walks(), 1u) << "one walk names every directory";
  auto before = std::chrono::steady_clock::now();
  EXPECT_FALSE(idx.goneSince(c, before)) << "no walk since";
  fs::remove(root / "c");
  EXPECT_EQ(idx.path(c), "/c") << "known: answered from the last walk";
  idx.refresh();
  EXPECT_EQ(idx.walks(), 2u);
  EXPECT_EQ(idx.path(c), std::nullopt) << "walked again: not found";
  EXPECT_TRUE(idx.goneSince(c, before));
  EXPECT_FALSE(idx.goneSince(a, before)) << "still there";
  fs::remove_all(root);
}

// Past the depth limit nothing is indexed, so nothing may be judged gone:
// its entries would otherwise be deleted on every read.
TEST(CgroupIndexTest, AWalkCutShortByTheDepthLimitProvesNothingGone) {
  namespace fs = std::filesystem;
  fs::path root = fs::temp_directory_path() / ("aimesh-cgindex3-" + std::to_string(::getpid()));
  fs::remove_all(root);
  fs::path deep = root;
  for (int i = 0; i < 15; ++i) deep /= "d";
  fs::create_directories(deep);
  auto before = std::chrono::steady_clock::now();
  CgroupIndex idx(root.string(), std::chrono::milliseconds(0));
  EXPECT_EQ(idx.path(inodeOf(deep)), std::nullopt);
  EXPECT_FALSE(idx.goneSince(inodeOf(deep), before));
  fs::remove_all(root);
}

TEST(CgroupIndexTest, WalksAgainAtMostOncePerInterval) {
  namespace fs = std::filesystem;
  fs::path root = fs::temp_directory_path() / ("aimesh-cgindex2-" + std::to_string(::getpid()));
  fs::remove_all(root);
  fs::create_directories(root);
  CgroupIndex idx(root.string(), std::chrono::hours(1));
  EXPECT_EQ(idx.path(1), std::nullopt);
  EXPECT_EQ(idx.path(2), std::nullopt);
  EXPECT_EQ(idx.walks(), 1u);
  fs::create_directories(root / "late");
  EXPECT_EQ(idx.path(inodeOf(root / "late")), std::nullopt) << "not walked again within the interval";
  fs::remove_all(root);
}

IdIndex twoServices() {
  IdIndex idx;
  ServiceInfo llm;
  llm.name = "llm";
  llm.nameSpace = "ml";
  llm.port = PortSpec{8000, Protocol::kTcp};
  idx.services[1] = llm;
  ServiceInfo dns = llm;
  dns.name = "dns";
  dns.nameSpace = "kube-system";
  dns.port = PortSpec{53, Protocol::kUdp};
  idx.services[2] = dns;
  return idx;
}

NamedClient client(const std::string& name, uint64_t cgroup, uint32_t svc, uint64_t connects, uint64_t requests = 0,
                   uint64_t refused = 0) {
  NamedClient c{name, {}};
  c.pair.key.cgroup_id = cgroup;
  c.pair.key.service_id = svc;
  c.pair.stats.connects = connects;
  c.pair.stats.requests = requests;
  c.pair.stats.refused = refused;
  return c;
}

TEST(BuildClientsTest, TheTopKPairsByNameAndTheRestAsOtherPerService) {
  std::vector<NamedClient> in = {client("/a", 11, 1, 5, 50),   client("/b", 12, 1, 1, 2),
                                 client("/c", 13, 1, 2, 0, 1), client("/a", 11, 2, 100),
                                 client("/d", 14, 2, 3),       client("/gone", 15, 9, 1000)};
  view::Clients v = buildClients(twoServices(), in, 2, 12.5);
  EXPECT_EQ(v.timeSeconds, 12.5);
  EXPECT_EQ(v.topK, 2u);
  EXPECT_EQ(v.pairs, 6u);
  // Top 2 by calls among known services: /a->dns (100), /a->llm (55). The
  // service id 9 is not in the index: left out.
  ASSERT_EQ(v.clients.size(), 4u);
  const view::ClientRow& dnsA = v.clients[0];
  EXPECT_EQ(dnsA.client, "/a");
  EXPECT_EQ(dnsA.nameSpace, "kube-system");
  EXPECT_EQ(dnsA.protocol, "UDP");
  EXPECT_EQ(dnsA.port, 53u);
  EXPECT_EQ(dnsA.connections, 100u);
  const view::ClientRow& dnsOther = v.clients[1];
  EXPECT_EQ(dnsOther.client, "other");
  EXPECT_EQ(dnsOther.cgroupId, 0u);
  EXPECT_EQ(dnsOther.connections, 3u);
  const view::ClientRow& llmA = v.clients[2];
  EXPECT_EQ(llmA.client, "/a");
  EXPECT_EQ(llmA.cgroupId, 11u);
  EXPECT_EQ(llmA.requests, 50u);
  const view::ClientRow& llmOther = v.clients[3];
  EXPECT_EQ(llmOther.client, "other");
  EXPECT_EQ(llmOther.connections, 3u) << "/b and /c";
  EXPECT_EQ(llmOther.requests, 2u);
  EXPECT_EQ(llmOther.refused, 1u);
}

TEST(BuildClientsTest, CgroupsWithOneNameAreOneClient) {
  // A pod's own cgroup and its container's: one row, under the lower id.
  view::Clients v =
      buildClients(twoServices(), {client("ml/client-0", 30, 1, 2, 1), client("ml/client-0", 20, 1, 3, 4)}, 20, 0);
  EXPECT_EQ(v.pairs, 2u);
  ASSERT_EQ(v.clients.size(), 1u);
  EXPECT_EQ(v.clients[0].client, "ml/client-0");
  EXPECT_EQ(v.clients[0].cgroupId, 20u);
  EXPECT_EQ(v.clients[0].connections, 5u);
  EXPECT_EQ(v.clients[0].requests, 5u);
}

TEST(BuildClientsTest, TopZeroFoldsEveryPairAndNoPairsNoRows) {
  view::Clients v = buildClients(twoServices(), {client("/a", 11, 1, 5), client("/b", 12, 1, 1)}, 0, 0);
  ASSERT_EQ(v.clients.size(), 1u);
  EXPECT_EQ(v.clients[0].client, "other");
  EXPECT_EQ(v.clients[0].connections, 6u);
  EXPECT_TRUE(buildClients(twoServices(), {}, 20, 0).clients.empty());
}

TEST(BuildClientsTest, MetricsHaveASeriesPerRowAndThePairCount) {
  IdIndex idx = twoServices();
  view::Clients v = buildClients(idx, {client("/a", 11, 1, 5, 7, 1), client("/b", 12, 1, 1)}, 1, 0);
  DatapathStats stats;
  MetricsInput in;
  in.index = &idx;
  in.stats = &stats;
  in.clients = &v;
  std::string text = renderMetrics(in);
  const std::string a = "client=\"/a\",destination_service=\"llm\",destination_namespace=\"ml\",port=\"8000\",protocol=\"TCP\"";
  const std::string other = "client=\"other\",destination_service=\"llm\",destination_namespace=\"ml\",port=\"8000\",protocol=\"TCP\"";
  EXPECT_NE(text.find("aimesh_client_connections_total{" + a + "} 5\n"), std::string::npos) << text;
  EXPECT_NE(text.find("aimesh_client_requests_total{" + a + "} 7\n"), std::string::npos);
  EXPECT_NE(text.find("aimesh_client_refused_total{" + a + ",reason=\"no_backend\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("aimesh_client_refused_total{" + a + ",reason=\"denied\"} 0\n"), std::string::npos);
  EXPECT_NE(text.find("aimesh_client_connections_total{" + other + "} 1\n"), std::string::npos);
  EXPECT_NE(text.find("aimesh_client_pairs 2\n"), std::string::npos);
}

}  // namespace
}  // namespace aimesh
