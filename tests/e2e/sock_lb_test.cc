// e2e: the real agent binary, attached to a test cgroup, balancing real TCP
// and UDP connections from a client namespace to name servers in a backend
// namespace. Needs root.
#include <gtest/gtest.h>
#include <httplib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <fstream>
#include <future>
#include <set>
#include <sys/stat.h>
#include <sstream>
#include <thread>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>

#include "aimesh/abi.h"
#include "client/api_client.h"
#include "fixtures/agent_e2e.h"
#include "fixtures/net_client.h"
#include "fixtures/sandbox.h"

namespace aimesh::testing {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

struct Ep {
  std::string addr;
  int weight = 1;
  std::string state = "active";
};

std::string stateYaml(const std::vector<std::string>& vips, const std::string& proto, const std::vector<Ep>& eps,
                      uint16_t port = 8000) {
  std::ostringstream y;
  y << "services:\n  - name: chat\n    namespace: ml\n    model: llama-3-8b\n    vips: [";
  for (size_t i = 0; i < vips.size(); ++i) y << (i ? ", " : "") << '"' << vips[i] << '"';
  y << "]\n    ports: [{port: " << port << ", protocol: " << proto << "}]\n    endpoints:";
  if (eps.empty()) y << " []";
  y << "\n";
  for (auto& e : eps)
    y << "      - {address: \"" << e.addr << "\", port: " << port << ", weight: " << e.weight << ", state: " << e.state
      << "}\n";
  return y.str();
}

class SockLbE2e : public AgentE2e {
 protected:
  // Runs fn as a client in the test cgroup and the client namespace.
  std::string client(const std::function<std::string()>& fn) { return runClient(fn); }
  // Counts answers by server name over n TCP connections.
  std::map<std::string, int> spread(const std::string& vip, int n) {
    json j = json::parse(client([&] {
      std::map<std::string, int> m;
      for (int i = 0; i < n; ++i) {
        Reply r = tcpAsk(vip, 8000);
        m[r.err ? "error:" + std::to_string(r.err) : r.name]++;
      }
      return json(m).dump();
    }));
    return j.get<std::map<std::string, int>>();
  }
};

TEST_F(SockLbE2e, TcpIpv4ReachesBackendAndPeerIsServiceAddress) {
  serve("10.77.0.2", "a");
  startAgent(stateYaml({"10.96.0.20"}, "TCP", {{"10.77.0.2"}}));
  json r = json::parse(client([] {
    Reply x = tcpAsk("10.96.0.20", 8000);
    return json{{"err", x.err}, {"name", x.name}, {"peer", x.peer}}.dump();
  }));
  EXPECT_EQ(r["err"], 0);
  EXPECT_EQ(r["name"], "a");
  EXPECT_EQ(r["peer"], "10.96.0.20:8000");
  json eps = api("endpoints")["endpoints"];
  ASSERT_EQ(eps.size(), 1u);
  EXPECT_EQ(eps[0]["connections"], 1);
}

TEST_F(SockLbE2e, TcpIpv6ReachesBackendAndPeerIsServiceAddress) {
  serve("fd77::2", "a6");
  startAgent(stateYaml({"fd96::20"}, "TCP", {{"fd77::2"}}));
  json r = json::parse(client([] {
    Reply x = tcpAsk("fd96::20", 8000);
    return json{{"err", x.err}, {"name", x.name}, {"peer", x.peer}}.dump();
  }));
  EXPECT_EQ(r["err"], 0);
  EXPECT_EQ(r["name"], "a6");
  EXPECT_EQ(r["peer"], "[fd96::20]:8000");
}

TEST_F(SockLbE2e, UdpIpv4AndIpv6RecvfromShowsServiceAddress) {
  serve("10.77.0.2", "u4");
  serve("fd77::2", "u6");
  startAgent(stateYaml({"10.96.0.30", "fd96::30"}, "UDP", {{"10.77.0.2"}, {"fd77::2"}}));
  json r = json::parse(client([] {
    // An IPv4 socket can only use the IPv4 backend. An unconnected IPv6 send
    // must get the IPv6 one (the kernel refuses a send rewritten to ::ffff:),
    // every time; a connected IPv6 socket may get either.
    Reply v4 = udpAsk("10.96.0.30", 8000);
    std::map<std::string, int> v6;
    for (int i = 0; i < 20; ++i) {
      Reply x = udpAsk("fd96::30", 8000);
      v6[x.err ? "error:" + std::to_string(x.err) : x.name + " from " + x.peer]++;
    }
    Reply c4 = udpConnectedAsk("10.96.0.30", 8000);
    Reply c6 = udpConnectedAsk("fd96::30", 8000);
    return json{{"v4", {v4.err, v4.name, v4.peer}}, {"v6", v6}, {"c4", {c4.err, c4.name, c4.peer}},
                {"c6", {c6.err, c6.name, c6.peer}}}
        .dump();
  }));
  EXPECT_EQ(r["v4"], json({0, "u4", "10.96.0.30:8000"}));
  EXPECT_EQ(r["v6"], json({{"u6 from [fd96::30]:8000", 20}}));
  EXPECT_EQ(r["c4"], json({0, "u4", "10.96.0.30:8000"}));
  EXPECT_EQ(r["c6"][0], 0);
  EXPECT_EQ(r["c6"][2], "[fd96::30]:8000");
  json svcs = api("services")["services"];
  ASSERT_EQ(svcs.size(), 1u);
  EXPECT_EQ(svcs[0]["datagrams"], 21);   // unconnected sendto()
  EXPECT_EQ(svcs[0]["connections"], 2);  // connected UDP sockets
}

TEST_F(SockLbE2e, NonServiceDestinationPassesUntouched) {
  serve("10.77.0.3", "direct");
  startAgent(stateYaml({"10.96.0.20"}, "TCP", {{"10.77.0.2"}}));
  json r = json::parse(client([] {
    Reply x = tcpAsk("10.77.0.3", 8000);
    return json{{"err", x.err}, {"name", x.name}, {"peer", x.peer}}.dump();
  }));
  EXPECT_EQ(r["name"], "direct");
  EXPECT_EQ(r["peer"], "10.77.0.3:8000");
  EXPECT_EQ(api("services")["services"][0]["connections"], 0);
}

TEST_F(SockLbE2e, SpreadFollowsWeights) {
  serve("10.77.0.2", "a");
  serve("10.77.0.3", "b");
  serve("10.77.0.4", "c");
  startAgent(stateYaml({"10.96.0.20"}, "TCP", {{"10.77.0.2", 1}, {"10.77.0.3", 2}, {"10.77.0.4", 1}}));
  const int n = 1200;
  auto m = spread("10.96.0.20", n);
  std::map<std::string, double> p{{"a", 0.25}, {"b", 0.5}, {"c", 0.25}};
  int total = 0;
  for (auto& [name, prob] : p) {
    double expect = n * prob, sd = std::sqrt(n * prob * (1 - prob));
    // 5 standard deviations: a false failure about once in 3 million runs.
    EXPECT_NEAR(m[name], expect, 5 * sd) << name;
    total += m[name];
  }
  EXPECT_EQ(total, n) << json(m).dump();
  json eps = api("endpoints")["endpoints"];
  int counted = 0;
  for (auto& e : eps) counted += e["connections"].get<int>();
  EXPECT_EQ(counted, n);
}

TEST_F(SockLbE2e, NoBackendsRefusesTcpAndUdp) {
  startAgent(stateYaml({"10.96.0.20"}, "TCP", {}) +
             "  - name: dns\n    vips: [10.96.0.53]\n    ports: [{port: 53, protocol: UDP}]\n    endpoints: []\n");
  json r = json::parse(client([] {
    Reply t = tcpAsk("10.96.0.20", 8000);
    Reply u = udpAsk("10.96.0.53", 53);
    return json{{"tcp", t.err}, {"udp", u.err}}.dump();
  }));
  EXPECT_EQ(r["tcp"], ECONNREFUSED);
  EXPECT_EQ(r["udp"], ECONNREFUSED);
  json svcs = api("services");
  int refused = 0;
  for (auto& s : svcs["services"]) refused += s["refused"].get<int>();
  EXPECT_EQ(refused, 2) << svcs.dump();
}

TEST_F(SockLbE2e, DrainingBackendGetsNoNewConnectionsButKeepsOpenOnes) {
  serve("10.77.0.2", "a");
  serve("10.77.0.3", "b");
  startAgent(stateYaml({"10.96.0.20"}, "TCP", {{"10.77.0.2"}, {"10.77.0.3"}}));
  std::string sock = agent_->apiSocket(), statePath = state_;
  json r = json::parse(client([&] {
    TcpConn held("10.96.0.20", 8000);
    std::string first = held.ask();
    std::string drainAddr = first == "a" ? "10.77.0.2" : "10.77.0.3";
    std::string otherAddr = first == "a" ? "10.77.0.3" : "10.77.0.2";
    writeFile(statePath, stateYaml({"10.96.0.20"}, "TCP", {{drainAddr, 1, "draining"}, {otherAddr}}));
    // Wait until the agent reports the drain.
    for (int i = 0; i < 100; ++i) {
      auto e = callAgent(sock, {{"method", "endpoints"}}, 1000ms);
      bool drained = false;
      if (e)
        for (auto& ep : (*e)["endpoints"])
          drained |= ep["address"] == drainAddr && ep["state"] == "draining";
      if (drained) break;
      std::this_thread::sleep_for(20ms);
    }
    std::map<std::string, int> m;
    for (int i = 0; i < 200; ++i) m[tcpAsk("10.96.0.20", 8000).name]++;
    std::string again = held.ask();
    return json{{"first", first}, {"spread", m}, {"again", again}}.dump();
  }));
  std::string drained = r["first"];
  EXPECT_FALSE(drained.empty());
  EXPECT_EQ(r["spread"].value(drained, 0), 0) << r.dump();
  EXPECT_EQ(r["spread"].value(drained == "a" ? "b" : "a", 0), 200) << r.dump();
  EXPECT_EQ(r["again"], drained) << "the open connection to the draining backend must keep working";
}

TEST_F(SockLbE2e, EditingStateFileChangesRoutingWithinASecond) {
  serve("10.77.0.2", "a");
  serve("10.77.0.3", "b");
  startAgent(stateYaml({"10.96.0.20"}, "TCP", {{"10.77.0.2"}}));
  std::string statePath = state_;
  json r = json::parse(client([&] {
    std::string before = tcpAsk("10.96.0.20", 8000).name;
    auto t0 = std::chrono::steady_clock::now();
    writeFile(statePath, stateYaml({"10.96.0.20"}, "TCP", {{"10.77.0.3"}}));
    double ms = -1;
    while (std::chrono::steady_clock::now() - t0 < 3s) {
      if (tcpAsk("10.96.0.20", 8000).name == "b") {
        ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        break;
      }
      std::this_thread::sleep_for(5ms);
    }
    return json{{"before", before}, {"ms", ms}}.dump();
  }));
  EXPECT_EQ(r["before"], "a");
  EXPECT_GE(r["ms"].get<double>(), 0) << "routing never changed";
  EXPECT_LT(r["ms"].get<double>(), 1000);
}

TEST_F(SockLbE2e, BrokenStateFileLeavesRoutingUnchanged) {
  serve("10.77.0.2", "a");
  startAgent(stateYaml({"10.96.0.20"}, "TCP", {{"10.77.0.2"}}));
  writeFile(state_, "services:\n  - name: chat\n    vips: [not-an-ip]\n    ports: [{port: 99999}]\n");
  json st;
  for (int i = 0; i < 100; ++i) {
    st = api("status");
    if (st.value("state_file_errors", 0) > 0) break;
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(st["state_file_errors"], 1);
  EXPECT_NE(st["last_error"].get<std::string>().find("state.yaml:3"), std::string::npos) << st.dump();
  json r = json::parse(client([] {
    std::map<std::string, int> m;
    for (int i = 0; i < 20; ++i) m[tcpAsk("10.96.0.20", 8000).name]++;
    return json(m).dump();
  }));
  EXPECT_EQ(r.value("a", 0), 20) << r.dump();
  EXPECT_EQ(api("services")["services"].size(), 1u);
}

// Programs attached to the cgroup, as the kernel reports them.
int attachedCount(const std::string& cgroup) {
  int fd = ::open(cgroup.c_str(), O_RDONLY | O_DIRECTORY);
  int total = 0;
  for (auto type : {BPF_CGROUP_INET4_CONNECT, BPF_CGROUP_INET6_CONNECT, BPF_CGROUP_UDP4_SENDMSG,
                    BPF_CGROUP_UDP6_SENDMSG, BPF_CGROUP_UDP4_RECVMSG, BPF_CGROUP_UDP6_RECVMSG,
                    BPF_CGROUP_INET4_GETPEERNAME, BPF_CGROUP_INET6_GETPEERNAME}) {
    __u32 ids[8], cnt = 8;
    if (bpf_prog_query(fd, type, 0, nullptr, ids, &cnt) == 0) total += static_cast<int>(cnt);
  }
  ::close(fd);
  return total;
}

TEST_F(SockLbE2e, KillNineKeepsRoutingAndRestartAdoptsWithoutDuplicates) {
  serve("10.77.0.2", "a");
  startAgent(stateYaml({"10.96.0.20"}, "TCP", {{"10.77.0.2"}}));
  std::vector<int> linksBefore;
  json st = api("status");
  for (auto& p : st["programs"]) linksBefore.push_back(p["link_id"]);
  EXPECT_EQ(attachedCount(sandbox_->cgroup().path()), 8);

  agent_->kill9();
  json r = json::parse(client([] {
    Reply x = tcpAsk("10.96.0.20", 8000);
    return json{{"name", x.name}, {"peer", x.peer}}.dump();
  }));
  EXPECT_EQ(r["name"], "a") << "routing must survive the agent";
  EXPECT_EQ(r["peer"], "10.96.0.20:8000");

  agent_->start();
  std::vector<int> linksAfter;
  bool allAdopted = true;
  st = api("status");
  for (auto& p : st["programs"]) {
    linksAfter.push_back(p["link_id"]);
    allAdopted &= p["adopted"].get<bool>();
  }
  EXPECT_EQ(linksAfter, linksBefore);
  EXPECT_TRUE(allAdopted);
  EXPECT_EQ(attachedCount(sandbox_->cgroup().path()), 8) << "a restart must not attach twice";
  // Counters survived in the pinned maps: the connection made while the agent was dead is counted.
  EXPECT_EQ(api("services")["services"][0]["connections"], 1);
  r = json::parse(client([] { return json{{"name", tcpAsk("10.96.0.20", 8000).name}}.dump(); }));
  EXPECT_EQ(r["name"], "a");
}

}  // namespace
}  // namespace aimesh::testing

