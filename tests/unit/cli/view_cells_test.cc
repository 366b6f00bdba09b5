// commands/view_cells.h: keys found through a view's field list, cells that
// read like cellText() of the same JSON, "-" for what an older agent left out,
// and the typed commands' answer to a response of the wrong type.
#include "commands/view_cells.h"

#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace aimesh {
namespace {

using nlohmann::json;

TEST(ViewCellsTest, KeysComeFromTheFieldList) {
  EXPECT_STREQ(viewKey(&view::Endpoint::inFlight), "in_flight");
  EXPECT_STREQ(viewKey(&view::Endpoint::nameSpace), "namespace");
  EXPECT_STREQ(viewKey(&view::EndpointConnections::oldestSeconds), "oldest_seconds");
  EXPECT_STREQ(viewKey(&view::Status::connectionLifecycle), "connection_lifecycle");
}

// Strings bare ("" is "-"), booleans yes/no, numbers as JSON prints them,
// what the agent did not send (null or missing) "-".
TEST(ViewCellsTest, CellsShowEachTypeOneWay) {
  json j = {{"service", "s"}, {"namespace", ""}, {"port", 8000}, {"ejected", true},
            {"in_flight", nullptr}, {"kv_cache_usage", 0.5}};
  view::Endpoint e = *view::parseView<view::Endpoint>(j);
  Item<view::Endpoint> item(e, j);
  EXPECT_EQ(item.cell(&view::Endpoint::service), "s");
  EXPECT_EQ(item.cell(&view::Endpoint::nameSpace), "-");
  EXPECT_EQ(item.cell(&view::Endpoint::port), "8000");
  EXPECT_EQ(item.cell(&view::Endpoint::ejected), "yes");
  EXPECT_EQ(item.cell(&view::Endpoint::inFlight), "-");
  EXPECT_EQ(item.cell(&view::Endpoint::kvCacheUsage), "0.5");
  EXPECT_EQ(item.cell(&view::Endpoint::weight), "-");
  EXPECT_FALSE(item.has(&view::Endpoint::inFlight));  // null: not sent
  EXPECT_FALSE(item.has(&view::Endpoint::weight));
  EXPECT_TRUE(item.has(&view::Endpoint::port));
  EXPECT_EQ(cellOf(std::vector<std::string>{"a", "b"}), "a,b");
  EXPECT_EQ(cellOf(std::vector<std::string>{}), "-");
  EXPECT_EQ(cellOf(std::optional<uint32_t>{}), "-");
}

TEST(ViewCellsTest, AWrongTypeIsAnUnexpectedResponse) {
  json bad = {{"services", {{{"name", "s"}, {"endpoints", "three"}}}}};
  CommandOutput r = formatServices(bad, "", OutputFormat::kTable);
  EXPECT_EQ(r.exitCode, kExitError);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err.rfind("meshctl: unexpected response from the agent: ", 0), 0u) << r.err;
}

TEST(ViewCellsTest, OlderAgentWithoutCountsShowsDashes) {
  // An agent that sends no counts at all: "-", never a made-up 0.
  json services = {{"services", {{{"name", "s"}, {"namespace", "ml"}}}}};
  CommandOutput r = formatServices(services, "", OutputFormat::kTable);
  EXPECT_EQ(r.exitCode, kExitOk);
  std::istringstream lines(r.out);
  std::string header, row;
  std::getline(lines, header);
  std::getline(lines, row);
  std::istringstream cells(row);
  std::vector<std::string> got;
  for (std::string c; cells >> c;) got.push_back(c);
  EXPECT_EQ(got, (std::vector<std::string>{"ml", "s", "-", "-", "-", "-/-", "-", "-"})) << r.out;
}

}  // namespace
}  // namespace aimesh
