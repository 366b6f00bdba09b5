#include "model/service_rules.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>

#include "aimesh/abi.h"

namespace aimesh {
namespace {

TEST(ServiceRulesBounds, MatchTheKernelAndTheTypes) {
  EXPECT_EQ(kMaxHashTableSize, AIMESH_MAX_HASH_SIZE);
  EXPECT_EQ(kMaxHashTableSize, kMaglevMaxSize);
  EXPECT_TRUE(isPrime(static_cast<uint32_t>(kMinHashTableSize)));
  EXPECT_TRUE(isPrime(static_cast<uint32_t>(kMaxHashTableSize)));
  EXPECT_TRUE(isPrime(kDefaultHashTableSize));
  EXPECT_EQ(kMaxPort, UINT16_MAX);
  EXPECT_EQ(kMaxWeight, UINT16_MAX);
  // balancePct = factor × 100 fits its uint16_t.
  EXPECT_LE(kMaxHashBalanceFactor * 100, UINT16_MAX);
  EXPECT_GE(kDefaultBalancePct, kMinHashBalanceFactor * 100);
  EXPECT_LE(kDefaultBalancePct, kMaxHashBalanceFactor * 100);
}

TEST(ServiceRulesPaths, NameFieldsAsWritten) {
  EXPECT_EQ(joinPath("", "services"), "services");
  EXPECT_EQ(joinPath("services[0]", "port"), "services[0].port");
  EXPECT_EQ(joinPath("spec.ports[1]", "protocol"), "spec.ports[1].protocol");
  EXPECT_EQ(indexPath("services", 0), "services[0]");
  EXPECT_EQ(indexPath("services[2].endpoints", 13), "services[2].endpoints[13]");
  EXPECT_EQ(keyPath("metadata.labels", "app"), "metadata.labels[app]");
  EXPECT_EQ(keyPath("metadata.annotations", "aimesh.io/model"), "metadata.annotations[aimesh.io/model]");
  EXPECT_EQ(joinPath(indexPath(joinPath(indexPath("services", 0), "ports"), 1), "port"), "services[0].ports[1].port");
}

TEST(ServiceRulesIntegers, Messages) {
  EXPECT_EQ(rangeText(1, 65535), "1..65535");
  EXPECT_EQ(rangeText(-3, 0), "-3..0");
  EXPECT_EQ(notIntegerMessage(1, 65535, "'http'"), "must be an integer 1..65535, got 'http'");
  EXPECT_EQ(notIntegerMessage(0, 65535, "string \"8\""), "must be an integer 0..65535, got string \"8\"");
  EXPECT_EQ(outOfRangeMessage(1, 65535, "70000"), "must be 1..65535, got 70000");
  EXPECT_EQ(outOfRangeMessage(7, 65521, "0003"), "must be 7..65521, got 0003");  // as written
}

TEST(ServiceRulesDnsLabel, Valid) {
  for (const char* s : {"a", "0", "llama-chat", "ml", "a-b-c", "9z", "a1"}) {
    EXPECT_EQ(checkDnsLabel(s), std::nullopt) << s;
  }
  EXPECT_EQ(checkDnsLabel(std::string(kMaxDnsLabelLength, 'a')), std::nullopt);
}

TEST(ServiceRulesDnsLabel, InvalidWithExactMessages) {
  EXPECT_EQ(checkDnsLabel(""), "must not be empty");
  EXPECT_EQ(checkDnsLabel(std::string(64, 'a')), "must be at most 63 characters, got 64");
  const std::string what =
      "must be a DNS label (lowercase letters, digits and '-', starting and ending with a letter or digit), got ";
  EXPECT_EQ(checkDnsLabel("Llama_Chat"), what + "'Llama_Chat'");
  for (const char* s : {"-a", "a-", "ML", "a.b", "a b", "a_b", "é", "*"}) {
    EXPECT_EQ(checkDnsLabel(s), what + "'" + s + "'") << s;
  }
}

TEST(ServiceRulesAlgorithm, EveryNameAndTheMessage) {
  for (Algorithm a : kAlgorithms) {
    auto r = parseAlgorithmText(toString(a));
    ASSERT_TRUE(r.ok()) << toString(a);
    EXPECT_EQ(*r, a);
  }
  for (const char* bad : {"Maglev ", "MAGLEV", "", "round_robin"}) {
    auto r = parseAlgorithmText(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().message(),
              std::string("must be one of random, maglev, least_conn, latency, bounded_hash, got '") + bad + "'");
  }
}

TEST(ServiceRulesHashTableSize, PrimesInRange) {
  for (long long n : {7LL, 11LL, 16381LL, 32749LL, 65521LL}) {
    EXPECT_EQ(checkHashTableSize(n, std::to_string(n)), std::nullopt) << n;
  }
}

TEST(ServiceRulesHashTableSize, ExactMessages) {
  EXPECT_EQ(checkHashTableSize(16384, "16384"),
            "must be a prime (Maglev needs one), got 16384; e.g. 16381, 32749 or 65521");
  EXPECT_EQ(checkHashTableSize(9, "9"), "must be a prime (Maglev needs one), got 9; e.g. 16381, 32749 or 65521");
  EXPECT_EQ(checkHashTableSize(3, "3"), "must be 7..65521, got 3");
  EXPECT_EQ(checkHashTableSize(5, "5"), "must be 7..65521, got 5");  // prime, but too small
  EXPECT_EQ(checkHashTableSize(70001, "70001"), "must be 7..65521, got 70001");
  EXPECT_EQ(checkHashTableSize(-5, "-5"), "must be 7..65521, got -5");
  EXPECT_EQ(checkHashTableSize(0, "000"), "must be 7..65521, got 000");  // the text as written
}

TEST(ServiceRulesMetricsPath, ValidAndExactMessages) {
  for (const char* s : {"/", "/metrics", "/v1/metrics?x=1"}) EXPECT_EQ(checkMetricsPath(s), std::nullopt) << s;
  for (const char* s : {"", "metrics", "/a b", "/a\tb", "/a\nb", "/a\rb", " /metrics"}) {
    EXPECT_EQ(checkMetricsPath(s), std::string("must start with '/' and hold no spaces, got '") + s + "'") << s;
  }
}

}  // namespace
}  // namespace aimesh

