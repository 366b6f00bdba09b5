// e2e: aimesh next to what is already on a node (docs/coexistence.md). The
// peers are emulated with the real tools, inside the test's own network
// namespaces only, never the host's:
//   - kube-proxy iptables mode: KUBE-SERVICES -> KUBE-SVC -> KUBE-SEP DNAT
//     chains (iptables-restore), hooked at OUTPUT and PREROUTING, in the
//     client namespace (host-network clients) or in the backend namespace
//     playing the node (pods' packets after they leave the pod);
//   - kube-proxy nftables mode: a kube-proxy-shaped table (vmap on
//     daddr . proto . dport, a chain per service and per endpoint);
//   - a second socket load balancer on the same path (what Cilium's socket LB
//     is): a second aimesh agent with its own pin dir and state, at the
//     parent, a child or the same test cgroup;
//   - an Istio-sidecar-style capture: nat OUTPUT REDIRECT to port 15001 and
//     a listener there that reads SO_ORIGINAL_DST, as Envoy does.
// Every address is inside the sandbox; the client namespace has no default
// route (only the service range, towards the backend namespace, which drops
// a packet nobody rewrote unless a test's PREROUTING rule DNATs it). Needs
// root, iptables and nft.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "client/api_client.h"
#include "fixtures/agent_e2e.h"
#include "fixtures/net_client.h"
#include "fixtures/sandbox.h"

#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80  // <linux/netfilter_ipv4.h>; that header clashes with <netinet/in.h>
#endif

