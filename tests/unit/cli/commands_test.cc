#include "commands/commands.h"

#include <gtest/gtest.h>

#include <vector>

namespace aimesh {
namespace {

using nlohmann::json;

const json kStatus = json::parse(R"({
  "version": "0.1.0", "pid": 123, "ready": true, "uptime_seconds": 12.5,
  "cgroup": "/sys/fs/cgroup/unified/x", "pin_dir": "/sys/fs/bpf/aimesh",
  "state_file": "/etc/aimesh/state.yaml", "metrics_addr": "127.0.0.1:9464",
  "reconciles": 3, "reconcile_errors": 1, "last_error": "state.yaml:3:5: bad port",
  "services": 2, "endpoints": 5,
  "programs": [{"name": "connect4", "attached": true, "link_id": 17},
               {"name": "sendmsg4", "attached": false, "link_id": null}]
})");

const json kServices = json::parse(R"({"services": [
  {"name": "llama-chat", "namespace": "ml", "model": "llama-3-8b-instruct", "algorithm": "random",
   "frontends": ["10.96.0.20:8000/TCP", "[fd00::20]:8000/TCP"], "endpoints": 3,
   "active_endpoints": 2, "connections": 120, "datagrams": 0, "refused": 0},
  {"name": "embed", "namespace": "default", "model": "", "algorithm": "maglev",
   "frontends": ["10.96.0.30:80/TCP"], "endpoints": 2, "active_endpoints": 2,
   "connections": 7, "datagrams": 0, "refused": 15}
]})");

const json kEndpoints = json::parse(R"({"endpoints": [
  {"service": "llama-chat", "namespace": "ml", "address": "10.77.0.2", "port": 8000,
   "protocol": "TCP", "weight": 1, "state": "active", "backend_id": 3, "connections": 40,
   "datagrams": 0, "in_flight": 3, "failure_penalty": 0, "consecutive_failures": 0, "ejected": false,
   "queued_requests": 2, "running_requests": 4, "kv_cache_usage": 0.5},
  {"service": "llama-chat", "namespace": "ml", "address": "fd00::77:3", "port": 8000,
   "protocol": "TCP", "weight": 10, "state": "draining", "backend_id": 4, "connections": 80,
   "datagrams": 0, "in_flight": 1, "failure_penalty": 4, "consecutive_failures": 3, "ejected": true,
   "ejected_for_seconds": 1.25},
  {"service": "embed", "namespace": "default", "address": "10.77.0.9", "port": 80,
   "protocol": "TCP", "weight": 1, "state": "active", "backend_id": 1, "connections": 7,
   "datagrams": 0}
]})");

// An AgentCall that answers from canned responses and records the requests.
struct FakeAgent {
  std::vector<json> requests;
  json status = kStatus, services = kServices, endpoints = kEndpoints;

  AgentCall call() {
    return [this](const json& request) -> Result<json> {
      requests.push_back(request);
      std::string method = request.value("method", "");
      if (method == "status") return status;
      if (method == "services") return services;
      if (method == "endpoints") {
        json out = json{{"endpoints", json::array()}};
        for (const auto& e : endpoints["endpoints"]) {
          if (request.contains("service") && e["service"] != request["service"]) continue;
          if (request.contains("namespace") && e["namespace"] != request["namespace"]) continue;
          out["endpoints"].push_back(e);
        }
        return out;
      }
      return json{{"error", "unknown method " + method}};
    };
  }
};

AgentCall unreachable() {
  return [](const json&) -> Result<json> {
    return Error::msg("aimesh agent is not running at /tmp/x.sock (no such socket file)");
  };
}

TEST(CommandsTest, StatusTable) {
  CommandOutput r = formatStatus(kStatus, OutputFormat::kTable);
  EXPECT_EQ(r.exitCode, kExitOk);
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(r.out,
            "version:          0.1.0\n"
            "pid:              123\n"
            "ready:            yes\n"
            "uptime:           12.5s\n"
            "cgroup:           /sys/fs/cgroup/unified/x\n"
            "pin dir:          /sys/fs/bpf/aimesh\n"
            "state file:       /etc/aimesh/state.yaml\n"
            "metrics:          127.0.0.1:9464\n"
            "services:         2\n"
            "endpoints:        5\n"
            "reconciles:       3\n"
            "reconcile errors: 1\n"
            "last error:       state.yaml:3:5: bad port\n"
            "programs:\n"
            "  NAME       ATTACHED   LINK\n"
            "  connect4   yes          17\n"
            "  sendmsg4   no            -\n");
}

