// meshctl connections: the connections open now to each endpoint (idle, busy,
// oldest, requests per connection) and how many aimesh closed itself, and why;
// with --each, every connection under its endpoint. The agent walks the
// sockets with a socket iterator; meshctl only formats its answer.
#include <algorithm>
#include <array>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "commands/commands.h"
#include "commands/view_cells.h"
#include "format/table.h"

namespace aimesh {
namespace {

// The reasons of "closed" in the order the CLOSED column names them: the
// endpoint went away, then the balancer's choices, then the connection limits.
constexpr std::array<const char*, 6> kCloseReasons = {"removed",    "drained", "ejected",
                                                      "rebalanced", "max_age", "max_requests"};

std::string describe(const ConnectionsQuery& query) {
  return query.ns.empty() ? query.service : query.ns + "/" + query.service;
}

using EC = view::EndpointConnections;
using C = view::Connection;

// "ml/llama:8000".
std::string serviceText(const Item<EC>& e) {
  return e.cell(&EC::nameSpace) + "/" + e.cell(&EC::service) + ":" + e.cell(&EC::port);
}

std::string stateText(const Item<EC>& e) {
  std::string state = e.cell(&EC::state);
  if (e.view().ejected) state += " (ejected)";
  return state;
}

// A duration in seconds as "12.3s" / "1m20s"; "-" when absent.
template <view::View T>
std::string durationCell(const Item<T>& item, double T::* member) {
  return item.has(member) ? formatDuration(item.view().*member) : "-";
}

// requests / open, one decimal; "-" when nothing is open (the endpoint's
// requests count only connections open now, so there is nothing to divide).
std::string requestsPerConnection(const Item<EC>& e) {
  if (!e.has(&EC::open) || !(e.view().open > 0) || !e.has(&EC::requests)) return "-";
  return fmt::format("{:.1f}", static_cast<double>(e.view().requests) / static_cast<double>(e.view().open));
}

// The non-zero reasons of "closed": "rebalanced 4, max_age 1"; "-" when none.
// Reasons this meshctl does not know (a newer agent) follow, by name.
std::string closedText(const EC& e) {
  std::vector<std::string> parts;
  auto add = [&](const std::string& reason, uint64_t count) {
    if (count > 0) parts.push_back(reason + " " + std::to_string(count));
  };
  for (const char* reason : kCloseReasons) {
    if (auto c = e.closed.find(reason); c != e.closed.end()) add(reason, c->second);
  }
  for (const auto& [reason, count] : e.closed) {
    if (std::find_if(kCloseReasons.begin(), kCloseReasons.end(), [&](const char* known) {
          return reason == known;
        }) == kCloseReasons.end()) {
      add(reason, count);
    }
  }
  if (parts.empty()) return "-";
  std::string out = parts[0];
  for (std::size_t i = 1; i < parts.size(); ++i) out += ", " + parts[i];
  return out;
}

// "idle 0.4s" for an idle connection (how long since its last request
// ended), the bare state otherwise.
std::string connectionStateText(const Item<C>& c) {
  std::string state = c.cell(&C::state);
  if (state == "idle" && c.view().idleSeconds) state += " " + formatDuration(*c.view().idleSeconds);
  return state;
}

// An endpoint's connections, oldest first; one without an age goes last.
std::vector<Item<C>> connectionsByAge(const Item<EC>& e) {
  std::vector<Item<C>> out;
  for (std::size_t i = 0; i < e.view().connections.size(); ++i) out.push_back(itemAt(e, &EC::connections, i));
  auto age = [](const Item<C>& c) { return c.has(&C::ageSeconds) ? c.view().ageSeconds : -1.0; };
  std::stable_sort(out.begin(), out.end(), [&](const auto& a, const auto& b) { return age(a) > age(b); });
  return out;
}

// Splits a rendered table into its lines (each keeps its '\n').
std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    end = end == std::string::npos ? text.size() : end + 1;
    out.push_back(text.substr(start, end - start));
    start = end;
  }
  return out;
}

