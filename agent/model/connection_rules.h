// The rules for the values of a service's connection policy
// (ConnectionPolicy in snapshot.h), as text: durations, the re-balancing
// rate, requests per connection, on/off. Both sources parse with these —
// the state file (source/state_file.cc) and the Kubernetes annotations
// (source/kube_objects.cc) — so a value means the same and is bounded the
// same in either (issue #14: no rule kept twice). YAML or JSON typing (is
// it a scalar, was it quoted) and how an error is reported stay with each
// source.
//
// Errors are Error::msg() texts that quote the value, such as
// "must be at most 30 days (720h), got '1000h'"; a source prefixes the
// field or annotation.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "util/result.h"

namespace aimesh {

// The longest duration accepted anywhere: a typo (10000h for 10m) should be
// an error, not a connection that is never closed.
inline constexpr uint64_t kMaxDurationMs = 30ull * 24 * 3600 * 1000;  // 30 days
inline constexpr double kMaxRebalanceRate = 1000;                      // connections per second
inline constexpr uint64_t kMaxMaxRequests = UINT32_MAX;

// A duration in milliseconds from
//   "90", "1.5"                     seconds (an integer or a decimal), or
//   "500ms", "30s", "10m", "1.5h"   a decimal number and one unit: ms, s, m, h.
// No sign, spaces, exponent or compound forms ("1h30m"). 0 is allowed (what
// it means is the field's business). The result is rounded to whole
// milliseconds; a value that is not 0 but rounds to 0 is an error, since 0
// usually means "never" or "at once". Errors: a negative value, NaN or any
// other malformed text, an unknown unit, more than kMaxDurationMs.
Result<uint64_t> parseDurationMs(std::string_view text);

// The shortest text parseDurationMs() reads back as ms, in the largest unit
// that divides it: 0 → "0", 1500 → "1500ms", 90000 → "90s", 300000 → "5m",
// 5400000 → "90m", 3600000 → "1h".
std::string formatDurationMs(uint64_t ms);

// "true" or "false" (also "True", "TRUE", "False", "FALSE": YAML 1.2's core
// schema). Not yes/no/on/off/1/0.
Result<bool> parseBoolText(std::string_view text);

// A decimal number ("4", "0.5") > 0 and <= max.
Result<double> parsePositiveDecimal(std::string_view text, double max);

// ConnectionPolicy::rebalanceRate: a decimal number ("4", "0.5"),
// > 0 and <= kMaxRebalanceRate.
Result<double> parseRebalanceRate(std::string_view text);

// ConnectionPolicy::maxRequests: a decimal integer 0..kMaxMaxRequests.
Result<uint32_t> parseMaxRequests(std::string_view text);

}  // namespace aimesh