TEST(CommandsTest, StatusOmitsEmptyLastErrorAndMissingPrograms) {
  json s = kStatus;
  s["last_error"] = "";
  s.erase("programs");
  s["uptime_seconds"] = 3725;
  CommandOutput r = formatStatus(s, OutputFormat::kTable);
  EXPECT_EQ(r.out.find("last error"), std::string::npos);
  EXPECT_EQ(r.out.find("programs"), std::string::npos);
  EXPECT_NE(r.out.find("uptime:           1h2m5s\n"), std::string::npos);
}

TEST(CommandsTest, StatusSaysWhetherConnectionsCanBeClosed) {
  json s = kStatus;
  s["connection_lifecycle"] = {{"available", true}, {"passes", 12}, {"namespaces", 3}, {"reason", ""}};
  CommandOutput r = formatStatus(s, OutputFormat::kTable);
  EXPECT_NE(r.out.find("connection lifecycle: on (12 passes, 3 namespaces)\n"), std::string::npos) << r.out;
  s["connection_lifecycle"] = {{"available", false}, {"reason", "load the socket iterators: Invalid argument"}};
  r = formatStatus(s, OutputFormat::kTable);
  EXPECT_NE(r.out.find("unavailable: load the socket iterators"), std::string::npos) << r.out;
}

TEST(CommandsTest, StatusJsonIsTheAgentsJsonPretty) {
  CommandOutput r = formatStatus(kStatus, OutputFormat::kJson);
  EXPECT_EQ(r.exitCode, kExitOk);
  EXPECT_EQ(json::parse(r.out), kStatus);
  EXPECT_EQ(r.out, kStatus.dump(2) + "\n");
}

TEST(CommandsTest, ServicesTable) {
  CommandOutput r = formatServices(kServices, "", OutputFormat::kTable);
  EXPECT_EQ(r.exitCode, kExitOk);
  EXPECT_EQ(r.out,
            "NAMESPACE   NAME         MODEL                 ALGORITHM   "
            "FRONTENDS                                 ENDPOINTS   CONNECTIONS   REFUSED\n"
            "default     embed        -                     maglev      "
            "10.96.0.30:80/TCP                               2/2             7        15\n"
            "ml          llama-chat   llama-3-8b-instruct   random      "
            "10.96.0.20:8000/TCP,[fd00::20]:8000/TCP         2/3           120         0\n");
}

TEST(CommandsTest, ServicesTableMarksAFailCloseService) {
  json s = kServices;
  s["services"][1]["fail_close"] = true;  // embed
  CommandOutput r = formatServices(s, "", OutputFormat::kTable);
  EXPECT_NE(r.out.find("maglev (fail close)"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("random (fail close)"), std::string::npos) << r.out;
}

TEST(CommandsTest, ServicesNamespaceFilter) {
  CommandOutput r = formatServices(kServices, "ml", OutputFormat::kTable);
  EXPECT_EQ(r.exitCode, kExitOk);
  EXPECT_NE(r.out.find("llama-chat"), std::string::npos);
  EXPECT_EQ(r.out.find("embed"), std::string::npos);

  CommandOutput none = formatServices(kServices, "nope", OutputFormat::kTable);
  EXPECT_EQ(none.exitCode, kExitOk);
  EXPECT_EQ(none.out, "");
  EXPECT_EQ(none.err, "No services in namespace nope.\n");

  CommandOutput j = formatServices(kServices, "ml", OutputFormat::kJson);
  json parsed = json::parse(j.out);
  ASSERT_EQ(parsed["services"].size(), 1u);
  EXPECT_EQ(parsed["services"][0]["name"], "llama-chat");
}

TEST(CommandsTest, ServicesJsonIsTheAgentsJson) {
  CommandOutput r = formatServices(kServices, "", OutputFormat::kJson);
  EXPECT_EQ(r.exitCode, kExitOk);
  EXPECT_EQ(json::parse(r.out), kServices);
}

TEST(CommandsTest, EndpointsTable) {
  CommandOutput r = formatEndpoints(kEndpoints, json(), {}, OutputFormat::kTable);
  EXPECT_EQ(r.exitCode, kExitOk);
  EXPECT_EQ(r.out,
            "NAMESPACE   SERVICE      ADDRESS      PORT   PROTO   WEIGHT   STATE      IN-FLIGHT   CONNECTIONS   HEALTH\n"
            "default     embed        10.77.0.9      80   TCP          1   active             -             7   -\n"
            "ml          llama-chat   10.77.0.2    8000   TCP          1   active             3            40   queue 2\n"
            "ml          llama-chat   fd00::77:3   8000   TCP         10   draining           1            80   "
            "ejected 1.2s, penalty 4, 3 failed\n");
}

TEST(CommandsTest, EndpointsOfOneService) {
  FakeAgent agent;
  CommandOutput r = runEndpoints(agent.call(), {"llama-chat", "ml"}, OutputFormat::kTable);
  EXPECT_EQ(r.exitCode, kExitOk);
  EXPECT_EQ(r.out.find("embed"), std::string::npos);
  EXPECT_NE(r.out.find("fd00::77:3"), std::string::npos);
  ASSERT_EQ(agent.requests.size(), 1u);  // found: no services lookup
  EXPECT_EQ(agent.requests[0],
            json({{"method", "endpoints"}, {"service", "llama-chat"}, {"namespace", "ml"}}));
}

TEST(CommandsTest, UnknownServiceExitsOne) {
  FakeAgent agent;
  CommandOutput r = runEndpoints(agent.call(), {"nope", ""}, OutputFormat::kTable);
  EXPECT_EQ(r.exitCode, kExitError);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err, "meshctl: service \"nope\" not found (see meshctl services)\n");

  // Known name, wrong namespace: still unknown.
  CommandOutput ns = runEndpoints(agent.call(), {"llama-chat", "default"}, OutputFormat::kJson);
  EXPECT_EQ(ns.exitCode, kExitError);
  EXPECT_EQ(ns.out, "");
  EXPECT_NE(ns.err.find("in namespace default"), std::string::npos);
}

