// Unit tests of the agent's reading of the kernel's histograms (Prometheus
// native schema-3 buckets):
// bucket arithmetic against the layout in abi.h, percentile accuracy against
// exact sample quantiles, merging of per-CPU copies, and the cumulative `le`
// buckets exported to Prometheus.
#include "telemetry/histogram.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace aimesh {
namespace {

constexpr uint32_t kLast = AIMESH_HIST_BUCKETS - 1;
constexpr uint64_t kMs = 1'000'000;

// The layout as abi.h states it, in floating point and independently of the
// integer arithmetic: native bucket i holds 2^((i-1)/8) s <= v < 2^(i/8) s.
// Exact except within 2^-16 (or a nanosecond) of a boundary.
uint32_t referenceBucket(uint64_t v) {
  if (v == 0) return 0;
  double i = std::floor(8 * std::log2(static_cast<double>(v) * 1e-9)) + 1;
  if (i <= AIMESH_HIST_MIN_INDEX) return 0;
  if (i > AIMESH_HIST_MAX_INDEX) return kLast;
  return static_cast<uint32_t>(i - AIMESH_HIST_MIN_INDEX);
}

// Is v within 2^-15 (or 2 ns) of a boundary 2^(j/8) s?
bool nearABoundary(uint64_t v) {
  double x = 8 * std::log2(static_cast<double>(v) * 1e-9);
  double j = std::round(x);
  double edge = 1e9 * std::exp2(j / 8);
  return std::abs(static_cast<double>(v) - edge) <= std::max(2.0, edge / 32768);
}

TEST(HistBucketTest, LayoutConstants) {
  EXPECT_EQ(AIMESH_HIST_SCHEMA, 3);
  EXPECT_EQ(AIMESH_HIST_BUCKETS, 218);
  // The thresholds: ceil(2^16 x 2^((n + f)/8)), 8 log2(1e9) = OFFSET + f.
  double f = 8 * std::log2(1e9) - AIMESH_HIST_INDEX_OFFSET;
  ASSERT_GT(f, 0);
  ASSERT_LT(f, 1);
  uint64_t t[] = {AIMESH_HIST_T0, AIMESH_HIST_T1, AIMESH_HIST_T2, AIMESH_HIST_T3,
                  AIMESH_HIST_T4, AIMESH_HIST_T5, AIMESH_HIST_T6, AIMESH_HIST_T7};
  for (int n = 0; n < 8; ++n) EXPECT_EQ(t[n], static_cast<uint64_t>(std::ceil(65536 * std::exp2((n + f) / 8)))) << n;
  EXPECT_EQ(AIMESH_HIST_MIN_NS, static_cast<uint64_t>(std::ceil(1e9 * std::exp2(AIMESH_HIST_MIN_INDEX / 8.0))));
}

TEST(HistBucketTest, KnownValues) {
  EXPECT_EQ(histBucket(0), 0u);
  EXPECT_EQ(histBucket(953), 0u);
  EXPECT_EQ(histBucket(954), 1u);  // 2^-20 s = 953.67 ns
  EXPECT_EQ(histBucket(1039), 1u);
  EXPECT_EQ(histBucket(1040), 2u);  // 2^(-159/8) s = 1039.99 ns
  // 1 s is the boundary of native index 0: just below in bucket 0 - MIN_INDEX.
  EXPECT_EQ(histNativeIndex(histBucket(999'000'000)), 0);
  EXPECT_EQ(histNativeIndex(histBucket(1'001'000'000)), 1);
  EXPECT_EQ(histNativeIndex(histBucket(25'000'000)), -42);  // 2^(-43/8) = 24.3 ms <= 25 ms < 2^(-42/8) = 26.5 ms
  EXPECT_EQ(histBucket(AIMESH_HIST_MAX_NS - 1), kLast - 1);
  EXPECT_EQ(histBucket(AIMESH_HIST_MAX_NS), kLast);
  EXPECT_EQ(histBucket(std::numeric_limits<uint64_t>::max()), kLast);
}

TEST(HistBucketTest, EveryBucketsBoundsMapBackToIt) {
  uint64_t previousUpper = 0;
  for (uint32_t b = 0; b < AIMESH_HIST_BUCKETS; ++b) {
    SCOPED_TRACE("bucket " + std::to_string(b));
    uint64_t lower = histBucketLower(b), upper = histBucketUpper(b);
    EXPECT_LT(lower, upper);
    EXPECT_EQ(lower, previousUpper) << "buckets must tile the range without gaps";
    EXPECT_EQ(histBucket(lower), b);
    EXPECT_EQ(histBucket(upper - 1), b);
    if (b < kLast) {
      EXPECT_EQ(histBucket(upper), b + 1);
      // The upper bound is Prometheus' 2^(index/8) s, to 2^-16 or a nanosecond.
      double edge = 1e9 * std::exp2(histNativeIndex(b) / 8.0);
      EXPECT_NEAR(static_cast<double>(upper), edge, std::max(1.0, edge / 65536));
    }
    previousUpper = upper;
  }
  EXPECT_EQ(histBucketLower(0), 0u);
  EXPECT_EQ(histBucketUpper(0), AIMESH_HIST_MIN_NS);
  EXPECT_EQ(histBucketLower(kLast), AIMESH_HIST_MAX_NS);
  EXPECT_EQ(histBucketUpper(kLast), std::numeric_limits<uint64_t>::max());
}

TEST(HistBucketTest, EachBucketIsAnEighthOfAnOctave) {
  for (uint32_t b = 1; b < kLast; ++b) {
    double lower = static_cast<double>(histBucketLower(b)), upper = static_cast<double>(histBucketUpper(b));
    EXPECT_NEAR(upper / lower, std::exp2(1.0 / 8), 0.002) << "bucket " << b;
  }
}

TEST(HistBucketTest, MatchesTheLayoutInAbiAndIsMonotonic) {
  std::mt19937_64 rng(42);
  uint32_t previous = 0;
  int checked = 0;
  for (int i = 0; i < 200000; ++i) {
    uint64_t v = rng() >> (rng() % 64);
    if (nearABoundary(v)) continue;
    ASSERT_EQ(histBucket(v), referenceBucket(v)) << v;
    ++checked;
  }
  EXPECT_GT(checked, 150000);
  for (uint64_t v = 0; v < (uint64_t{1} << 38); v = v * 9 / 8 + 1) {
    uint32_t b = histBucket(v);
    ASSERT_GE(b, previous) << v;
    previous = b;
  }
}

// Nearest-rank quantile of the raw samples: the ceil(q*n)-th smallest.
double exactQuantile(std::vector<uint64_t> sorted, double q) {
  std::sort(sorted.begin(), sorted.end());
  auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  return static_cast<double>(sorted[std::max<std::size_t>(rank, 1) - 1]);
}

struct Distribution {
  std::string name;
  std::vector<uint64_t> samples;
};

std::vector<Distribution> distributions() {
  constexpr int kN = 100000;
  std::mt19937_64 rng(20240601);
  std::vector<Distribution> out;
  auto lognormal = [&](double medianNs, double sigma) {
    std::lognormal_distribution<double> d(std::log(medianNs), sigma);
    std::vector<uint64_t> v;
    for (int i = 0; i < kN; ++i) v.push_back(static_cast<uint64_t>(d(rng)));
    return v;
  };
  out.push_back({"lognormal median 50ms", lognormal(50.0 * kMs, 0.6)});
  out.push_back({"lognormal median 10ms wide", lognormal(10.0 * kMs, 1.2)});
  {
    std::uniform_int_distribution<uint64_t> d(1 * kMs, 100 * kMs);
    std::vector<uint64_t> v;
    for (int i = 0; i < kN; ++i) v.push_back(d(rng));
    out.push_back({"uniform 1-100ms", v});
  }
  {
    // Cached answers around 2 ms, full generations around 400 ms.
    std::lognormal_distribution<double> fast(std::log(2.0 * kMs), 0.3);
    std::lognormal_distribution<double> slow(std::log(400.0 * kMs), 0.4);
    std::bernoulli_distribution pickSlow(0.3);
    std::vector<uint64_t> v;
    for (int i = 0; i < kN; ++i)
      v.push_back(static_cast<uint64_t>(pickSlow(rng) ? slow(rng) : fast(rng)));
    out.push_back({"bimodal 2ms/400ms", v});
  }
  out.push_back({"constant 3ms", std::vector<uint64_t>(kN, 3 * kMs)});
  out.push_back({"constant 700ms", std::vector<uint64_t>(kN, 700 * kMs)});
  {
    // Three discrete latencies, none on a bucket edge.
    std::vector<uint64_t> v;
    for (int i = 0; i < kN; ++i)
      v.push_back(i % 10 < 6 ? 3 * kMs : (i % 10 < 9 ? 22 * kMs : 180 * kMs));
    out.push_back({"three values", v});
  }
  return out;
}

TEST(HistQuantileTest, WithinTenPercentOfExactSampleQuantiles) {
  double worst = 0;
  for (const auto& dist : distributions()) {
    Histogram h;
    for (uint64_t v : dist.samples) h.record(v);
    ASSERT_EQ(h.count, dist.samples.size());
    for (double q : {0.5, 0.9, 0.99}) {
      double exact = exactQuantile(dist.samples, q);
      double got = h.quantileNs(q);
      double rel = std::abs(got - exact) / exact;
      worst = std::max(worst, rel);
      EXPECT_LE(rel, 0.10) << dist.name << " q=" << q << " exact=" << exact << " got=" << got;
      // The estimate never leaves the bucket holding the exact quantile's rank.
      uint32_t b = histBucket(static_cast<uint64_t>(exact));
      EXPECT_GE(got, static_cast<double>(histBucketLower(b))) << dist.name << " q=" << q;
      EXPECT_LE(got, static_cast<double>(histBucketUpper(b))) << dist.name << " q=" << q;
    }
  }
  // A bucket is 9% wide; a point mass interpolated across it is off by at
  // most that much.
  EXPECT_LE(worst, 0.0905);
}

TEST(HistQuantileTest, ContinuousDistributionsAreMuchCloser) {
  for (const auto& dist : distributions()) {
    if (dist.name.rfind("constant", 0) == 0 || dist.name == "three values") continue;
    Histogram h;
    for (uint64_t v : dist.samples) h.record(v);
    for (double q : {0.5, 0.9, 0.99}) {
      double exact = exactQuantile(dist.samples, q);
      // 4%: a quantile next to the end of the distribution's support sits in
      // a bucket only partly filled (uniform 1-100 ms, p99), which linear
      // interpolation spreads over the whole bucket.
      EXPECT_LE(std::abs(h.quantileNs(q) - exact) / exact, 0.04) << dist.name << " q=" << q;
    }
  }
}

TEST(HistQuantileTest, EmptyIsZero) {
  Histogram h;
  EXPECT_TRUE(h.empty());
  EXPECT_EQ(h.quantileNs(0.5), 0.0);
  EXPECT_EQ(h.meanNs(), 0.0);
}

TEST(HistQuantileTest, InterpolatesLinearlyInsideABucket) {
  // 8 samples in bucket 1 ([954, 1040)): rank q*8 of 8 -> 954 + q*86.
  Histogram h;
  for (int i = 0; i < 8; ++i) h.record(1000);
  EXPECT_DOUBLE_EQ(h.quantileNs(0.5), 954 + 43);
  EXPECT_DOUBLE_EQ(h.quantileNs(0.25), 954 + 21.5);
  EXPECT_DOUBLE_EQ(h.quantileNs(1.0), 1040);
  EXPECT_DOUBLE_EQ(h.meanNs(), 1000);
}

TEST(HistQuantileTest, RankWalksTheCumulativeCounts) {
  // 10 samples in [954, 1040), 10 in bucket 9 ([1908, 2080)): p50 is the top
  // of the first bucket (rank 10 reached there), p75 halfway into the second.
  Histogram h;
  for (int i = 0; i < 10; ++i) h.record(1000);
  for (int i = 0; i < 10; ++i) h.record(2000);
  ASSERT_EQ(histBucket(2000), 9u);
  double lo = static_cast<double>(histBucketLower(9)), hi = static_cast<double>(histBucketUpper(9));
  EXPECT_DOUBLE_EQ(h.quantileNs(0.5), 1040);
  EXPECT_DOUBLE_EQ(h.quantileNs(0.75), lo + (hi - lo) / 2);
}

TEST(HistQuantileTest, FirstBucketInterpolatesFromZero) {
  Histogram h;
  for (int i = 0; i < 100; ++i) h.record(500);
  EXPECT_DOUBLE_EQ(h.quantileNs(0.5), 477);
  EXPECT_DOUBLE_EQ(h.quantileNs(1.0), 954);
}

TEST(HistQuantileTest, OverflowBucketReturnsItsLowerBound) {
  Histogram h;
  h.record(10 * kMs);
  h.record(uint64_t{200} * 1'000'000'000);  // 200 s, past 128 s
  h.record(uint64_t{300} * 1'000'000'000);
  auto overflow = static_cast<double>(AIMESH_HIST_MAX_NS);
  EXPECT_DOUBLE_EQ(h.quantileNs(0.99), overflow);
  EXPECT_DOUBLE_EQ(h.quantileNs(1.0), overflow);
  EXPECT_LT(h.quantileNs(0.2), 12.0 * kMs);
}

TEST(HistMergeTest, KernelHistogramsAddUpAndCountIsTheBucketsSum) {
  std::mt19937_64 rng(7);
  std::lognormal_distribution<double> d(std::log(20.0 * kMs), 1.0);
  std::vector<aimesh_hist> parts(4);
  for (auto& h : parts) h = aimesh_hist{};
  Histogram direct;
  for (int i = 0; i < 40000; ++i) {
    auto v = static_cast<uint64_t>(d(rng));
    aimesh_hist& part = parts[rng() % parts.size()];
    // What hist_record() in bpf/lib/hist.h does (the kernel keeps no count).
    part.buckets[histBucket(v)] += 1;
    part.sum_ns += v;
    direct.record(v);
  }
  Histogram merged;
  for (const auto& h : parts) merged.add(h);
  EXPECT_EQ(merged.count, 40000u);
  EXPECT_EQ(merged.count, direct.count);
  EXPECT_EQ(merged.sumNs, direct.sumNs);
  EXPECT_EQ(merged.buckets, direct.buckets);
  EXPECT_DOUBLE_EQ(merged.quantileNs(0.99), direct.quantileNs(0.99));
  EXPECT_DOUBLE_EQ(merged.meanNs(), direct.meanNs());
}

TEST(HistMergeTest, EmptyCopiesChangeNothing) {
  Histogram h;
  h.record(5 * kMs);
  aimesh_hist zero{};
  h.add(zero);
  EXPECT_EQ(h.count, 1u);
  EXPECT_EQ(h.sumNs, 5 * kMs);
}

TEST(HistPromTest, BoundsAreKernelBoundariesPerOctaveAsAsked) {
  for (int perOctave : {1, 2, 4, 8}) {
    SCOPED_TRACE(perOctave);
    ASSERT_TRUE(validBucketsPerOctave(perOctave));
    std::vector<double> bounds = promBoundsSeconds(perOctave);
    ASSERT_EQ(bounds.size(), static_cast<size_t>(23 * perOctave + 1)) << "15 us .. 128 s";
    EXPECT_DOUBLE_EQ(bounds.front(), std::exp2(-16));
    EXPECT_DOUBLE_EQ(bounds.back(), 128);
    for (std::size_t i = 1; i < bounds.size(); ++i) EXPECT_NEAR(bounds[i] / bounds[i - 1], std::exp2(1.0 / perOctave), 1e-12);
    // Each bound is the upper edge of a kernel bucket (to 2^-16).
    for (double le : bounds) {
      uint32_t b = histBucket(static_cast<uint64_t>(le * 1e9 * (1 - 1e-4)));
      EXPECT_NEAR(static_cast<double>(histBucketUpper(b)), le * 1e9, std::max(1.0, le * 1e9 / 65536)) << le;
    }
  }
  EXPECT_FALSE(validBucketsPerOctave(3));
  EXPECT_FALSE(validBucketsPerOctave(0));
  EXPECT_EQ(promBoundsSeconds().size(), promBoundsSeconds(2).size());
}

TEST(HistPromTest, CumulativeMatchesABruteForceCount) {
  for (int perOctave : {2, 8}) {
    for (const auto& dist : distributions()) {
      Histogram h;
      for (uint64_t v : dist.samples) h.record(v);
      h.record(100);                            // bucket 0
      h.record(uint64_t{500} * 1'000'000'000);  // overflow bucket: only in +Inf
      std::vector<double> bounds = promBoundsSeconds(perOctave);
      std::vector<uint64_t> cumulative = promCumulative(h, perOctave);
      ASSERT_EQ(cumulative.size(), bounds.size());
      for (std::size_t i = 0; i < bounds.size(); ++i) {
        if (i > 0) {
          EXPECT_LE(cumulative[i - 1], cumulative[i]) << dist.name;
        }
        // The kernel's edge nearest the bound: "bucket upper <= edge" is "sample < edge".
        uint64_t edge = histBucketUpper(histBucket(static_cast<uint64_t>(bounds[i] * 1e9 * (1 - 1e-4))));
        uint64_t brute =
            1 + static_cast<uint64_t>(std::count_if(dist.samples.begin(), dist.samples.end(),
                                                    [&](uint64_t v) { return v < edge; }));
        EXPECT_EQ(cumulative[i], brute) << dist.name << " le=" << bounds[i];
      }
      EXPECT_EQ(cumulative.back(), h.count - 1) << "the 500 s sample is only in +Inf";
    }
  }
}

TEST(HistPromTest, EmptyHistogramIsAllZero) {
  Histogram h;
  auto cumulative = promCumulative(h);
  ASSERT_EQ(cumulative.size(), promBoundsSeconds().size());
  for (uint64_t c : cumulative) EXPECT_EQ(c, 0u);
}

}  // namespace
}  // namespace aimesh
