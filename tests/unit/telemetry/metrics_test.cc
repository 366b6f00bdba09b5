// Unit tests of the telemetry endpoint: the Prometheus text renderMetrics()
// prints (values, labels, escaping, one HELP/TYPE per family), that
// docs/metrics.md lists exactly the families it prints, splitHostPort(), and
// the HTTP server answering /metrics, /healthz and /readyz on loopback.
#include "telemetry/metrics.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include "fixtures/metrics_doc.h"
#include "fixtures/sandbox.h"
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "telemetry/http_server.h"
#include "telemetry/stats.h"

namespace aimesh {
namespace {

IpAddr ip(const char* s) { return *IpAddr::parse(s); }

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

bool hasLine(const std::string& text, const std::string& line) {
  for (auto& l : lines(text))
    if (l == line) return true;
  return false;
}

// The family a sample line belongs to: the name up to '{' or ' '.
std::string sampleName(const std::string& line) { return line.substr(0, line.find_first_of("{ ")); }

// Two services, three backends, some counters and reasons. Service 2 has a
// name and model that need escaping and no counters at all: nothing on this
// node used it, so it has series only with idle series (then zeros).
struct Fixture {
  IdIndex index;
  DatapathStats stats;
  // Every process_* value set (fixed: the output does not depend on this process).
  ProcessStats process{1.5, 40u << 20, 900u << 20, 12, 1700000000.25, 17, 1024};
  MetricsInput in;

