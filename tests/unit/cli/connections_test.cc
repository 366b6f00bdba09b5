// meshctl connections: tables rendered from the agent's "connections"
// responses (per endpoint, and with --each per connection), the not-available
// and error answers, and the request runConnections() sends; no agent.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "commands/commands.h"

namespace aimesh {
namespace {

using nlohmann::json;

// Four endpoints: one serving, one removed from the state with connections
// still open to it, one draining and ejected with none left, and a UDP one.
const json kConnections = json::parse(R"({
  "available": true, "reason": "", "namespaces_walked": 2,
  "endpoints": [
    {"service": "llama", "namespace": "ml", "port": 8000, "protocol": "TCP",
     "endpoint": "10.77.0.2:8000", "backend_id": 3, "state": "active", "ejected": false,
     "open": 3, "idle": 2, "busy": 1, "oldest_seconds": 80.2, "requests": 20,
     "closed": {"removed": 0, "drained": 0, "ejected": 0, "rebalanced": 4, "max_age": 1, "max_requests": 0},
     "connections": [
       {"cookie": 4097, "protocol": "TCP", "client": "10.77.0.1:45678", "age_seconds": 12.3,
        "requests": 8, "state": "idle", "idle_seconds": 0.4, "netns": 4026532281},
       {"cookie": 4098, "protocol": "TCP", "client": "10.77.0.1:45680", "age_seconds": 80.2,
        "requests": 11, "state": "busy", "netns": 4026532281},
       {"cookie": 4099, "protocol": "TCP", "client": "[fd00::1]:50000", "age_seconds": 1.5,
        "requests": 1, "state": "idle", "idle_seconds": 65, "netns": 4026532290}
     ]},
    {"service": "llama", "namespace": "ml", "port": 8000, "protocol": "TCP",
     "endpoint": "10.77.0.3:8000", "backend_id": 4, "state": "removed", "ejected": false,
     "open": 2, "idle": 0, "busy": 0, "oldest_seconds": 3725, "requests": 0,
     "closed": {"removed": 3, "drained": 0, "ejected": 0, "rebalanced": 0, "max_age": 0, "max_requests": 0},
     "connections": [
       {"cookie": 5001, "protocol": "TCP", "client": "10.77.0.1:40000", "age_seconds": 2,
        "requests": 0, "state": "new", "netns": 4026532281},
       {"cookie": 5002, "protocol": "TCP", "client": "10.77.0.1:39000", "age_seconds": 3725,
        "requests": 0, "state": "unknown", "netns": 4026532281}
     ]},
    {"service": "llama", "namespace": "ml", "port": 8000, "protocol": "TCP",
     "endpoint": "10.77.0.4:8000", "backend_id": 5, "state": "draining", "ejected": true,
     "open": 0, "idle": 0, "busy": 0, "oldest_seconds": 0, "requests": 0,
     "closed": {"removed": 0, "drained": 2, "ejected": 1, "rebalanced": 0, "max_age": 0, "max_requests": 7},
     "connections": []},
    {"service": "dns", "namespace": "kube-system", "port": 53, "protocol": "UDP",
     "endpoint": "10.77.0.9:53", "backend_id": 1, "state": "active", "ejected": false,
     "open": 1, "idle": 0, "busy": 0, "oldest_seconds": 200000, "requests": 0,
     "closed": {"removed": 0, "drained": 0, "ejected": 0, "rebalanced": 0, "max_age": 0, "max_requests": 0},
     "connections": [
       {"cookie": 6001, "protocol": "UDP", "client": "10.77.0.1:5353", "age_seconds": 200000,
        "requests": 0, "state": "datagram", "netns": 4026532281}
     ]}
  ]
})");

const json kNotAvailable = json::parse(R"js({"available": false,
  "reason": "kernel 6.1 has no bpf_sock_destroy (need Linux >= 6.5)", "endpoints": []})js");

json emptyResponse() {
  return json{{"available", true}, {"reason", ""}, {"namespaces_walked", 2},
              {"endpoints", json::array()}};
}

TEST(ConnectionsTest, TableHasOneRowPerEndpointInTheAgentsOrder) {
  CommandOutput r = formatConnections(kConnections, {}, OutputFormat::kTable);
  EXPECT_EQ(r.exitCode, kExitOk);
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(r.out,
            "SERVICE              ENDPOINT         STATE                OPEN   IDLE   BUSY    OLDEST   REQ/CONN   CLOSED\n"
            "ml/llama:8000        10.77.0.2:8000   active                  3      2      1     1m20s        6.7   rebalanced 4, max_age 1\n"
            "ml/llama:8000        10.77.0.3:8000   removed                 2      0      0    1h2m5s        0.0   removed 3\n"
            "ml/llama:8000        10.77.0.4:8000   draining (ejected)      0      0      0         -          -   drained 2, ejected 1, max_requests 7\n"
            "kube-system/dns:53   10.77.0.9:53     active                  1      0      0   2d7h33m        0.0   -\n")
      << r.out;
}

