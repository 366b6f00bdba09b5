// meshctl top --clients: frames rendered from pairs of the agent's "clients"
// answers (rates, sorting, "other", errors) and the polling loop asking for
// method "clients"; no agent, no signals.
#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

#include "commands/commands.h"

namespace aimesh {
namespace {

using nlohmann::json;

struct Counts {
  int connections = 0;
  int datagrams = 0;
  int requests = 0;
  int refused = 0;
  int denied = 0;
};

// dns is a UDP service on port 53, every other one TCP on 8000.
json clientPair(const std::string& client, int cgroup, const std::string& service, const std::string& ns, Counts c) {
  bool dns = service == "dns";
  return json{{"client", client},         {"cgroup_id", cgroup},
              {"service", service},       {"namespace", ns},
              {"port", dns ? 53 : 8000},  {"protocol", dns ? "UDP" : "TCP"},
              {"connections", c.connections}, {"datagrams", c.datagrams},
              {"requests", c.requests},   {"refused", c.refused},
              {"denied", c.denied}};
}

json poll(double t, std::vector<json> clients) {
  return json{{"time_seconds", t}, {"top_k", 3}, {"pairs", 9}, {"clients", clients}};
}

const std::string kHeader =
    "CLIENT                        SERVICE           PORT       CONN/S   REQ/S   CONNECTIONS   REQUESTS   REFUSED   "
    "DENIED\n";

const json kFirst = poll(100.0, {clientPair("other", 0, "llama-chat", "ml", {500, 0, 900, 4, 0}),
                                 clientPair("/system.slice/batch.service", 77, "llama-chat", "ml", {10, 0, 10, 2, 1}),
                                 clientPair("cgroup:9001", 9001, "dns", "kube-system", {0, 30, 0, 0, 0}),
                                 clientPair("ml/chat-ui-7d9f", 4101, "llama-chat", "ml", {40, 0, 120, 0, 0})});

TEST(TopClientsTest, FirstFrameHasNoRateAndIsSorted) {
  CommandOutput r = formatClientsFrame(json(), kFirst, OutputFormat::kTable);
  EXPECT_EQ(r.exitCode, kExitOk);
  EXPECT_EQ(r.err, "");
  // kube-system before ml; in llama-chat the busiest first, "other" last
  // although it is the busiest of all.
  EXPECT_EQ(r.out, kHeader +
                       "cgroup:9001                   kube-system/dns   53/UDP          -       -            30          0"
                       "         0        0\n"
                       "ml/chat-ui-7d9f               ml/llama-chat     8000/TCP        -       -            40        120"
                       "         0        0\n"
                       "/system.slice/batch.service   ml/llama-chat     8000/TCP        -       -            10         10"
                       "         2        1\n"
                       "other                         ml/llama-chat     8000/TCP        -       -           500        900"
                       "         4        0\n");
}

TEST(TopClientsTest, RatesFromTwoPolls) {
  json second = poll(102.0, {clientPair("ml/chat-ui-7d9f", 4101, "llama-chat", "ml", {50, 0, 160, 0, 0}),
                             clientPair("/system.slice/batch.service", 77, "llama-chat", "ml", {11, 0, 10, 2, 3}),
                             clientPair("cgroup:9001", 9001, "dns", "kube-system", {0, 36, 0, 0, 0}),
                             clientPair("other", 0, "llama-chat", "ml", {520, 0, 1000, 4, 0})});
  CommandOutput r = formatClientsFrame(kFirst, second, OutputFormat::kTable);
  EXPECT_EQ(r.exitCode, kExitOk);
  // CONN/S counts connects and datagrams: (36 - 30) / 2 for the UDP client.
  EXPECT_EQ(r.out, kHeader +
                       "cgroup:9001                   kube-system/dns   53/UDP        3.0     0.0            36          0"
                       "         0        0\n"
                       "ml/chat-ui-7d9f               ml/llama-chat     8000/TCP      5.0    20.0            50        160"
                       "         0        0\n"
                       "/system.slice/batch.service   ml/llama-chat     8000/TCP      0.5     0.0            11         10"
                       "         2        3\n"
                       "other                         ml/llama-chat     8000/TCP     10.0    50.0           520       1000"
                       "         4        0\n");
}

TEST(TopClientsTest, DashWhenTheRateCannotBeTold) {
  json second = poll(102.0, {// "other" lost pairs to the top K: its connections went back.
                             clientPair("other", 0, "llama-chat", "ml", {400, 0, 1000, 4, 0}),
                             // The same pod name in a new cgroup (restarted): a new pair.
                             clientPair("ml/chat-ui-7d9f", 5000, "llama-chat", "ml", {50, 0, 160, 0, 0}),
                             // Never seen before.
                             clientPair("ml/fresh", 4200, "llama-chat", "ml", {3, 0, 0, 0, 0})});
  CommandOutput r = formatClientsFrame(kFirst, second, OutputFormat::kTable);
  EXPECT_EQ(r.out,
            "CLIENT            SERVICE         PORT       CONN/S   REQ/S   CONNECTIONS   REQUESTS   REFUSED   DENIED\n"
            "ml/chat-ui-7d9f   ml/llama-chat   8000/TCP        -       -            50        160         0        0\n"
            "ml/fresh          ml/llama-chat   8000/TCP        -       -             3          0         0        0\n"
            "other             ml/llama-chat   8000/TCP        -    50.0           400       1000         4        0\n");

  // Time did not advance: no rates at all.
  EXPECT_EQ(formatClientsFrame(kFirst, kFirst, OutputFormat::kTable).out,
            formatClientsFrame(json(), kFirst, OutputFormat::kTable).out);

  // A previous poll that was an error or of the wrong shape is as no poll.
  json later = kFirst;
  later["time_seconds"] = 101.0;
  EXPECT_EQ(formatClientsFrame(json{{"error", "x"}}, later, OutputFormat::kTable).out,
            formatClientsFrame(json(), kFirst, OutputFormat::kTable).out);
  EXPECT_EQ(formatClientsFrame(json{{"clients", 3}}, later, OutputFormat::kTable).out,
            formatClientsFrame(json(), kFirst, OutputFormat::kTable).out);
}

TEST(TopClientsTest, MissingCountersAreDashes) {
  json row = clientPair("ml/chat-ui-7d9f", 4101, "llama-chat", "ml", {40, 0, 120, 0, 0});
  row.erase("connections");
  row["requests"] = nullptr;
  row.erase("denied");
  CommandOutput r = formatClientsFrame(kFirst, poll(101, {row}), OutputFormat::kTable);
  EXPECT_EQ(r.out,
            "CLIENT            SERVICE         PORT       CONN/S   REQ/S   CONNECTIONS   REQUESTS   REFUSED   DENIED\n"
            "ml/chat-ui-7d9f   ml/llama-chat   8000/TCP        -       -             -          -         0        -\n");
}

TEST(TopClientsTest, EmptyList) {
  CommandOutput r = formatClientsFrame(json(), poll(1, {}), OutputFormat::kTable);
  EXPECT_EQ(r.exitCode, kExitOk);
  EXPECT_EQ(r.out, "No clients yet.\n");
  EXPECT_EQ(r.err, "");
}

TEST(TopClientsTest, JsonIsTheAgentsAnswerOnOneLine) {
  CommandOutput j = formatClientsFrame(json(), kFirst, OutputFormat::kJson);
  EXPECT_EQ(j.exitCode, kExitOk);
  EXPECT_EQ(j.out.find('\n'), j.out.size() - 1) << "one line per poll";
  EXPECT_EQ(json::parse(j.out), kFirst);
  EXPECT_EQ(formatClientsFrame(json(), poll(1, {}), OutputFormat::kJson).out, poll(1, {}).dump() + "\n");
}

TEST(TopClientsTest, ErrorAndMalformedAnswers) {
  CommandOutput e = formatClientsFrame(json(), json{{"error", "boom"}}, OutputFormat::kTable);
  EXPECT_EQ(e.exitCode, kExitError);
  EXPECT_EQ(e.out, "");
  EXPECT_EQ(e.err, "meshctl: agent error: boom\n");

  // An agent that does not know the method yet answers with an error too.
  CommandOutput old = formatClientsFrame(json(), json{{"error", "unknown method \"clients\""}}, OutputFormat::kJson);
  EXPECT_EQ(old.exitCode, kExitError);
  EXPECT_EQ(old.out, "");

  CommandOutput missing = formatClientsFrame(json(), json{{"time_seconds", 1}}, OutputFormat::kTable);
  EXPECT_EQ(missing.exitCode, kExitError);
  EXPECT_EQ(missing.err, "meshctl: unexpected response from the agent (no \"clients\")\n");

  CommandOutput notList = formatClientsFrame(json(), json{{"clients", "x"}}, OutputFormat::kTable);
  EXPECT_EQ(notList.exitCode, kExitError);
  EXPECT_EQ(notList.err, "meshctl: unexpected response from the agent (\"clients\" is not a list)\n");

  json wrongType = poll(1, {clientPair("a", 1, "s", "n", {})});
  wrongType["clients"][0]["connections"] = "many";
  CommandOutput bad = formatClientsFrame(json(), wrongType, OutputFormat::kTable);
  EXPECT_EQ(bad.exitCode, kExitError);
  EXPECT_EQ(bad.out, "");
  EXPECT_EQ(bad.err.rfind("meshctl: unexpected response from the agent", 0), 0u) << bad.err;

  EXPECT_EQ(formatClientsFrame(json(), json::array(), OutputFormat::kTable).exitCode, kExitError);
}

// Answers with polls 2 s apart whose chat-ui connections grow by 4 and
// requests by 10.
struct FakeClientsAgent {
  std::vector<json> requests;
  int polls = 0;
  AgentCall call() {
    return [this](const json& request) -> Result<json> {
      requests.push_back(request);
      ++polls;
      return poll(100.0 + 2 * polls,
                  {clientPair("ml/chat-ui-7d9f", 4101, "llama-chat", "ml", {4 * polls, 0, 10 * polls, 0, 0})});
    };
  }
};

PollLoop noWait() {
  return PollLoop{[] { return false; }, [](double) {}};
}

TEST(TopClientsTest, RunTopAsksForClients) {
  FakeClientsAgent agent;
  std::ostringstream out, err;
  TopOptions options;
  options.clients = true;
  options.iterations = 2;
  EXPECT_EQ(runTop(agent.call(), options, OutputFormat::kTable, out, err, noWait()), kExitOk);
  EXPECT_EQ(err.str(), "");
  ASSERT_EQ(agent.requests.size(), 2u);
  EXPECT_EQ(agent.requests[0], json({{"method", "clients"}}));
  EXPECT_EQ(agent.requests[1], json({{"method", "clients"}}));
  std::string header =
      "CLIENT            SERVICE         PORT       CONN/S   REQ/S   CONNECTIONS   REQUESTS   REFUSED   DENIED\n";
  EXPECT_EQ(out.str(),
            header + "ml/chat-ui-7d9f   ml/llama-chat   8000/TCP        -       -             4         10         0        0\n" +
                "\n" + header +
                "ml/chat-ui-7d9f   ml/llama-chat   8000/TCP      2.0     5.0             8         20         0        0\n");
}

TEST(TopClientsTest, RunTopClientsJsonAndFailures) {
  FakeClientsAgent agent;
  std::ostringstream out, err;
  TopOptions options;
  options.clients = true;
  options.iterations = 2;
  EXPECT_EQ(runTop(agent.call(), options, OutputFormat::kJson, out, err, noWait()), kExitOk);
  std::istringstream lines(out.str());
  std::string line;
  int n = 0;
  while (std::getline(lines, line)) {
    EXPECT_TRUE(json::parse(line).contains("clients"));
    ++n;
  }
  EXPECT_EQ(n, 2);

  AgentCall oldAgent = [](const json&) -> Result<json> { return json{{"error", "unknown method"}}; };
  std::ostringstream out2, err2;
  EXPECT_EQ(runTop(oldAgent, options, OutputFormat::kTable, out2, err2, noWait()), kExitError);
  EXPECT_EQ(out2.str(), "");
  EXPECT_EQ(err2.str(), "meshctl: agent error: unknown method\n");

  AgentCall down = [](const json&) -> Result<json> { return Error::msg("agent is not running"); };
  std::ostringstream out3, err3;
  EXPECT_EQ(runTop(down, options, OutputFormat::kTable, out3, err3, noWait()), kExitAgentUnreachable);
  EXPECT_EQ(err3.str(), "meshctl: agent is not running\n");
}

TEST(TopClientsTest, PlainTopStillAsksForTop) {
  std::vector<json> asked;
  AgentCall call = [&](const json& request) -> Result<json> {
    asked.push_back(request);
    return json{{"time_seconds", 1}, {"endpoints", json::array()}};
  };
  std::ostringstream out, err;
  TopOptions options;
  options.iterations = 1;
  EXPECT_EQ(runTop(call, options, OutputFormat::kTable, out, err, noWait()), kExitOk);
  ASSERT_EQ(asked.size(), 1u);
  EXPECT_EQ(asked[0], json({{"method", "top"}}));
  EXPECT_EQ(out.str(), "No endpoints.\n");
}

}  // namespace
}  // namespace aimesh
