// /metrics in Prometheus' protobuf exposition format, for scrapers that ask
// for it (Prometheus with native histograms on): length-delimited
// io.prometheus.client.MetricFamily messages, encoded with the protobuf
// library from the published metrics.proto (compiled by the build; see
// CMakeLists.txt).
//
// Every family of the text exposition is there, sample for sample (the
// counters and gauges are read back from renderMetrics()' text, so the two
// formats cannot drift apart), and each latency histogram is a *native*
// histogram: schema 3, the kernel's own buckets as they are (abi.h), only
// the non-empty ones. The kernel's bucket 0 (below 2^-20 s, 954 ns) is the
// zero bucket (zero_threshold 2^-20 s); its overflow bucket (128 s and
// more) is native bucket 57, (128, 137] s. No classic buckets travel.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "telemetry/histogram.h"
#include "telemetry/metrics.h"

namespace aimesh {

std::string renderMetricsProtobuf(const MetricsInput& in);

// A kernel histogram as native-histogram fields (positive buckets only).
struct NativeHistogram {
  int32_t schema = AIMESH_HIST_SCHEMA;
  double zeroThreshold = 0;
  uint64_t zeroCount = 0;
  std::vector<std::pair<int32_t, uint32_t>> spans;  // (offset, length); the first offset is the first index
  std::vector<int64_t> deltas;                      // each bucket's count minus the previous one's
  uint64_t count = 0;                               // zeroCount + every bucket
  double sumSeconds = 0;
};
NativeHistogram toNative(const Histogram& h);

// The text exposition (Prometheus 0.0.4) read back: one family per TYPE
// line, with its HELP and samples. Fails on a line it cannot read.
struct TextSample {
  std::string name;
  std::vector<std::pair<std::string, std::string>> labels;
  double value = 0;
};
struct TextFamily {
  std::string name, help, type;
  std::vector<TextSample> samples;
};
Result<std::vector<TextFamily>> parseTextExposition(const std::string& text);

}  // namespace aimesh
