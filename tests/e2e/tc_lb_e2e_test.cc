// e2e: the TC data path. Three namespaces joined by veth pairs, no default
// routes anywhere:
//   client 10.78.1.1 ── 10.78.1.2 node 10.78.2.1 ── backend 10.78.2.2, .3
// The agent runs in the node namespace with tc_lb on both node interfaces;
// the client is in no aimesh cgroup, so only the TC program balances it.
// The client has a route to the service address (and nothing else) via the
// node; the backend a route back to the client subnet. Needs root.
#include <bpf/bpf.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "aimesh/abi.h"
#include "client/api_client.h"
#include "fixtures/net_client.h"
#include "fixtures/sandbox.h"

namespace aimesh::testing {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

const char* kState = R"(services:
  - name: chat
    namespace: ml
    vips: [10.96.5.10, "fd96::510"]
    ports: [{port: 8000, protocol: TCP}, {port: 8000, protocol: UDP}]
    endpoints:
      - {address: 10.78.2.2, port: 8000}
      - {address: 10.78.2.3, port: 8000}
      - {address: "fd78:2::2", port: 8000}
      - {address: "fd78:2::3", port: 8000}
  - name: chat-nodeport
    namespace: ml
    vips: [10.78.1.2]
    ports: [{port: 30080, protocol: TCP}, {port: 30080, protocol: UDP}]
    endpoints:
      - {address: 10.78.2.2, port: 8000}
)";

class TcLbE2e : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    dir_ = tempDir();
    std::string p = "tc" + uniqueSuffix();
    client_ = std::make_unique<NetNs>(p + "c");
    node_ = std::make_unique<NetNs>(p + "n");
    backend_ = std::make_unique<NetNs>(p + "b");
    cIf_ = p + "c0";
    n0_ = p + "n0";
    n1_ = p + "n1";
    bIf_ = p + "b0";
    std::string c = client_->name(), n = node_->name(), b = backend_->name();
    int rc = sh("ip link add " + cIf_ + " type veth peer name " + n0_) +
             sh("ip link add " + n1_ + " type veth peer name " + bIf_) + sh("ip link set " + cIf_ + " netns " + c) +
             sh("ip link set " + n0_ + " netns " + n) + sh("ip link set " + n1_ + " netns " + n) +
             sh("ip link set " + bIf_ + " netns " + b) + sh("ip -n " + c + " addr add 10.78.1.1/24 dev " + cIf_) +
             sh("ip -n " + n + " addr add 10.78.1.2/24 dev " + n0_) +
             sh("ip -n " + n + " addr add 10.78.2.1/24 dev " + n1_) +
             sh("ip -n " + b + " addr add 10.78.2.2/24 dev " + bIf_) +
             sh("ip -n " + b + " addr add 10.78.2.3/24 dev " + bIf_) +
             sh("ip -n " + c + " link set " + cIf_ + " up") + sh("ip -n " + n + " link set " + n0_ + " up") +
             sh("ip -n " + n + " link set " + n1_ + " up") + sh("ip -n " + b + " link set " + bIf_ + " up") +
             sh("ip -n " + c + " addr add fd78:1::1/64 dev " + cIf_ + " nodad") +
             sh("ip -n " + n + " addr add fd78:1::2/64 dev " + n0_ + " nodad") +
             sh("ip -n " + n + " addr add fd78:2::1/64 dev " + n1_ + " nodad") +
             sh("ip -n " + b + " addr add fd78:2::2/64 dev " + bIf_ + " nodad") +
             sh("ip -n " + b + " addr add fd78:2::3/64 dev " + bIf_ + " nodad") +
             sh("ip netns exec " + n + " sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1") +
             // Only the service address is routed to the node; no default routes.
             sh("ip -n " + c + " route add 10.96.5.10/32 via 10.78.1.2") +
             sh("ip -n " + c + " route add fd96::510/128 via fd78:1::2") +
             sh("ip -n " + b + " route add 10.78.1.0/24 via 10.78.2.1") +
             sh("ip -n " + b + " route add fd78:1::/64 via fd78:2::1");
    ASSERT_EQ(rc, 0) << "topology setup failed";
    servers_.push_back(startNameServer(b, "10.78.2.2", 8000, "a"));
    servers_.push_back(startNameServer(b, "10.78.2.3", 8000, "b"));
    servers_.push_back(startNameServer(b, "fd78:2::2", 8000, "a6"));
    servers_.push_back(startNameServer(b, "fd78:2::3", 8000, "b6"));
    writeFile(dir_ + "/state.yaml", kState);
  }
  void startAgent(std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"--tc-interfaces", n0_ + "," + n1_};
    args.insert(args.end(), extra.begin(), extra.end());
    agent_ = std::make_unique<AgentProcess>(cgroup_.path(), dir_ + "/state.yaml", dir_, args);
    agent_->setNetns(node_->name());
    agent_->start();
  }
  void TearDown() override {
    agent_.reset();
    servers_.clear();
    client_.reset();
    node_.reset();
    backend_.reset();
    if (!dir_.empty()) removeTree(dir_);
  }

  // Runs fn in the client namespace, outside every aimesh cgroup.
  json client(const std::function<json()>& fn) {
    int st = 0;
    std::string out = runIn("", client_->name(), [&](int fd) {
      std::string s = fn().dump();
      (void)!::write(fd, s.data(), s.size());
      return 0;
    }, &st);
    EXPECT_EQ(st, 0);
    return json::parse(out);
  }
  size_t ctEntries() {
    int fd = bpf_obj_get((agent_->pinDir() + "/aimesh_ct").c_str());
    if (fd < 0) return 0;
    size_t n = 0;
    aimesh_ct_key k{}, next{};
    void* prev = nullptr;
    while (bpf_map_get_next_key(fd, prev, &next) == 0) {
      ++n;
      k = next;
      prev = &k;
    }
    ::close(fd);
    return n;
  }

  std::string dir_, cIf_, n0_, n1_, bIf_;
  TestCgroup cgroup_;  // the agent's socket hooks go here; the client is not in it
  std::unique_ptr<NetNs> client_, node_, backend_;
  std::vector<Child> servers_;
  std::unique_ptr<AgentProcess> agent_;
};