namespace aimesh::testing {
namespace {


TEST_F(SockLbE2e, MeshctlShowsServicesAndEndpointsAndFailsClearlyWithoutAgent) {
  serve("10.77.0.2", "a");
  startAgent(stateYaml({"10.96.0.20"}, "TCP", {{"10.77.0.2", 3}, {"10.77.0.3", 1, "draining"}}));
  client([] { return tcpAsk("10.96.0.20", 8000).name; });
  std::string meshctl = std::string(AIMESH_BINARY_DIR) + "/meshctl --socket " + agent_->apiSocket();

  auto [rc, out] = capture(meshctl + " -o json endpoints chat");
  ASSERT_EQ(rc, 0) << out;
  json eps = json::parse(out)["endpoints"];
  ASSERT_EQ(eps.size(), 2u);
  EXPECT_EQ(eps[0]["address"], "10.77.0.2");
  EXPECT_EQ(eps[0]["weight"], 3);
  EXPECT_EQ(eps[0]["connections"], 1);
  EXPECT_EQ(eps[1]["state"], "draining");

  std::tie(rc, out) = capture(meshctl + " services");
  EXPECT_EQ(rc, 0);
  EXPECT_NE(out.find("llama-3-8b"), std::string::npos) << out;
  EXPECT_NE(out.find("10.96.0.20:8000/TCP"), std::string::npos) << out;

  std::tie(rc, out) = capture(meshctl + " -o json status");
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(json::parse(out)["ready"], true);

  std::tie(rc, out) = capture(meshctl + " endpoints no-such-service 2>&1");
  EXPECT_EQ(rc, 1) << out;

  agent_->kill9();
  std::tie(rc, out) = capture(meshctl + " status 2>&1");
  EXPECT_EQ(rc, 2) << out;
  EXPECT_NE(out.find(agent_->apiSocket()), std::string::npos) << "the message names the socket: " << out;
}

TEST_F(SockLbE2e, CleanupRemovesEverythingAndTheServiceAddressIsNoLongerRewritten) {
  serve("10.77.0.2", "a");
  startAgent(stateYaml({"10.96.0.20"}, "TCP", {{"10.77.0.2"}}));
  EXPECT_EQ(attachedCount(sandbox_->cgroup().path()), 8);
  // The kernel ids of everything the agent made: programs (from its status)
  // and maps (from their pins).
  std::vector<uint32_t> progIds, mapIds;
  json status = api("status");
  for (auto& p : status["programs"]) progIds.push_back(p["prog_id"].get<uint32_t>());
  for (auto& e : std::filesystem::directory_iterator(agent_->pinDir())) {
    if (!e.is_regular_file()) continue;
    int fd = bpf_obj_get(e.path().c_str());
    bpf_map_info info{};
    uint32_t len = sizeof(info);
    if (fd >= 0 && bpf_obj_get_info_by_fd(fd, &info, &len) == 0) mapIds.push_back(info.id);
    if (fd >= 0) ::close(fd);
  }
  EXPECT_EQ(progIds.size(), 11u);
  EXPECT_GE(mapIds.size(), 15u);
  agent_->kill9();
  auto [rc, out] = capture(std::string(AIMESH_BINARY_DIR) + "/aimesh-agent --cleanup --pin-dir " +
                           agent_->pinDir() + " 2>&1");
  EXPECT_EQ(rc, 0) << out;
  EXPECT_EQ(attachedCount(sandbox_->cgroup().path()), 0);
  EXPECT_FALSE(std::filesystem::exists(agent_->pinDir()));
  // Nothing of ours is left in the kernel: every program and map is freed
  // (asynchronously, after an RCU grace period: poll).
  auto alive = [&] {
    std::vector<std::string> left;
    for (uint32_t id : progIds) {
      int fd = bpf_prog_get_fd_by_id(id);
      if (fd >= 0) left.push_back("prog " + std::to_string(id)), ::close(fd);
    }
    for (uint32_t id : mapIds) {
      int fd = bpf_map_get_fd_by_id(id);
      if (fd >= 0) left.push_back("map " + std::to_string(id)), ::close(fd);
    }
    return left;
  };
  std::vector<std::string> left = alive();
  for (int i = 0; i < 100 && !left.empty(); ++i) {
    std::this_thread::sleep_for(20ms);
    left = alive();
  }
  EXPECT_TRUE(left.empty()) << "still in the kernel: " << ::testing::PrintToString(left);
  // Without the data plane the VIP is just an address with no route.
  json r = json::parse(client([] { return json{{"err", tcpAsk("10.96.0.20", 8000, 500).err}}.dump(); }));
  EXPECT_EQ(r["err"], ENETUNREACH);
  // A second cleanup has nothing to do and still succeeds.
  std::tie(rc, out) = capture(std::string(AIMESH_BINARY_DIR) + "/aimesh-agent --cleanup --pin-dir " +
                              agent_->pinDir() + " 2>&1");
  EXPECT_EQ(rc, 0) << out;
}

}  // namespace
}  // namespace aimesh::testing

