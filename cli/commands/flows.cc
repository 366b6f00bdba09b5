#include <time.h>

#include <cmath>
#include <cstdint>
#include <iterator>

#include <fmt/format.h>

#include "commands/commands.h"
#include "format/bars.h"

namespace aimesh {
namespace {


// 512 → "512B", 1229 → "1.2KiB", 50331648 → "48.0MiB".
std::string bytesText(double bytes) {
  if (!std::isfinite(bytes) || bytes < 0) return "-";
  if (bytes < 1024) return fmt::format("{:.0f}B", bytes);
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  double v = bytes;
  std::size_t u = 0;
  for (v /= 1024; v >= 1024 && u + 1 < std::size(units); ++u) v /= 1024;
  return fmt::format("{:.1f}{}", v, units[u]);
}

// HH:MM:SS.mmm of a monotonic timestamp.
std::string timeOfDay(double monotonicSeconds, const FlowClock& clock) {
  if (!std::isfinite(monotonicSeconds)) return "--:--:--.---";
  auto ms = static_cast<long long>(std::llround((monotonicSeconds + clock.offsetSeconds) * 1000));
  time_t secs = static_cast<time_t>(ms / 1000);
  tm parts{};
  if (clock.utc) {
    ::gmtime_r(&secs, &parts);
  } else {
    ::localtime_r(&secs, &parts);
  }
  return fmt::format("{:02}:{:02}:{:02}.{:03}", parts.tm_hour, parts.tm_min, parts.tm_sec,
                     ms % 1000);
}

std::string field(const nlohmann::json& event, const char* key, const char* label,
                  std::string (*text)(double)) {
  double v = 0;
  if (!numberAt(event, key, v)) return "";
  return fmt::format(" {}={}", label, text(v));
}

std::string countText(double v) { return fmt::format("{:.0f}", v); }

}  // namespace

FlowClock systemFlowClock() {
  timespec real{}, mono{};
  ::clock_gettime(CLOCK_REALTIME, &real);
  ::clock_gettime(CLOCK_MONOTONIC, &mono);
  FlowClock clock;
  clock.offsetSeconds = static_cast<double>(real.tv_sec - mono.tv_sec) +
                        static_cast<double>(real.tv_nsec - mono.tv_nsec) * 1e-9;
  return clock;
}

std::string formatFlowEvent(const nlohmann::json& event, const FlowClock& clock) {
  double t = NAN;
  numberAt(event, "time_seconds", t);
  std::string type = cellText(event, "type");
  std::string line = fmt::format("{} {:<6} {}/{}", timeOfDay(t, clock), type,
                                 cellText(event, "namespace"), cellText(event, "service"));
  if (type == "no_backend") return line + " (no usable endpoint)\n";
  if (type == "denied")
    return line + " (not allowed by policy: client cgroup " + cellText(event, "client_cgroup_id") + ")\n";
  line += " -> " + cellText(event, "endpoint");
  if (type == "open") {
    line += field(event, "duration_seconds", "connect", latencyText);
  } else if (type == "refused" || type == "timeout") {
    line += field(event, "duration_seconds", "after", latencyText);
  } else if (type == "close" || type == "reset") {
    line += field(event, "duration_seconds", "duration", latencyText);
    line += field(event, "requests", "requests", countText);
    line += field(event, "bytes_sent", "sent", bytesText);
    line += field(event, "bytes_received", "received", bytesText);
    line += field(event, "retransmits", "retransmits", countText);
  }
  return line + "\n";
}

CommandOutput formatFlows(const nlohmann::json& response, const FlowClock& clock,
                          OutputFormat format) {
  CommandOutput result;
  if (!checkResponse(response, "events", result)) return result;
  const nlohmann::json& events = response["events"];
  if (!events.is_array()) {
    return CommandOutput{
        kExitError, "", "meshctl: unexpected response from the agent (\"events\" is not a list)\n"};
  }
  double dropped = 0;
  if (numberAt(response, "dropped", dropped) && dropped > 0) {
    result.err = fmt::format(
        "meshctl: {:.0f} flow events were lost before these (the agent's buffer overflowed)\n",
        dropped);
  }
  for (const auto& e : events) {
    result.out += format == OutputFormat::kJson
                      ? e.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"
                      : formatFlowEvent(e, clock);
  }
  return result;
}

int runFlows(const AgentCall& call, const FlowsOptions& options, OutputFormat format,
             const FlowClock& clock, std::ostream& out, std::ostream& err, const PollLoop& loop) {
  nlohmann::json since = 0;
  bool printedAny = false;
  // The agent may answer a request with only part of what it has (a page);
  // ask again at once while pages keep coming, and wait only after an empty
  // one. Without -f a steady stream of new events must not keep us going.
  int pages = 0;
  for (;;) {
    auto response = call(nlohmann::json{{"method", "flows"}, {"since", since}});
    if (options.follow && loop.stopped()) break;
    CommandOutput shown =
        response ? formatFlows(*response, clock, format) : agentUnreachable(response.error());
    out << shown.out << std::flush;
    err << shown.err << std::flush;
    if (shown.exitCode != kExitOk) return shown.exitCode;
    printedAny = printedAny || !(*response)["events"].empty();

    // Keep our place; an agent that sends no "next" gets the same `since` again.
    bool advanced = false;
    if (auto it = response->find("next"); it != response->end() && it->is_number()) {
      advanced = *it != since;
      since = *it;
    }
    bool more = advanced && !(*response)["events"].empty();
    if (!options.follow) {
      if (more && ++pages < kFlowsMaxPages) continue;
      break;
    }
    if (loop.stopped()) break;
    if (more) continue;
    loop.sleep(options.intervalSeconds);
    if (loop.stopped()) break;
  }
  if (!options.follow && !printedAny && format == OutputFormat::kTable) {
    err << "No flow events.\n";
  }
  return kExitOk;
}

}  // namespace aimesh