// ---- telemetry sampling -------------------------------------------------------

namespace aimesh {
namespace {

TEST(ServiceRulesTelemetrySample, BoundsAndMessages) {
  EXPECT_EQ(checkTelemetrySample(0.1, "0.1"), std::nullopt);
  EXPECT_EQ(checkTelemetrySample(1, "1"), std::nullopt);
  EXPECT_EQ(checkTelemetrySample(0, "0"), "must be > 0 and <= 1, got 0");
  EXPECT_EQ(checkTelemetrySample(1.5, "1.5"), "must be > 0 and <= 1, got 1.5");
  EXPECT_EQ(*parseTelemetrySample("0.25"), 0.25);
  EXPECT_EQ(parseTelemetrySample("10%").error().message(), "must be a number > 0 and <= 1, got '10%'");
  EXPECT_EQ(parseTelemetrySample("0").error().message(), "must be > 0 and <= 1, got 0");
}

// The kernel measures a connection when (random & 0xffff) >= skip.
TEST(ServiceRulesTelemetrySample, SkipIsTheShareNotMeasuredOutOf65536) {
  EXPECT_EQ(telemetrySkip(1), 0u);
  EXPECT_EQ(telemetrySkip(0.5), 32768u);
  EXPECT_EQ(telemetrySkip(0.1), 58982u);  // 10.0 % measured
  EXPECT_EQ(telemetrySkip(0.0001), 65529u);
  EXPECT_EQ(telemetrySkip(1e-9), 65535u);  // at least one in 65,536
}

// Where the lifecycle follows every connection's requests, all are measured.
TEST(ServiceRulesTelemetrySample, TheLifecycleNeedsEveryConnectionFollowed) {
  Service s;
  s.telemetrySample = 0.1;
  EXPECT_EQ(effectiveTelemetrySample(s), 0.1);  // random: no re-balancing
  s.algorithm = Algorithm::kLeastConn;          // re-balances by default
  EXPECT_EQ(effectiveTelemetrySample(s), 1.0);
  s.connections.rebalance = false;
  EXPECT_EQ(effectiveTelemetrySample(s), 0.1);
  s.connections.maxRequests = 100;
  EXPECT_EQ(effectiveTelemetrySample(s), 1.0);
  s.connections.maxRequests = 0;
  s.connections.maxAgeMs = 60'000;
  EXPECT_EQ(effectiveTelemetrySample(s), 1.0);
}

}  // namespace
}  // namespace aimesh
