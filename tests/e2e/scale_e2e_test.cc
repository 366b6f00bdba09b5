// e2e: the agent at 10,000 services × 4 endpoints (issue 17). Guards against
// the regressions bench/scale found: the agent's memory at ready and after
// a change stays under a bound, a change reaches the kernel, and a scrape
// has series only for what carried traffic. The bounds leave room for a
// loaded CI machine; the measured values and the targets are in
// docs/benchmarks.md ("### scale").
#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
#include <fmt/format.h>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "fixtures/agent_e2e.h"
#include "fixtures/net_client.h"

namespace aimesh::testing {
namespace {

using namespace std::chrono_literals;

constexpr int kServices = 10000;
// Issue 17's target is 50 MiB; the agent measured 48.2 MiB at ready and
// about as much after a change (a change is applied incrementally), and
// held 195 MiB before issue 17's changes. The bounds leave 2-4 MiB for a
// CI machine whose libraries touch more pages (RssFile is ~18 MiB of it).
// Endpoint::pod (the destination_pod label, 8 bytes an endpoint in every
// copy of the snapshot and index) took ready from 49.8 to 51.4 MiB; the
// bounds moved by 1.5 MiB with it (issue 19).
constexpr double kReadyBoundMiB = 53.5;
constexpr double kAfterChangeBoundMiB = 55.5;

// ml/probe at 10.96.0.10 with the name servers given, then 9,999 services of
// four addresses nothing answers on.
std::string bigState(const std::vector<std::string>& probeEndpoints) {
  std::string y = "services:\n  - name: probe\n    namespace: ml\n    vips: [10.96.0.10]\n    ports: [{port: 8000}]\n"
                  "    endpoints:\n";
  for (auto& a : probeEndpoints) y += fmt::format("      - {{address: {}, port: 8000}}\n", a);
  for (int i = 1; i < kServices; ++i) {
    y += fmt::format("  - name: svc-{}\n    namespace: ml\n    vips: [10.100.{}.{}]\n    ports: [{{port: 8000}}]\n"
                     "    endpoints:\n",
                     i, i / 250, i % 250 + 1);
    for (int e = 0; e < 4; ++e) {
      int n = i * 4 + e;
      y += fmt::format("      - {{address: 10.{}.{}.{}, port: 8000}}\n", 120 + n / 65536, (n / 256) % 256, n % 256);
    }
  }
  return y;
}

double rssMiB(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6)) / 1024;
  return -1;
}

class ScaleE2e : public AgentE2e {};

TEST_F(ScaleE2e, TenThousandServicesStayUnderTheMemoryBoundAndScrapeOnlyWhatCarriedTraffic) {
  serve("10.77.0.2", "old");
  serve("10.77.0.3", "new");
  startAgent(bigState({"10.77.0.2"}), {"--max-services", "16384", "--max-backends", "65536"});
  double ready = rssMiB(agent_->pid());
  std::cout << "VmRSS at ready with " << kServices << " services: " << ready << " MiB\n";
  RecordProperty("ready_rss_mib", std::to_string(ready));
  EXPECT_GT(ready, 0);
  EXPECT_LT(ready, kReadyBoundMiB) << "VmRSS at ready with 10,000 services";
  EXPECT_EQ(api("status")["services"], kServices);

  // One endpoint more for the probe: the new endpoint answers within 10 s.
  writeFile(state_, bigState({"10.77.0.2", "10.77.0.3"}));
  std::string seen = runClient([] {
    auto end = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < end) {
      if (tcpAsk("10.96.0.10", 8000, 500).name == "new") return std::string("new");
      std::this_thread::sleep_for(5ms);
    }
    return std::string("never");
  });
  EXPECT_EQ(seen, "new");
  std::this_thread::sleep_for(1s);
  double after = rssMiB(agent_->pid());
  EXPECT_LT(after, kAfterChangeBoundMiB) << "VmRSS after one change with 10,000 services";

  // Only the probe carried traffic: no series of the other 9,999 services.
  std::string hp = agent_->metricsUrlPath();
  auto colon = hp.rfind(':');
  httplib::Client c(hp.substr(0, colon), std::stoi(hp.substr(colon + 1)));
  c.set_read_timeout(30, 0);
  auto res = c.Get("/metrics");
  ASSERT_TRUE(res && res->status == 200);
  EXPECT_EQ(res->body.find("destination_service=\"svc-"), std::string::npos) << "an idle service has series";
  EXPECT_NE(res->body.find("destination_service=\"probe\""), std::string::npos);
  EXPECT_LT(res->body.size(), 1u << 20) << "a scrape with one service carrying traffic";
}

}  // namespace
}  // namespace aimesh::testing
