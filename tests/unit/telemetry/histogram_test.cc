// Unit tests of the agent's reading of the kernel's log-linear histograms:
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

// The layout as abi.h states it, written out independently of histogram.cc:
// find k with 2^k <= v < 2^(k+1) by a loop, not a bit trick.
uint32_t referenceBucket(uint64_t v) {
  if (v < (uint64_t{1} << AIMESH_HIST_MIN_SHIFT)) return 0;
  if (v >= (uint64_t{1} << AIMESH_HIST_MAX_SHIFT)) return AIMESH_HIST_BUCKETS - 1;
  uint32_t k = AIMESH_HIST_MIN_SHIFT;
  while ((v >> (k + 1)) != 0) ++k;
  uint32_t sub = static_cast<uint32_t>((v >> (k - 3)) & 7);
  return 1 + (k - AIMESH_HIST_MIN_SHIFT) * 8 + sub;
}

TEST(HistBucketTest, LayoutConstants) {
  EXPECT_EQ(AIMESH_HIST_SUBS, 8);
  EXPECT_EQ(AIMESH_HIST_BUCKETS, 218);
}

TEST(HistBucketTest, KnownValues) {
  EXPECT_EQ(histBucket(0), 0u);
  EXPECT_EQ(histBucket(1023), 0u);
  EXPECT_EQ(histBucket(1024), 1u);
  EXPECT_EQ(histBucket(1024 + 127), 1u);
  EXPECT_EQ(histBucket(1024 + 128), 2u);
  EXPECT_EQ(histBucket(2047), 8u);
  EXPECT_EQ(histBucket(2048), 9u);
  EXPECT_EQ(histBucket((uint64_t{1} << 37) - 1), kLast - 1);
  EXPECT_EQ(histBucket(uint64_t{1} << 37), kLast);
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
    }
    previousUpper = upper;
  }
  EXPECT_EQ(histBucketLower(0), 0u);
  EXPECT_EQ(histBucketUpper(0), uint64_t{1} << AIMESH_HIST_MIN_SHIFT);
  EXPECT_EQ(histBucketLower(kLast), uint64_t{1} << AIMESH_HIST_MAX_SHIFT);
  EXPECT_EQ(histBucketUpper(kLast), std::numeric_limits<uint64_t>::max());
}

TEST(HistBucketTest, LogLinearBucketsAreAtMostAnEighthWide) {
  for (uint32_t b = 1; b < kLast; ++b) {
    uint64_t lower = histBucketLower(b), upper = histBucketUpper(b);
    EXPECT_LE((upper - lower) * 8, lower) << "bucket " << b;
  }
}

TEST(HistBucketTest, MatchesTheLayoutInAbiAndIsMonotonic) {
  std::mt19937_64 rng(42);
  uint32_t previous = 0;
  // Every power of two and its neighbours, then random values over all scales.
  for (uint32_t s = 0; s < 64; ++s) {
    uint64_t p = uint64_t{1} << s;
    for (uint64_t v : {p - 1, p, p + 1}) EXPECT_EQ(histBucket(v), referenceBucket(v)) << v;
  }
  for (int i = 0; i < 200000; ++i) {
    uint64_t v = rng() >> (rng() % 64);
    ASSERT_EQ(histBucket(v), referenceBucket(v)) << v;
  }
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
  // A bucket is at most 12.5% wide, so interpolation should land within ~6%.
  EXPECT_LE(worst, 0.065);
}