// The agent's answer as a view, or the error to print: {"error": ...}, a
// malformed answer, or an agent that cannot walk sockets on this node.
std::optional<view::Connections> parseConnections(const nlohmann::json& response, CommandOutput& failure) {
  if (!checkResponse(response, "endpoints", failure)) return std::nullopt;
  if (auto it = response.find("available"); it != response.end() && !it->is_boolean()) {
    failure = CommandOutput{kExitError, "",
                            "meshctl: unexpected response from the agent (\"available\" is not a boolean)\n"};
    return std::nullopt;
  }
  if (!response["endpoints"].is_array()) {
    failure = CommandOutput{kExitError, "", "meshctl: unexpected response from the agent (\"endpoints\" is not a list)\n"};
    return std::nullopt;
  }
  std::optional<view::Connections> parsed = parseResponse<view::Connections>(response, failure);
  if (!parsed) return std::nullopt;
  if (Item<view::Connections> all(*parsed, response); all.has(&view::Connections::available) && !parsed->available) {
    std::string reason = all.cell(&view::Connections::reason);
    failure = CommandOutput{kExitError, "",
                            "meshctl: the agent cannot list connections on this node: " +
                                (reason == "-" ? std::string("no reason given") : reason) + "\n"};
    return std::nullopt;
  }
  return parsed;
}

std::string nothingOpen(const ConnectionsQuery& query) {
  if (!query.service.empty()) return "No open connections to service " + describe(query) + ".\n";
  if (!query.ns.empty()) return "No open connections in namespace " + query.ns + ".\n";
  return "No open connections.\n";
}

// With --each: the endpoint table's rows, each followed by its connections'
// rows (the connections' header repeated under each endpoint that has any),
// indented. `perEndpoint[i]` connection rows belong to endpoint row i.
std::string interleave(const Table& endpoints, const Table& connections, const std::vector<std::size_t>& perEndpoint) {
  std::vector<std::string> endpointLines = lines(endpoints.render());
  std::vector<std::string> connLines = lines(connections.render());
  std::string out = endpointLines[0];
  std::size_t next = 1;  // connLines[0] is the header
  for (std::size_t i = 0; i < perEndpoint.size(); ++i) {
    out += endpointLines[i + 1];
    if (perEndpoint[i] == 0) continue;
    out += "  " + connLines[0];
    for (std::size_t k = 0; k < perEndpoint[i]; ++k) out += "  " + connLines[next++];
  }
  return out;
}

}  // namespace

CommandOutput formatConnections(const nlohmann::json& response, const ConnectionsQuery& query,
                                OutputFormat format) {
  CommandOutput result;
  std::optional<view::Connections> parsed = parseConnections(response, result);
  if (!parsed) return result;
  if (format == OutputFormat::kJson) return CommandOutput{kExitOk, prettyJson(response), ""};
  if (parsed->endpoints.empty()) return CommandOutput{kExitOk, "", nothingOpen(query)};

  // Rows in the order the agent sent them.
  Table table({"SERVICE", "ENDPOINT", "STATE", "OPEN", "IDLE", "BUSY", "OLDEST", "REQ/CONN",
               "CLOSED"});
  for (std::size_t c = 3; c < 8; ++c) table.setAlign(c, Table::Align::kRight);
  // With --each: every endpoint's connections in one table, so their columns
  // line up across endpoints; its lines are then dealt out under each row.
  Table conns({"CLIENT", "PROTO", "AGE", "REQUESTS", "STATE"});
  conns.setAlign(2, Table::Align::kRight);
  conns.setAlign(3, Table::Align::kRight);
  std::vector<std::size_t> perEndpoint;
  Item<view::Connections> all(*parsed, response);
  for (std::size_t i = 0; i < parsed->endpoints.size(); ++i) {
    Item<EC> e = itemAt(all, &view::Connections::endpoints, i);
    bool anyOpen = e.has(&EC::open) && e.view().open > 0;
    table.addRow({serviceText(e), e.cell(&EC::endpoint), stateText(e), e.cell(&EC::open), e.cell(&EC::idle),
                  e.cell(&EC::busy), anyOpen ? durationCell(e, &EC::oldestSeconds) : "-",
                  requestsPerConnection(e), closedText(e.view())});
    if (!query.each) continue;
    std::vector<Item<C>> rows = connectionsByAge(e);
    for (const auto& c : rows) {
      conns.addRow({c.cell(&C::client), c.cell(&C::protocol), durationCell(c, &C::ageSeconds),
                    c.cell(&C::requests), connectionStateText(c)});
    }
    perEndpoint.push_back(rows.size());
  }
  result.out = query.each ? interleave(table, conns, perEndpoint) : table.render();
  return result;
}

CommandOutput runConnections(const AgentCall& call, const ConnectionsQuery& query,
                             OutputFormat format) {
  // An unknown service is the agent's {"error": ...}: no services lookup needed.
  auto response = call(nlohmann::json{
      {"method", "connections"}, {"service", query.service}, {"namespace", query.ns}});
  if (!response) return agentUnreachable(response.error());
  return formatConnections(*response, query, format);
}

}  // namespace aimesh