TEST(CommandsTest, KnownServiceWithoutEndpointsIsNotAnError) {
  FakeAgent agent;
  agent.endpoints = json{{"endpoints", json::array()}};
  CommandOutput r = runEndpoints(agent.call(), {"llama-chat", ""}, OutputFormat::kTable);
  EXPECT_EQ(r.exitCode, kExitOk);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err, "No endpoints for service llama-chat.\n");
  ASSERT_EQ(agent.requests.size(), 2u);
  EXPECT_EQ(agent.requests[1], json({{"method", "services"}}));

  CommandOutput j = runEndpoints(agent.call(), {"llama-chat", ""}, OutputFormat::kJson);
  EXPECT_EQ(j.exitCode, kExitOk);
  EXPECT_EQ(json::parse(j.out), json({{"endpoints", json::array()}}));
}

TEST(CommandsTest, EndpointsFilteredClientSideToo) {
  // An agent that ignores the filter still yields only the asked-for rows.
  CommandOutput r = formatEndpoints(kEndpoints, json(), {"embed", ""}, OutputFormat::kJson);
  EXPECT_EQ(r.exitCode, kExitOk);
  json parsed = json::parse(r.out);
  ASSERT_EQ(parsed["endpoints"].size(), 1u);
  EXPECT_EQ(parsed["endpoints"][0]["address"], "10.77.0.9");
}

TEST(CommandsTest, AgentNotRunningExitsTwo) {
  for (auto r : {runStatus(unreachable(), OutputFormat::kTable),
                 runServices(unreachable(), "", OutputFormat::kJson),
                 runEndpoints(unreachable(), {"x", ""}, OutputFormat::kTable)}) {
    EXPECT_EQ(r.exitCode, kExitAgentUnreachable);
    EXPECT_EQ(r.out, "");
    EXPECT_NE(r.err.find("not running at /tmp/x.sock"), std::string::npos) << r.err;
  }
}

TEST(CommandsTest, AgentErrorExitsOne) {
  json err = {{"error", "snapshot not loaded yet"}};
  for (auto r : {formatStatus(err, OutputFormat::kTable),
                 formatServices(err, "", OutputFormat::kTable),
                 formatEndpoints(err, json(), {}, OutputFormat::kJson)}) {
    EXPECT_EQ(r.exitCode, kExitError);
    EXPECT_EQ(r.out, "");
    EXPECT_EQ(r.err, "meshctl: agent error: snapshot not loaded yet\n");
  }
}

TEST(CommandsTest, MalformedResponseExitsOne) {
  for (const json& bad : {json::array(), json{{"foo", 1}}, json{{"services", "x"}}}) {
    EXPECT_EQ(formatServices(bad, "", OutputFormat::kTable).exitCode, kExitError) << bad;
  }
  EXPECT_EQ(formatEndpoints(json{{"endpoints", 3}}, json(), {}, OutputFormat::kTable).exitCode,
            kExitError);
  EXPECT_EQ(formatStatus(json("x"), OutputFormat::kTable).exitCode, kExitError);
}

