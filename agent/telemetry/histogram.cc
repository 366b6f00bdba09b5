#include "telemetry/histogram.h"

#include <array>
#include <bit>
#include <cmath>
#include <limits>

namespace aimesh {
namespace {

constexpr uint32_t kLastBucket = AIMESH_HIST_BUCKETS - 1;
constexpr std::array<uint64_t, 8> kThresholds = {AIMESH_HIST_T0, AIMESH_HIST_T1, AIMESH_HIST_T2, AIMESH_HIST_T3,
                                                 AIMESH_HIST_T4, AIMESH_HIST_T5, AIMESH_HIST_T6, AIMESH_HIST_T7};
// First classic `le` bound: 2^(-128/8) s, about 15 us.
constexpr int kPromMinIndex = -128;

// The nanosecond value at which native boundary index j (2^(j/8) s) falls
// in the kernel's integer arithmetic: threshold n of octave k.
uint64_t boundaryNs(int j) {
  int e = j + AIMESH_HIST_INDEX_OFFSET;  // 8k + n
  auto k = static_cast<uint32_t>(e / 8), n = static_cast<uint32_t>(e % 8);
  uint64_t t = kThresholds[n];
  if (k >= 16) return t << (k - 16);
  uint64_t div = uint64_t{1} << (16 - k);
  return (t + div - 1) / div;
}

}  // namespace

uint32_t histBucket(uint64_t ns) {
  if (ns < AIMESH_HIST_MIN_NS) return 0;
  if (ns >= AIMESH_HIST_MAX_NS) return kLastBucket;
  auto k = static_cast<uint32_t>(std::bit_width(ns) - 1);
  uint64_t m = k >= 16 ? ns >> (k - 16) : ns << (16 - k);
  uint32_t cnt = 0;
  for (uint64_t t : kThresholds) cnt += m >= t;
  return 8 * k + cnt - AIMESH_HIST_INDEX_OFFSET - AIMESH_HIST_MIN_INDEX;
}

uint64_t histBucketLower(uint32_t bucket) {
  if (bucket == 0) return 0;
  if (bucket >= kLastBucket) return AIMESH_HIST_MAX_NS;
  return boundaryNs(histNativeIndex(bucket) - 1);
}

uint64_t histBucketUpper(uint32_t bucket) {
  if (bucket >= kLastBucket) return std::numeric_limits<uint64_t>::max();
  return histBucketLower(bucket + 1);
}

int histNativeIndex(uint32_t bucket) { return static_cast<int>(bucket) + AIMESH_HIST_MIN_INDEX; }

void Histogram::add(const aimesh_hist& h) {
  for (uint32_t b = 0; b < AIMESH_HIST_BUCKETS; ++b) {
    buckets[b] += h.buckets[b];
    count += h.buckets[b];  // the kernel keeps no count of its own
  }
  sumNs += h.sum_ns;
}

void Histogram::record(uint64_t ns) {
  buckets[histBucket(ns)] += 1;
  count += 1;
  sumNs += ns;
}

double Histogram::quantileNs(double q) const {
  // `count` is the buckets' sum when read from the kernel; a histogram built
  // by hand may disagree: rank against the buckets.
  uint64_t total = 0;
  for (uint64_t c : buckets) total += c;
  if (total == 0) return 0;
  if (q > 1) q = 1;
  if (q < 0) q = 0;
  // Prometheus' histogram_quantile: the first bucket whose cumulative count
  // reaches rank = q * count, then linear interpolation inside it.
  double rank = q * static_cast<double>(total);
  uint64_t cumulative = 0;
  for (uint32_t b = 0; b < AIMESH_HIST_BUCKETS; ++b) {
    uint64_t c = buckets[b];
    if (c == 0) continue;
    if (static_cast<double>(cumulative + c) >= rank) {
      auto lower = static_cast<double>(histBucketLower(b));
      // Nothing is known above the overflow bucket's lower bound.
      if (b == kLastBucket) return lower;
      auto upper = static_cast<double>(histBucketUpper(b));
      double inside = (rank - static_cast<double>(cumulative)) / static_cast<double>(c);
      if (inside < 0) inside = 0;
      return lower + (upper - lower) * inside;
    }
    cumulative += c;
  }
  return static_cast<double>(histBucketLower(kLastBucket));  // unreachable: rank <= total
}

bool validBucketsPerOctave(int perOctave) {
  return perOctave == 1 || perOctave == 2 || perOctave == 4 || perOctave == 8;
}

std::vector<double> promBoundsSeconds(int perOctave) {
  std::vector<double> out;
  int step = 8 / perOctave;
  for (int i = kPromMinIndex; i <= AIMESH_HIST_MAX_INDEX; i += step) out.push_back(std::exp2(i / 8.0));
  return out;
}

std::vector<uint64_t> promCumulative(const Histogram& h, int perOctave) {
  std::vector<uint64_t> out;
  int step = 8 / perOctave;
  uint64_t cumulative = 0;
  uint32_t b = 0;
  for (int i = kPromMinIndex; i <= AIMESH_HIST_MAX_INDEX; i += step) {
    // Buckets 0 .. i - MIN_INDEX end at or below 2^(i/8) s: exact.
    while (b < kLastBucket && histNativeIndex(b) <= i) cumulative += h.buckets[b++];
    out.push_back(cumulative);
  }
  return out;
}

}  // namespace aimesh
