#include "model/connection_rules.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>

namespace aimesh {
namespace {

constexpr uint64_t kMsPerSecond = 1000;
constexpr uint64_t kMsPerMinute = 60 * kMsPerSecond;
constexpr uint64_t kMsPerHour = 60 * kMsPerMinute;
// Digits of a whole part that can still be within every bound here (the
// largest is kMaxDurationMs, 10 digits); longer ones are out of range
// without converting.
constexpr size_t kMaxWholeDigits = 12;
// Fraction digits that count; the rest change a duration by less than
// 0.004 ms.
constexpr size_t kFractionDigits = 9;
constexpr uint64_t kFractionScale = 1'000'000'000;

bool isDigit(char c) { return c >= '0' && c <= '9'; }
bool isLetter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

std::string quoted(std::string_view s) { return "'" + std::string(s) + "'"; }

// A plain decimal number: digits, then optionally '.' and at least one digit.
struct Decimal {
  std::string_view whole;     // without leading zeros ("0" stays "0")
  std::string_view fraction;  // may be empty
  bool nonzero = false;
};

// Reads a Decimal at the start of s; returns how many characters it took,
// 0 if s does not start with one.
size_t scanDecimal(std::string_view s, Decimal& d) {
  size_t i = 0;
  while (i < s.size() && isDigit(s[i])) ++i;
  if (i == 0) return 0;
  d.whole = s.substr(0, i);
  if (i < s.size() && s[i] == '.') {
    size_t j = i + 1;
    while (j < s.size() && isDigit(s[j])) ++j;
    if (j == i + 1) return 0;  // "1." is not a number here
    d.fraction = s.substr(i + 1, j - i - 1);
    i = j;
  }
  auto nonzero = [](char c) { return c != '0'; };
  d.nonzero = std::any_of(d.whole.begin(), d.whole.end(), nonzero) ||
              std::any_of(d.fraction.begin(), d.fraction.end(), nonzero);
  while (d.whole.size() > 1 && d.whole[0] == '0') d.whole.remove_prefix(1);
  return i;
}

uint64_t toInteger(std::string_view digits) {
  uint64_t n = 0;
  for (char c : digits) n = n * 10 + static_cast<uint64_t>(c - '0');
  return n;
}

}  // namespace

Result<uint64_t> parseDurationMs(std::string_view text) {
  auto malformed = [&] {
    return Error::msg("must be a duration like 90, 1.5, 500ms, 30s, 10m or 1h, got " + quoted(text));
  };
  // Say what is wrong with "-5s" rather than that it is no duration at all.
  if (text.size() > 1 && text[0] == '-' && isDigit(text[1])) {
    return Error::msg("must not be negative, got " + quoted(text));
  }
  Decimal d;
  size_t end = scanDecimal(text, d);
  if (end == 0) return malformed();

  std::string_view unit = text.substr(end);
  uint64_t unitMs = 0;
  if (unit.empty() || unit == "s") {
    unitMs = kMsPerSecond;
  } else if (unit == "ms") {
    unitMs = 1;
  } else if (unit == "m") {
    unitMs = kMsPerMinute;
  } else if (unit == "h") {
    unitMs = kMsPerHour;
  } else if (std::all_of(unit.begin(), unit.end(), isLetter)) {
    return Error::msg("unknown unit '" + std::string(unit) + "' in " + quoted(text) + "; use ms, s, m or h");
  } else {
    return malformed();  // "10 m", "1e3", "1h30m", "1.5.2"
  }

  auto tooLong = [&] {
    return Error::msg("must be at most " + formatDurationMs(kMaxDurationMs) + " (30 days), got " + quoted(text));
  };
  if (d.whole.size() > kMaxWholeDigits) return tooLong();
  // Exact integer arithmetic: 1.1h is 3960000 ms, not 3959999.
  uint64_t ms = toInteger(d.whole) * unitMs;
  uint64_t fraction = 0;
  for (size_t i = 0; i < kFractionDigits; ++i) {
    fraction = fraction * 10 + (i < d.fraction.size() ? static_cast<uint64_t>(d.fraction[i] - '0') : 0);
  }
  ms += (fraction * unitMs + kFractionScale / 2) / kFractionScale;  // to the nearest ms
  if (ms > kMaxDurationMs) return tooLong();
  if (ms == 0 && d.nonzero) return Error::msg("must be 0 or at least 1ms, got " + quoted(text));
  return ms;
}

std::string formatDurationMs(uint64_t ms) {
  if (ms == 0) return "0";
  if (ms % kMsPerHour == 0) return std::to_string(ms / kMsPerHour) + "h";
  if (ms % kMsPerMinute == 0) return std::to_string(ms / kMsPerMinute) + "m";
  if (ms % kMsPerSecond == 0) return std::to_string(ms / kMsPerSecond) + "s";
  return std::to_string(ms) + "ms";
}

Result<bool> parseBoolText(std::string_view text) {
  if (text == "true" || text == "True" || text == "TRUE") return true;
  if (text == "false" || text == "False" || text == "FALSE") return false;
  return Error::msg("must be true or false, got " + quoted(text));
}

Result<double> parsePositiveDecimal(std::string_view text, double max) {
  const std::string range = fmt::format("> 0 and <= {:g}", max);
  Decimal d;
  if (text.empty() || scanDecimal(text, d) != text.size()) {
    return Error::msg("must be a number " + range + ", got " + quoted(text));
  }
  auto outOfRange = [&] { return Error::msg("must be " + range + ", got " + std::string(text)); };
  if (d.whole.size() > kMaxWholeDigits) return outOfRange();
  double x = 0;
  // Locale-independent, unlike strtod. No overflow after the length check;
  // an underflow (0.000…1 with hundreds of zeros) leaves x at 0.
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), x);
  if (ec != std::errc() || ptr != text.data() + text.size()) x = 0;
  if (!(x > 0) || x > max) return outOfRange();
  return x;
}

Result<double> parseRebalanceRate(std::string_view text) { return parsePositiveDecimal(text, kMaxRebalanceRate); }

Result<uint32_t> parseMaxRequests(std::string_view text) {
  const std::string range = "0.." + std::to_string(kMaxMaxRequests);
  std::string_view digits = text.substr(!text.empty() && text[0] == '-' ? 1 : 0);
  if (digits.empty() || !std::all_of(digits.begin(), digits.end(), isDigit)) {
    return Error::msg("must be an integer " + range + ", got " + quoted(text));
  }
  while (digits.size() > 1 && digits[0] == '0') digits.remove_prefix(1);
  bool negative = text[0] == '-' && digits != "0";
  if (negative || digits.size() > kMaxWholeDigits || toInteger(digits) > kMaxMaxRequests) {
    return Error::msg("must be " + range + ", got " + std::string(text));
  }
  return static_cast<uint32_t>(toInteger(digits));
}

}  // namespace aimesh