  Fixture() {
    ServiceInfo chat;
    chat.name = "chat";
    chat.nameSpace = "ml";
    chat.model = "llama-3-8b";
    chat.port = PortSpec{8000, Protocol::kTcp};
    chat.frontends = {FrontendKey{ip("10.96.0.20"), 8000, Protocol::kTcp}};
    chat.backendIds = {1, 2};
    index.services[1] = chat;

    ServiceInfo odd;
    odd.name = "we\"ird\\name";
    odd.nameSpace = "default";
    odd.model = "a\nb";
    odd.port = PortSpec{53, Protocol::kUdp};
    odd.frontends = {FrontendKey{ip("fd00::53"), 53, Protocol::kUdp}};
    odd.backendIds = {3};
    index.services[2] = odd;

    index.backends[1] = BackendInfo{1, Endpoint{ip("10.0.0.1"), 0, 1, EndpointState::kActive}, 8000};
    index.backends[2] = BackendInfo{1, Endpoint{ip("fd00::2"), 9000, 3, EndpointState::kDraining, "chat-1"}, 9000};
    index.backends[3] = BackendInfo{2, Endpoint{ip("10.0.0.3"), 0, 0, EndpointState::kActive}, 53};

    stats.services[1] = ServiceCounters{5, 0, 2};
    stats.backends[1] = BackendCounters{4, 0};
    stats.backends[2] = BackendCounters{1, 6};
    stats.reasons[AIMESH_R_NO_BACKEND] = 2;
    stats.reasons[AIMESH_R_BACKEND_INACTIVE] = 7;
    stats.reasons[AIMESH_R_REVNAT_FAILED] = 1;

    in.index = &index;
    in.process = &process;
    in.stats = &stats;
    in.agent.reconciles = 3;
    in.agent.reconcileErrors = 1;
    in.agent.stateFileErrors = 2;
    in.agent.lastReconcileSeconds = 0.25;
    in.agent.reconcileSecondsTotal = 1.5;
    in.agent.ready = true;
    in.agent.lastStateFileOk = false;
    in.agent.startTimeSeconds = 1700000000.5;
    in.maps = {MapOccupancy{"aimesh_frontends", 2, AIMESH_MAX_FRONTENDS},
               MapOccupancy{"aimesh_revnat", 10, AIMESH_MAX_REVNAT}};
    in.version = "0.1.0";

    // Kernel telemetry for backends 1 and 2: counters and a few samples.
    telemetry[1].counters.opened = 3;
    telemetry[1].active = 2;
    telemetry[1].hist[AIMESH_M_TTFT].record(50'000'000);
    in.telemetry = &telemetry;

    // A split over two versions, the second a tripped canary.
    view::Route r{.name = "llama", .nameSpace = "ml", .serviceId = 9, .port = 8000, .protocol = "TCP"};
    r.backends.push_back({.service = "ml/llama-v1", .port = 8000, .weight = 95, .effectiveWeight = 95,
                          .resolved = true, .connections = 950});
    r.backends.push_back({.service = "ml/llama-v2", .port = 8000, .weight = 5, .effectiveWeight = 0,
                          .resolved = true, .connections = 50, .guard = "tripped", .guardTrips = 1});
    routes.routes.push_back(r);
    in.routes = &routes;
  }
  std::map<uint32_t, BackendTelemetry> telemetry;
  view::Routes routes;
};

TEST(Metrics, SplitsHaveTheirBackendsWeightsAndGuard) {
  Fixture f;
  std::string text = renderMetrics(f.in);
  const std::string v1 = R"({destination_service="llama",destination_namespace="ml",port="8000",protocol="TCP",backend_service="ml/llama-v1"})";
  const std::string v2 = R"({destination_service="llama",destination_namespace="ml",port="8000",protocol="TCP",backend_service="ml/llama-v2"})";
  for (const std::string& line :
       {"aimesh_split_backend_connections_total" + v1 + " 950", "aimesh_split_backend_connections_total" + v2 + " 50",
        "aimesh_split_backend_weight" + v2 + " 5", "aimesh_split_backend_effective_weight" + v2 + " 0",
        "aimesh_split_guard_state" + v2 + " 2", "aimesh_split_guard_trips_total" + v2 + " 1"})
    EXPECT_NE(text.find(line + "\n"), std::string::npos) << line;
  EXPECT_EQ(text.find("aimesh_split_guard_state" + v1), std::string::npos) << "the primary is not guarded";
  f.in.routes = nullptr;
  EXPECT_EQ(renderMetrics(f.in).find("aimesh_split_backend_weight{"), std::string::npos);
}

constexpr const char* kChat = R"(destination_service="chat",destination_namespace="ml",model="llama-3-8b",port="8000",protocol="TCP")";
constexpr const char* kOdd =
    R"(destination_service="we\"ird\\name",destination_namespace="default",model="a\nb",port="53",protocol="UDP")";

TEST(MetricsEscape, EscapesBackslashQuoteAndNewline) {
  EXPECT_EQ(escapeLabel("plain-1.2_x"), "plain-1.2_x");
  EXPECT_EQ(escapeLabel(""), "");
  EXPECT_EQ(escapeLabel("a\\b"), "a\\\\b");
  EXPECT_EQ(escapeLabel("say \"hi\""), "say \\\"hi\\\"");
  EXPECT_EQ(escapeLabel("l1\nl2"), "l1\\nl2");
  EXPECT_EQ(escapeLabel("\\\"\n"), "\\\\\\\"\\n");
  // Only those three: tabs, UTF-8 and braces pass through as they are.
  EXPECT_EQ(escapeLabel("t\tü{}"), "t\tü{}");
}

TEST(MetricsRender, ServiceCountersWithLabelsOnlyForServicesUsedHere) {
  Fixture f;
  std::string out = renderMetrics(f.in);
  const std::string chat = kChat, odd = kOdd;
  EXPECT_TRUE(hasLine(out, "aimesh_service_connections_total{" + chat + "} 5")) << out;
  EXPECT_TRUE(hasLine(out, "aimesh_service_datagrams_total{" + chat + "} 0"));
  EXPECT_TRUE(hasLine(out, "aimesh_service_refused_total{" + chat + "} 2"));
  EXPECT_EQ(out.find("we\\\"ird"), std::string::npos) << "an unused service has no series\n" << out;
  f.in.idleSeries = true;
  out = renderMetrics(f.in);
  EXPECT_TRUE(hasLine(out, "aimesh_service_connections_total{" + odd + "} 0"));
  EXPECT_TRUE(hasLine(out, "aimesh_service_datagrams_total{" + odd + "} 0"));
  EXPECT_TRUE(hasLine(out, "aimesh_service_refused_total{" + odd + "} 0"));
}

TEST(MetricsRender, EndpointSeriesCarryServiceLabelsAndEndpoint) {
  Fixture f;
  std::string out = renderMetrics(f.in);
  const std::string a = std::string(kChat) + ",destination_endpoint=\"10.0.0.1:8000\"";
  // A known pod is the last label; an unknown one has none.
  const std::string b = std::string(kChat) + ",destination_endpoint=\"[fd00::2]:9000\",destination_pod=\"chat-1\"";
  const std::string c = std::string(kOdd) + ",destination_endpoint=\"10.0.0.3:53\"";
  EXPECT_TRUE(hasLine(out, "aimesh_endpoint_connections_total{" + a + "} 4")) << out;
  EXPECT_TRUE(hasLine(out, "aimesh_endpoint_connections_total{" + b + "} 1"));
  EXPECT_TRUE(hasLine(out, "aimesh_endpoint_datagrams_total{" + a + "} 0"));
  EXPECT_TRUE(hasLine(out, "aimesh_endpoint_datagrams_total{" + b + "} 6"));
  EXPECT_TRUE(hasLine(out, "aimesh_endpoint_weight{" + a + "} 1"));
  EXPECT_TRUE(hasLine(out, "aimesh_endpoint_weight{" + b + "} 3"));
  // Active means: takes new connections. Draining and weight 0 do not.
  EXPECT_TRUE(hasLine(out, "aimesh_endpoint_active{" + a + "} 1"));
  EXPECT_TRUE(hasLine(out, "aimesh_endpoint_active{" + b + "} 0"));
  // Endpoint c carried nothing: no series, unless idle series are asked for.
  EXPECT_EQ(out.find("10.0.0.3:53"), std::string::npos) << out;
  f.in.idleSeries = true;
  out = renderMetrics(f.in);
  EXPECT_TRUE(hasLine(out, "aimesh_endpoint_connections_total{" + c + "} 0"));
  EXPECT_TRUE(hasLine(out, "aimesh_endpoint_weight{" + c + "} 0"));
  EXPECT_TRUE(hasLine(out, "aimesh_endpoint_active{" + c + "} 0"));
  EXPECT_TRUE(hasLine(out, "aimesh_endpoint_active_connections{" + c + "} 0"));
  EXPECT_TRUE(hasLine(out, "aimesh_endpoint_active_connections{" + b + "} 0"));
}

// An endpoint known only to the kernel's telemetry (a connection it saw, no
// connect() counted by this agent's maps) has series, and its service too.
TEST(MetricsRender, AnEndpointWithOnlyTelemetryHasSeriesAndSoDoesItsService) {
  Fixture f;
  f.telemetry[3].counters.failed_refused = 1;
  std::string out = renderMetrics(f.in);
  const std::string c = std::string(kOdd) + ",destination_endpoint=\"10.0.0.3:53\"";
  EXPECT_TRUE(hasLine(out, "aimesh_endpoint_connections_total{" + c + "} 0")) << out;
  EXPECT_TRUE(hasLine(out, "aimesh_endpoint_connection_failures_total{" + c + ",reason=\"refused\"} 1"));
  EXPECT_TRUE(hasLine(out, "aimesh_service_connections_total{" + std::string(kOdd) + "} 0"));
}

TEST(MetricsRender, EveryReasonHasASeries) {
  Fixture f;
  std::string out = renderMetrics(f.in);
  EXPECT_TRUE(hasLine(out, R"(aimesh_datapath_reasons_total{reason="no_backend"} 2)")) << out;
  EXPECT_TRUE(hasLine(out, R"(aimesh_datapath_reasons_total{reason="service_missing"} 0)"));
  EXPECT_TRUE(hasLine(out, R"(aimesh_datapath_reasons_total{reason="slot_missing"} 0)"));
  EXPECT_TRUE(hasLine(out, R"(aimesh_datapath_reasons_total{reason="backend_missing"} 0)"));
  EXPECT_TRUE(hasLine(out, R"(aimesh_datapath_reasons_total{reason="backend_inactive"} 7)"));
  EXPECT_TRUE(hasLine(out, R"(aimesh_datapath_reasons_total{reason="family_mismatch"} 0)"));
  EXPECT_TRUE(hasLine(out, R"(aimesh_datapath_reasons_total{reason="revnat_failed"} 1)"));
  int n = 0;
  for (auto& l : lines(out)) n += l.rfind("aimesh_datapath_reasons_total{", 0) == 0;
  EXPECT_EQ(n, AIMESH_R_MAX);
}

TEST(MetricsRender, InventoryMapsAndAgentMetrics) {
  Fixture f;
  std::string out = renderMetrics(f.in);
  for (const char* l : {
           "aimesh_services 2",
           "aimesh_endpoints 3",
           R"(aimesh_map_entries{map="aimesh_frontends"} 2)",
           R"(aimesh_map_entries{map="aimesh_revnat"} 10)",
           R"(aimesh_map_capacity{map="aimesh_frontends"} 16384)",
           R"(aimesh_map_capacity{map="aimesh_revnat"} 65536)",
           "aimesh_agent_reconciles_total 3",
           "aimesh_agent_reconcile_errors_total 1",
           "aimesh_agent_reconcile_duration_seconds_total 1.500000000",
           "aimesh_agent_last_reconcile_duration_seconds 0.250000000",
           "aimesh_agent_state_file_errors_total 2",
           "aimesh_agent_state_file_valid 0",
           "aimesh_agent_ready 1",
           "aimesh_agent_start_time_seconds 1700000000.500",
           R"(aimesh_build_info{version="0.1.0"} 1)",
       })
    EXPECT_TRUE(hasLine(out, l)) << "missing: " << l << "\n" << out;
}

TEST(MetricsRender, BackendOfUnknownServiceIsSkipped) {
  Fixture f;
  f.index.backends[9] = BackendInfo{42, Endpoint{ip("10.0.0.9"), 0, 1, EndpointState::kActive}, 80};
  std::string out = renderMetrics(f.in);
  EXPECT_EQ(out.find("10.0.0.9"), std::string::npos) << out;
}

TEST(MetricsRender, EmptyStateStillPrintsEveryFamily) {
  IdIndex idx;
  DatapathStats st;
  std::map<uint32_t, BackendTelemetry> noTelemetry;  // attached, nothing measured yet
  Fixture f;
  MetricsInput in;
  in.index = &idx;
  in.stats = &st;
  in.telemetry = &noTelemetry;
  in.process = &f.process;  // the agent always reads its own
  std::string out = renderMetrics(in);
  std::string full = renderMetrics(f.in);
  std::vector<std::string> a, b;
  for (auto& l : lines(out))
    if (l.rfind("# TYPE ", 0) == 0) a.push_back(l);
  for (auto& l : lines(full))
    if (l.rfind("# TYPE ", 0) == 0) b.push_back(l);
  EXPECT_EQ(a, b);
  EXPECT_TRUE(hasLine(out, "aimesh_services 0"));
  EXPECT_TRUE(hasLine(out, "aimesh_agent_ready 0"));
  EXPECT_TRUE(hasLine(out, "aimesh_agent_state_file_valid 1"));
  EXPECT_TRUE(hasLine(out, R"(aimesh_build_info{version=""} 1)"));
}

// Exposition format 0.0.4: each family's HELP then TYPE exactly once, before
// its samples, and the samples of a family together.
TEST(MetricsRender, OneHelpAndTypePerFamilyBeforeItsSamples) {
  Fixture f;
  std::string out = renderMetrics(f.in);
  ASSERT_FALSE(out.empty());
  EXPECT_EQ(out.back(), '\n');
  std::map<std::string, int> help, type;
  std::set<std::string> closed;  // families whose samples are over
  std::set<std::string> histograms;
  std::string current;
  bool sawHelp = false;
  for (auto& l : lines(out)) {
    ASSERT_FALSE(l.empty()) << "blank line in output";
    if (l.rfind("# HELP ", 0) == 0) {
      std::string name = l.substr(7, l.find(' ', 7) - 7);
      EXPECT_EQ(++help[name], 1) << "second HELP for " << name;
      EXPECT_FALSE(closed.count(name)) << name << " comes back after another family";
      if (!current.empty()) closed.insert(current);
      current = name;
      sawHelp = true;
      EXPECT_GT(l.size(), 7 + name.size() + 1) << "empty help text for " << name;
    } else if (l.rfind("# TYPE ", 0) == 0) {
      std::istringstream in(l.substr(7));
      std::string name, t;
      in >> name >> t;
      EXPECT_EQ(name, current) << "TYPE without its HELP just before: " << l;
      EXPECT_TRUE(sawHelp);
      EXPECT_EQ(++type[name], 1) << "second TYPE for " << name;
      EXPECT_TRUE(t == "counter" || t == "gauge" || t == "histogram") << l;
      if (t == "histogram") histograms.insert(name);
      if (t == "counter") {
        EXPECT_TRUE(name.ends_with("_total")) << name;
      }
      sawHelp = false;
    } else {
      ASSERT_NE(l[0], '#') << "unexpected comment: " << l;
      std::string sn = sampleName(l);
      if (histograms.count(current))
        for (const char* suffix : {"_bucket", "_sum", "_count"})
          if (sn == current + suffix) sn = current;
      EXPECT_EQ(sn, current) << "sample outside its family: " << l;
      EXPECT_EQ(type.count(current), 1u) << "sample before TYPE: " << l;
      // Every sample has a value after the last space.
      auto sp = l.rfind(' ');
      ASSERT_NE(sp, std::string::npos) << l;
      EXPECT_NO_THROW((void)std::stod(l.substr(sp + 1))) << l;
    }
  }
  EXPECT_EQ(help.size(), type.size());
  for (auto& [name, n] : help) EXPECT_EQ(type[name], 1) << name;
}

// ---- docs/metrics.md must list exactly what renderMetrics() prints --------

using testing::documentedFamilies;
using testing::readFile;

TEST(MetricsDoc, ListsExactlyTheFamiliesRenderMetricsPrintsWithTheirTypes) {
  std::string path = std::string(AIMESH_SOURCE_DIR) + "/docs/metrics.md";
  std::string doc = readFile(path);
  ASSERT_FALSE(doc.empty()) << "cannot read " << path;
  std::vector<std::string> dups;
  auto documented = documentedFamilies(doc, dups);
  EXPECT_TRUE(dups.empty()) << "documented twice: " << ::testing::PrintToString(dups);

  Fixture f;
  std::map<std::string, std::string> printed = testing::declaredFamilies(renderMetrics(f.in));
  ASSERT_FALSE(printed.empty());
  for (auto& [name, t] : printed) {
    auto it = documented.find(name);
    if (it == documented.end()) {
      ADD_FAILURE() << name << " is printed but not in docs/metrics.md";
    } else {
      EXPECT_EQ(it->second, t) << "type of " << name << " in docs/metrics.md";
    }
  }
  for (auto& [name, t] : documented)
    EXPECT_TRUE(printed.count(name)) << name << " is in docs/metrics.md but not printed";
}

TEST(MetricsDoc, DocumentsEveryReasonLabel) {
  std::string doc = readFile(std::string(AIMESH_SOURCE_DIR) + "/docs/metrics.md");
  ASSERT_FALSE(doc.empty());
  for (uint32_t r = 0; r < AIMESH_R_MAX; ++r) {
    std::string name = reasonName(r);
    EXPECT_NE(name, "unknown") << "reason " << r << " has no name in reasonName()";
    EXPECT_NE(doc.find("| `" + name + "` |"), std::string::npos) << "reason " << name << " not in docs/metrics.md";
  }
}

// ---- splitHostPort ----------------------------------------------------------

TEST(SplitHostPort, AcceptsHostPortBracketedV6AndEmptyHost) {
  auto a = splitHostPort("127.0.0.1:9464");
  ASSERT_TRUE(a) << a.error().message();
  EXPECT_EQ(a->first, "127.0.0.1");
  EXPECT_EQ(a->second, 9464);

  auto b = splitHostPort("[::1]:0");
  ASSERT_TRUE(b) << b.error().message();
  EXPECT_EQ(b->first, "::1");
  EXPECT_EQ(b->second, 0);

  auto c = splitHostPort(":9464");
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->first, "0.0.0.0");
  EXPECT_EQ(c->second, 9464);

