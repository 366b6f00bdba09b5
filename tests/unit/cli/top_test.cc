// meshctl top: frames rendered from pairs of the agent's "top" responses
// (rates, formatting, sorting) and the polling loop with a fake agent and a
// fake clock; no agent, no signals.
#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

#include "commands/commands.h"

namespace aimesh {
namespace {

using nlohmann::json;

json endpoint(const std::string& service, const std::string& ns, const std::string& addr, int id,
              int requests) {
  return json{{"service", service}, {"namespace", ns},      {"model", "m"},
              {"endpoint", addr},   {"backend_id", id},     {"active", 4},
              {"opened", 10},       {"requests", requests}, {"responses", requests},
              {"errors", 1},        {"ttft_p50", 0.052},    {"ttft_p99", 0.31},
              {"gap_p50", 0.0021}};
}

json poll(double t, std::vector<json> endpoints) {
  return json{{"time_seconds", t}, {"endpoints", endpoints}};
}

const json kFirst = poll(100.0, {endpoint("llama-chat", "ml", "10.77.0.2:8000", 3, 100),
                                 endpoint("embed", "default", "10.77.0.9:80", 1, 7)});

TEST(TopTest, FirstFrameHasNoRate) {
  CommandOutput r = formatTopFrame(json(), kFirst, OutputFormat::kTable);
  EXPECT_EQ(r.exitCode, kExitOk);
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(
      r.out,
      "SERVICE         ENDPOINT         ACTIVE   REQ/S   TTFT_P50   TTFT_P99   GAP_P50   ERRORS\n"
      "default/embed   10.77.0.9:80          4       -     52.0ms      310ms     2.1ms        1\n"
      "ml/llama-chat   10.77.0.2:8000        4       -     52.0ms      310ms     2.1ms        1\n");
}

TEST(TopTest, RateFromSuccessivePolls) {
  json second = poll(102.0, {endpoint("llama-chat", "ml", "10.77.0.2:8000", 3, 161),
                             endpoint("embed", "default", "10.77.0.9:80", 1, 7)});
  EXPECT_DOUBLE_EQ(*requestRate(kFirst, second, second["endpoints"][0]), 30.5);
  EXPECT_DOUBLE_EQ(*requestRate(kFirst, second, second["endpoints"][1]), 0.0);
  CommandOutput r = formatTopFrame(kFirst, second, OutputFormat::kTable);
  EXPECT_EQ(
      r.out,
      "SERVICE         ENDPOINT         ACTIVE   REQ/S   TTFT_P50   TTFT_P99   GAP_P50   ERRORS\n"
      "default/embed   10.77.0.9:80          4     0.0     52.0ms      310ms     2.1ms        1\n"
      "ml/llama-chat   10.77.0.2:8000        4    30.5     52.0ms      310ms     2.1ms        1\n");
}

// A guarded canary's endpoints carry the guard's state: a GUARD column then.
TEST(TopTest, GuardColumnOnlyWithAGuardedCanary) {
  json canary = endpoint("llama-v2", "ml", "10.77.0.3:8000", 4, 5);
  canary["guard"] = "tripped";
  CommandOutput r = formatTopFrame(json(), poll(100.0, {endpoint("llama-v1", "ml", "10.77.0.2:8000", 3, 9), canary}),
                                   OutputFormat::kTable);
  EXPECT_EQ(r.out,
            "SERVICE       ENDPOINT         ACTIVE   REQ/S   TTFT_P50   TTFT_P99   GAP_P50   ERRORS   GUARD\n"
            "ml/llama-v1   10.77.0.2:8000        4       -     52.0ms      310ms     2.1ms        1\n"
            "ml/llama-v2   10.77.0.3:8000        4       -     52.0ms      310ms     2.1ms        1   tripped\n");
}

TEST(TopTest, NoRateWhenItCannotBeTold) {
  json ep = endpoint("llama-chat", "ml", "10.77.0.2:8000", 3, 50);
  // No previous poll.
  EXPECT_FALSE(requestRate(json(), poll(101, {ep}), ep));
  // Counter went backwards: the agent restarted.
  EXPECT_FALSE(requestRate(kFirst, poll(101, {ep}), ep));
  // Time did not advance.
  json more = endpoint("llama-chat", "ml", "10.77.0.2:8000", 3, 150);
  EXPECT_FALSE(requestRate(kFirst, poll(100, {more}), more));
  // A new endpoint, and a backend id reused for another address.
  json fresh = endpoint("llama-chat", "ml", "10.77.0.5:8000", 9, 150);
  EXPECT_FALSE(requestRate(kFirst, poll(101, {fresh}), fresh));
  json reused = endpoint("llama-chat", "ml", "10.77.0.5:8000", 3, 150);
  EXPECT_FALSE(requestRate(kFirst, poll(101, {reused}), reused));
  // The same endpoint with time moving on.
  EXPECT_DOUBLE_EQ(*requestRate(kFirst, poll(101, {more}), more), 50.0);
}

TEST(TopTest, MissingPercentilesAreDashes) {
  json ep = endpoint("embed", "default", "10.77.0.9:80", 1, 0);
  ep["ttft_p50"] = nullptr;
  ep["ttft_p99"] = 0;
  ep.erase("gap_p50");
  CommandOutput r = formatTopFrame(json(), poll(1, {ep}), OutputFormat::kTable);
  EXPECT_EQ(
      r.out,
      "SERVICE         ENDPOINT       ACTIVE   REQ/S   TTFT_P50   TTFT_P99   GAP_P50   ERRORS\n"
      "default/embed   10.77.0.9:80        4       -          -          -         -        1\n");
}

TEST(TopTest, EmptyJsonAndErrors) {
  EXPECT_EQ(formatTopFrame(json(), poll(1, {}), OutputFormat::kTable).out, "No endpoints.\n");

  CommandOutput j = formatTopFrame(json(), kFirst, OutputFormat::kJson);
  EXPECT_EQ(j.out.find('\n'), j.out.size() - 1) << "one line per poll";
  EXPECT_EQ(json::parse(j.out), kFirst);

  CommandOutput e = formatTopFrame(json(), json{{"error", "boom"}}, OutputFormat::kTable);
  EXPECT_EQ(e.exitCode, kExitError);
  EXPECT_EQ(e.err, "meshctl: agent error: boom\n");
  EXPECT_EQ(formatTopFrame(json(), json{{"endpoints", "x"}}, OutputFormat::kTable).exitCode,
            kExitError);
}

// Answers "top" with polls 2 s apart whose llama-chat requests grow by 20.
struct FakeTopAgent {
  std::vector<json> requests;
  int polls = 0;
  AgentCall call() {
    return [this](const json& request) -> Result<json> {
      requests.push_back(request);
      ++polls;
      return poll(100.0 + 2 * polls,
                  {endpoint("llama-chat", "ml", "10.77.0.2:8000", 3, 100 + 20 * polls)});
    };
  }
};

struct FakeLoop {
  std::vector<double> sleeps;
  int stopAfterSleeps = -1;  // -1: never
  PollLoop loop() {
    return PollLoop{[this] {
                      return stopAfterSleeps >= 0 &&
                             static_cast<int>(sleeps.size()) >= stopAfterSleeps;
                    },
                    [this](double s) { sleeps.push_back(s); }};
  }
};

TEST(TopTest, FramesSeparatedByABlankLineWhenNotATerminal) {
  FakeTopAgent agent;
  FakeLoop clock;
  std::ostringstream out, err;
  TopOptions options;
  options.iterations = 3;
  options.intervalSeconds = 0.5;
  int rc = runTop(agent.call(), options, OutputFormat::kTable, out, err, clock.loop());
  EXPECT_EQ(rc, kExitOk);
  EXPECT_EQ(err.str(), "");
  EXPECT_EQ(agent.requests.size(), 3u);
  EXPECT_EQ(agent.requests[0], json({{"method", "top"}}));
  EXPECT_EQ(clock.sleeps, (std::vector<double>{0.5, 0.5}));
  std::string header =
      "SERVICE         ENDPOINT         ACTIVE   REQ/S   TTFT_P50   TTFT_P99   GAP_P50   ERRORS\n";
  EXPECT_EQ(out.str(), header +
                           "ml/llama-chat   10.77.0.2:8000        4       -     52.0ms      310ms  "
                           "   2.1ms        1\n"
                           "\n" +
                           header +
                           "ml/llama-chat   10.77.0.2:8000        4    10.0     52.0ms      310ms  "
                           "   2.1ms        1\n"
                           "\n" +
                           header +
                           "ml/llama-chat   10.77.0.2:8000        4    10.0     52.0ms      310ms  "
                           "   2.1ms        1\n");
  EXPECT_EQ(out.str().find("\x1b"), std::string::npos);
}

TEST(TopTest, RedrawsInPlaceOnATerminalAndStopsWhenAsked) {
  FakeTopAgent agent;
  FakeLoop clock;
  clock.stopAfterSleeps = 2;  // Ctrl-C during the second sleep
  std::ostringstream out, err;
  TopOptions options;
  options.clearScreen = true;
  int rc = runTop(agent.call(), options, OutputFormat::kTable, out, err, clock.loop());
  EXPECT_EQ(rc, kExitOk);
  EXPECT_EQ(agent.polls, 2);
  std::string s = out.str();
  EXPECT_EQ(s.rfind("\x1b[H\x1b[2J", 0), 0u);
  std::size_t clears = 0;
  for (std::size_t p = s.find("\x1b[H\x1b[2J"); p != std::string::npos;
       p = s.find("\x1b[H\x1b[2J", p + 1)) {
    ++clears;
  }
  EXPECT_EQ(clears, 2u);
  EXPECT_EQ(s.find("\n\n"), std::string::npos);
}

TEST(TopTest, JsonLinesOnePerPoll) {
  FakeTopAgent agent;
  FakeLoop clock;
  std::ostringstream out, err;
  TopOptions options;
  options.iterations = 2;
  options.clearScreen = true;  // ignored for json
  EXPECT_EQ(runTop(agent.call(), options, OutputFormat::kJson, out, err, clock.loop()), kExitOk);
  std::istringstream lines(out.str());
  std::string line;
  int n = 0;
  while (std::getline(lines, line)) {
    EXPECT_TRUE(json::parse(line).contains("endpoints"));
    ++n;
  }
  EXPECT_EQ(n, 2);
}

TEST(TopTest, AgentFailuresEndTheLoopWithTheirExitCode) {
  FakeLoop clock;
  std::ostringstream out, err;
  AgentCall down = [](const json&) -> Result<json> { return Error::msg("agent is not running"); };
  EXPECT_EQ(runTop(down, {}, OutputFormat::kTable, out, err, clock.loop()), kExitAgentUnreachable);
  EXPECT_EQ(err.str(), "meshctl: agent is not running\n");
  EXPECT_EQ(out.str(), "");

  int calls = 0;
  AgentCall failsLater = [&](const json&) -> Result<json> {
    if (++calls == 1) return kFirst;
    return json{{"error", "shutting down"}};
  };
  std::ostringstream out2, err2;
  EXPECT_EQ(runTop(failsLater, {}, OutputFormat::kTable, out2, err2, clock.loop()), kExitError);
  EXPECT_NE(out2.str().find("ml/llama-chat"), std::string::npos);
  EXPECT_EQ(err2.str(), "meshctl: agent error: shutting down\n");
}

}  // namespace
}  // namespace aimesh