TEST(HistQuantileTest, ContinuousDistributionsAreMuchCloser) {
  for (const auto& dist : distributions()) {
    if (dist.name.rfind("constant", 0) == 0 || dist.name == "three values") continue;
    Histogram h;
    for (uint64_t v : dist.samples) h.record(v);
    for (double q : {0.5, 0.9, 0.99}) {
      double exact = exactQuantile(dist.samples, q);
      EXPECT_LE(std::abs(h.quantileNs(q) - exact) / exact, 0.02) << dist.name << " q=" << q;
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
  // 8 samples in bucket 1 ([1024, 1152)): rank q*8 of 8 → 1024 + q*128.
  Histogram h;
  for (int i = 0; i < 8; ++i) h.record(1100);
  EXPECT_DOUBLE_EQ(h.quantileNs(0.5), 1024 + 64);
  EXPECT_DOUBLE_EQ(h.quantileNs(0.25), 1024 + 32);
  EXPECT_DOUBLE_EQ(h.quantileNs(1.0), 1152);
  EXPECT_DOUBLE_EQ(h.meanNs(), 1100);
}

TEST(HistQuantileTest, RankWalksTheCumulativeCounts) {
  // 10 samples in [1024,1152), 10 in [2048,2304): p50 is the top of the first
  // bucket (rank 10 reached there), p75 halfway into the second.
  Histogram h;
  for (int i = 0; i < 10; ++i) h.record(1030);
  for (int i = 0; i < 10; ++i) h.record(2100);
  EXPECT_DOUBLE_EQ(h.quantileNs(0.5), 1152);
  EXPECT_DOUBLE_EQ(h.quantileNs(0.75), 2048 + 128);
}

TEST(HistQuantileTest, FirstBucketInterpolatesFromZero) {
  Histogram h;
  for (int i = 0; i < 100; ++i) h.record(500);
  EXPECT_DOUBLE_EQ(h.quantileNs(0.5), 512);
  EXPECT_DOUBLE_EQ(h.quantileNs(1.0), 1024);
}

TEST(HistQuantileTest, OverflowBucketReturnsItsLowerBound) {
  Histogram h;
  h.record(10 * kMs);
  h.record(uint64_t{200} * 1'000'000'000);  // 200 s, past 2^37 ns
  h.record(uint64_t{300} * 1'000'000'000);
  double overflow = static_cast<double>(uint64_t{1} << AIMESH_HIST_MAX_SHIFT);
  EXPECT_DOUBLE_EQ(h.quantileNs(0.99), overflow);
  EXPECT_DOUBLE_EQ(h.quantileNs(1.0), overflow);
  EXPECT_LT(h.quantileNs(0.2), 12.0 * kMs);
}

TEST(HistMergeTest, PerCpuCopiesAddUp) {
  std::mt19937_64 rng(7);
  std::lognormal_distribution<double> d(std::log(20.0 * kMs), 1.0);
  std::vector<aimesh_hist> perCpu(4);
  for (auto& h : perCpu) h = aimesh_hist{};
  Histogram direct;
  for (int i = 0; i < 40000; ++i) {
    auto v = static_cast<uint64_t>(d(rng));
    aimesh_hist& cpu = perCpu[rng() % perCpu.size()];
    // What hist_record() in bpf/lib/hist.h does on one CPU.
    cpu.buckets[histBucket(v)] += 1;
    cpu.count += 1;
    cpu.sum_ns += v;
    direct.record(v);
  }
  Histogram merged;
  for (const auto& h : perCpu) merged.add(h);
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

uint64_t boundNs(double seconds) { return static_cast<uint64_t>(std::llround(seconds * 1e9)); }

TEST(HistPromTest, BoundsArePowersOfTwoAndOneAndAHalfTimesThem) {
  const auto& bounds = promBoundsSeconds();
  ASSERT_EQ(bounds.size(), 2u * (37 - 14) + 1);
  EXPECT_EQ(boundNs(bounds.front()), uint64_t{1} << 14);
  EXPECT_EQ(boundNs(bounds[1]), (uint64_t{1} << 14) * 3 / 2);
  EXPECT_EQ(boundNs(bounds.back()), uint64_t{1} << 37);
  for (std::size_t i = 0; i < bounds.size(); ++i) {
    if (i > 0) {
      EXPECT_LT(bounds[i - 1], bounds[i]);
    }
    uint64_t ns = boundNs(bounds[i]);
    EXPECT_EQ(histBucketLower(histBucket(ns)), ns)
        << "bound " << bounds[i] << " is not a bucket edge";
  }
}

TEST(HistPromTest, CumulativeMatchesABruteForceCount) {
  for (const auto& dist : distributions()) {
    Histogram h;
    for (uint64_t v : dist.samples) h.record(v);
    h.record(100);                            // bucket 0
    h.record(uint64_t{500} * 1'000'000'000);  // overflow bucket: only in +Inf
    const auto& bounds = promBoundsSeconds();
    std::vector<uint64_t> cumulative = promCumulative(h);
    ASSERT_EQ(cumulative.size(), bounds.size());
    for (std::size_t i = 0; i < bounds.size(); ++i) {
      if (i > 0) {
        EXPECT_LE(cumulative[i - 1], cumulative[i]) << dist.name;
      }
      // Each bound is a bucket edge, so "bucket upper <= bound" is "sample < bound".
      uint64_t bound = boundNs(bounds[i]);
      uint64_t brute =
          1 + static_cast<uint64_t>(std::count_if(dist.samples.begin(), dist.samples.end(),
                                                  [&](uint64_t v) { return v < bound; }));
      EXPECT_EQ(cumulative[i], brute) << dist.name << " le=" << bounds[i];
    }
    EXPECT_LE(cumulative.back(), h.count);
    EXPECT_EQ(cumulative.back(), h.count - 1) << "the 500 s sample is only in +Inf";
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