namespace aimesh::testing {
namespace {

uint32_t pinnedMaxEntries(const std::string& pin) {
  int fd = bpf_obj_get(pin.c_str());
  if (fd < 0) return 0;
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  uint32_t n = bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.max_entries : 0;
  ::close(fd);
  return n;
}

// n services chat-0..chat-(n-1) at 10.96.1.1.., all on one endpoint.
std::string manyServicesYaml(int n) {
  std::ostringstream y;
  y << "services:\n";
  for (int i = 0; i < n; ++i)
    y << "  - name: chat-" << i << "\n    vips: [\"10.96.1." << i + 1
      << "\"]\n    ports: [{port: 8000, protocol: TCP}]\n    endpoints:\n      - {address: \"10.77.0.2\", port: 8000}\n";
  return y.str();
}

TEST_F(SockLbE2e, MapLimitsSizeTheMapsAndARestartWithOtherLimitsResizesThem) {
  serve("10.77.0.2", "a");
  std::vector<std::string> small{"--max-services", "32", "--max-backends", "64", "--max-flows", "4096"};
  writeFile(state_, manyServicesYaml(20));
  agent_ = std::make_unique<AgentProcess>(sandbox_->cgroup().path(), state_, dir_, small);
  agent_->start();
  const std::string pins = agent_->pinDir();
  EXPECT_EQ(pinnedMaxEntries(pins + "/aimesh_services"), 32u);
  EXPECT_EQ(pinnedMaxEntries(pins + "/aimesh_svc_stats"), 32u);
  EXPECT_EQ(pinnedMaxEntries(pins + "/aimesh_frontends"), 128u);
  EXPECT_EQ(pinnedMaxEntries(pins + "/aimesh_slots"), 1024u);
  EXPECT_EQ(pinnedMaxEntries(pins + "/aimesh_backends"), 64u);
  EXPECT_EQ(pinnedMaxEntries(pins + "/aimesh_be_tel"), 64u);
  EXPECT_EQ(pinnedMaxEntries(pins + "/aimesh_revnat"), 256u);
  json st = api("status");
  EXPECT_EQ(st["limits"], (json{{"services", 32}, {"backends", 64}, {"flows", 4096}})) << st.dump();
  EXPECT_EQ(st["services"], 20);

  // 40 services do not fit in 31 ids: an error that names the flag, and the
  // 20 applied before keep working.
  writeFile(state_, manyServicesYaml(40));
  for (int i = 0; i < 100 && api("status").value("reconcile_errors", 0) == 0; ++i) std::this_thread::sleep_for(20ms);
  st = api("status");
  EXPECT_GE(st.value("reconcile_errors", 0), 1) << st.dump();
  EXPECT_NE(st["last_error"].get<std::string>().find("--max-services"), std::string::npos) << st.dump();
  EXPECT_EQ(st["services"], 20);
  json r = json::parse(client([] { return json{{"name", tcpAsk("10.96.1.20", 8000).name}}.dump(); }));
  EXPECT_EQ(r["name"], "a");

  // A restart with larger limits resizes the pinned maps in place (new maps,
  // entries copied, programs swapped), and a client connecting all through
  // the restart is balanced every time. Bounded: 2.5 s, one connect every
  // 0.4 ms at most (so the connects span the whole restart).
  writeFile(state_, manyServicesYaml(20));
  agent_->kill9();
  auto during = std::async(std::launch::async, [&] {
    return client([] {
      int ok = 0, bad = 0;
      auto end = std::chrono::steady_clock::now() + 2500ms;
      for (int i = 0; i < 6250 && std::chrono::steady_clock::now() < end; ++i) {
        (tcpAsk("10.96.1.7", 8000).name == "a" ? ok : bad)++;
        std::this_thread::sleep_for(400us);
      }
      return json{{"ok", ok}, {"bad", bad}}.dump();
    });
  });
  std::this_thread::sleep_for(100ms);
  std::vector<std::string> large{"--max-services", "64", "--max-backends", "128", "--max-flows", "4096"};
  agent_->setExtraArgs(large);
  agent_->start();
  json counts = json::parse(during.get());
  EXPECT_GT(counts["ok"].get<int>(), 500) << counts.dump();
  EXPECT_EQ(counts["bad"], 0) << "a connect during the resize was not balanced: " << counts.dump();
  EXPECT_EQ(pinnedMaxEntries(pins + "/aimesh_services"), 64u);
  EXPECT_EQ(pinnedMaxEntries(pins + "/aimesh_frontends"), 256u);
  EXPECT_EQ(pinnedMaxEntries(pins + "/aimesh_backends"), 128u);
  EXPECT_EQ(pinnedMaxEntries(pins + "/aimesh_be_tel"), 128u);
  std::string log = readFile(dir_ + "/agent.log");
  EXPECT_NE(log.find("resized map " + pins + "/aimesh_services from 32 to 64 entries (20 entries copied)"),
            std::string::npos)
      << log;
  st = api("status");
  EXPECT_EQ(st["limits"], (json{{"services", 64}, {"backends", 128}, {"flows", 4096}})) << st.dump();
  EXPECT_EQ(st["services"], 20);
  for (auto& p : st["programs"]) EXPECT_TRUE(p["adopted"].get<bool>()) << p.dump();
  EXPECT_EQ(attachedCount(sandbox_->cgroup().path()), 8);
  // Now the 40 services fit.
  writeFile(state_, manyServicesYaml(40));
  for (int i = 0; i < 100 && api("status").value("services", 0) != 40; ++i) std::this_thread::sleep_for(20ms);
  EXPECT_EQ(api("status")["services"], 40);
  r = json::parse(client([] { return json{{"name", tcpAsk("10.96.1.40", 8000).name}}.dump(); }));
  EXPECT_EQ(r["name"], "a");

  // Smaller limits than the ids in use: refused, naming the map and the way
  // out, and the data plane stays as it was.
  agent_->kill9();
  agent_->setExtraArgs({"--max-services", "16", "--max-backends", "128", "--max-flows", "4096"});
  EXPECT_THROW(agent_->start(), std::runtime_error);
  log = readFile(dir_ + "/agent.log");
  EXPECT_NE(log.find("cannot resize " + pins + "/aimesh_services from 64 to 16 entries"), std::string::npos) << log;
  EXPECT_NE(log.find("--cleanup"), std::string::npos) << log;
  r = json::parse(client([] { return json{{"name", tcpAsk("10.96.1.40", 8000).name}}.dump(); }));
  EXPECT_EQ(r["name"], "a") << "a refused start must leave the data plane alone";
  EXPECT_EQ(pinnedMaxEntries(pins + "/aimesh_services"), 64u);

  // With the limits it has, it adopts the pins again.
  agent_->kill9();
  agent_->setExtraArgs(large);
  agent_->start();
  st = api("status");
  EXPECT_EQ(st["services"], 40);
  for (auto& p : st["programs"]) EXPECT_TRUE(p["adopted"].get<bool>()) << p.dump();
  EXPECT_EQ(attachedCount(sandbox_->cgroup().path()), 8);
}

// An older agent's aimesh_reasons (a release with fewer reasons) is resized at
// start, its counters kept: adding a reason needs no --cleanup to upgrade.
TEST_F(SockLbE2e, AReasonsMapPinnedWithFewerReasonsIsResizedAndKeepsItsCounters) {
  serve("10.77.0.2", "a");
  writeFile(state_, manyServicesYaml(2));
  agent_ = std::make_unique<AgentProcess>(sandbox_->cgroup().path(), state_, dir_);
  agent_->start();
  const std::string pin = agent_->pinDir() + "/aimesh_reasons";
  ASSERT_EQ(pinnedMaxEntries(pin), static_cast<uint32_t>(AIMESH_R_MAX));
  agent_->kill9();

  // The older release's map: AIMESH_R_MAX - 1 reasons, no_backend = 7 on one CPU.
  int cpus = libbpf_num_possible_cpus();
  ASSERT_GT(cpus, 0);
  int old = bpf_map_create(BPF_MAP_TYPE_PERCPU_ARRAY, "aimesh_reasons", 4, 8, AIMESH_R_MAX - 1, nullptr);
  ASSERT_GE(old, 0);
  std::vector<uint64_t> values(static_cast<size_t>(cpus), 0);
  values[0] = 7;
  uint32_t key = AIMESH_R_NO_BACKEND;
  ASSERT_EQ(bpf_map_update_elem(old, &key, values.data(), BPF_ANY), 0);
  ASSERT_EQ(::unlink(pin.c_str()), 0);
  ASSERT_EQ(bpf_obj_pin(old, pin.c_str()), 0);
  ::close(old);

  agent_->start();
  EXPECT_EQ(pinnedMaxEntries(pin), static_cast<uint32_t>(AIMESH_R_MAX));
  std::string log = readFile(dir_ + "/agent.log");
  EXPECT_NE(log.find("resized map " + pin + " from " + std::to_string(AIMESH_R_MAX - 1) + " to " +
                     std::to_string(AIMESH_R_MAX) + " entries"),
            std::string::npos)
      << log;
  httplib::Client http(agent_->metricsUrlPath());
  auto got = http.Get("/metrics");
  ASSERT_TRUE(got && got->status == 200);
  EXPECT_NE(got->body.find("aimesh_datapath_reasons_total{reason=\"no_backend\"} 7\n"), std::string::npos)
      << got->body;
  json r = json::parse(client([] { return json{{"name", tcpAsk("10.96.1.1", 8000).name}}.dump(); }));
  EXPECT_EQ(r["name"], "a");
}

}  // namespace
}  // namespace aimesh::testing

