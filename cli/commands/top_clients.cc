// meshctl top --clients: one frame of the agent's "clients" answer, who
// calls which service, with rates from the previous poll (top.cc polls).
#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include <fmt/format.h>

#include "commands/commands.h"
#include "commands/view_cells.h"
#include "format/table.h"

namespace aimesh {
namespace {

using C = view::Clients;
using CR = view::ClientRow;

// The pairs past the agent's top K, summed per service.
bool isOther(const Item<CR>& row) { return row.view().client == "other"; }

// The same (client, service port) pair in two polls. The cgroup id takes part: a
// pod restarted under the same name is a new cgroup whose counters start at 0.
bool samePair(const Item<CR>& a, const Item<CR>& b) {
  return a.cell(&CR::client) == b.cell(&CR::client) && a.cell(&CR::cgroupId) == b.cell(&CR::cgroupId) &&
         a.cell(&CR::service) == b.cell(&CR::service) && a.cell(&CR::nameSpace) == b.cell(&CR::nameSpace) &&
         a.cell(&CR::port) == b.cell(&CR::port) && a.cell(&CR::protocol) == b.cell(&CR::protocol);
}

// Calls made: TCP connects plus unconnected UDP sends (an agent that left
// "datagrams" out counts none); nullopt when "connections" was not sent.
std::optional<uint64_t> callsMade(const Item<CR>& row) {
  if (!row.has(&CR::connections)) return std::nullopt;
  return row.view().connections + row.view().datagrams;
}

std::optional<uint64_t> requestsMade(const Item<CR>& row) {
  if (!row.has(&CR::requests)) return std::nullopt;
  return row.view().requests;
}

std::string countCell(std::optional<uint64_t> n) { return n ? std::to_string(*n) : "-"; }

// A previous poll that can give rates: one that parses and has its list.
std::optional<C> previousPoll(const nlohmann::json& previous) {
  if (!previous.is_object() || !previous.contains("clients") || !previous["clients"].is_array()) {
    return std::nullopt;
  }
  auto parsed = view::parseView<C>(previous);
  if (!parsed) return std::nullopt;
  return std::move(*parsed);
}

// Per second of `counter` for `row` since the same pair in `previous`; nullopt
// without a previous poll, for a new pair, when time did not advance or when
// the counter went backwards (the agent restarted, the cgroup's entry was
// deleted, or "other" lost pairs to the top K).
template <class Counter>
std::optional<double> rate(const std::optional<Item<C>>& previous, const Item<C>& current, const Item<CR>& row,
                           Counter counter) {
  if (!previous || !previous->has(&C::timeSeconds) || !current.has(&C::timeSeconds)) return std::nullopt;
  double t0 = previous->view().timeSeconds, t1 = current.view().timeSeconds;
  std::optional<uint64_t> now = counter(row);
  if (!(t1 > t0) || !now) return std::nullopt;
  for (std::size_t i = 0; i < previous->view().clients.size(); ++i) {
    Item<CR> before = itemAt(*previous, &C::clients, i);
    if (!samePair(before, row)) continue;
    std::optional<uint64_t> then = counter(before);
    if (!then || *now < *then) return std::nullopt;
    return static_cast<double>(*now - *then) / (t1 - t0);
  }
  return std::nullopt;
}

std::string rateCell(std::optional<double> r) { return r ? fmt::format("{:.1f}", *r) : "-"; }

// By namespace/service; within a service the busiest pair first, "other"
// last, then by client and cgroup so equal rows keep their place between
// frames.
void sortRows(std::vector<Item<CR>>& rows) {
  auto key = [](const Item<CR>& r) {
    const CR& v = r.view();
    uint64_t load = v.connections + v.datagrams + v.requests;
    // ~load: the larger the load, the earlier the row.
    return std::tuple(v.nameSpace, v.service, v.port, v.protocol, isOther(r), ~load, v.client, v.cgroupId);
  };
  std::stable_sort(rows.begin(), rows.end(), [&](const auto& a, const auto& b) { return key(a) < key(b); });
}

}  // namespace

CommandOutput formatClientsFrame(const nlohmann::json& previous, const nlohmann::json& current,
                                 OutputFormat format) {
  CommandOutput result;
  if (!checkResponse(current, "clients", result)) return result;
  if (!current["clients"].is_array()) {
    return CommandOutput{kExitError, "", "meshctl: unexpected response from the agent (\"clients\" is not a list)\n"};
  }
  std::optional<C> parsed = parseResponse<C>(current, result);
  if (!parsed) return result;
  if (format == OutputFormat::kJson) {
    result.out = current.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    return result;
  }
  if (parsed->clients.empty()) {
    result.out = "No clients yet.\n";
    return result;
  }
  Item<C> now(*parsed, current);
  std::optional<C> before = previousPoll(previous);
  std::optional<Item<C>> then;
  if (before) then.emplace(*before, previous);

  std::vector<Item<CR>> rows;
  for (std::size_t i = 0; i < parsed->clients.size(); ++i) rows.push_back(itemAt(now, &C::clients, i));
  sortRows(rows);

  Table table({"CLIENT", "SERVICE", "PORT", "CONN/S", "REQ/S", "CONNECTIONS", "REQUESTS", "REFUSED", "DENIED"});
  for (std::size_t c = 3; c < 9; ++c) table.setAlign(c, Table::Align::kRight);
  for (const auto& r : rows) {
    std::string port = r.has(&CR::port) ? r.cell(&CR::port) + "/" + r.cell(&CR::protocol) : "-";
    table.addRow({r.cell(&CR::client), r.cell(&CR::nameSpace) + "/" + r.cell(&CR::service), port,
                  rateCell(rate(then, now, r, callsMade)), rateCell(rate(then, now, r, requestsMade)),
                  countCell(callsMade(r)), countCell(requestsMade(r)), r.cell(&CR::refused),
                  r.cell(&CR::denied)});
  }
  result.out = table.render();
  return result;
}

}  // namespace aimesh
