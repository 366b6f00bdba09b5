// The rules for a service's fields (Service in snapshot.h) that both
// sources check: the state file (source/state_file.cc) and the Kubernetes
// objects and annotations (source/kube_objects.cc). Each rule is here once,
// so a value is accepted, bounded and reported the same in either (issue
// #14: no rule kept twice). The connection policy's values have their own
// file, connection_rules.h. How a value is typed (a YAML scalar, a JSON
// number, annotation text), where an error is reported and what is kept
// instead stay with each source.
//
// Messages are the text after the field, such as "must be 7..65521, got 3";
// a source prefixes the field or annotation ("services[0].hash_table_size: ",
// "Service ml/llama: annotation aimesh.io/hash-table-size: ").
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "lb/maglev.h"
#include "model/snapshot.h"
#include "util/result.h"

namespace aimesh {

// ---- bounds -----------------------------------------------------------------

// A service's port, an endpoint's port, a model-metrics port.
inline constexpr long long kMinPort = 1;
inline constexpr long long kMaxPort = 65535;
// Endpoint::weight: 0 (no new connections) up to this.
inline constexpr long long kMaxWeight = 65535;
// Service::hashTableSize: a prime in this range. The largest is the kernel's
// (AIMESH_MAX_HASH_SIZE, the same as kMaglevMaxSize).
inline constexpr long long kMinHashTableSize = 7;
inline constexpr long long kMaxHashTableSize = kMaglevMaxSize;
// bounded_hash's load bound as a factor of the average (Service::balancePct
// is this × 100).
inline constexpr double kMinHashBalanceFactor = 1;
inline constexpr double kMaxHashBalanceFactor = 10;
// Service::telemetrySample: > 0 and <= this.
inline constexpr double kMaxTelemetrySample = 1;
// An RFC 1123 label: a service name or namespace.
inline constexpr size_t kMaxDnsLabelLength = 63;

// A split's backend services: 1..kMaxSplitBackends of them, each weight
// 0..kMaxSplitWeight (snapshot.h).
// CanaryGuardSpec: the ratio bound, samples, window and probe share.
inline constexpr double kMinGuardRatio = 1;
inline constexpr double kMaxGuardRatio = 100;
inline constexpr long long kMaxGuardSamples = 1'000'000;
inline constexpr uint64_t kMinGuardWindowMs = 1'000;
inline constexpr uint64_t kMaxGuardWindowMs = 3'600'000;
inline constexpr double kMaxGuardProbePercent = 50;

// ---- where an error is --------------------------------------------------------
// Paths name a field the way the user wrote it: "services[3].ports[0].port",
// "spec.ports[1].port", "metadata.labels[app]".

// "services[0]" and "port" → "services[0].port"; "" and "services" → "services".
std::string joinPath(const std::string& base, std::string_view key);
// "services" and 3 → "services[3]".
std::string indexPath(const std::string& base, size_t i);
// "metadata.labels" and "app" → "metadata.labels[app]".
std::string keyPath(const std::string& base, std::string_view key);

// ---- integers -----------------------------------------------------------------

// "1..65535".
std::string rangeText(long long min, long long max);
// "must be an integer 1..65535, got 'http'": the value is no integer at all.
// got is the value as the source describes it ('http', string "8000", 80.5).
std::string notIntegerMessage(long long min, long long max, std::string_view got);
// "must be 1..65535, got 70000": an integer out of range; got as written.
std::string outOfRangeMessage(long long min, long long max, std::string_view got);

// ---- rules --------------------------------------------------------------------

// A service name or namespace: an RFC 1123 label, as Kubernetes names
// namespaces (lowercase letters, digits and '-', starting and ending with a
// letter or digit, 1 to kMaxDnsLabelLength characters).
std::optional<std::string> checkDnsLabel(std::string_view s);

// Service::algorithm by its name, as toString(Algorithm) writes it.
Result<Algorithm> parseAlgorithmText(const std::string& text);

// Service::hashTableSize: a prime kMinHashTableSize..kMaxHashTableSize (Maglev
// needs a prime). written is n as the user wrote it, quoted when out of range.
std::optional<std::string> checkHashTableSize(long long n, std::string_view written);

// ModelMetricsSpec::path: starts with '/', no spaces, tabs or line breaks.
std::optional<std::string> checkMetricsPath(std::string_view path);

// Service::telemetrySample: > 0 and <= 1. written is x as the user wrote it.
std::optional<std::string> checkTelemetrySample(double x, std::string_view written);
// The same from annotation text ("0.1").
Result<double> parseTelemetrySample(std::string_view text);
// What is wrong with split backend `b` of `split`, given the service it
// names (null if there is none): it must exist, not be a split itself
// (splits of splits are not followed, so there are no cycles either), and
// have, for every port of the split, the port `b` takes (its own `port`,
// or the split port's number) with the split port's protocol. nullopt if
// nothing is.
std::optional<std::string> checkSplitBackend(const Service& split, const SplitBackend& b, const Service* target);

// What is wrong with a split's canary guard (nullopt: nothing): it needs
// two backend services or more, and its primary must be one of them.
std::optional<std::string> checkCanaryGuard(const Service& split);

// A canary guard written as text, as the aimesh.io/canary-guard annotation
// holds it: "key=value" pairs separated by ',' with the state file's keys
// (primary, metric, max_ratio, min_samples, window, max_failure_rate,
// cooldown, probe_percent) and bounds; unset keys keep their defaults.
// "" and "true" mean every default. Errors name the key, e.g.
// "max_ratio: must be > 0 and <= 100, got 0.5".
Result<CanaryGuardSpec> parseCanaryGuardText(std::string_view text);

// The sample in force: 1 where the connection lifecycle follows every
// connection's requests (ConnectionPolicy::followsRequests), else the
// service's own.
double effectiveTelemetrySample(const Service& svc);
// aimesh_service.sample_skip for a sample: a connection is measured when
// (random & 0xffff) >= skip, so 0 measures all, 65535 one in 65,536.
uint16_t telemetrySkip(double sample);

}  // namespace aimesh
