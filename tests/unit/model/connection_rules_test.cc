#include "model/connection_rules.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "model/snapshot.h"

namespace aimesh {
namespace {

struct Valid {
  std::string text;
  uint64_t ms;
};

TEST(ConnectionRulesDuration, ValidForms) {
  const std::vector<Valid> cases = {
      // Plain numbers are seconds.
      {"0", 0},
      {"90", 90'000},
      {"1.5", 1'500},
      {"0.25", 250},
      {"007", 7'000},
      {"0.0", 0},
      // One unit.
      {"500ms", 500},
      {"1ms", 1},
      {"0ms", 0},
      {"0s", 0},
      {"30s", 30'000},
      {"2.5s", 2'500},
      {"10m", 600'000},
      {"0.5m", 30'000},
      {"1h", 3'600'000},
      {"1.5h", 5'400'000},
      // Exact, not binary floating point: 1.1h is not 3959999.
      {"1.1h", 3'960'000},
      {"0.001s", 1},
      // Rounded to the nearest ms.
      {"1.4ms", 1},
      {"1.5ms", 2},
      {"0.5ms", 1},
      {"0.0005s", 1},
      {"1.0001s", 1'000},
      // Digits past the ninth do not count.
      {"1.0000000009s", 1'000},
      // Up to 30 days, inclusive.
      {"720h", 2'592'000'000},
      {"43200m", 2'592'000'000},
      {"2592000", 2'592'000'000},
      {"2592000000ms", 2'592'000'000},
      {"000000000000000000000001s", 1'000},
  };
  for (const Valid& c : cases) {
    auto r = parseDurationMs(c.text);
    ASSERT_TRUE(r.ok()) << c.text << ": " << r.error().message();
    EXPECT_EQ(*r, c.ms) << c.text;
  }
}

struct Invalid {
  std::string text;
  std::string message;  // the whole message
};

TEST(ConnectionRulesDuration, InvalidFormsSayWhy) {
  const std::string forms = "must be a duration like 90, 1.5, 500ms, 30s, 10m or 1h, got ";
  const std::vector<Invalid> cases = {
      {"", forms + "''"},
      {"-5s", "must not be negative, got '-5s'"},
      {"-1", "must not be negative, got '-1'"},
      {"-0.5", "must not be negative, got '-0.5'"},
      {"nan", forms + "'nan'"},
      {"NaN", forms + "'NaN'"},
      {".nan", forms + "'.nan'"},
      {"-nan", forms + "'-nan'"},
      {"inf", forms + "'inf'"},
      {".inf", forms + "'.inf'"},
      {"+5s", forms + "'+5s'"},
      {"s", forms + "'s'"},
      {"ms", forms + "'ms'"},
      {".5s", forms + "'.5s'"},
      {"1.s", forms + "'1.s'"},
      {"1.5.2s", forms + "'1.5.2s'"},
      {"1e3", forms + "'1e3'"},
      {"10 m", forms + "'10 m'"},
      {" 10m", forms + "' 10m'"},
      {"10m ", forms + "'10m '"},
      {"1h30m", forms + "'1h30m'"},
      {"0x10", forms + "'0x10'"},
      {"2d", "unknown unit 'd' in '2d'; use ms, s, m or h"},
      {"10min", "unknown unit 'min' in '10min'; use ms, s, m or h"},
      {"100us", "unknown unit 'us' in '100us'; use ms, s, m or h"},
      {"5S", "unknown unit 'S' in '5S'; use ms, s, m or h"},
      {"1H", "unknown unit 'H' in '1H'; use ms, s, m or h"},
      {"721h", "must be at most 720h (30 days), got '721h'"},
      {"720.001h", "must be at most 720h (30 days), got '720.001h'"},
      {"2592000.001", "must be at most 720h (30 days), got '2592000.001'"},
      {"2592000001ms", "must be at most 720h (30 days), got '2592000001ms'"},
      {"99999999999999999999999999h", "must be at most 720h (30 days), got '99999999999999999999999999h'"},
      {"0.4ms", "must be 0 or at least 1ms, got '0.4ms'"},
      {"0.0001", "must be 0 or at least 1ms, got '0.0001'"},
      {"0.0000000001h", "must be 0 or at least 1ms, got '0.0000000001h'"},
  };
  for (const Invalid& c : cases) {
    auto r = parseDurationMs(c.text);
    ASSERT_FALSE(r.ok()) << "'" << c.text << "' parsed as " << *r;
    EXPECT_EQ(r.error().message(), c.message) << c.text;
    EXPECT_EQ(r.error().code, 0);
  }
}

TEST(ConnectionRulesDuration, FormatReadsBack) {
  const std::vector<Valid> cases = {{"0", 0},           {"1ms", 1},       {"1500ms", 1'500}, {"90s", 90'000},
                                    {"5m", 300'000},    {"90m", 5'400'000}, {"1h", 3'600'000}, {"720h", kMaxDurationMs},
                                    {"61001ms", 61'001}};
  for (const Valid& c : cases) {
    EXPECT_EQ(formatDurationMs(c.ms), c.text);
    auto back = parseDurationMs(formatDurationMs(c.ms));
    ASSERT_TRUE(back.ok()) << c.text;
    EXPECT_EQ(*back, c.ms);
  }
  EXPECT_EQ(formatDurationMs(kDefaultDrainTimeoutMs), "5m");
}

TEST(ConnectionRulesBool, TrueAndFalseOnly) {
  for (const char* t : {"true", "True", "TRUE"}) EXPECT_EQ(parseBoolText(t).value(), true) << t;
  for (const char* f : {"false", "False", "FALSE"}) EXPECT_EQ(parseBoolText(f).value(), false) << f;
  for (const char* bad : {"", "yes", "no", "on", "off", "1", "0", "tRUE", " true", "t"}) {
    auto r = parseBoolText(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().message(), "must be true or false, got '" + std::string(bad) + "'");
  }
}

TEST(ConnectionRulesRebalanceRate, RangeAndForm) {
  for (auto [text, want] : std::vector<std::pair<std::string, double>>{
           {"4", 4}, {"0.5", 0.5}, {"1000", 1000}, {"0.001", 0.001}, {"1000.0", 1000}, {"007", 7}}) {
    auto r = parseRebalanceRate(text);
    ASSERT_TRUE(r.ok()) << text << ": " << r.error().message();
    EXPECT_DOUBLE_EQ(*r, want) << text;
  }
  const std::string form = "must be a number > 0 and <= 1000, got ";
  const std::vector<Invalid> cases = {
      {"0", "must be > 0 and <= 1000, got 0"},
      {"0.0", "must be > 0 and <= 1000, got 0.0"},
      {"1000.5", "must be > 0 and <= 1000, got 1000.5"},
      {"1e9", form + "'1e9'"},
      {"99999999999999999999999", "must be > 0 and <= 1000, got 99999999999999999999999"},
      {"0." + std::string(400, '0') + "1", "must be > 0 and <= 1000, got 0." + std::string(400, '0') + "1"},
      {"-1", form + "'-1'"},
      {"", form + "''"},
      {"fast", form + "'fast'"},
      {"nan", form + "'nan'"},
      {"inf", form + "'inf'"},
      {"4/s", form + "'4/s'"},
  };
  for (const Invalid& c : cases) {
    auto r = parseRebalanceRate(c.text);
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_EQ(r.error().message(), c.message);
  }
}

TEST(ConnectionRulesMaxRequests, RangeAndForm) {
  for (auto [text, want] : std::vector<std::pair<std::string, uint32_t>>{
           {"0", 0}, {"1", 1}, {"1000", 1000}, {"4294967295", 4294967295u}, {"-0", 0}, {"00042", 42}}) {
    auto r = parseMaxRequests(text);
    ASSERT_TRUE(r.ok()) << text << ": " << r.error().message();
    EXPECT_EQ(*r, want) << text;
  }
  const std::string form = "must be an integer 0..4294967295, got ";
  const std::vector<Invalid> cases = {
      {"4294967296", "must be 0..4294967295, got 4294967296"},
      {"99999999999999999999999", "must be 0..4294967295, got 99999999999999999999999"},
      {"-1", "must be 0..4294967295, got -1"},
      {"1.5", form + "'1.5'"},
      {"1e3", form + "'1e3'"},
      {"", form + "''"},
      {"-", form + "'-'"},
      {"+5", form + "'+5'"},
      {"many", form + "'many'"},
  };
  for (const Invalid& c : cases) {
    auto r = parseMaxRequests(c.text);
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_EQ(r.error().message(), c.message);
  }
}

}  // namespace
}  // namespace aimesh
