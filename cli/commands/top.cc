#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <tuple>
#include <vector>

#include <fmt/format.h>

#include "commands/commands.h"
#include "format/bars.h"
#include "format/table.h"

namespace aimesh {
namespace {

volatile std::sig_atomic_t gInterrupted = 0;

void onSigint(int) {
  // A second Ctrl-C while a call to the agent is still waiting out its timeout.
  if (gInterrupted != 0) ::_exit(kExitOk);
  gInterrupted = 1;
}

// The same endpoint in two polls: a backend id can be reused for a new
// endpoint, so the address and service take part too.
bool sameEndpoint(const nlohmann::json& a, const nlohmann::json& b) {
  for (const char* key : {"backend_id", "endpoint", "service", "namespace"}) {
    if (cellText(a, key) != cellText(b, key)) return false;
  }
  return true;
}


std::string latencyCell(const nlohmann::json& e, const char* key) {
  double v = 0;
  // No samples yet: the agent sends null or 0.
  if (!numberAt(e, key, v) || !(v > 0)) return "-";
  return latencyText(v);
}

}  // namespace

PollLoop sigintPollLoop() {
  struct sigaction sa = {};
  sa.sa_handler = onSigint;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: a sleep returns at once on Ctrl-C
  ::sigaction(SIGINT, &sa, nullptr);
  PollLoop loop;
  loop.stopped = [] { return gInterrupted != 0; };
  loop.sleep = [](double seconds) {
    if (!(seconds > 0)) return;
    timespec left{};
    left.tv_sec = static_cast<time_t>(seconds);
    left.tv_nsec = static_cast<long>((seconds - std::floor(seconds)) * 1e9);
    while (gInterrupted == 0 && ::nanosleep(&left, &left) != 0 && errno == EINTR) {
    }
  };
  return loop;
}

std::optional<double> requestRate(const nlohmann::json& previous, const nlohmann::json& current,
                                  const nlohmann::json& endpoint) {
  if (!previous.is_object() || !previous.contains("endpoints") ||
      !previous["endpoints"].is_array()) {
    return std::nullopt;
  }
  double t0 = 0, t1 = 0, r1 = 0;
  if (!numberAt(previous, "time_seconds", t0) || !numberAt(current, "time_seconds", t1) ||
      !numberAt(endpoint, "requests", r1) || !(t1 > t0)) {
    return std::nullopt;
  }
  for (const auto& before : previous["endpoints"]) {
    if (!sameEndpoint(before, endpoint)) continue;
    double r0 = 0;
    if (!numberAt(before, "requests", r0) || r1 < r0) return std::nullopt;
    return (r1 - r0) / (t1 - t0);
  }
  return std::nullopt;
}

CommandOutput formatTopFrame(const nlohmann::json& previous, const nlohmann::json& current,
                             OutputFormat format) {
  CommandOutput result;
  if (!checkResponse(current, "endpoints", result)) return result;
  const nlohmann::json& endpoints = current["endpoints"];
  if (!endpoints.is_array()) {
    return CommandOutput{
        kExitError, "",
        "meshctl: unexpected response from the agent (\"endpoints\" is not a list)\n"};
  }
  if (format == OutputFormat::kJson) {
    result.out = current.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    return result;
  }
  if (endpoints.empty()) {
    result.out = "No endpoints.\n";
    return result;
  }
  std::vector<const nlohmann::json*> rows;
  for (const auto& e : endpoints) rows.push_back(&e);
  auto key = [](const nlohmann::json* e) {
    return std::tuple(cellText(*e, "namespace"), cellText(*e, "service"), cellText(*e, "endpoint"));
  };
  std::stable_sort(rows.begin(), rows.end(),
                   [&](const auto* a, const auto* b) { return key(a) < key(b); });

  Table table(
      {"SERVICE", "ENDPOINT", "ACTIVE", "REQ/S", "TTFT_P50", "TTFT_P99", "GAP_P50", "ERRORS"});
  for (std::size_t c = 2; c < 8; ++c) table.setAlign(c, Table::Align::kRight);
  for (const auto* e : rows) {
    std::optional<double> rate = requestRate(previous, current, *e);
    table.addRow({cellText(*e, "namespace") + "/" + cellText(*e, "service"),
                  cellText(*e, "endpoint"), cellText(*e, "active"),
                  rate ? fmt::format("{:.1f}", *rate) : "-", latencyCell(*e, "ttft_p50"),
                  latencyCell(*e, "ttft_p99"), latencyCell(*e, "gap_p50"), cellText(*e, "errors")});
  }
  result.out = table.render();
  return result;
}

int runTop(const AgentCall& call, const TopOptions& options, OutputFormat format, std::ostream& out,
           std::ostream& err, const PollLoop& loop) {
  nlohmann::json previous;  // null: no rate on the first frame
  for (int frame = 0; options.iterations <= 0 || frame < options.iterations; ++frame) {
    if (frame > 0) {
      loop.sleep(options.intervalSeconds);
      if (loop.stopped()) break;
    }
    auto response = call(nlohmann::json{{"method", "top"}});
    // Ctrl-C while the call was waiting: the answer (or its failure) is moot.
    if (loop.stopped()) break;
    CommandOutput shown =
        response ? formatTopFrame(previous, *response, format) : agentUnreachable(response.error());
    if (shown.exitCode != kExitOk) {
      err << shown.err << std::flush;
      return shown.exitCode;
    }
    if (format == OutputFormat::kTable) {
      if (options.clearScreen) {
        out << "\x1b[H\x1b[2J";
      } else if (frame > 0) {
        out << "\n";
      }
    }
    out << shown.out << std::flush;
    err << shown.err << std::flush;
    previous = std::move(*response);
  }
  return kExitOk;
}

}  // namespace aimesh
