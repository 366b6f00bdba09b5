#include <time.h>

#include <cmath>
#include <cstdint>
#include <iterator>

#include <fmt/format.h>

#include "commands/commands.h"
#include "commands/view_cells.h"
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

using F = view::Flow;

// " label=text", or nothing when the agent did not send the field.
template <class N>
std::string field(const Item<F>& event, N F::* member, const char* label, std::string (*text)(double)) {
  if (!event.has(member)) return "";
  return fmt::format(" {}={}", label, text(static_cast<double>(event.view().*member)));
}

std::string countText(double v) { return fmt::format("{:.0f}", v); }

std::string eventLine(const Item<F>& event, const FlowClock& clock) {
  double t = event.has(&F::timeSeconds) ? event.view().timeSeconds : NAN;
  std::string type = event.cell(&F::type);
  std::string line = fmt::format("{} {:<6} {}/{}", timeOfDay(t, clock), type, event.cell(&F::nameSpace),
                                 event.cell(&F::service));
  if (type == "no_backend") return line + " (no usable endpoint)\n";
  if (type == "denied")
    return line + " (not allowed by policy: client cgroup " + event.cell(&F::clientCgroupId) + ")\n";
  line += " -> " + event.cell(&F::endpoint);
  if (type.rfind("guard_", 0) == 0) {  // the agent's canary guard: a backend service's new state, and why
    const auto& reason = event.view().reason;
    if (reason && !reason->empty()) line += ": " + *reason;
  } else if (type == "open") {
    line += field(event, &F::durationSeconds, "connect", latencyText);
  } else if (type == "refused" || type == "timeout") {
    line += field(event, &F::durationSeconds, "after", latencyText);
  } else if (type == "close" || type == "reset") {
    line += field(event, &F::durationSeconds, "duration", latencyText);
    line += field(event, &F::requests, "requests", countText);
    line += field(event, &F::bytesSent, "sent", bytesText);
    line += field(event, &F::bytesReceived, "received", bytesText);
    line += field(event, &F::retransmits, "retransmits", countText);
  }
  return line + "\n";
}

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
  // An event that does not parse shows what it can: nothing.
  auto parsed = view::parseView<F>(event);
  static const nlohmann::json kNothing = nlohmann::json::object();
  return parsed ? eventLine(Item<F>(*parsed, event), clock) : eventLine(Item<F>(F{}, kNothing), clock);
}

CommandOutput formatFlows(const nlohmann::json& response, const FlowClock& clock,
                          OutputFormat format) {
  CommandOutput result;
  if (!checkResponse(response, "events", result)) return result;
  if (!response["events"].is_array()) {
    return CommandOutput{
        kExitError, "", "meshctl: unexpected response from the agent (\"events\" is not a list)\n"};
  }
  std::optional<view::Flows> parsed = parseResponse<view::Flows>(response, result);
  if (!parsed) return result;
  if (parsed->dropped > 0) {
    result.err = fmt::format(
        "meshctl: {} flow events were lost before these (the agent's buffer overflowed)\n", parsed->dropped);
  }
  Item<view::Flows> all(*parsed, response);
  for (std::size_t i = 0; i < parsed->events.size(); ++i) {
    Item<F> e = itemAt(all, &view::Flows::events, i);
    result.out += format == OutputFormat::kJson
                      ? e.json().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"
                      : eventLine(e, clock);
  }
  return result;
}

int runFlows(const AgentCall& call, const FlowsOptions& options, OutputFormat format,
             const FlowClock& clock, std::ostream& out, std::ostream& err, const PollLoop& loop) {
  uint64_t since = 0;
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
    // formatFlows() accepted it, so it parses.
    view::Flows page = *view::parseView<view::Flows>(*response);
    printedAny = printedAny || !page.events.empty();

    // Keep our place; an agent that sends no "next" gets the same `since` again.
    bool advanced = false;
    if (Item<view::Flows>(page, *response).has(&view::Flows::next)) {
      advanced = page.next != since;
      since = page.next;
    }
    bool more = advanced && !page.events.empty();
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
