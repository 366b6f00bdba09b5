#include "format/bars.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "format/table.h"

namespace aimesh {
namespace {

std::string withUnit(double value, const char* unit) {
  return value < 99.95 ? fmt::format("{:.1f}{}", value, unit)
                       : fmt::format("{:.0f}{}", value, unit);
}

std::string rangeText(const BarBucket& b) {
  if (!std::isfinite(b.upper)) return ">=" + latencyText(b.lower);
  return latencyText(b.lower) + "-" + latencyText(b.upper);
}

// log(upper/lower) of the row a merge of a and b would make; lower 0 (the
// kernel's first bucket) counts as one nanosecond so the ratio stays finite.
double mergedSpan(const BarBucket& a, const BarBucket& b) {
  double lower = std::max(a.lower, 1e-9);
  double upper = std::isfinite(b.upper) ? b.upper : std::max(b.lower, lower) * 2;
  return std::log(upper / lower);
}

}  // namespace

std::string latencyText(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "-";
  if (seconds == 0) return "0µs";
  double us = seconds * 1e6;
  if (us < 999.5) {
    if (us < 0.05) return "<0.1µs";
    return withUnit(us, "µs");
  }
  double ms = seconds * 1e3;
  if (ms < 999.5) return withUnit(ms, "ms");
  return withUnit(seconds, "s");
}

std::vector<BarBucket> mergeBuckets(std::vector<BarBucket> buckets, std::size_t maxRows) {
  if (maxRows == 0) maxRows = 1;
  while (buckets.size() > maxRows) {
    std::size_t best = 0;
    double bestSpan = std::numeric_limits<double>::infinity();
    for (std::size_t i = 0; i + 1 < buckets.size(); ++i) {
      double span = mergedSpan(buckets[i], buckets[i + 1]);
      if (span < bestSpan) {
        bestSpan = span;
        best = i;
      }
    }
    buckets[best].upper = buckets[best + 1].upper;
    buckets[best].count += buckets[best + 1].count;
    buckets.erase(buckets.begin() + static_cast<std::ptrdiff_t>(best) + 1);
  }
  return buckets;
}

std::string renderBars(const std::vector<BarBucket>& rows, std::size_t maxWidth,
                       const std::string& indent) {
  uint64_t maxCount = 0;
  std::size_t labelWidth = 0;
  std::vector<std::string> labels;
  for (const auto& r : rows) {
    maxCount = std::max(maxCount, r.count);
    labels.push_back(rangeText(r));
    labelWidth = std::max(labelWidth, Table::displayWidth(labels.back()));
  }
  std::string out;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    std::size_t width = 0;
    if (rows[i].count > 0 && maxCount > 0) {
      double scaled = static_cast<double>(rows[i].count) / static_cast<double>(maxCount) *
                      static_cast<double>(maxWidth);
      width = std::max<std::size_t>(1, static_cast<std::size_t>(std::lround(scaled)));
    }
    out += indent + labels[i];
    out.append(labelWidth - Table::displayWidth(labels[i]) + 2, ' ');
    for (std::size_t w = 0; w < width; ++w) out += "█";
    out += (width > 0 ? " " : "") + std::to_string(rows[i].count) + "\n";
  }
  return out;
}

}  // namespace aimesh