TEST(CommandsTest, EmptyListsPrintNoteOnStderr) {
  json none = {{"services", json::array()}};
  CommandOutput r = formatServices(none, "", OutputFormat::kTable);
  EXPECT_EQ(r.exitCode, kExitOk);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err, "No services.\n");
  CommandOutput e = formatEndpoints(json{{"endpoints", json::array()}}, json(), {},
                                    OutputFormat::kTable);
  EXPECT_EQ(e.exitCode, kExitOk);
  EXPECT_EQ(e.err, "No endpoints.\n");
}

TEST(CommandsTest, VersionWithAndWithoutAgent) {
  CommandOutput client = runVersion(nullptr, OutputFormat::kTable);
  EXPECT_EQ(client.exitCode, kExitOk);
  EXPECT_EQ(client.out, std::string("meshctl: ") + AIMESH_VERSION + "\n");

  FakeAgent agent;
  AgentCall call = agent.call();
  CommandOutput both = runVersion(&call, OutputFormat::kJson);
  EXPECT_EQ(json::parse(both.out),
            json({{"client", {{"version", AIMESH_VERSION}}}, {"agent", {{"version", "0.1.0"}}}}));

  AgentCall down = unreachable();
  CommandOutput noAgent = runVersion(&down, OutputFormat::kTable);
  EXPECT_EQ(noAgent.exitCode, kExitOk);  // the client version was printed
  EXPECT_EQ(noAgent.out, std::string("meshctl: ") + AIMESH_VERSION + "\n");
  EXPECT_NE(noAgent.err.find("not running"), std::string::npos);
}

TEST(CommandsTest, ParseOutputFormat) {
  EXPECT_EQ(*parseOutputFormat("table"), OutputFormat::kTable);
  EXPECT_EQ(*parseOutputFormat("json"), OutputFormat::kJson);
  EXPECT_FALSE(parseOutputFormat("yaml").ok());
}

TEST(CommandsTest, FormatDuration) {
  EXPECT_EQ(formatDuration(0), "0s");
  EXPECT_EQ(formatDuration(12.5), "12.5s");
  EXPECT_EQ(formatDuration(59), "59s");
  EXPECT_EQ(formatDuration(61), "1m1s");
  EXPECT_EQ(formatDuration(3725), "1h2m5s");
  EXPECT_EQ(formatDuration(200000), "2d7h33m");
  EXPECT_EQ(formatDuration(-1), "-");
}

TEST(CommandsTest, PolicyTableShowsCgroupsPodsAndWhatHasNoCgroupYet) {
  json resp = json::parse(R"({"services": [
    {"name": "open", "namespace": "ml", "port": 8000, "protocol": "TCP", "enforced": false, "denied": 0, "allow": []},
    {"name": "llama", "namespace": "ml", "port": 8000, "protocol": "TCP", "enforced": true, "denied": 6,
     "pod_selector": "app=client in ml",
     "allow": [{"pod": "ml/client-0", "uid": "u0", "resolved": true, "cgroup": "/sys/fs/cgroup/kubepods/pod-u0"},
               {"pod": "ml/client-1", "uid": "u1", "resolved": false, "reason": "no cgroup of pod uid u1"}]},
    {"name": "batch", "namespace": "ml", "port": 9000, "protocol": "UDP", "enforced": true, "denied": 0,
     "allow": [{"cgroup": "/sys/fs/cgroup/batch", "resolved": true},
               {"cgroup": "/sys/fs/cgroup/later", "resolved": false}]},
    {"name": "closed", "namespace": "ml", "port": 8000, "protocol": "TCP", "enforced": true, "denied": 2,
     "pod_selector": "app=nobody in ml", "allow": []}
  ]})");
  CommandOutput out = formatPolicy(resp, "", OutputFormat::kTable);
  EXPECT_EQ(out.exitCode, kExitOk);
  EXPECT_EQ(out.out,
            "NAMESPACE   NAME     PORT       POLICY       ALLOWED                                                DENIED\n"
            "ml          batch    9000/UDP   allow-list   /sys/fs/cgroup/batch, /sys/fs/cgroup/later (missing)        0\n"
            "ml          closed   8000/TCP   allow-list   (nobody): no pod here is app=nobody in ml                   2\n"
            "ml          llama    8000/TCP   allow-list   pod ml/client-0, pod ml/client-1 (no cgroup yet)            6\n"
            "ml          open     8000/TCP   open         (everyone)                                                  0\n")
      << out.out;
  CommandOutput one = formatPolicy(resp, "llama", OutputFormat::kJson);
  EXPECT_EQ(json::parse(one.out)["services"][0]["allow"][1]["reason"], "no cgroup of pod uid u1");
  EXPECT_EQ(formatPolicy(resp, "nope", OutputFormat::kTable).exitCode, kExitError);
}

}  // namespace
}  // namespace aimesh