TEST(ConnectionsTest, EachListsConnectionsOldestFirstUnderTheirEndpoint) {
  ConnectionsQuery query;
  query.each = true;
  CommandOutput r = formatConnections(kConnections, query, OutputFormat::kTable);
  EXPECT_EQ(r.exitCode, kExitOk);
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(r.out,
            "SERVICE              ENDPOINT         STATE                OPEN   IDLE   BUSY    OLDEST   REQ/CONN   CLOSED\n"
            "ml/llama:8000        10.77.0.2:8000   active                  3      2      1     1m20s        6.7   rebalanced 4, max_age 1\n"
            "  CLIENT            PROTO       AGE   REQUESTS   STATE\n"
            "  10.77.0.1:45680   TCP       1m20s         11   busy\n"
            "  10.77.0.1:45678   TCP       12.3s          8   idle 0.4s\n"
            "  [fd00::1]:50000   TCP        1.5s          1   idle 1m5s\n"
            "ml/llama:8000        10.77.0.3:8000   removed                 2      0      0    1h2m5s        0.0   removed 3\n"
            "  CLIENT            PROTO       AGE   REQUESTS   STATE\n"
            "  10.77.0.1:39000   TCP      1h2m5s          0   unknown\n"
            "  10.77.0.1:40000   TCP          2s          0   new\n"
            "ml/llama:8000        10.77.0.4:8000   draining (ejected)      0      0      0         -          -   drained 2, ejected 1, max_requests 7\n"
            "kube-system/dns:53   10.77.0.9:53     active                  1      0      0   2d7h33m        0.0   -\n"
            "  CLIENT            PROTO       AGE   REQUESTS   STATE\n"
            "  10.77.0.1:5353    UDP     2d7h33m          0   datagram\n")
      << r.out;
}

TEST(ConnectionsTest, RemovedEndpointStillShowsItsOpenConnections) {
  json only = kConnections;
  only["endpoints"] = json::array({kConnections["endpoints"][1]});
  CommandOutput r = formatConnections(only, {"llama", "ml", true}, OutputFormat::kTable);
  EXPECT_EQ(r.exitCode, kExitOk);
  EXPECT_EQ(r.out,
            "SERVICE         ENDPOINT         STATE     OPEN   IDLE   BUSY   OLDEST   REQ/CONN   CLOSED\n"
            "ml/llama:8000   10.77.0.3:8000   removed      2      0      0   1h2m5s        0.0   removed 3\n"
            "  CLIENT            PROTO      AGE   REQUESTS   STATE\n"
            "  10.77.0.1:39000   TCP     1h2m5s          0   unknown\n"
            "  10.77.0.1:40000   TCP         2s          0   new\n")
      << r.out;
}

TEST(ConnectionsTest, DurationsReadAsHumanTime) {
  json resp = emptyResponse();
  auto ep = [](const std::string& addr, const json& oldest) {
    return json{{"service", "s"},        {"namespace", "n"}, {"port", 80},
                {"endpoint", addr},      {"state", "active"}, {"open", 1},
                {"oldest_seconds", oldest}, {"requests", 3}};
  };
  resp["endpoints"] = json::array({ep("a", 0.4), ep("b", 12.3), ep("c", 80.2), ep("d", 3725),
                                   ep("e", 200000), ep("f", nullptr)});
  CommandOutput r = formatConnections(resp, {}, OutputFormat::kTable);
  EXPECT_EQ(r.out,
            "SERVICE   ENDPOINT   STATE    OPEN   IDLE   BUSY    OLDEST   REQ/CONN   CLOSED\n"
            "n/s:80    a          active      1      -      -      0.4s        3.0   -\n"
            "n/s:80    b          active      1      -      -     12.3s        3.0   -\n"
            "n/s:80    c          active      1      -      -     1m20s        3.0   -\n"
            "n/s:80    d          active      1      -      -    1h2m5s        3.0   -\n"
            "n/s:80    e          active      1      -      -   2d7h33m        3.0   -\n"
            "n/s:80    f          active      1      -      -         -        3.0   -\n")
      << r.out;
}

TEST(ConnectionsTest, ClosedReasonsInAFixedOrderThenUnknownOnes) {
  json resp = emptyResponse();
  resp["endpoints"] = json::array(
      {json{{"service", "s"}, {"namespace", "n"}, {"port", 80}, {"endpoint", "a"},
            {"state", "active"}, {"open", 0},
            {"closed", {{"max_requests", 2}, {"zz_future", 5}, {"removed", 1}, {"drained", 0}}}}});
  CommandOutput r = formatConnections(resp, {}, OutputFormat::kTable);
  EXPECT_NE(r.out.find("   removed 1, max_requests 2, zz_future 5\n"), std::string::npos) << r.out;
}