TEST_F(TcLbE2e, TcpAndUdpToTheServiceReachBackendsAndRepliesComeFromTheServiceAddress) {
  startAgent();
  json r = client([] {
    std::map<std::string, int> names;
    std::set<std::string> peers;
    int errors = 0;
    for (int i = 0; i < 30; ++i) {
      Reply x = tcpAsk("10.96.5.10", 8000, 1000);
      if (x.err) ++errors;
      else names[x.name]++, peers.insert(x.peer);
    }
    Reply u = udpAsk("10.96.5.10", 8000, 1000);
    return json{{"names", names}, {"peers", peers}, {"errors", errors}, {"udp_err", u.err}, {"udp_name", u.name},
                {"udp_peer", u.peer}};
  });
  EXPECT_EQ(r["errors"], 0) << r.dump();
  EXPECT_EQ(r["names"].size(), 2u) << "both backends used: " << r.dump();
  EXPECT_EQ(r["peers"], json::array({"10.96.5.10:8000"}));
  EXPECT_EQ(r["udp_err"], 0) << r.dump();
  EXPECT_TRUE(r["udp_name"] == "a" || r["udp_name"] == "b") << r.dump();
  EXPECT_EQ(r["udp_peer"], "10.96.5.10:8000") << "the UDP reply must come from the service address";
  // 31 flows, two entries each (forward and reply); TCP ones are closing.
  EXPECT_GE(ctEntries(), 2u * 31);
  json st = callAgent(agent_->apiSocket(), {{"method", "status"}}, 2000ms).value();
  int tc = 0;
  for (auto& p : st["programs"]) tc += p["name"] == "tc_ingress";
  EXPECT_EQ(tc, 2);
}

