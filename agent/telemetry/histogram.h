// Latency histograms as the kernel keeps them (Prometheus native schema-3
// buckets, layout in include/aimesh/abi.h: AIMESH_HIST_*): bucket arithmetic,
// merging, percentiles, and the classic `le` buckets
// exported to Prometheus.
// Pure: no kernel access.
#pragma once

#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#include "aimesh/abi.h"

namespace aimesh {

// Bucket of a value in nanoseconds; the same function as hist_bucket() in
// bpf/lib/hist.h.
uint32_t histBucket(uint64_t ns);
// [lower, upper) of a bucket in nanoseconds, as the kernel draws them. Bucket
// 0 is [0, AIMESH_HIST_MIN_NS); the last is [AIMESH_HIST_MAX_NS, UINT64_MAX].
uint64_t histBucketLower(uint32_t bucket);
uint64_t histBucketUpper(uint32_t bucket);
// The Prometheus schema-3 index of a bucket: it holds values up to
// 2^(index/8) seconds (meaningful for 1 .. AIMESH_HIST_BUCKETS - 2).
int histNativeIndex(uint32_t bucket);

struct Histogram {
  std::array<uint64_t, AIMESH_HIST_BUCKETS> buckets{};
  uint64_t count = 0;
  uint64_t sumNs = 0;

  void add(const aimesh_hist& h);       // merge a kernel histogram (count = its buckets' sum)
  void record(uint64_t ns);             // for tests and models
  bool empty() const { return count == 0; }
  // The q-quantile (0 < q <= 1) in nanoseconds, interpolated linearly inside
  // its bucket; 0 if empty.
  double quantileNs(double q) const;
  double meanNs() const { return count ? static_cast<double>(sumNs) / count : 0; }
};

// Classic Prometheus buckets: `le` bounds at 2^(i/8) seconds for every
// (8 / perOctave)-th native boundary i from 2^-16 s (15 us) to 2^7 s (128 s),
// each an exact kernel bucket boundary (to 2^-16), ascending, without +Inf.
// perOctave is 1, 2, 4 or 8 (8: the kernel's own buckets).
bool validBucketsPerOctave(int perOctave);
std::vector<double> promBoundsSeconds(int perOctave = 2);
// Cumulative counts for promBoundsSeconds(perOctave) (same length); +Inf is `count`.
std::vector<uint64_t> promCumulative(const Histogram& h, int perOctave = 2);

}  // namespace aimesh