TEST(ConnectionsTest, JsonIsTheAgentsResponse) {
  for (bool each : {false, true}) {
    CommandOutput r = formatConnections(kConnections, {"", "", each}, OutputFormat::kJson);
    EXPECT_EQ(r.exitCode, kExitOk);
    EXPECT_EQ(r.err, "");
    EXPECT_EQ(r.out, kConnections.dump(2) + "\n");
  }
}

TEST(ConnectionsTest, NotAvailableExitsOneWithTheReason) {
  for (auto format : {OutputFormat::kTable, OutputFormat::kJson}) {
    CommandOutput r = formatConnections(kNotAvailable, {}, format);
    EXPECT_EQ(r.exitCode, kExitError);
    EXPECT_EQ(r.out, "");
    EXPECT_EQ(r.err,
              "meshctl: the agent cannot list connections on this node: kernel 6.1 has no "
              "bpf_sock_destroy (need Linux >= 6.5)\n");
  }
  json noReason = {{"available", false}, {"endpoints", json::array()}};
  EXPECT_EQ(formatConnections(noReason, {}, OutputFormat::kTable).err,
            "meshctl: the agent cannot list connections on this node: no reason given\n");
}

TEST(ConnectionsTest, AgentErrorExitsOne) {
  json err = {{"error", "unknown service 'nope'"}};
  for (auto format : {OutputFormat::kTable, OutputFormat::kJson}) {
    CommandOutput r = formatConnections(err, {"nope", "", false}, format);
    EXPECT_EQ(r.exitCode, kExitError);
    EXPECT_EQ(r.out, "");
    EXPECT_EQ(r.err, "meshctl: agent error: unknown service 'nope'\n");
  }
}

TEST(ConnectionsTest, MalformedResponseExitsOne) {
  for (const json& bad : {json::array(), json("x"), json{{"available", true}},
                          json{{"available", true}, {"endpoints", 3}},
                          json{{"available", "yes"}, {"endpoints", json::array()}}}) {
    CommandOutput r = formatConnections(bad, {}, OutputFormat::kTable);
    EXPECT_EQ(r.exitCode, kExitError) << bad;
    EXPECT_EQ(r.out, "") << bad;
    EXPECT_NE(r.err.find("unexpected response"), std::string::npos) << r.err;
  }
}

TEST(ConnectionsTest, NoOpenConnectionsIsANoteNotAnError) {
  CommandOutput all = formatConnections(emptyResponse(), {}, OutputFormat::kTable);
  EXPECT_EQ(all.exitCode, kExitOk);
  EXPECT_EQ(all.out, "");
  EXPECT_EQ(all.err, "No open connections.\n");

  CommandOutput one = formatConnections(emptyResponse(), {"llama", "ml", true}, OutputFormat::kTable);
  EXPECT_EQ(one.exitCode, kExitOk);
  EXPECT_EQ(one.err, "No open connections to service ml/llama.\n");

  CommandOutput ns = formatConnections(emptyResponse(), {"", "ml", false}, OutputFormat::kTable);
  EXPECT_EQ(ns.err, "No open connections in namespace ml.\n");

  CommandOutput j = formatConnections(emptyResponse(), {"llama", "", false}, OutputFormat::kJson);
  EXPECT_EQ(j.exitCode, kExitOk);
  EXPECT_EQ(json::parse(j.out), emptyResponse());
}

TEST(ConnectionsTest, RunSendsServiceAndNamespace) {
  std::vector<json> requests;
  AgentCall call = [&](const json& request) -> Result<json> {
    requests.push_back(request);
    if (request.value("service", "") == "nope") return json{{"error", "unknown service 'nope'"}};
    return kConnections;
  };
  CommandOutput r = runConnections(call, {"llama", "ml", false}, OutputFormat::kTable);
  EXPECT_EQ(r.exitCode, kExitOk);
  CommandOutput every = runConnections(call, {}, OutputFormat::kJson);
  EXPECT_EQ(every.exitCode, kExitOk);
  CommandOutput unknown = runConnections(call, {"nope", "", false}, OutputFormat::kTable);
  EXPECT_EQ(unknown.exitCode, kExitError);
  EXPECT_EQ(unknown.err, "meshctl: agent error: unknown service 'nope'\n");
  ASSERT_EQ(requests.size(), 3u);  // one call each: no services lookup
  EXPECT_EQ(requests[0], json({{"method", "connections"}, {"service", "llama"}, {"namespace", "ml"}}));
  EXPECT_EQ(requests[1], json({{"method", "connections"}, {"service", ""}, {"namespace", ""}}));
}

TEST(ConnectionsTest, AgentNotRunningExitsTwo) {
  AgentCall down = [](const json&) -> Result<json> {
    return Error::msg("aimesh agent is not running at /tmp/x.sock (no such socket file)");
  };
  CommandOutput r = runConnections(down, {}, OutputFormat::kTable);
  EXPECT_EQ(r.exitCode, kExitAgentUnreachable);
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find("not running at /tmp/x.sock"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace aimesh
