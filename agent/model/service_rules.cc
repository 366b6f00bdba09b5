#include "model/service_rules.h"

#include <algorithm>
#include <cmath>

#include "model/connection_rules.h"

#include <fmt/format.h>

namespace aimesh {

std::string joinPath(const std::string& base, std::string_view key) {
  if (base.empty()) return std::string(key);
  std::string out = base;
  out += '.';
  out += key;
  return out;
}

std::string indexPath(const std::string& base, size_t i) { return base + "[" + std::to_string(i) + "]"; }

std::string keyPath(const std::string& base, std::string_view key) {
  std::string out = base;
  out += '[';
  out += key;
  out += ']';
  return out;
}

std::string rangeText(long long min, long long max) { return std::to_string(min) + ".." + std::to_string(max); }

std::string notIntegerMessage(long long min, long long max, std::string_view got) {
  return "must be an integer " + rangeText(min, max) + ", got " + std::string(got);
}

std::string outOfRangeMessage(long long min, long long max, std::string_view got) {
  return "must be " + rangeText(min, max) + ", got " + std::string(got);
}

std::optional<std::string> checkDnsLabel(std::string_view s) {
  if (s.empty()) return "must not be empty";
  if (s.size() > kMaxDnsLabelLength) {
    return "must be at most " + std::to_string(kMaxDnsLabelLength) + " characters, got " + std::to_string(s.size());
  }
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  bool ok = alnum(s.front()) && alnum(s.back()) &&
            std::all_of(s.begin(), s.end(), [&](char c) { return alnum(c) || c == '-'; });
  if (!ok) {
    return "must be a DNS label (lowercase letters, digits and '-', starting and ending with a letter or digit), "
           "got '" + std::string(s) + "'";
  }
  return std::nullopt;
}

Result<Algorithm> parseAlgorithmText(const std::string& text) {
  if (auto a = parseAlgorithm(text)) return *a;
  std::string names;
  for (Algorithm a : kAlgorithms) {
    if (!names.empty()) names += ", ";
    names += toString(a);
  }
  return Error::msg("must be one of " + names + ", got '" + text + "'");
}

std::optional<std::string> checkHashTableSize(long long n, std::string_view written) {
  if (n < kMinHashTableSize || n > kMaxHashTableSize) {
    return outOfRangeMessage(kMinHashTableSize, kMaxHashTableSize, written);
  }
  if (!isPrime(static_cast<uint32_t>(n))) {
    // 32749: the largest prime below 2^15, between the default and the largest.
    return "must be a prime (Maglev needs one), got " + std::to_string(n) + "; e.g. " +
           std::to_string(kDefaultHashTableSize) + ", 32749 or " + std::to_string(kMaxHashTableSize);
  }
  return std::nullopt;
}

std::optional<std::string> checkMetricsPath(std::string_view path) {
  if (path.empty() || path[0] != '/' || path.find_first_of(" \t\r\n") != std::string_view::npos) {
    return "must start with '/' and hold no spaces, got '" + std::string(path) + "'";
  }
  return std::nullopt;
}

std::optional<std::string> checkTelemetrySample(double x, std::string_view written) {
  if (!(x > 0) || x > kMaxTelemetrySample) return "must be > 0 and <= 1, got " + std::string(written);
  return std::nullopt;
}

Result<double> parseTelemetrySample(std::string_view text) { return parsePositiveDecimal(text, kMaxTelemetrySample); }

std::optional<std::string> checkSplitBackend(const Service& split, const SplitBackend& b, const Service* target) {
  std::string key = (b.nameSpace.empty() ? split.nameSpace : b.nameSpace) + "/" + b.service;
  if (!target) return "names service " + key + ", which does not exist";
  if (target->key() == split.key()) return "names the split itself";
  if (!target->split.empty()) return "names " + key + ", which is a split itself (splits of splits are not allowed)";
  for (const PortSpec& ps : split.ports) {
    PortSpec want{b.port ? b.port : ps.port, ps.protocol};
    if (std::find(target->ports.begin(), target->ports.end(), want) == target->ports.end())
      return fmt::format("{} has no port {}/{}{}", key, want.port, toString(want.protocol),
                         b.port ? "" : " (the split's port; set 'port' to send to another)");
  }
  return std::nullopt;
}

std::optional<std::string> checkCanaryGuard(const Service& split) {
  if (!split.canaryGuard) return std::nullopt;
  if (split.split.size() < 2) return "a canary guard needs a split over two backend services or more";
  const std::string& primary = split.canaryGuard->primary;
  if (!primary.empty() && std::none_of(split.split.begin(), split.split.end(),
                                       [&](const SplitBackend& b) { return b.service == primary; }))
    return "primary '" + primary + "' is not one of the split's backend services";
  return std::nullopt;
}

namespace {

std::string_view trimmed(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// One key=value of a canary guard's text into g; an error names what is wrong.
std::optional<std::string> setGuardKey(CanaryGuardSpec& g, std::string_view key, std::string_view value) {
  auto number = [&](double min, double max, bool exclusiveMin) -> Result<double> {
    auto x = parsePositiveDecimal(value, max);
    if (!x && value == "0" && !exclusiveMin && min == 0) return 0.0;
    if (!x) return x.error();
    if (*x < min) return Error::msg(fmt::format("must be {:g}..{:g}, got {}", min, max, value));
    return *x;
  };
  auto duration = [&](uint64_t min, uint64_t max, uint64_t& out) -> std::optional<std::string> {
    auto ms = parseDurationMs(value);
    if (!ms) return "must be a duration like 30s or 5m, got '" + std::string(value) + "'";
    if (*ms < min || *ms > max)
      return "must be " + formatDurationMs(min) + ".." + formatDurationMs(max) + ", got " + std::string(value);
    out = *ms;
    return std::nullopt;
  };
  if (key == "primary") {
    if (auto bad = checkDnsLabel(value)) return *bad;
    g.primary = std::string(value);
  } else if (key == "metric") {
    if (value == "ttft_p99") g.metric = GuardMetric::kTtftP99;
    else if (value == "ttft_p50") g.metric = GuardMetric::kTtftP50;
    else return "must be ttft_p99 or ttft_p50, got '" + std::string(value) + "'";
  } else if (key == "max_ratio") {
    auto x = number(kMinGuardRatio, kMaxGuardRatio, false);
    if (!x) return x.error().message();
    g.maxRatio = *x;
  } else if (key == "min_samples") {
    auto x = number(1, static_cast<double>(kMaxGuardSamples), false);
    if (!x || *x != std::floor(*x)) return notIntegerMessage(1, kMaxGuardSamples, value);
    g.minSamples = static_cast<uint32_t>(*x);
  } else if (key == "max_failure_rate") {
    auto x = number(0, 1, false);
    if (!x) return x.error().message();
    g.maxFailureRate = *x;
  } else if (key == "probe_percent") {
    auto x = number(0, kMaxGuardProbePercent, true);
    if (!x) return x.error().message();
    g.probePercent = *x;
  } else if (key == "window") {
    return duration(kMinGuardWindowMs, kMaxGuardWindowMs, g.windowMs);
  } else if (key == "cooldown") {
    return duration(0, kMaxDurationMs, g.cooldownMs);
  } else {
    return "unknown key (known: primary, metric, max_ratio, min_samples, window, max_failure_rate, cooldown, "
           "probe_percent)";
  }
  return std::nullopt;
}

}  // namespace

Result<CanaryGuardSpec> parseCanaryGuardText(std::string_view text) {
  CanaryGuardSpec g;
  text = trimmed(text);
  if (text.empty() || text == "true") return g;
  while (!text.empty()) {
    size_t comma = text.find(',');
    std::string_view item = trimmed(text.substr(0, comma));
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
    size_t eq = item.find('=');
    if (eq == std::string_view::npos)
      return Error::msg("'" + std::string(item) + "': expected key=value, e.g. max_ratio=1.5");
    std::string_view key = trimmed(item.substr(0, eq)), value = trimmed(item.substr(eq + 1));
    if (auto bad = setGuardKey(g, key, value)) return Error::msg(std::string(key) + ": " + *bad);
  }
  return g;
}

double effectiveTelemetrySample(const Service& svc) {
  return svc.connections.followsRequests(svc.algorithm) ? 1.0 : svc.telemetrySample;
}

uint16_t telemetrySkip(double sample) {
  if (!(sample < 1)) return 0;
  double skip = std::round((1 - sample) * 65536);
  return skip >= 65535 ? 65535 : skip <= 0 ? 0 : static_cast<uint16_t>(skip);
}

}  // namespace aimesh