TEST_F(TcLbE2e, ANodePortOnTheNodeAddressReachesTheBackend) {
  startAgent();
  json r = client([] {
    Reply x = tcpAsk("10.78.1.2", 30080, 1000);
    Reply u = udpAsk("10.78.1.2", 30080, 1000);
    return json{{"err", x.err}, {"name", x.name}, {"peer", x.peer}, {"udp_err", u.err}, {"udp_name", u.name},
                {"udp_peer", u.peer}};
  });
  EXPECT_EQ(r["err"], 0) << r.dump();
  EXPECT_EQ(r["name"], "a");
  EXPECT_EQ(r["peer"], "10.78.1.2:30080");
  EXPECT_EQ(r["udp_err"], 0) << r.dump();
  EXPECT_EQ(r["udp_name"], "a");
  EXPECT_EQ(r["udp_peer"], "10.78.1.2:30080");
}

TEST_F(TcLbE2e, Ipv6TcpAndUdpThroughTheNode) {
  startAgent();
  json r = client([] {
    std::map<std::string, int> names;
    std::set<std::string> peers;
    int errors = 0;
    for (int i = 0; i < 20; ++i) {
      Reply x = tcpAsk("fd96::510", 8000, 1000);
      if (x.err) ++errors;
      else names[x.name]++, peers.insert(x.peer);
    }
    Reply u = udpAsk("fd96::510", 8000, 1000);
    return json{{"names", names}, {"peers", peers}, {"errors", errors}, {"udp_err", u.err}, {"udp_peer", u.peer}};
  });
  EXPECT_EQ(r["errors"], 0) << r.dump();
  EXPECT_EQ(r["names"], (json{{"a6", r["names"].value("a6", 0)}, {"b6", r["names"].value("b6", 0)}})) << r.dump();
  EXPECT_EQ(r["names"].size(), 2u) << r.dump();
  EXPECT_EQ(r["peers"], json::array({"[fd96::510]:8000"})) << r.dump();
  EXPECT_EQ(r["udp_err"], 0) << r.dump();
  EXPECT_EQ(r["udp_peer"], "[fd96::510]:8000") << r.dump();
}

TEST_F(TcLbE2e, FlowEntriesAppearAndExpire) {
  startAgent({"--ct-udp-timeout-seconds", "1", "--ct-closing-timeout-seconds", "1"});
  json r = client([] {
    Reply u = udpAsk("10.96.5.10", 8000, 1000);
    Reply t = tcpAsk("10.96.5.10", 8000, 1000);
    return json{{"udp_err", u.err}, {"tcp_err", t.err}};
  });
  EXPECT_EQ(r["udp_err"], 0);
  EXPECT_EQ(r["tcp_err"], 0);
  EXPECT_EQ(ctEntries(), 4u);  // a UDP and a TCP flow, forward and reply each
  // UDP idles out after 1 s; the TCP flow closed (FIN), so 1 s as well. The
  // agent sweeps every 0.5 s here.
  auto end = std::chrono::steady_clock::now() + 10s;
  while (ctEntries() > 0 && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(100ms);
  EXPECT_EQ(ctEntries(), 0u);
}

TEST_F(TcLbE2e, NonServiceTrafficPassesAndRestartReplacesTheFilterWithoutASecondOne) {
  startAgent();
  // The node's own address on another port is not a service: untouched
  // (nothing listens there: refused, not rewritten to a backend).
  json r = client([] {
    Reply x = tcpAsk("10.78.1.2", 9999, 1000);
    return json{{"err", x.err}};
  });
  EXPECT_EQ(r["err"], ECONNREFUSED);
  // A restarted agent replaces its filter in place.
  agent_->kill9();
  agent_->start();
  auto [rc, out] = capture("ip netns exec " + node_->name() + " tc filter show dev " + n0_ + " ingress");
  EXPECT_EQ(rc, 0);
  size_t filters = 0;
  for (size_t at = out.find("handle 0xa1e5"); at != std::string::npos; at = out.find("handle 0xa1e5", at + 1))
    ++filters;
  EXPECT_EQ(filters, 1u) << out;
  json st = callAgent(agent_->apiSocket(), {{"method", "status"}}, 2000ms).value();
  for (auto& p : st["programs"])
    if (p["name"] == "tc_ingress") {
      EXPECT_TRUE(p["adopted"].get<bool>()) << st.dump();
    }
  json again = client([] {
    Reply x = tcpAsk("10.96.5.10", 8000, 1000);
    return json{{"err", x.err}};
  });
  EXPECT_EQ(again["err"], 0);
}

}  // namespace
}  // namespace aimesh::testing
