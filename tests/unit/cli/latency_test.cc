// meshctl latency: histogram text from the agent's JSON (format/bars.h and
// commands/latency.cc), from fixtures; no agent.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "commands/commands.h"
#include "format/bars.h"
#include "telemetry/histogram.h"

namespace aimesh {
namespace {

using nlohmann::json;

std::string bar(int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += "█";
  return s;
}

const json kLatency = json::parse(R"({"endpoints": [
  {"service": "llama-chat", "namespace": "ml", "model": "llama-3-8b-instruct",
   "endpoint": "10.77.0.2:8000", "backend_id": 3,
   "metrics": {
     "connect": {"count": 70, "sum_seconds": 0.1, "p50": 0.0013, "p90": 0.0021, "p99": 0.0022,
                 "buckets": [[0.001, 0.0012, 10], [0.0012, 0.0015, 40], [0.002, 0.0022, 20]]},
     "ttfb": {"count": 0, "sum_seconds": 0, "p50": 0, "p90": 0, "p99": 0, "buckets": []},
     "ttft": {"count": 3, "sum_seconds": 0.9, "p50": 0.25, "p90": 0.31, "p99": 0.32,
              "buckets": [[0.2, 0.225, 1], [0.3, 0.325, 2]]}
   }},
  {"service": "llama-chat", "namespace": "ml", "model": "llama-3-8b-instruct",
   "endpoint": "[fd00::77:3]:8000", "backend_id": 4,
   "metrics": {"connect": {"count": 0, "sum_seconds": 0, "p50": null, "p90": null, "p99": null,
                           "buckets": []}}}
]})");

TEST(LatencyTextTest, AdaptiveUnits) {
  EXPECT_EQ(latencyText(0), "0µs");
  EXPECT_EQ(latencyText(0.0000005), "0.5µs");
  EXPECT_EQ(latencyText(0.000042), "42.0µs");
  EXPECT_EQ(latencyText(0.00042), "420µs");
  EXPECT_EQ(latencyText(0.0009996), "1.0ms");  // would round to 1000µs
  EXPECT_EQ(latencyText(0.0012), "1.2ms");
  EXPECT_EQ(latencyText(0.0084), "8.4ms");
  EXPECT_EQ(latencyText(0.010), "10.0ms");
  EXPECT_EQ(latencyText(0.128), "128ms");
  EXPECT_EQ(latencyText(3.14), "3.1s");
  EXPECT_EQ(latencyText(137.4), "137s");
  EXPECT_EQ(latencyText(-1), "-");
  EXPECT_EQ(latencyText(NAN), "-");
}

TEST(LatencyBarsTest, ScaledToTheLongestBarWithAtLeastOneBlock) {
  std::vector<BarBucket> rows = {{0.001, 0.002, 400}, {0.002, 0.004, 1}, {0.004, 0.008, 100}};
  EXPECT_EQ(renderBars(rows, 40, "  "), "  1.0ms-2.0ms  " + bar(40) +
                                            " 400\n"
                                            "  2.0ms-4.0ms  " +
                                            bar(1) +
                                            " 1\n"
                                            "  4.0ms-8.0ms  " +
                                            bar(10) + " 100\n");
}

TEST(LatencyBarsTest, LabelsAlignedAndOverflowBucketOpenEnded) {
  std::vector<BarBucket> rows = {{0.0005, 0.001, 2}, {137.438953472, INFINITY, 2}};
  EXPECT_EQ(renderBars(rows, 4, ""), "500µs-1.0ms  " + bar(4) +
                                         " 2\n"
                                         ">=137s       " +
                                         bar(4) + " 2\n");
}

TEST(LatencyMergeTest, NothingToDoUnderTheLimit) {
  std::vector<BarBucket> rows = {{1, 2, 1}, {2, 3, 1}};
  auto merged = mergeBuckets(rows, 12);
  ASSERT_EQ(merged.size(), 2u);
  EXPECT_EQ(merged[1].lower, 2);
}

