// Text histograms for meshctl: latency values in adaptive units (µs/ms/s),
// merging of adjacent histogram buckets into a few rows, and horizontal bars
// drawn with █. Nothing here knows about the agent's JSON; commands/latency.cc
// turns responses into BarBuckets.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace aimesh {

// [lower, upper) seconds holding `count` samples. `upper` may be +infinity for
// the kernel's overflow bucket.
struct BarBucket {
  double lower = 0;
  double upper = 0;
  uint64_t count = 0;
};

// A latency in the largest unit that keeps it >= 1: 0.00042 → "420µs",
// 0.0012 → "1.2ms", 0.01 → "10.0ms", 0.128 → "128ms", 3.1 → "3.1s". One
// decimal below 100 of the unit, none from 100 up. Sub-microsecond values stay
// in µs ("0.5µs", below 0.05µs "<0.1µs"); 0 is "0µs". Negative, NaN and
// infinite values are "-".
std::string latencyText(double seconds);

// Merges adjacent rows until at most `maxRows` remain (`maxRows` >= 1). Each
// step joins the neighbouring pair that spans the smallest ratio
// upper/lower, so rows end up of similar logarithmic width and a gap between
// two clusters of buckets is the last thing to be bridged. Counts add; the
// merged row spans [first lower, last upper). `buckets` must be ascending.
std::vector<BarBucket> mergeBuckets(std::vector<BarBucket> buckets, std::size_t maxRows);

// One line per row: "  <range>  <bar> <count>", ranges left-aligned to the
// widest one, the longest bar `maxWidth` █ long and the others scaled to it
// (rounded, at least one █ for a non-zero count). Ranges read
// "8.0ms-10.0ms"; an infinite upper bound reads ">=128s".
std::string renderBars(const std::vector<BarBucket>& rows, std::size_t maxWidth = 40,
                       const std::string& indent = "  ");

}  // namespace aimesh
