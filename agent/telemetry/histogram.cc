#include "telemetry/histogram.h"

#include <bit>
#include <limits>

namespace aimesh {
namespace {

constexpr uint32_t kLastBucket = AIMESH_HIST_BUCKETS - 1;
constexpr uint64_t kMinValue = uint64_t{1} << AIMESH_HIST_MIN_SHIFT;
constexpr uint64_t kMaxValue = uint64_t{1} << AIMESH_HIST_MAX_SHIFT;
// First power of two exported to Prometheus (16 us).
constexpr uint32_t kPromMinShift = 14;

static_assert(kPromMinShift >= AIMESH_HIST_MIN_SHIFT + 1,
              "1.5 * 2^k is a bucket boundary only when 2^(k-1) is inside the log-linear range");
static_assert(AIMESH_HIST_SUBS % 2 == 0, "1.5 * 2^k must be a sub-bucket boundary");

// Exported bounds in nanoseconds: 2^k, 1.5 * 2^k for k in [14, MAX_SHIFT), then
// 2^MAX_SHIFT, where the overflow bucket starts.
std::vector<uint64_t> makePromBoundsNs() {
  std::vector<uint64_t> out;
  for (uint32_t k = kPromMinShift; k < AIMESH_HIST_MAX_SHIFT; ++k) {
    uint64_t p = uint64_t{1} << k;
    out.push_back(p);
    out.push_back(p + p / 2);
  }
  out.push_back(kMaxValue);
  return out;
}

const std::vector<uint64_t>& promBoundsNs() {
  static const std::vector<uint64_t> bounds = makePromBoundsNs();
  return bounds;
}

}  // namespace

uint32_t histBucket(uint64_t ns) {
  if (ns < kMinValue) return 0;
  if (ns >= kMaxValue) return kLastBucket;
  auto k = static_cast<uint32_t>(std::bit_width(ns) - 1);
  auto sub = static_cast<uint32_t>((ns >> (k - AIMESH_HIST_SUB_BITS)) & (AIMESH_HIST_SUBS - 1));
  return 1 + (k - AIMESH_HIST_MIN_SHIFT) * AIMESH_HIST_SUBS + sub;
}

uint64_t histBucketLower(uint32_t bucket) {
  if (bucket == 0) return 0;
  if (bucket >= kLastBucket) return kMaxValue;
  uint32_t k = AIMESH_HIST_MIN_SHIFT + (bucket - 1) / AIMESH_HIST_SUBS;
  uint32_t sub = (bucket - 1) % AIMESH_HIST_SUBS;
  return (uint64_t{1} << k) + (uint64_t{sub} << (k - AIMESH_HIST_SUB_BITS));
}

uint64_t histBucketUpper(uint32_t bucket) {
  if (bucket >= kLastBucket) return std::numeric_limits<uint64_t>::max();
  return histBucketLower(bucket + 1);
}

void Histogram::add(const aimesh_hist& h) {
  for (uint32_t b = 0; b < AIMESH_HIST_BUCKETS; ++b) buckets[b] += h.buckets[b];
  count += h.count;
  sumNs += h.sum_ns;
}

void Histogram::record(uint64_t ns) {
  buckets[histBucket(ns)] += 1;
  count += 1;
  sumNs += ns;
}

double Histogram::quantileNs(double q) const {
  // The kernel bumps a bucket and `count` separately (per-CPU, no lock), so a
  // read can catch them apart; rank against the buckets actually summed.
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

const std::vector<double>& promBoundsSeconds() {
  static const std::vector<double> bounds = [] {
    std::vector<double> out;
    for (uint64_t ns : promBoundsNs()) out.push_back(static_cast<double>(ns) / 1e9);
    return out;
  }();
  return bounds;
}

std::vector<uint64_t> promCumulative(const Histogram& h) {
  const std::vector<uint64_t>& bounds = promBoundsNs();
  std::vector<uint64_t> out;
  out.reserve(bounds.size());
  uint64_t cumulative = 0;
  uint32_t b = 0;
  for (uint64_t bound : bounds) {
    // Every bound is a bucket boundary, so "upper <= bound" is exact.
    while (b < kLastBucket && histBucketUpper(b) <= bound) cumulative += h.buckets[b++];
    out.push_back(cumulative);
  }
  return out;
}

}  // namespace aimesh