TEST(LatencyMergeTest, JoinsTheNarrowestNeighboursAndBridgesGapsLast) {
  // Two clusters: 1-1.5 ms in four buckets, 100-150 ms in four; merging down
  // to two rows must give one row per cluster, not straddle the gap.
  std::vector<BarBucket> rows;
  for (int i = 0; i < 4; ++i) rows.push_back({0.001 + i * 0.000125, 0.001 + (i + 1) * 0.000125, 1});
  for (int i = 0; i < 4; ++i) rows.push_back({0.1 + i * 0.0125, 0.1 + (i + 1) * 0.0125, 10});
  auto two = mergeBuckets(rows, 2);
  ASSERT_EQ(two.size(), 2u);
  EXPECT_DOUBLE_EQ(two[0].lower, 0.001);
  EXPECT_DOUBLE_EQ(two[0].upper, 0.0015);
  EXPECT_EQ(two[0].count, 4u);
  EXPECT_DOUBLE_EQ(two[1].lower, 0.1);
  EXPECT_DOUBLE_EQ(two[1].upper, 0.15);
  EXPECT_EQ(two[1].count, 40u);

  auto one = mergeBuckets(rows, 1);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].count, 44u);
  EXPECT_DOUBLE_EQ(one[0].lower, 0.001);
  EXPECT_DOUBLE_EQ(one[0].upper, 0.15);
}

TEST(LatencyTest, HeaderAndBarsPerMetricWithSamples) {
  CommandOutput r = formatLatency(kLatency, {"llama-chat", "ml"}, OutputFormat::kTable);
  EXPECT_EQ(r.exitCode, kExitOk);
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(r.out,
            "ml/llama-chat  10.77.0.2:8000  model=llama-3-8b-instruct  backend=3\n"
            "  connect  n=70  p50=1.3ms p90=2.1ms p99=2.2ms\n"
            "    1.0ms-1.2ms  " +
                bar(10) +
                " 10\n"
                "    1.2ms-1.5ms  " +
                bar(40) +
                " 40\n"
                "    2.0ms-2.2ms  " +
                bar(20) +
                " 20\n"
                "  ttft  n=3  p50=250ms p90=310ms p99=320ms\n"
                "    200ms-225ms  " +
                bar(20) +
                " 1\n"
                "    300ms-325ms  " +
                bar(40) +
                " 2\n"
                "\n"
                "ml/llama-chat  [fd00::77:3]:8000  model=llama-3-8b-instruct  backend=4\n"
                "  no samples yet\n");
}

// A histogram as the agent sends it, from a kernel-layout Histogram.
json agentHistogram(const Histogram& h) {
  json buckets = json::array();
  for (uint32_t b = 0; b < AIMESH_HIST_BUCKETS; ++b) {
    if (h.buckets[b] == 0) continue;
    buckets.push_back({histBucketLower(b) * 1e-9, histBucketUpper(b) * 1e-9, h.buckets[b]});
  }
  return json{{"count", h.count},
              {"sum_seconds", h.sumNs * 1e-9},
              {"p50", h.quantileNs(0.5) * 1e-9},
              {"p90", h.quantileNs(0.9) * 1e-9},
              {"p99", h.quantileNs(0.99) * 1e-9},
              {"buckets", buckets}};
}

TEST(LatencyTest, ManyKernelBucketsMergeToAtMostTwelveRowsKeepingEverySample) {
  std::mt19937_64 rng(1);
  std::lognormal_distribution<double> d(std::log(10e6), 1.0);
  Histogram h;
  for (int i = 0; i < 100000; ++i) h.record(static_cast<uint64_t>(d(rng)));
  json hist = agentHistogram(h);
  ASSERT_GT(hist["buckets"].size(), 40u);
  json response = {{"endpoints",
                    {{{"service", "s"},
                      {"namespace", "ml"},
                      {"endpoint", "10.0.0.1:80"},
                      {"backend_id", 1},
                      {"metrics", {{"ttft", hist}}}}}}};
  CommandOutput r = formatLatency(response, {"s", ""}, OutputFormat::kTable);
  ASSERT_EQ(r.exitCode, kExitOk);

  std::istringstream lines(r.out);
  std::string line;
  std::size_t rows = 0, longest = 0;
  uint64_t total = 0;
  std::string previousUpper;
  while (std::getline(lines, line)) {
    if (line.rfind("    ", 0) != 0) continue;
    ++rows;
    total += std::stoull(line.substr(line.rfind(' ') + 1));
    std::size_t blocks = 0;
    for (std::size_t p = line.find("█"); p != std::string::npos; p = line.find("█", p + 1))
      ++blocks;
    longest = std::max(longest, blocks);
    // Rows are contiguous: each starts where the previous ended.
    std::string range = line.substr(4, line.find("  ", 4) - 4);
    std::string lower = range.substr(0, range.find('-'));
    if (!previousUpper.empty()) {
      EXPECT_EQ(lower, previousUpper) << line;
    }
    previousUpper = range.substr(range.find('-') + 1);
  }
  EXPECT_GE(rows, 6u);
  EXPECT_LE(rows, kLatencyMaxRows);
  EXPECT_EQ(total, h.count);
  EXPECT_EQ(longest, 40u);
}