  auto d = splitHostPort("localhost:65535");
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ(d->first, "localhost");
  EXPECT_EQ(d->second, 65535);
}

TEST(SplitHostPort, RejectsBadAddressesNamingTheBadPart) {
  auto noPort = splitHostPort("nope");
  ASSERT_FALSE(noPort);
  EXPECT_NE(noPort.error().message().find("nope"), std::string::npos) << noPort.error().message();
  EXPECT_NE(noPort.error().message().find("HOST:PORT"), std::string::npos) << noPort.error().message();

  auto big = splitHostPort("1.2.3.4:99999");
  ASSERT_FALSE(big);
  EXPECT_NE(big.error().message().find("bad port '99999'"), std::string::npos) << big.error().message();

  auto noColon = splitHostPort("[::1]9");
  ASSERT_FALSE(noColon);
  EXPECT_NE(noColon.error().message().find("[IPv6]:PORT"), std::string::npos) << noColon.error().message();

  for (const char* bad : {"[::1]", "[::1:80", "[::1]:", "1.2.3.4:", "1.2.3.4:80x", "1.2.3.4:-1", "1.2.3.4:http", ""})
    EXPECT_FALSE(splitHostPort(bad)) << "accepted '" << bad << "'";
}

// ---- HttpServer on loopback -------------------------------------------------

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = HttpServer::start("127.0.0.1:0", HttpHandlers{[this] {
                                                             ++scrapes_;
                                                             return std::string("aimesh_services 2\n");
                                                           },
                                                           [this] { return ready_.load(); }});
    ASSERT_TRUE(s) << s.error().message();
    server_.emplace(std::move(s.value()));
    ASSERT_GT(server_->port(), 0);
    // Wait until the server answers, so every test starts from a serving
    // listener.
    bool up = false;
    for (int i = 0; i < 200 && !up; ++i) {
      auto res = client().Get("/healthz");
      up = res && res->status == 200;
      if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_TRUE(up) << "server on port " << server_->port() << " never answered";
  }
  httplib::Client client() {
    httplib::Client c("127.0.0.1", server_->port());
    c.set_connection_timeout(2, 0);
    c.set_read_timeout(2, 0);
    return c;
  }
  std::atomic<bool> ready_{false};
  std::atomic<int> scrapes_{0};
  std::optional<HttpServer> server_;
};