namespace aimesh::testing {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

constexpr const char* kVip = "10.96.0.40";
// Who answers where: each balancer under test sends to its own backend.
constexpr const char* kAimeshBackend = "10.77.0.2";  // aimesh's state (agent A)
constexpr const char* kProxyBackend = "10.77.0.3";   // kube-proxy's rules
constexpr const char* kOtherBackend = "10.77.0.4";   // the second socket LB's state (agent B)

std::string oneService(const std::string& backend) {
  return std::string("services:\n  - name: llm\n    namespace: ml\n    vips: [") + kVip +
         "]\n    ports: [{port: 8000}]\n    endpoints:\n      - {address: " + backend + ", port: 8000}\n";
}

// kube-proxy's iptables shape for one service with one endpoint (as
// bench/tc_compare.cc builds it for many), hooked where kube-proxy hooks it:
// OUTPUT (host-network clients) and PREROUTING (pods behind the node).
std::string kubeProxyIptables() {
  return std::string("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n") +
         ":POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-COEX - [0:0]\n:KUBE-SEP-COEX - [0:0]\n"
         "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n"
         "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n"
         "-A KUBE-SERVICES -d " + kVip + "/32 -p tcp -m comment --comment \"ml/llm cluster IP\" -m tcp --dport 8000 "
         "-j KUBE-SVC-COEX\n"
         "-A KUBE-SVC-COEX -j KUBE-SEP-COEX\n"
         "-A KUBE-SEP-COEX -p tcp -m tcp -j DNAT --to-destination " + kProxyBackend + ":8000\n"
         "COMMIT\n";
}

// kube-proxy's nftables shape (table "kube-proxy", a verdict map keyed on
// daddr . proto . dport, a chain per service and per endpoint), with
// counters in the service and endpoint chains.
std::string kubeProxyNft() {
  return std::string("table ip kube-proxy {\n") +
         "  map service-ips {\n    type ipv4_addr . inet_proto . inet_service : verdict\n"
         "    elements = { " + kVip + " . tcp . 8000 : goto service-coex }\n  }\n"
         "  chain services {\n    ip daddr . meta l4proto . th dport vmap @service-ips\n  }\n"
         "  chain service-coex {\n    counter numgen random mod 1 vmap { 0 : goto endpoint-coex }\n  }\n"
         "  chain endpoint-coex {\n    counter meta l4proto tcp dnat to " + kProxyBackend + ":8000\n  }\n"
         "  chain nat-output {\n    type nat hook output priority -100; policy accept;\n    jump services\n  }\n"
         "  chain nat-prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n    jump services\n  }\n"
         "}\n";
}

// Istio's sidecar capture, reduced to its outbound part: every TCP
// connection leaving the pod goes to the proxy's port 15001.
std::string sidecarIptables() {
  return "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
         ":ISTIO_OUTPUT - [0:0]\n:ISTIO_REDIRECT - [0:0]\n"
         "-A OUTPUT -p tcp -j ISTIO_OUTPUT\n"
         "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN\n"
         "-A ISTIO_OUTPUT -j ISTIO_REDIRECT\n"
         "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001\n"
         "COMMIT\n";
}

// The packet counter of the first iptables-save -c line of `ns`'s nat table
// that contains every one of `parts`; -1 if there is none.
long iptablesCounter(const std::string& ns, const std::vector<std::string>& parts) {
  auto [rc, out] = capture("ip netns exec " + ns + " iptables-save -c -t nat");
  if (rc != 0) return -1;
  std::istringstream in(out);
  std::string line;
  static const std::regex kCounter(R"(^\[(\d+):\d+\])");
  while (std::getline(in, line)) {
    bool all = true;
    for (auto& p : parts) all = all && line.find(p) != std::string::npos;
    std::smatch m;
    if (all && std::regex_search(line, m, kCounter)) return std::stol(m[1]);
  }
  return -1;
}

// The packet counter of the (one) counter in chain `chain` of table ip
// kube-proxy in `ns`; -1 if there is none.
long nftCounter(const std::string& ns, const std::string& chain) {
  auto [rc, out] = capture("ip netns exec " + ns + " nft list chain ip kube-proxy " + chain);
  static const std::regex kCounter(R"(counter packets (\d+) bytes)");
  std::smatch m;
  if (rc != 0 || !std::regex_search(out, m, kCounter)) return -1;
  return std::stol(m[1]);
}

// A transparent proxy's listener on 0.0.0.0:port in `ns` (Envoy's 15001
// outbound listener, reduced): for each connection it reads the client's
// line and answers "orig ADDR:PORT", the destination the connection had
// before netfilter redirected it (SO_ORIGINAL_DST), then closes. Killed by
// the Child's destructor, or by the kernel if the test process dies.
Child startOriginalDstListener(const std::string& ns, uint16_t port) {
  int ready[2];
  if (::pipe2(ready, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork");
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() == 1) _exit(121);
    ::close(ready[0]);
    int nsFd = ::open(("/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
    if (nsFd < 0 || ::setns(nsFd, CLONE_NEWNET) != 0) _exit(121);
    int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    if (::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || ::listen(s, 64) != 0) _exit(122);
    (void)!::write(ready[1], "r", 1);
    ::close(ready[1]);
    for (;;) {
      int c = ::accept4(s, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      // The client's "hi\n" first, so that close() does not reset unread data.
      pollfd p{c, POLLIN, 0};
      char buf[64];
      if (::poll(&p, 1, 1000) == 1) (void)!::read(c, buf, sizeof(buf));
      sockaddr_in o{};
      socklen_t ol = sizeof(o);
      char ip[INET_ADDRSTRLEN] = "?";
      std::string line = "no original destination\n";
      if (::getsockopt(c, SOL_IP, SO_ORIGINAL_DST, &o, &ol) == 0 && ::inet_ntop(AF_INET, &o.sin_addr, ip, sizeof(ip)))
        line = std::string("orig ") + ip + ":" + std::to_string(ntohs(o.sin_port)) + "\n";
      (void)!::write(c, line.data(), line.size());
      ::close(c);
    }
  }
  ::close(ready[1]);
  char b = 0;
  ssize_t n = ::read(ready[0], &b, 1);
  ::close(ready[0]);
  Child child(pid);
  if (n != 1) throw std::runtime_error("original-destination listener failed to start");
  return child;
}

class CoexistE2e : public AgentE2e {
 protected:
  void SetUp() override {
    AgentE2e::SetUp();
    if (IsSkipped()) return;
    for (const char* tool : {"iptables-restore", "iptables-save", "nft"})
      if (sh(std::string("command -v ") + tool + " >/dev/null") != 0) GTEST_SKIP() << tool << " not installed";
    // A route for the service range only, towards the backend namespace:
    // lets a client that no socket program rewrote reach netfilter's
    // DNAT; if nothing rewrites it, the backend namespace drops it (it does
    // not forward), so a wrong path cannot succeed by accident.
    ASSERT_EQ(sh("ip -n " + clientNs() + " route add 10.96.0.0/16 via 10.77.0.2"), 0);
  }

  const std::string& clientNs() const { return sandbox_->client().name(); }
  int inClientNs(const std::string& cmd) { return sh("ip netns exec " + clientNs() + " " + cmd); }

  // n TCP connections to the service from `cgroup` (in the client
  // namespace); counts the answers ("name" or "error:errno") and the peers
  // getpeername() reported.
  json ask(const std::string& cgroup, int n) {
    return json::parse(runClient(
        [&] {
          std::map<std::string, int> names, peers;
          for (int i = 0; i < n; ++i) {
            Reply r = tcpAsk(kVip, 8000);
            names[r.err ? "error:" + std::to_string(r.err) : r.name]++;
            if (!r.err) peers[r.peer]++;
          }
          return json{{"names", names}, {"peers", peers}}.dump();
        },
        cgroup));
  }

  // Connections the agent behind API socket `sock` sent through its one service.
  static long serviceConnections(const std::string& sock) {
    auto r = callAgent(sock, {{"method", "services"}}, 2000ms);
    if (!r) return -1;
    json j = *r;
    if (!j.contains("services") || j["services"].size() != 1) return -1;
    return j["services"][0].value("connections", -1L);
  }

  std::string subdir(const std::string& name) {
    std::string d = dir_ + "/" + name;
    ::mkdir(d.c_str(), 0700);
    return d;
  }
};

// Claim: a cgroup connect hook rewrites the address at connect(), before any
// packet exists, so kube-proxy's DNAT (iptables mode) never matches an
// aimesh client's connection; a client outside aimesh's cgroup is still
// DNATed by kube-proxy.
TEST_F(CoexistE2e, KubeProxyIptablesNeverSeesTheServiceAddressOfAnAimeshClient) {
  serve(kAimeshBackend, "aimesh");
  serve(kProxyBackend, "kube-proxy");
  std::string rules = dir_ + "/kube-proxy.rules";
  writeFile(rules, kubeProxyIptables());
  ASSERT_EQ(inClientNs("iptables-restore " + rules), 0);
  startAgent(oneService(kAimeshBackend));
  TestCgroup outside;  // a sibling of the agent's cgroup: no aimesh programs

  json in = ask("", 20);
  EXPECT_EQ(in["names"], json({{"aimesh", 20}})) << in.dump();
  EXPECT_EQ(in["peers"], json({{"10.96.0.40:8000", 20}})) << in.dump();
  EXPECT_EQ(iptablesCounter(clientNs(), {"-A KUBE-SERVICES", kVip}), 0);
  EXPECT_EQ(iptablesCounter(clientNs(), {"-A KUBE-SEP-COEX", "DNAT"}), 0);

  json out = ask(outside.path(), 5);
  EXPECT_EQ(out["names"], json({{"kube-proxy", 5}})) << out.dump();
  EXPECT_EQ(out["peers"], json({{"10.96.0.40:8000", 5}})) << out.dump();
  // NAT rules see the first packet of each connection only: one per connect.
  EXPECT_EQ(iptablesCounter(clientNs(), {"-A KUBE-SEP-COEX", "DNAT"}), 5);
  EXPECT_EQ(serviceConnections(agent_->apiSocket()), 20);
}

// Claim: the same where kube-proxy really sits for pods: in the node's
// PREROUTING, which sees the pod's packets after they left the pod. Here the
// backend namespace plays the node (its PREROUTING DNATs the service address
// to its own 10.77.0.3): an aimesh client's packets arrive there already
// addressed to aimesh's endpoint; a client outside aimesh's cgroup sends to
// the service address and is DNATed there.
TEST_F(CoexistE2e, KubeProxyAtTheNodesPreroutingNeverSeesTheServiceAddressOfAnAimeshClient) {
  serve(kAimeshBackend, "aimesh");
  serve(kProxyBackend, "kube-proxy");
  std::string node = sandbox_->backend().name();
  std::string rules = dir_ + "/kube-proxy.rules";
  writeFile(rules, kubeProxyIptables());
  ASSERT_EQ(sh("ip netns exec " + node + " iptables-restore " + rules), 0);
  startAgent(oneService(kAimeshBackend));
  TestCgroup outside;

  json in = ask("", 20);
  EXPECT_EQ(in["names"], json({{"aimesh", 20}})) << in.dump();
  EXPECT_EQ(iptablesCounter(node, {"-A KUBE-SEP-COEX", "DNAT"}), 0);

  json out = ask(outside.path(), 5);
  EXPECT_EQ(out["names"], json({{"kube-proxy", 5}})) << out.dump();
  EXPECT_EQ(out["peers"], json({{"10.96.0.40:8000", 5}})) << out.dump();
  EXPECT_EQ(iptablesCounter(node, {"-A KUBE-SEP-COEX", "DNAT"}), 5);
}

// Claim: the same for kube-proxy's nftables mode (a nat chain at the output
// hook at priority -100: the dstnat priority, written as a number because
// this nft (1.0.6) refuses the name at the output hook).
TEST_F(CoexistE2e, KubeProxyNftablesNeverSeesTheServiceAddressOfAnAimeshClient) {
  serve(kAimeshBackend, "aimesh");
  serve(kProxyBackend, "kube-proxy");
  std::string rules = dir_ + "/kube-proxy.nft";
  writeFile(rules, kubeProxyNft());
  ASSERT_EQ(inClientNs("nft -f " + rules), 0);
  startAgent(oneService(kAimeshBackend));
  TestCgroup outside;

  json in = ask("", 20);
  EXPECT_EQ(in["names"], json({{"aimesh", 20}})) << in.dump();
  EXPECT_EQ(nftCounter(clientNs(), "service-coex"), 0);
  EXPECT_EQ(nftCounter(clientNs(), "endpoint-coex"), 0);

  json out = ask(outside.path(), 5);
  EXPECT_EQ(out["names"], json({{"kube-proxy", 5}})) << out.dump();
  EXPECT_EQ(nftCounter(clientNs(), "service-coex"), 5);
  EXPECT_EQ(nftCounter(clientNs(), "endpoint-coex"), 5);
}

// Claim: with two socket load balancers on one path (aimesh and, say,
// Cilium's socket LB), the kernel runs the connect programs of the deeper
// cgroup first; the first one to rewrite wins, and the other sees the
// backend address, which is not one of its frontends, and leaves it alone.
// A is attached to a child cgroup, B to its parent.
TEST_F(CoexistE2e, TwoSocketBalancersTheDeeperCgroupsProgramWins) {
  serve(kAimeshBackend, "A");
  serve(kOtherBackend, "B");
  ChildCgroup inner(sandbox_->cgroup().path() + "/inner");
  std::string da = subdir("a"), db = subdir("b");
  writeFile(da + "/state.yaml", oneService(kAimeshBackend));
  writeFile(db + "/state.yaml", oneService(kOtherBackend));
  // B (the parent's) starts first, so that attach order would favour it.
  auto b = std::make_unique<AgentProcess>(sandbox_->cgroup().path(), db + "/state.yaml", db);
  b->start();
  auto a = std::make_unique<AgentProcess>(inner.path(), da + "/state.yaml", da);
  a->start();

  json deep = ask(inner.path(), 10);  // both programs apply: A's (child) first
  EXPECT_EQ(deep["names"], json({{"A", 10}})) << deep.dump();
  EXPECT_EQ(deep["peers"], json({{"10.96.0.40:8000", 10}})) << deep.dump();
  EXPECT_EQ(serviceConnections(a->apiSocket()), 10);
  EXPECT_EQ(serviceConnections(b->apiSocket()), 0);  // B saw 10.77.0.2, not its frontend

  json shallow = ask(sandbox_->cgroup().path(), 10);  // only B's programs apply
  EXPECT_EQ(shallow["names"], json({{"B", 10}})) << shallow.dump();
  EXPECT_EQ(shallow["peers"], json({{"10.96.0.40:8000", 10}})) << shallow.dump();
  EXPECT_EQ(serviceConnections(a->apiSocket()), 10);
  EXPECT_EQ(serviceConnections(b->apiSocket()), 10);

  // A refusal is final: the kernel runs every program and fails the call if
  // any one rejected it. A's service loses its endpoints, so A refuses;
  // B's program still runs after it, sees the service address A left in
  // place and picks a backend for a connect() that then fails.
  std::string noEndpoints = std::string("services:\n  - name: llm\n    namespace: ml\n    vips: [") + kVip +
                            "]\n    ports: [{port: 8000}]\n    endpoints: []\n";
  applyStateVia(a->apiSocket(), da + "/state.yaml", noEndpoints);
  json refused = ask(inner.path(), 5);
  EXPECT_EQ(refused["names"], json({{"error:" + std::to_string(ECONNREFUSED), 5}})) << refused.dump();
  EXPECT_EQ(serviceConnections(b->apiSocket()), 15);  // counted by B, never made
  a.reset();
  b.reset();
}

// Claim: two socket load balancers on the SAME cgroup run in attach order
// (bpf_link attachments are multi-attach, appended at the end): the one
// attached first wins, whichever it is, and keeps winning across its own
// restart (the agent updates its pinned links in place).
TEST_F(CoexistE2e, TwoSocketBalancersOnOneCgroupTheFirstAttachedWins) {
  serve(kAimeshBackend, "A");
  serve(kOtherBackend, "B");
  std::string cg = sandbox_->cgroup().path();
  std::string da = subdir("a"), db = subdir("b");
  writeFile(da + "/state.yaml", oneService(kAimeshBackend));
  writeFile(db + "/state.yaml", oneService(kOtherBackend));
  for (bool aFirst : {true, false}) {
    SCOPED_TRACE(aFirst ? "A attached first" : "B attached first");
    auto a = std::make_unique<AgentProcess>(cg, da + "/state.yaml", da);
    auto b = std::make_unique<AgentProcess>(cg, db + "/state.yaml", db);
    (aFirst ? a : b)->start();
    (aFirst ? b : a)->start();
    json r = ask(cg, 10);
    EXPECT_EQ(r["names"], json({{aFirst ? "A" : "B", 10}})) << r.dump();
    EXPECT_EQ(r["peers"], json({{"10.96.0.40:8000", 10}})) << r.dump();
    EXPECT_EQ(serviceConnections((aFirst ? b : a)->apiSocket()), 0);
    if (aFirst) {
      // A restarted agent adopts its pinned links and swaps its programs in
      // them (bpf_link_update): it keeps its place ahead of B.
      a->kill9();
      a->start();
      json again = ask(cg, 10);
      EXPECT_EQ(again["names"], json({{"A", 10}})) << again.dump();
    }
    a.reset();  // --cleanup: detaches its programs
    b.reset();
  }
}

// Claim: an Istio-sidecar-style capture (nat OUTPUT REDIRECT to 15001 in the
// pod's namespace) still captures an aimesh client's connection, but the
// proxy's original destination is the endpoint aimesh chose, not the
// service address; without aimesh it is the service address.
TEST_F(CoexistE2e, SidecarCaptureSeesTheEndpointAimeshChoseAsOriginalDestination) {
  serve(kAimeshBackend, "aimesh");
  std::string rules = dir_ + "/sidecar.rules";
  writeFile(rules, sidecarIptables());
  ASSERT_EQ(inClientNs("iptables-restore " + rules), 0);
  servers_.push_back(startOriginalDstListener(clientNs(), 15001));
  startAgent(oneService(kAimeshBackend));
  TestCgroup outside;

  json in = ask("", 5);
  EXPECT_EQ(in["names"], json({{"orig 10.77.0.2:8000", 5}})) << in.dump();
  EXPECT_EQ(in["peers"], json({{"10.96.0.40:8000", 5}})) << in.dump();  // aimesh's getpeername hook
  EXPECT_EQ(iptablesCounter(clientNs(), {"-A ISTIO_REDIRECT", "REDIRECT"}), 5);

  json out = ask(outside.path(), 5);
  EXPECT_EQ(out["names"], json({{"orig 10.96.0.40:8000", 5}})) << out.dump();
  EXPECT_EQ(iptablesCounter(clientNs(), {"-A ISTIO_REDIRECT", "REDIRECT"}), 10);
  // aimesh counted its 5 connections, although they ended at the proxy.
  EXPECT_EQ(serviceConnections(agent_->apiSocket()), 5);
}

}  // namespace
}  // namespace aimesh::testing
