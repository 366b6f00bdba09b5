// The state file's splits (docs/state-file.md "Split"): what parses, what is
// refused with its place, and that the item cache agrees with a full parse.
#include <gtest/gtest.h>

#include <string>

#include "source/state_file.h"

namespace aimesh {
namespace {

constexpr const char* kFile = "split.yaml";

std::string dump(const ParseResult& r) {
  std::string out;
  for (const auto& e : r.errors) out += "  " + e.toString() + "\n";
  return out;
}

// Two model versions and a split over them (the split's own lines last).
std::string file(const std::string& splitLines, const std::string& extra = "") {
  return "services:\n"
         "  - name: llama-v1\n"
         "    vips: [10.96.0.21]\n"
         "    ports: [{port: 8000}]\n"
         "    endpoints: [{address: 10.77.0.2}]\n"
         "  - name: llama-v2\n"
         "    vips: [10.96.0.22]\n"
         "    ports: [{port: 8000}, {port: 9000}]\n"
         "    endpoints: [{address: 10.77.0.3}]\n" +
         extra +
         "  - name: llama\n"
         "    vips: [10.96.0.20]\n"
         "    ports: [{port: 8000}]\n" +
         splitLines;
}

const Service& byName(const Snapshot& s, const std::string& name) {
  for (const Service& svc : s.services)
    if (svc.name == name) return svc;
  ADD_FAILURE() << "no service " << name;
  return s.services.front();
}

TEST(StateFileSplit, ParsesBackendsWithTheirWeightsAndDefaults) {
  ParseResult r = parseStateText(file("    split:\n"
                                      "      - {service: llama-v1, weight: 90}\n"
                                      "      - service: llama-v2\n"
                                      "        weight: 10\n"
                                      "        port: 9000\n"
                                      "        namespace: default\n"
                                      "      - {service: llama-v1, port: 8000}\n"),
                                 kFile);
  ASSERT_TRUE(r.ok()) << dump(r);
  const Service& s = byName(*r.snapshot, "llama");
  ASSERT_EQ(s.split.size(), 3u);
  EXPECT_EQ(s.split[0].service, "llama-v1");
  EXPECT_EQ(s.split[0].weight, 90u);
  EXPECT_EQ(s.split[0].port, 0);
  EXPECT_EQ(s.split[0].nameSpace, "");  // the split's own
  EXPECT_EQ(s.split[1].port, 9000);
  EXPECT_EQ(s.split[1].nameSpace, "") << "the split's own namespace, written out, is the same";
  EXPECT_EQ(s.split[2].weight, 1u) << "default weight";
  EXPECT_TRUE(s.endpoints.empty());
}

struct BadSplit {
  std::string lines, extra;
  int line, column;
  std::string field, message;
};

TEST(StateFileSplit, RefusesWhatCannotBeFollowedAndSaysWhere) {
  const BadSplit cases[] = {
      {"    split: [{service: llama-v3}]\n", "", 13, 13, "services[2].split[0]", "names service default/llama-v3, which does not exist"},
      {"    split: [{service: llama}]\n", "", 13, 13, "services[2].split[0]", "names the split itself"},
      {"    split: [{service: llama-v2, port: 8001}]\n", "", 13, 13, "services[2].split[0]", "has no port 8001/TCP"},
      {"    split: [{service: canary}]\n",
       "  - name: canary\n    vips: [10.96.0.23]\n    ports: [{port: 8000}]\n    split: [{service: llama-v1}]\n", 17, 13,
       "services[3].split[0]", "which is a split itself (splits of splits are not allowed)"},
      {"    split: [{service: llama-v1, weight: 1000001}]\n", "", 13, 41, "services[2].split[0].weight", "must be 0..1000000"},
      {"    split: []\n", "", 13, 12, "services[2].split", "must list 1..16 backend services, got 0"},
      {"    split: [{service: llama-v1}, {service: llama-v1}]\n", "", 13, 34, "services[2].split[1]",
       "backend service llama-v1 named twice (also services[2].split[0])"},
      {"    split: [{service: llama-v1, weight: 5, model: x}]\n", "", 13, 44, "services[2].split[0].model",
       "unknown field 'model'"},
      {"    algorithm: least_conn\n    split: [{service: llama-v1}]\n", "", 13, 5, "services[2].algorithm",
       "a split has no 'algorithm'"},
      {"    endpoints: [{address: 10.77.0.9}]\n    split: [{service: llama-v1}]\n", "", 13, 5,
       "services[2].endpoints", "a split has no 'endpoints'"},
      {"    failure_mode: fail_close\n    split: [{service: llama-v1}]\n", "", 13, 5, "services[2].failure_mode",
       "a split has no 'failure_mode': its backend services' own apply"},
  };
  for (const BadSplit& c : cases) {
    std::string text = file(c.lines, c.extra);
    SCOPED_TRACE(text);
    ParseResult r = parseStateText(text, kFile);
    EXPECT_FALSE(r.ok());
    ASSERT_EQ(r.errors.size(), 1u) << dump(r);
    EXPECT_EQ(r.errors[0].line, c.line) << r.errors[0].toString();
    EXPECT_EQ(r.errors[0].column, c.column) << r.errors[0].toString();
    EXPECT_EQ(r.errors[0].field, c.field) << r.errors[0].toString();
    EXPECT_NE(r.errors[0].message.find(c.message), std::string::npos) << r.errors[0].toString();
  }
}

// A split's backend services keep their own failure modes (a fail-close one
// whose endpoints are all in back-off is passed over, like one with none).
TEST(StateFileSplit, BackendServicesKeepTheirOwnFailureMode) {
  std::string text = file("    split: [{service: llama-v1, weight: 90}, {service: llama-v2, weight: 10}]\n");
  text.replace(text.find("    endpoints: [{address: 10.77.0.2}]\n"), 0, "    failure_mode: fail_close\n");
  ParseResult r = parseStateText(text, kFile);
  ASSERT_TRUE(r.ok()) << dump(r);
  EXPECT_TRUE(byName(*r.snapshot, "llama-v1").failClose);
  EXPECT_FALSE(byName(*r.snapshot, "llama-v2").failClose);
  EXPECT_FALSE(byName(*r.snapshot, "llama").failClose);
}

// A file parsed through the item cache gives what a full parse gives, and a
// split whose backend goes away is reported with its place, not reused.
TEST(StateFileSplit, TheItemCacheChecksSplitsToo) {
  StateFileCache cache;
  std::string good = file("    split: [{service: llama-v1, weight: 3}, {service: llama-v2, weight: 1}]\n");
  ParseResult first = parseStateText(good, kFile, &cache);
  ASSERT_TRUE(first.ok()) << dump(first);
  std::string reweighted = file("    split: [{service: llama-v1, weight: 1}, {service: llama-v2, weight: 1}]\n");
  ParseResult again = parseStateText(reweighted, kFile, &cache);
  ASSERT_TRUE(again.ok()) << dump(again);
  EXPECT_EQ(cache.reused(), 2u) << "the two versions came from the cache";
  EXPECT_EQ(again.snapshot, parseStateText(reweighted, kFile).snapshot);
  std::string gone = reweighted;
  gone.replace(gone.find("llama-v2\n"), 8, "llama-v9");
  ParseResult bad = parseStateText(gone, kFile, &cache);
  ASSERT_FALSE(bad.ok());
  ASSERT_EQ(bad.errors.size(), 1u) << dump(bad);
  EXPECT_EQ(bad.errors[0].field, "services[2].split[1]");
}

TEST(StateFileSplit, ParsesTheCanaryGuard) {
  ParseResult r = parseStateText(file("    split: [{service: llama-v1, weight: 95}, {service: llama-v2, weight: 5}]\n"
                                      "    canary_guard:\n"
                                      "      primary: llama-v1\n"
                                      "      metric: ttft_p50\n"
                                      "      max_ratio: 2\n"
                                      "      min_samples: 50\n"
                                      "      window: 30s\n"
                                      "      max_failure_rate: 0.1\n"
                                      "      cooldown: 2m\n"
                                      "      probe_percent: 5\n"),
                                 kFile);
  ASSERT_TRUE(r.ok()) << dump(r);
  const auto& g = byName(*r.snapshot, "llama").canaryGuard;
  ASSERT_TRUE(g);
  EXPECT_EQ(g->primary, "llama-v1");
  EXPECT_EQ(g->metric, GuardMetric::kTtftP50);
  EXPECT_EQ(g->maxRatio, 2);
  EXPECT_EQ(g->minSamples, 50u);
  EXPECT_EQ(g->windowMs, 30000u);
  EXPECT_EQ(g->maxFailureRate, 0.1);
  EXPECT_EQ(g->cooldownMs, 120000u);
  EXPECT_EQ(g->probePercent, 5);
  ParseResult d = parseStateText(file("    split: [{service: llama-v1}, {service: llama-v2}]\n    canary_guard: {}\n"), kFile);
  ASSERT_TRUE(d.ok()) << dump(d);
  EXPECT_EQ(byName(*d.snapshot, "llama").canaryGuard, CanaryGuardSpec{}) << "every default";
}

TEST(StateFileSplit, RefusesABadCanaryGuard) {
  const std::pair<std::string, std::string> cases[] = {
      {"    split: [{service: llama-v1}, {service: llama-v2}]\n    canary_guard: {primary: llama-v9}\n",
       "primary 'llama-v9' is not one of the split's backend services"},
      {"    split: [{service: llama-v1}]\n    canary_guard: {}\n", "needs a split over two backend services or more"},
      {"    endpoints: []\n    canary_guard: {}\n", "only a split has a canary guard"},
      {"    split: [{service: llama-v1}, {service: llama-v2}]\n    canary_guard: {window: 2h}\n", "must be 1s..1h, got 2h"},
      {"    split: [{service: llama-v1}, {service: llama-v2}]\n    canary_guard: {metric: ttft_p90}\n",
       "must be ttft_p99 or ttft_p50"},
      {"    split: [{service: llama-v1}, {service: llama-v2}]\n    canary_guard: {probe_percent: 0}\n", "must be > 0"},
  };
  for (auto& [lines, message] : cases) {
    ParseResult r = parseStateText(file(lines), kFile);
    ASSERT_FALSE(r.ok()) << lines;
    ASSERT_EQ(r.errors.size(), 1u) << dump(r);
    EXPECT_NE(r.errors[0].message.find(message), std::string::npos) << r.errors[0].toString();
    EXPECT_EQ(r.errors[0].field.rfind("services[2].canary_guard", 0), 0u) << r.errors[0].toString();
  }
}

}  // namespace
}  // namespace aimesh
