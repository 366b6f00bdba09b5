// Log-linear latency histograms as the kernel keeps them (layout in
// include/aimesh/abi.h: AIMESH_HIST_*): bucket arithmetic, merging of per-CPU
// copies, percentiles, and the coarser `le` buckets exported to Prometheus.
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
// [lower, upper) of a bucket in nanoseconds. Bucket 0 is [0, 2^MIN_SHIFT);
// the last bucket is [2^MAX_SHIFT, UINT64_MAX].
uint64_t histBucketLower(uint32_t bucket);
uint64_t histBucketUpper(uint32_t bucket);

struct Histogram {
  std::array<uint64_t, AIMESH_HIST_BUCKETS> buckets{};
  uint64_t count = 0;
  uint64_t sumNs = 0;

  void add(const aimesh_hist& h);       // merge one per-CPU copy
  void record(uint64_t ns);             // for tests and models
  bool empty() const { return count == 0; }
  // The q-quantile (0 < q <= 1) in nanoseconds, interpolated linearly inside
  // its bucket; 0 if empty.
  double quantileNs(double q) const;
  double meanNs() const { return count ? static_cast<double>(sumNs) / count : 0; }
};

// The `le` upper bounds (seconds) exported to Prometheus: bucket boundaries at
// 2^k and 1.5 * 2^k ns for 2^14 ns (16 us) .. 2^37 ns, so each exported bound
// is an exact kernel bucket boundary. Ascending, without +Inf.
const std::vector<double>& promBoundsSeconds();
// Cumulative counts for promBoundsSeconds() (same length); +Inf is `count`.
std::vector<uint64_t> promCumulative(const Histogram& h);

}  // namespace aimesh