TEST_F(HttpServerTest, BindsTheAskedHostOnAFreePort) {
  EXPECT_EQ(server_->host(), "127.0.0.1");
  EXPECT_EQ(server_->address(), "127.0.0.1:" + std::to_string(server_->port()));
}

TEST_F(HttpServerTest, MetricsIsPrometheusText) {
  auto c = client();
  auto res = c.Get("/metrics");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "aimesh_services 2\n");
  std::string ct = res->get_header_value("Content-Type");
  EXPECT_EQ(ct.rfind("text/plain; version=0.0.4", 0), 0u) << ct;
  EXPECT_EQ(scrapes_.load(), 1);
}

TEST_F(HttpServerTest, HealthzIsAlwaysOk) {
  auto c = client();
  auto res = c.Get("/healthz");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "ok\n");
}

TEST_F(HttpServerTest, ReadyzFollowsTheReadyHandler) {
  auto c = client();
  auto before = c.Get("/readyz");
  ASSERT_TRUE(before) << httplib::to_string(before.error());
  EXPECT_EQ(before->status, 503);
  EXPECT_NE(before->body.find("not ready"), std::string::npos) << before->body;

  ready_ = true;
  auto after = c.Get("/readyz");
  ASSERT_TRUE(after) << httplib::to_string(after.error());
  EXPECT_EQ(after->status, 200);
  EXPECT_EQ(after->body, "ready\n");
}