namespace aimesh::testing {
namespace {


std::string policyYaml(const std::vector<std::string>& allow) {
  std::ostringstream y;
  y << "services:\n"
       "  - name: guarded\n    namespace: ml\n    vips: [\"10.96.0.30\", \"fd96::30\"]\n"
       "    ports: [{port: 8000, protocol: TCP}, {port: 8000, protocol: UDP}]\n"
       "    endpoints: [{address: \"10.77.0.2\"}, {address: \"fd77::2\"}]\n"
       "    policy:\n      allow_cgroups: [";
  for (size_t i = 0; i < allow.size(); ++i) y << (i ? ", " : "") << '"' << allow[i] << '"';
  y << "]\n"
       "  - name: open\n    namespace: ml\n    vips: [\"10.96.0.31\"]\n"
       "    ports: [{port: 8000, protocol: TCP}]\n    endpoints: [{address: \"10.77.0.2\"}]\n";
  return y.str();
}

// errno of each call from cgroup `cg`: TCP and UDP to the guarded service over
// IPv4 and IPv6, and TCP to the open one.
json askAll(const std::string& cg, const std::string& ns) {
  int st = 0;
  std::string out = runIn(cg, ns, [](int fd) {
    json j{{"tcp4", tcpAsk("10.96.0.30", 8000).err},  {"tcp6", tcpAsk("fd96::30", 8000).err},
           {"udp4", udpAsk("10.96.0.30", 8000).err},  {"udp6", udpAsk("fd96::30", 8000).err},
           {"udp4c", udpConnectedAsk("10.96.0.30", 8000).err}, {"open", tcpAsk("10.96.0.31", 8000).err}};
    std::string s = j.dump();
    (void)!::write(fd, s.data(), s.size());
    return 0;
  }, &st);
  EXPECT_EQ(st, 0);
  return json::parse(out);
}

TEST_F(SockLbE2e, PolicyAllowsListedCgroupsAndTheirChildrenAndDeniesOthersWithEperm) {
  serve("10.77.0.2", "a");
  serve("fd77::2", "a6");
  ChildCgroup allowed(sandbox_->cgroup().path() + "/allowed");
  ChildCgroup nested(allowed.path() + "/pod/");  // a container's cgroup inside the allowed one
  ChildCgroup denied(sandbox_->cgroup().path() + "/denied");
  startAgent(policyYaml({allowed.path()}));
  const std::string ns = sandbox_->client().name();

  json ok{{"tcp4", 0}, {"tcp6", 0}, {"udp4", 0}, {"udp6", 0}, {"udp4c", 0}, {"open", 0}};
  EXPECT_EQ(askAll(allowed.path(), ns), ok);
  EXPECT_EQ(askAll(nested.path(), ns), ok) << "a descendant of an allowed cgroup is allowed";
  json no{{"tcp4", EPERM}, {"tcp6", EPERM}, {"udp4", EPERM}, {"udp6", EPERM}, {"udp4c", EPERM}, {"open", 0}};
  EXPECT_EQ(askAll(denied.path(), ns), no);
  EXPECT_EQ(askAll(sandbox_->cgroup().path(), ns), no) << "the parent of an allowed cgroup is not allowed";

  // Counted per service port, reported as flow events naming the client.
  json svcs = api("services")["services"];
  uint64_t deniedTotal = 0;
  for (auto& s : svcs) {
    if (s["name"] == "guarded") {
      EXPECT_TRUE(s["policy"].get<bool>());
      deniedTotal += s["denied"].get<uint64_t>();
    } else {
      EXPECT_EQ(s["denied"], 0);
    }
  }
  EXPECT_EQ(deniedTotal, 10u);  // 5 calls x 2 denied cgroups
  json ev;
  std::set<uint64_t> deniedIds;
  for (int i = 0; i < 50 && deniedIds.size() < 2; ++i) {
    auto fr = callAgent(agent_->apiSocket(), {{"method", "flows"}, {"since", 0}}, 2000ms);
    ev = fr ? *fr : json{};
    for (auto& e : ev["events"])
      if (e["type"] == "denied") deniedIds.insert(e["client_cgroup_id"].get<uint64_t>());
    std::this_thread::sleep_for(100ms);  // the agent drains the ring buffer every 100 ms
  }
  struct stat d {}, p {};
  ASSERT_EQ(::stat(denied.path().c_str(), &d), 0);
  ASSERT_EQ(::stat(sandbox_->cgroup().path().c_str(), &p), 0);
  EXPECT_EQ(deniedIds, (std::set<uint64_t>{d.st_ino, p.st_ino})) << ev.dump();

  // meshctl policy shows the rule in force.
  std::string meshctl = std::string(AIMESH_BINARY_DIR) + "/meshctl --socket " + agent_->apiSocket();
  auto [rc, out] = capture(meshctl + " policy");
  EXPECT_EQ(rc, 0);
  EXPECT_NE(out.find("allow-list"), std::string::npos) << out;
  EXPECT_NE(out.find(allowed.path()), std::string::npos) << out;
  EXPECT_NE(out.find("(everyone)"), std::string::npos) << out;

  // Dropping the policy opens the service within a second.
  writeFile(state_, policyYaml({}).substr(0, policyYaml({}).find("    policy:")) +
                        policyYaml({}).substr(policyYaml({}).find("  - name: open")));
  json now;
  for (int i = 0; i < 50; ++i) {
    now = askAll(denied.path(), ns);
    if (now == ok) break;
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(now, ok);
}

TEST_F(SockLbE2e, PolicyCgroupCreatedLaterIsAllowedWithoutAnEdit) {
  serve("10.77.0.2", "a");
  serve("fd77::2", "a6");
  std::string later = sandbox_->cgroup().path() + "/later";
  startAgent(policyYaml({later}));  // does not exist yet: nobody is allowed
  json st = api("policy");
  bool sawMissing = false;
  for (auto& s : st["services"])
    for (auto& a : s["allow"]) sawMissing |= a["cgroup"] == later && a["resolved"] == false;
  EXPECT_TRUE(sawMissing) << st.dump();
  ChildCgroup cg(later);
  json r;
  for (int i = 0; i < 60; ++i) {  // re-resolved every second while missing
    r = askAll(cg.path(), sandbox_->client().name());
    if (r["tcp4"] == 0) break;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(r["tcp4"], 0) << r.dump();
  EXPECT_EQ(r["udp6"], 0) << r.dump();
}

// The row of `client` for a service port in the clients view, or null.
json clientRow(const json& view, const std::string& client, const std::string& service, const std::string& proto) {
  for (auto& r : view["clients"])
    if (r["client"] == client && r["service"] == service && r["protocol"] == proto) return r;
  return json();
}

// Who calls which service: every call counted per calling cgroup and service
// port in the kernel, named by its cgroup path, in the API, /metrics and
// meshctl top --clients; a cgroup that is removed leaves the view.
TEST_F(SockLbE2e, ClientsAreCountedPerCgroupAndServiceAndForgottenWhenTheCgroupGoes) {
  serve("10.77.0.2", "a");
  serve("fd77::2", "a6");
  ChildCgroup allowed(sandbox_->cgroup().path() + "/allowed");
  auto denied = std::make_unique<ChildCgroup>(sandbox_->cgroup().path() + "/denied");
  startAgent(policyYaml({allowed.path()}));
  const std::string ns = sandbox_->client().name();
  askAll(allowed.path(), ns);
  askAll(allowed.path(), ns);
  askAll(denied->path(), ns);

  json v = api("clients");
  EXPECT_EQ(v["top_k"], 20);
  EXPECT_EQ(v["pairs"], 6) << "2 cgroups x (guarded TCP, guarded UDP, open)";
  json tcp = clientRow(v, "/allowed", "guarded", "TCP");
  ASSERT_TRUE(tcp.is_object()) << v.dump();
  EXPECT_EQ(tcp["connections"], 4) << "tcp4 + tcp6, twice";
  EXPECT_EQ(tcp["requests"], 4) << "one request each, every connection sampled";
  EXPECT_EQ(tcp["denied"], 0);
  json udp = clientRow(v, "/allowed", "guarded", "UDP");
  EXPECT_EQ(udp["datagrams"], 4) << "udp4 + udp6 unconnected sends, twice";
  EXPECT_EQ(udp["connections"], 2) << "the connected UDP socket, twice";
  EXPECT_EQ(clientRow(v, "/allowed", "open", "TCP")["connections"], 2);
  EXPECT_EQ(clientRow(v, "/denied", "guarded", "TCP")["denied"], 2);
  EXPECT_EQ(clientRow(v, "/denied", "guarded", "UDP")["denied"], 3);
  EXPECT_EQ(clientRow(v, "/denied", "guarded", "TCP")["connections"], 0);
  EXPECT_EQ(clientRow(v, "/denied", "open", "TCP")["connections"], 1) << "the open service admits everyone";

  httplib::Client http(agent_->metricsUrlPath());
  auto got = http.Get("/metrics");
  ASSERT_TRUE(got && got->status == 200);
  const std::string& metrics = got->body;
  EXPECT_NE(metrics.find("aimesh_client_connections_total{client=\"/allowed\",destination_service=\"guarded\",destination_namespace=\"ml\","
                         "port=\"8000\",protocol=\"TCP\"} 4\n"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("aimesh_client_refused_total{client=\"/denied\",destination_service=\"guarded\",destination_namespace=\"ml\","
                         "port=\"8000\",protocol=\"UDP\",reason=\"denied\"} 3\n"),
            std::string::npos);

  std::string meshctl = std::string(AIMESH_BINARY_DIR) + "/meshctl --socket " + agent_->apiSocket();
  auto [rc, out] = capture(meshctl + " top --clients --iterations 1");
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("/allowed"), std::string::npos) << out;
  EXPECT_NE(out.find("ml/guarded"), std::string::npos) << out;

  // The denied cgroup goes: its entries are deleted once a walk of the
  // cgroup tree (at most every 5 s) no longer finds it.
  denied.reset();
  bool forgotten = false;
  for (int i = 0; i < 100 && !forgotten; ++i) {
    std::this_thread::sleep_for(100ms);
    v = api("clients");
    forgotten = v["pairs"] == 3;
  }
  EXPECT_TRUE(forgotten) << v.dump();
  EXPECT_TRUE(clientRow(v, "/denied", "open", "TCP").is_null()) << v.dump();
  // On cgroup v2 the agent names ids by their file handle, not by walking.
  EXPECT_NE(readFile(dir_ + "/agent.log").find("are named by file handle"), std::string::npos);
  EXPECT_EQ(clientRow(v, "/allowed", "guarded", "TCP")["connections"], 4);
}

}  // namespace
}  // namespace aimesh::testing
