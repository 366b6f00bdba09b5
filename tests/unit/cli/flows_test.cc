// meshctl flows: event lines and JSON Lines from fixtures, and the follow
// loop with a fake agent (since = previous next) and a fake clock.
#include <gtest/gtest.h>

#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

#include "commands/commands.h"

namespace aimesh {
namespace {

using nlohmann::json;

// Monotonic 1000.0 s is 12:00:00.000 UTC.
const FlowClock kNoon{12 * 3600 - 1000.0, true};

json event(int seq, double t, const std::string& type) {
  return json{{"seq", seq},
              {"time_seconds", t},
              {"type", type},
              {"service", "llama-chat"},
              {"namespace", "ml"},
              {"endpoint", "10.77.0.2:8000"},
              {"duration_seconds", 0.0004},
              {"bytes_sent", 0},
              {"bytes_received", 0},
              {"requests", 0},
              {"retransmits", 0}};
}

TEST(FlowsTest, OpenLine) {
  EXPECT_EQ(formatFlowEvent(event(1, 1001.123, "open"), kNoon),
            "12:00:01.123 open   ml/llama-chat -> 10.77.0.2:8000 connect=400µs\n");
}

TEST(FlowsTest, CloseAndResetLinesShowTheConnectionsTotals) {
  json close = event(2, 1005.0004, "close");
  close["duration_seconds"] = 3.94;
  close["requests"] = 2;
  close["bytes_sent"] = 1234;
  close["bytes_received"] = 49152;
  close["retransmits"] = 1;
  EXPECT_EQ(formatFlowEvent(close, kNoon),
            "12:00:05.000 close  ml/llama-chat -> 10.77.0.2:8000 duration=3.9s requests=2 "
            "sent=1.2KiB received=48.0KiB retransmits=1\n");
  close["type"] = "reset";
  close["bytes_sent"] = 512;
  close["bytes_received"] = 3 * 1024 * 1024;
  EXPECT_EQ(formatFlowEvent(close, kNoon),
            "12:00:05.000 reset  ml/llama-chat -> 10.77.0.2:8000 duration=3.9s requests=2 "
            "sent=512B received=3.0MiB retransmits=1\n");
}

// The agent's canary guard in the flow log: the split, the backend service and why.
TEST(FlowsTest, GuardLinesShowTheBackendServiceAndTheReason) {
  json guard = {{"seq", 6}, {"time_seconds", 1002.0}, {"type", "guard_tripped"}, {"service", "llama"},
                {"namespace", "ml"}, {"endpoint", "ml/llama-v2"}, {"reason", "ttft_p99 62.4 ms > 1.5 x primary's 22.1 ms"}};
  EXPECT_EQ(formatFlowEvent(guard, kNoon),
            "12:00:02.000 guard_tripped ml/llama -> ml/llama-v2: ttft_p99 62.4 ms > 1.5 x primary's 22.1 ms\n");
}

TEST(FlowsTest, FailureLines) {
  json refused = event(3, 1000.5, "refused");
  EXPECT_EQ(formatFlowEvent(refused, kNoon),
            "12:00:00.500 refused ml/llama-chat -> 10.77.0.2:8000 after=400µs\n");
  json timeout = event(4, 1000.5, "timeout");
  timeout["duration_seconds"] = 3.0;
  EXPECT_EQ(formatFlowEvent(timeout, kNoon),
            "12:00:00.500 timeout ml/llama-chat -> 10.77.0.2:8000 after=3.0s\n");
  json none = event(5, 1000.5, "no_backend");
  none["endpoint"] = "";
  EXPECT_EQ(formatFlowEvent(none, kNoon),
            "12:00:00.500 no_backend ml/llama-chat (no usable endpoint)\n");
}

TEST(FlowsTest, MissingFieldsAreLeftOut) {
  json e = json{{"seq", 1},       {"time_seconds", 1000.0}, {"type", "close"},
                {"service", "s"}, {"namespace", "ml"},      {"endpoint", "10.0.0.1:80"}};
  EXPECT_EQ(formatFlowEvent(e, kNoon), "12:00:00.000 close  ml/s -> 10.0.0.1:80\n");
}

const json kFlows = json{{"next", 2},
                         {"dropped", 0},
                         {"events", {event(1, 1001.123, "open"), event(2, 1002.0, "refused")}}};

TEST(FlowsTest, ResponseAsLinesOrJsonLines) {
  CommandOutput text = formatFlows(kFlows, kNoon, OutputFormat::kTable);
  EXPECT_EQ(text.exitCode, kExitOk);
  EXPECT_EQ(text.err, "");
  EXPECT_EQ(text.out,
            "12:00:01.123 open   ml/llama-chat -> 10.77.0.2:8000 connect=400µs\n"
            "12:00:02.000 refused ml/llama-chat -> 10.77.0.2:8000 after=400µs\n");

  CommandOutput lines = formatFlows(kFlows, kNoon, OutputFormat::kJson);
  EXPECT_EQ(lines.exitCode, kExitOk);
  std::istringstream in(lines.out);
  std::string line;
  std::vector<json> parsed;
  while (std::getline(in, line)) parsed.push_back(json::parse(line));
  ASSERT_EQ(parsed.size(), 2u);
  EXPECT_EQ(parsed[0], kFlows["events"][0]);
  EXPECT_EQ(parsed[1], kFlows["events"][1]);
}

TEST(FlowsTest, DroppedEventsAreReportedAndErrorsFail) {
  json lossy = kFlows;
  lossy["dropped"] = 17;
  CommandOutput r = formatFlows(lossy, kNoon, OutputFormat::kTable);
  EXPECT_EQ(r.exitCode, kExitOk);
  EXPECT_NE(r.err.find("17 flow events were lost"), std::string::npos);

  CommandOutput e = formatFlows(json{{"error", "no telemetry"}}, kNoon, OutputFormat::kTable);
  EXPECT_EQ(e.exitCode, kExitError);
  EXPECT_EQ(e.err, "meshctl: agent error: no telemetry\n");
  EXPECT_EQ(formatFlows(json{{"events", 1}}, kNoon, OutputFormat::kJson).exitCode, kExitError);
}

// Pages like the agent: odd calls bring two new events, even calls find
// nothing new (and send `next` unchanged). Records the `since` asked for.
struct FakeFlowsAgent {
  std::vector<json> requests;
  int seq = 0;
  AgentCall call() {
    return [this](const json& request) -> Result<json> {
      requests.push_back(request);
      json events = json::array();
      for (int i = 0; requests.size() % 2 == 1 && i < 2; ++i) {
        ++seq;
        events.push_back(event(seq, 1000.0 + seq, "open"));
      }
      return json{{"next", seq}, {"dropped", 0}, {"events", events}};
    };
  }
};

TEST(FlowsTest, WithoutFollowReadsUntilNothingNew) {
  FakeFlowsAgent agent;
  std::vector<double> sleeps;
  PollLoop loop{[] { return false; }, [&](double s) { sleeps.push_back(s); }};
  std::ostringstream out, err;
  EXPECT_EQ(runFlows(agent.call(), {}, OutputFormat::kTable, kNoon, out, err, loop), kExitOk);
  ASSERT_EQ(agent.requests.size(), 2u);
  EXPECT_EQ(agent.requests[0], json({{"method", "flows"}, {"since", 0}}));
  EXPECT_EQ(agent.requests[1], json({{"method", "flows"}, {"since", 2}}));
  EXPECT_TRUE(sleeps.empty());
  EXPECT_EQ(err.str(), "");
  EXPECT_EQ(out.str(),
            "12:00:01.000 open   ml/llama-chat -> 10.77.0.2:8000 connect=400µs\n"
            "12:00:02.000 open   ml/llama-chat -> 10.77.0.2:8000 connect=400µs\n");
}

TEST(FlowsTest, WithoutFollowFetchesEveryPage) {
  // Three full pages, then nothing: one command prints all of them.
  int calls = 0;
  std::vector<json> asked;
  AgentCall paged = [&](const json& request) -> Result<json> {
    asked.push_back(request["since"]);
    json events = json::array();
    if (++calls <= 3) events.push_back(event(calls, 1000.0 + calls, "open"));
    return json{{"next", std::min(calls, 3)}, {"dropped", 0}, {"events", events}};
  };
  PollLoop loop{[] { return false; }, [](double) {}};
  std::ostringstream out, err;
  EXPECT_EQ(runFlows(paged, {}, OutputFormat::kJson, kNoon, out, err, loop), kExitOk);
  EXPECT_EQ(asked, (std::vector<json>{0, 1, 2, 3}));
  std::string printed = out.str();
  EXPECT_EQ(std::count(printed.begin(), printed.end(), '\n'), 3);

  // An agent that always has more stops a one-shot command after kFlowsMaxPages.
  int endless = 0;
  AgentCall busy = [&](const json&) -> Result<json> {
    ++endless;
    return json{{"next", endless}, {"dropped", 0}, {"events", {event(endless, 1000, "open")}}};
  };
  std::ostringstream out2, err2;
  EXPECT_EQ(runFlows(busy, {}, OutputFormat::kJson, kNoon, out2, err2, loop), kExitOk);
  EXPECT_EQ(endless, kFlowsMaxPages);
}

TEST(FlowsTest, FollowAsksSincePreviousNextUntilStopped) {
  FakeFlowsAgent agent;
  std::vector<double> sleeps;
  PollLoop loop{[&] { return sleeps.size() >= 3; }, [&](double s) { sleeps.push_back(s); }};
  std::ostringstream out, err;
  FlowsOptions options{true, 0.25};
  EXPECT_EQ(runFlows(agent.call(), options, OutputFormat::kJson, kNoon, out, err, loop), kExitOk);
  // Events, then at once the empty answer, then a wait; three times.
  std::vector<json> since;
  for (const auto& r : agent.requests) since.push_back(r["since"]);
  EXPECT_EQ(since, (std::vector<json>{0, 2, 2, 4, 4, 6}));
  EXPECT_EQ(sleeps, (std::vector<double>{0.25, 0.25, 0.25}));
  std::istringstream in(out.str());
  std::string line;
  int n = 0;
  while (std::getline(in, line)) EXPECT_EQ(json::parse(line)["seq"], ++n);
  EXPECT_EQ(n, 6);
  EXPECT_EQ(err.str(), "");
}

TEST(FlowsTest, NoEventsAndUnreachableAgent) {
  AgentCall empty = [](const json&) -> Result<json> {
    return json{{"next", 0}, {"dropped", 0}, {"events", json::array()}};
  };
  PollLoop loop{[] { return false; }, [](double) {}};
  std::ostringstream out, err;
  EXPECT_EQ(runFlows(empty, {}, OutputFormat::kTable, kNoon, out, err, loop), kExitOk);
  EXPECT_EQ(out.str(), "");
  EXPECT_EQ(err.str(), "No flow events.\n");

  AgentCall down = [](const json&) -> Result<json> { return Error::msg("agent is not running"); };
  std::ostringstream out2, err2;
  EXPECT_EQ(runFlows(down, {true, 1.0}, OutputFormat::kTable, kNoon, out2, err2, loop),
            kExitAgentUnreachable);
  EXPECT_EQ(err2.str(), "meshctl: agent is not running\n");
}

}  // namespace
}  // namespace aimesh