TEST_F(HttpServerTest, UnknownPathIs404AndDoesNotScrape) {
  auto c = client();
  auto res = c.Get("/nope");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 404);
  EXPECT_EQ(scrapes_.load(), 0);
}

// A port in use, by a plain listener or by another HttpServer (no
// SO_REUSEPORT: two agents must not share a metrics port), cannot be bound.
TEST(HttpServer, PortInUseIsAnError) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sa.sin_port = 0;
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  socklen_t len = sizeof(sa);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len), 0);
  int port = ntohs(sa.sin_port);
  auto s = HttpServer::start("127.0.0.1:" + std::to_string(port),
                             HttpHandlers{[] { return std::string(); }, [] { return true; }});
  ::close(fd);
  ASSERT_FALSE(s) << "bound port " << port << " although it is in use";
  EXPECT_NE(s.error().message().find("bind metrics listener"), std::string::npos) << s.error().message();

  auto first = HttpServer::start("127.0.0.1:0", HttpHandlers{[] { return std::string(); }, [] { return true; }});
  ASSERT_TRUE(first) << first.error().message();
  auto second = HttpServer::start("127.0.0.1:" + std::to_string(first->port()),
                                  HttpHandlers{[] { return std::string(); }, [] { return true; }});
  EXPECT_FALSE(second) << "a second server bound port " << first->port();
}

