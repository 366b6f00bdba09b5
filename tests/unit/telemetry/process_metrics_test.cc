// Unit tests of the standard process_* families (telemetry/process_metrics.h):
// /proc/<pid>/stat and /proc/stat parsed, a fake /proc tree read back exactly,
// this test process's live values plausible in the Prometheus text, the
// OpenMetrics text and the protobuf format, and a /proc that cannot be read
// leaving families out without failing the scrape.
#include "telemetry/process_metrics.h"

#include <google/protobuf/io/coded_stream.h>
#include <gtest/gtest.h>
#include <io/prometheus/client/metrics.pb.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "fixtures/sandbox.h"
#include "telemetry/metrics.h"
#include "telemetry/metrics_proto.h"

namespace aimesh {
namespace {

namespace pb = io::prometheus::client;

const char* const kProcessFamilies[] = {"process_cpu_seconds_total", "process_resident_memory_bytes",
                                        "process_virtual_memory_bytes", "process_open_fds",
                                        "process_max_fds", "process_threads",
                                        "process_start_time_seconds"};

// A /proc/<pid>/stat line (52 fields) whose command name holds spaces and
// parentheses; utime 250, stime 130, 7 threads, started 12345 ticks after
// boot, 100 MiB virtual, 2560 pages resident.
constexpr const char* kStat =
    "4242 (we) ird (x)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 130 0 0 20 0 7 0 12345 104857600 2560 "
    "18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0 0 0 0 0 0 0 0 0\n";

struct Input {
  IdIndex index;
  DatapathStats stats;
  ProcessStats process = readProcessStats();  // this process, live
  MetricsInput in;
  Input() {
    in.index = &index;
    in.stats = &stats;
    in.process = &process;
  }
};

// name -> value of the unlabelled samples of a text exposition.
std::map<std::string, double> samples(const std::string& text) {
  auto families = parseTextExposition(text);
  EXPECT_TRUE(families) << families.error().message();
  std::map<std::string, double> out;
  if (!families) return out;
  for (const TextFamily& f : *families)
    for (const TextSample& s : f.samples)
      if (s.labels.empty()) out[s.name] = s.value;
  return out;
}

TEST(ProcessMetrics, ParsesProcStatPastACommandNameWithSpacesAndParentheses) {
  auto st = parseProcStat(kStat);
  ASSERT_TRUE(st) << st.error().message();
  EXPECT_EQ(st->utimeTicks, 250u);
  EXPECT_EQ(st->stimeTicks, 130u);
  EXPECT_EQ(st->threads, 7u);
  EXPECT_EQ(st->startTicks, 12345u);
  EXPECT_EQ(st->vsizeBytes, 104857600u);
  EXPECT_EQ(st->rssPages, 2560u);

  EXPECT_FALSE(parseProcStat("4242 no parenthesis S 1 2 3"));
  EXPECT_FALSE(parseProcStat("4242 (short) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 130"));
  std::string bad = kStat;
  bad.replace(bad.find(" 250 "), 5, " x50 ");
  EXPECT_FALSE(parseProcStat(bad));
}

TEST(ProcessMetrics, ParsesBootTimeFromProcStat) {
  auto b = parseBootTime("cpu  1 2 3 4\nintr 5 6\nctxt 7\nbtime 1700000000\nprocesses 9\n");
  ASSERT_TRUE(b) << b.error().message();
  EXPECT_EQ(*b, 1700000000u);
  EXPECT_FALSE(parseBootTime("cpu  1 2 3 4\nctxt 7\n"));
  EXPECT_FALSE(parseBootTime("btime soon\n"));
}

TEST(ProcessMetrics, ReadsAProcTreeExactly) {
  testing::ScratchDir dir;
  ASSERT_EQ(mkdir((dir.path() + "/self").c_str(), 0755), 0);
  ASSERT_EQ(mkdir((dir.path() + "/self/fd").c_str(), 0755), 0);
  dir.write("self/stat", kStat);
  dir.write("stat", "cpu  1 2 3\nbtime 1700000000\n");
  for (const char* fd : {"0", "1", "2", "3", "4"}) dir.write(std::string("self/fd/") + fd, "");
  ProcessStats p = readProcessStats(dir.path());
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  ASSERT_TRUE(p.cpuSeconds && p.residentBytes && p.virtualBytes && p.threads && p.startTimeSeconds && p.openFds);
  EXPECT_DOUBLE_EQ(*p.cpuSeconds, 380 / ticks);
  EXPECT_EQ(*p.residentBytes, 2560u * static_cast<uint64_t>(sysconf(_SC_PAGESIZE)));
  EXPECT_EQ(*p.virtualBytes, 104857600u);
  EXPECT_EQ(*p.threads, 7u);
  EXPECT_DOUBLE_EQ(*p.startTimeSeconds, 1700000000 + 12345 / ticks);
  EXPECT_EQ(*p.openFds, 5u);
  ASSERT_TRUE(p.maxFds);  // getrlimit(), not the tree
}

// The families of a /proc that is not there are left out; the rest of the
// scrape is whole, in both text formats.
TEST(ProcessMetrics, UnreadableProcLeavesItsFamiliesOutNotTheScrape) {
  testing::ScratchDir dir;
  ProcessStats none = readProcessStats(dir.path() + "/nonexistent");
  EXPECT_FALSE(none.cpuSeconds || none.residentBytes || none.virtualBytes || none.threads ||
               none.startTimeSeconds || none.openFds);
  // A garbled stat loses its families; the fd count stays.
  ASSERT_EQ(mkdir((dir.path() + "/self").c_str(), 0755), 0);
  ASSERT_EQ(mkdir((dir.path() + "/self/fd").c_str(), 0755), 0);
  dir.write("self/stat", "garbage\n");
  ProcessStats garbled = readProcessStats(dir.path());
  EXPECT_FALSE(garbled.cpuSeconds || garbled.residentBytes || garbled.startTimeSeconds);
  ASSERT_TRUE(garbled.openFds);
  EXPECT_EQ(*garbled.openFds, 0u);

  Input i;
  i.in.process = &none;
  for (bool om : {false, true}) {
    i.in.openMetrics = om;
    std::string out = renderMetrics(i.in);
    EXPECT_EQ(out.find("process_cpu_seconds"), std::string::npos) << out;
    EXPECT_EQ(out.find("process_resident_memory_bytes"), std::string::npos);
    EXPECT_EQ(out.find("process_start_time_seconds"), std::string::npos);
    EXPECT_EQ(out.find("process_open_fds"), std::string::npos);
    EXPECT_NE(out.find("\nprocess_max_fds "), std::string::npos);
    EXPECT_NE(out.find("\naimesh_build_info{"), std::string::npos);
    EXPECT_EQ(out.ends_with("# EOF\n"), om);
  }
}

// This process, read live: every family, once, with a plausible value.
TEST(ProcessMetrics, LiveValuesArePlausibleInTheTextFormat) {
  Input i;
  std::string text = renderMetrics(i.in);
  for (const char* name : kProcessFamilies) {
    std::string type = std::string(name) == "process_cpu_seconds_total" ? "counter" : "gauge";
    EXPECT_NE(text.find(std::string("# TYPE ") + name + " " + type + "\n"), std::string::npos) << name;
  }
  std::map<std::string, double> v = samples(text);
  for (const char* name : kProcessFamilies) ASSERT_TRUE(v.count(name)) << name << " missing:\n" << text;
  EXPECT_GE(v["process_cpu_seconds_total"], 0);
  EXPECT_GT(v["process_resident_memory_bytes"], 0);
  EXPECT_GE(v["process_virtual_memory_bytes"], v["process_resident_memory_bytes"]);
  EXPECT_GE(v["process_open_fds"], 3);  // stdin, stdout, stderr
  EXPECT_GE(v["process_max_fds"], v["process_open_fds"]);
  EXPECT_GE(v["process_threads"], 1);
  double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  // btime is whole seconds and follows the wall clock: allow a little slack.
  EXPECT_LE(v["process_start_time_seconds"], now + 2);
  EXPECT_GT(v["process_start_time_seconds"], now - 86400);
}

// OpenMetrics names the counter family without _total; the protobuf format
// carries every family with its type.
TEST(ProcessMetrics, EveryFormatCarriesTheProcessFamilies) {
  Input i;
  i.in.openMetrics = true;
  std::string om = renderMetrics(i.in);
  EXPECT_NE(om.find("# TYPE process_cpu_seconds counter\nprocess_cpu_seconds_total "), std::string::npos) << om;
  for (const char* name : kProcessFamilies)
    EXPECT_NE(om.find(std::string("\n") + name + " "), std::string::npos) << name;
  EXPECT_TRUE(om.ends_with("# EOF\n"));

  i.in.openMetrics = false;
  std::string bytes = renderMetricsProtobuf(i.in);
  std::map<std::string, pb::MetricFamily> byName;
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()),
                                            static_cast<int>(bytes.size()));
  uint32_t size = 0;
  while (in.ReadVarint32(&size)) {
    auto limit = in.PushLimit(static_cast<int>(size));
    pb::MetricFamily f;
    ASSERT_TRUE(f.ParseFromCodedStream(&in));
    in.PopLimit(limit);
    byName[f.name()] = f;
  }
  for (const char* name : kProcessFamilies) {
    ASSERT_TRUE(byName.count(name)) << name;
    const pb::MetricFamily& f = byName[name];
    ASSERT_EQ(f.metric_size(), 1) << name;
    EXPECT_FALSE(f.help().empty()) << name;
    if (std::string(name) == "process_cpu_seconds_total") {
      EXPECT_EQ(f.type(), pb::COUNTER);
      EXPECT_GE(f.metric(0).counter().value(), 0);
    } else {
      EXPECT_EQ(f.type(), pb::GAUGE) << name;
      EXPECT_GT(f.metric(0).gauge().value(), 0) << name;
    }
  }
}

}  // namespace
}  // namespace aimesh