TEST(LatencyTest, OverflowBucketAsTheAgentSendsIt) {
  // histBucketUpper() of the last bucket is UINT64_MAX ns; null is accepted too.
  Histogram h;
  h.record(uint64_t{200} * 1'000'000'000);
  json hist = agentHistogram(h);
  json nullUpper = hist;
  nullUpper["buckets"][0][1] = nullptr;
  for (const json& m : {hist, nullUpper}) {
    json response = {{"endpoints",
                      {{{"service", "s"},
                        {"namespace", "ml"},
                        {"endpoint", "10.0.0.1:80"},
                        {"backend_id", 1},
                        {"metrics", {{"duration", m}}}}}}};
    CommandOutput r = formatLatency(response, {"s", ""}, OutputFormat::kTable);
    EXPECT_NE(r.out.find("    >=128s  " + bar(40) + " 1\n"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("p99=128s"), std::string::npos) << r.out;
  }
}

TEST(LatencyTest, JsonIsTheAgentsResponse) {
  CommandOutput r = formatLatency(kLatency, {"llama-chat", ""}, OutputFormat::kJson);
  EXPECT_EQ(r.exitCode, kExitOk);
  EXPECT_EQ(json::parse(r.out), kLatency);
}

TEST(LatencyTest, NoEndpointsIsANoteNotAnError) {
  CommandOutput r =
      formatLatency(json{{"endpoints", json::array()}}, {"x", "ml"}, OutputFormat::kTable);
  EXPECT_EQ(r.exitCode, kExitOk);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err, "No endpoints for service ml/x.\n");
}

TEST(LatencyTest, AsksForTheServiceAndReportsErrors) {
  std::vector<json> requests;
  AgentCall agent = [&](const json& request) -> Result<json> {
    requests.push_back(request);
    return json{{"error", "unknown service ml/nope"}};
  };
  CommandOutput r = runLatency(agent, {"nope", "ml"}, OutputFormat::kTable);
  EXPECT_EQ(r.exitCode, kExitError);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err, "meshctl: agent error: unknown service ml/nope\n");
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(requests[0], json({{"method", "latency"}, {"service", "nope"}, {"namespace", "ml"}}));

  runLatency(agent, {"nope", ""}, OutputFormat::kTable);
  EXPECT_EQ(requests[1], json({{"method", "latency"}, {"service", "nope"}}));
}

TEST(LatencyTest, WrongShapeAndUnreachableAgent) {
  CommandOutput shape = formatLatency(json{{"endpoints", 3}}, {"x", ""}, OutputFormat::kTable);
  EXPECT_EQ(shape.exitCode, kExitError);
  CommandOutput missing = formatLatency(json::object(), {"x", ""}, OutputFormat::kTable);
  EXPECT_EQ(missing.exitCode, kExitError);

  AgentCall down = [](const json&) -> Result<json> { return Error::msg("agent is not running"); };
  CommandOutput r = runLatency(down, {"x", ""}, OutputFormat::kTable);
  EXPECT_EQ(r.exitCode, kExitAgentUnreachable);
  EXPECT_EQ(r.err, "meshctl: agent is not running\n");
}

}  // namespace
}  // namespace aimesh