// SetUp waited for the server to answer, so stop() finds it listening.
TEST_F(HttpServerTest, StopClosesTheListener) {
  int port = server_->port();
  server_->stop();
  httplib::Client c("127.0.0.1", port);
  c.set_connection_timeout(1, 0);
  EXPECT_FALSE(c.Get("/healthz"));
}

TEST(HttpServer, BadAddressIsAnError) {
  auto s = HttpServer::start("nope", HttpHandlers{[] { return std::string(); }, [] { return true; }});
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message().find("nope"), std::string::npos);
}

}  // namespace
}  // namespace aimesh

namespace aimesh {
namespace {

// OpenMetrics 1.0: counter families are named without _total (the samples
// keep it) and the exposition ends with "# EOF".
TEST(MetricsRender, OpenMetricsNamesCounterFamiliesWithoutTotalAndEndsWithEof) {
  IdIndex idx;
  DatapathStats st;
  std::map<uint32_t, BackendTelemetry> tel;
  MetricsInput in;
  in.index = &idx;
  in.stats = &st;
  in.telemetry = &tel;
  in.openMetrics = true;
  std::string out = renderMetrics(in);
  ASSERT_TRUE(out.ends_with("# EOF\n"));
  EXPECT_NE(out.find("# TYPE aimesh_agent_reconciles counter\n"), std::string::npos);
  EXPECT_NE(out.find("\naimesh_agent_reconciles_total 0\n"), std::string::npos);
  EXPECT_EQ(out.find("_total counter"), std::string::npos);
  EXPECT_NE(out.find("# TYPE aimesh_endpoint_ttft_seconds histogram\n"), std::string::npos);
  // The Prometheus text format is unchanged by an OpenMetrics render on the same thread.
  in.openMetrics = false;
  EXPECT_NE(renderMetrics(in).find("# TYPE aimesh_agent_reconciles_total counter\n"), std::string::npos);
}

}  // namespace
}  // namespace aimesh
