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
#include "commands/view_cells.h"
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

using T = view::Top;
using TE = view::TopEndpoint;

// The same endpoint in two polls: a backend id can be reused for a new
// endpoint, so the address and service take part too.
bool sameEndpoint(const Item<TE>& a, const Item<TE>& b) {
  return a.cell(&TE::backendId) == b.cell(&TE::backendId) && a.cell(&TE::endpoint) == b.cell(&TE::endpoint) &&
         a.cell(&TE::service) == b.cell(&TE::service) && a.cell(&TE::nameSpace) == b.cell(&TE::nameSpace);
}

std::string latencyCell(const Item<TE>& e, double TE::* member) {
  // No samples yet: the agent sends null or 0.
  if (!e.has(member) || !(e.view().*member > 0)) return "-";
  return latencyText(e.view().*member);
}

// A previous poll that can give rates: one that parses and has its list.
std::optional<T> previousPoll(const nlohmann::json& previous) {
  if (!previous.is_object() || !previous.contains("endpoints") || !previous["endpoints"].is_array()) {
    return std::nullopt;
  }
  auto parsed = view::parseView<T>(previous);
  if (!parsed) return std::nullopt;
  return std::move(*parsed);
}

std::optional<double> rate(const std::optional<Item<T>>& previous, const Item<T>& current,
                           const Item<TE>& endpoint) {
  if (!previous || !previous->has(&T::timeSeconds) || !current.has(&T::timeSeconds) ||
      !endpoint.has(&TE::requests)) {
    return std::nullopt;
  }
  double t0 = previous->view().timeSeconds, t1 = current.view().timeSeconds;
  if (!(t1 > t0)) return std::nullopt;
  for (std::size_t i = 0; i < previous->view().endpoints.size(); ++i) {
    Item<TE> before = itemAt(*previous, &T::endpoints, i);
    if (!sameEndpoint(before, endpoint)) continue;
    uint64_t r0 = before.view().requests, r1 = endpoint.view().requests;
    if (!before.has(&TE::requests) || r1 < r0) return std::nullopt;
    return static_cast<double>(r1 - r0) / (t1 - t0);
  }
  return std::nullopt;
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
  std::optional<T> before = previousPoll(previous);
  auto now = view::parseView<T>(current);
  auto e = view::parseView<TE>(endpoint);
  if (!before || !now || !e) return std::nullopt;
  return rate(Item<T>(*before, previous), Item<T>(*now, current), Item<TE>(*e, endpoint));
}

CommandOutput formatTopFrame(const nlohmann::json& previous, const nlohmann::json& current,
                             OutputFormat format) {
  CommandOutput result;
  if (!checkResponse(current, "endpoints", result)) return result;
  if (!current["endpoints"].is_array()) {
    return CommandOutput{
        kExitError, "",
        "meshctl: unexpected response from the agent (\"endpoints\" is not a list)\n"};
  }
  std::optional<T> parsed = parseResponse<T>(current, result);
  if (!parsed) return result;
  if (format == OutputFormat::kJson) {
    result.out = current.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    return result;
  }
  if (parsed->endpoints.empty()) {
    result.out = "No endpoints.\n";
    return result;
  }
  Item<T> now(*parsed, current);
  std::optional<T> before = previousPoll(previous);
  std::optional<Item<T>> then;
  if (before) then.emplace(*before, previous);

  std::vector<Item<TE>> rows;
  for (std::size_t i = 0; i < parsed->endpoints.size(); ++i) rows.push_back(itemAt(now, &T::endpoints, i));
  auto key = [](const Item<TE>& e) {
    return std::tuple(e.cell(&TE::nameSpace), e.cell(&TE::service), e.cell(&TE::endpoint));
  };
  std::stable_sort(rows.begin(), rows.end(), [&](const auto& a, const auto& b) { return key(a) < key(b); });

  // A GUARD column only when a canary guard watches some endpoint here.
  bool guarded = std::any_of(rows.begin(), rows.end(), [](const Item<TE>& e) { return e.view().guard.has_value(); });
  std::vector<std::string> header{"SERVICE", "ENDPOINT", "ACTIVE", "REQ/S", "TTFT_P50", "TTFT_P99", "GAP_P50", "ERRORS"};
  if (guarded) header.push_back("GUARD");
  Table table(header);
  for (std::size_t c = 2; c < 8; ++c) table.setAlign(c, Table::Align::kRight);
  for (const auto& e : rows) {
    std::optional<double> r = rate(then, now, e);
    std::vector<std::string> row{e.cell(&TE::nameSpace) + "/" + e.cell(&TE::service), e.cell(&TE::endpoint),
                                 e.cell(&TE::active), r ? fmt::format("{:.1f}", *r) : "-", latencyCell(e, &TE::ttftP50),
                                 latencyCell(e, &TE::ttftP99), latencyCell(e, &TE::gapP50), e.cell(&TE::errors)};
    if (guarded) row.push_back(e.view().guard.value_or(""));
    table.addRow(row);
  }
  result.out = table.render();
  return result;
}

int runTop(const AgentCall& call, const TopOptions& options, OutputFormat format, std::ostream& out,
           std::ostream& err, const PollLoop& loop) {
  nlohmann::json previous;  // null: no rate on the first frame
  const char* method = options.clients ? "clients" : "top";
  auto formatFrame = options.clients ? formatClientsFrame : formatTopFrame;
  for (int frame = 0; options.iterations <= 0 || frame < options.iterations; ++frame) {
    if (frame > 0) {
      loop.sleep(options.intervalSeconds);
      if (loop.stopped()) break;
    }
    auto response = call(nlohmann::json{{"method", method}});
    // Ctrl-C while the call was waiting: the answer (or its failure) is moot.
    if (loop.stopped()) break;
    CommandOutput shown =
        response ? formatFrame(previous, *response, format) : agentUnreachable(response.error());
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
