// meshctl routes: the table from an agent's answer, one split, JSON, errors.
#include <gtest/gtest.h>

#include "commands/commands.h"

namespace aimesh {
namespace {

nlohmann::json answer() {
  return nlohmann::json::parse(R"({"routes":[{"name":"llama","namespace":"ml","service_id":3,"port":8000,
    "protocol":"TCP","source":"state file","guard_metric":"ttft_p99","primary":"ml/llama-v1","window_seconds":60,
    "backends":[
      {"service":"ml/llama-v1","port":8000,"weight":95,"effective_weight":95,"resolved":true,
       "configured_share":95.0,"observed_share":99.5,"connections":995},
      {"service":"ml/llama-v2","port":8000,"weight":5,"effective_weight":0,"resolved":true,
       "configured_share":5.0,"observed_share":0.5,"connections":5,"guard":"tripped","guard_trips":2,
       "guard_reason":"ttft_p99 90 ms > 1.5 x primary's 30 ms"},
      {"service":"ml/llama-v3","port":8000,"weight":0,"effective_weight":0,"resolved":false,
       "configured_share":0.0,"connections":0,"guard":"ok","guard_trips":0}]}],
    "guard_events":[{"time_seconds":1.0,"split":"ml/llama","backend":"ml/llama-v2","from":"ok","to":"tripped",
                     "reason":"ttft_p99 90 ms > 1.5 x primary's 30 ms"}]})");
}

TEST(RoutesCommand, TableShowsWeightsSharesAndTheGuard) {
  CommandOutput out = formatRoutes(answer(), "", OutputFormat::kTable);
  ASSERT_EQ(out.exitCode, 0) << out.err;
  for (const char* part : {"BACKEND", "OBSERVED", "ml/llama-v1", "primary", "99.5%", "5.0%",
                           "tripped (2 trips): ttft_p99 90 ms > 1.5 x primary's 30 ms", "ml/llama-v3 (missing)",
                           "last 60 s", "ml/llama ml/llama-v2: ok -> tripped"})
    EXPECT_NE(out.out.find(part), std::string::npos) << part << " in\n" << out.out;
}

TEST(RoutesCommand, OneSplitJsonAndErrors) {
  CommandOutput one = formatRoutes(answer(), "ml/llama", OutputFormat::kJson);
  ASSERT_EQ(one.exitCode, 0);
  auto j = nlohmann::json::parse(one.out);
  EXPECT_EQ(j["routes"].size(), 1u);
  EXPECT_EQ(j["routes"][0]["backends"][1]["guard"], "tripped");
  nlohmann::json empty = nlohmann::json::parse(R"({"routes":[],"guard_events":[]})");
  CommandOutput nope = formatRoutes(empty, "nope", OutputFormat::kTable);
  EXPECT_EQ(nope.exitCode, kExitError);
  EXPECT_EQ(nope.err, "meshctl: no split or route for nope\n");
  CommandOutput none = formatRoutes(empty, "", OutputFormat::kTable);
  EXPECT_EQ(none.exitCode, 0);
  EXPECT_EQ(none.err, "No splits.\n");
  EXPECT_NE(formatRoutes(nlohmann::json::parse(R"({"error":"boom"})"), "", OutputFormat::kTable).exitCode, 0);
}

// The agent filters: meshctl sends the service argument as the endpoints
// command does (a bare name, or namespace and name).
TEST(RoutesCommand, TheServiceArgumentGoesToTheAgent) {
  std::vector<nlohmann::json> asked;
  AgentCall call = [&](const nlohmann::json& request) -> Result<nlohmann::json> {
    asked.push_back(request);
    return answer();
  };
  ASSERT_EQ(runRoutes(call, "", OutputFormat::kJson).exitCode, 0);
  ASSERT_EQ(runRoutes(call, "llama", OutputFormat::kJson).exitCode, 0);
  ASSERT_EQ(runRoutes(call, "ml/llama", OutputFormat::kJson).exitCode, 0);
  ASSERT_EQ(asked.size(), 3u);
  EXPECT_EQ(asked[0], (nlohmann::json{{"method", "routes"}}));
  EXPECT_EQ(asked[1], (nlohmann::json{{"method", "routes"}, {"service", "llama"}}));
  EXPECT_EQ(asked[2], (nlohmann::json{{"method", "routes"}, {"service", "llama"}, {"namespace", "ml"}}));
}

// Kubernetes mesh routes: listed with their state, the reasons under the
// table, the pool of a route to an InferencePool; an answer with a mesh
// route and no split (its parent named, nothing applied) shows the route.
TEST(RoutesCommand, MeshRoutesWithTheirStateAndReasons) {
  nlohmann::json a = answer();
  a["routes"][0]["source"] = "HTTPRoute ml/llama-canary";
  a["mesh_routes"] = nlohmann::json::parse(R"([
    {"route":"HTTPRoute ml/by-header","state":"not_applied","parents":["ml/chat"],"splits":[],
     "notes":["spec.rules[0].matches: only a rule for every request, without filters, can be applied to connections"]},
    {"route":"HTTPRoute ml/llama-canary","state":"applied","parents":["ml/llama"],"splits":["ml/llama"],"notes":[]},
    {"route":"HTTPRoute ml/to-pool","state":"applied","parents":["ml/embed"],"splits":[],"notes":[],
     "pool":"ml/embed-pool","pooled":["ml/embed"]}])");
  CommandOutput out = formatRoutes(a, "", OutputFormat::kTable);
  ASSERT_EQ(out.exitCode, 0) << out.err;
  for (const char* part : {"HTTPRoute ml/llama-canary", "Kubernetes routes:", "not_applied", "ml/chat", "POOL",
                           "ml/embed-pool", "HTTPRoute ml/by-header (not applied):\n  - spec.rules[0].matches: only a rule"})
    EXPECT_NE(out.out.find(part), std::string::npos) << part << " in\n" << out.out;
  nlohmann::json chatOnly = nlohmann::json::parse(R"({"routes":[],"guard_events":[]})");
  chatOnly["mesh_routes"] = nlohmann::json::array({a["mesh_routes"][0]});
  CommandOutput chat = formatRoutes(chatOnly, "chat", OutputFormat::kJson);
  ASSERT_EQ(chat.exitCode, 0) << chat.err;
  auto j = nlohmann::json::parse(chat.out);
  EXPECT_TRUE(j["routes"].empty());
  ASSERT_EQ(j["mesh_routes"].size(), 1u);
  EXPECT_EQ(j["mesh_routes"][0]["state"], "not_applied");
  CommandOutput text = formatRoutes(chatOnly, "ml/chat", OutputFormat::kTable);
  EXPECT_EQ(text.out.find("BACKEND"), std::string::npos) << text.out;  // no split table, only the route
  EXPECT_NE(text.out.find("HTTPRoute ml/by-header"), std::string::npos) << text.out;
}

}  // namespace
}  // namespace aimesh
