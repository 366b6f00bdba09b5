// meshctl bpf: formatting of pinned programs and maps (no kernel), fdinfo
// parsing and the --stats delta.
#include <gtest/gtest.h>

#include "commands/commands.h"
#include "probe/pinned.h"

namespace aimesh {
namespace {

using nlohmann::json;

PinnedObjects sample() {
  PinnedObjects o;
  o.pinDir = "/sys/fs/bpf/aimesh";
  o.programs = {
      {"connect4", "links/connect4", "cgroup_sock_addr", "cgroup_inet4_connect", "/sys/fs/cgroup/unified/x", 41, 17,
       120, 250000},
      {"sockops", "links/sockops", "sock_ops", "cgroup_sock_ops", "/sys/fs/cgroup/unified/x", 45, 20, 0, 0},
      {"tc_ingress", "tc/eth1", "sched_cls", "tc ingress", "eth1", 50, 0, 3, 4500000},
  };
  PinnedMap backends;
  backends.name = "aimesh_backends";
  backends.type = "hash";
  backends.id = 7;
  backends.keySize = 4;
  backends.valueSize = 40;
  backends.maxEntries = 16384;
  backends.used = 3;
  backends.memlockBytes = 1676288;
  PinnedMap events;
  events.name = "aimesh_events";
  events.type = "ringbuf";
  events.id = 9;
  events.maxEntries = 262144;
  events.memlockBytes = 266240;
  o.maps = {backends, events};
  return o;
}

TEST(BpfTest, Table) {
  CommandOutput r = formatBpf(sample(), BpfView{}, OutputFormat::kTable);
  EXPECT_EQ(r.exitCode, kExitOk);
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(r.out,
            "pin dir: /sys/fs/bpf/aimesh\n"
            "run counts: 0 unless kernel.bpf_stats_enabled=1; --stats SECONDS measures a window without it\n"
            "\n"
            "programs:\n"
            "NAME         TYPE               ATTACH                 TO                         PROG   LINK   RUNS     AVG\n"
            "connect4     cgroup_sock_addr   cgroup_inet4_connect   /sys/fs/cgroup/unified/x     41     17    120   2.1µs\n"
            "sockops      sock_ops           cgroup_sock_ops        /sys/fs/cgroup/unified/x     45     20      0       -\n"
            "tc_ingress   sched_cls          tc ingress             eth1                         50      -      3   1.5ms\n"
            "\n"
            "maps:\n"
            "NAME              TYPE      KEY   VALUE      MAX   USED     MEMORY\n"
            "aimesh_backends   hash        4      40    16384      3     1.6MiB\n"
            "aimesh_events     ringbuf     0       0   262144    n/a   260.0KiB\n");
}

TEST(BpfTest, StatsNoteSaysWhatTheCountsCover) {
  BpfView window;
  window.statsSeconds = 1;
  EXPECT_NE(formatBpf(sample(), window, OutputFormat::kTable).out.find("run counts: during 1s (BPF_ENABLE_STATS)\n"),
            std::string::npos);
  BpfView sysctl;
  sysctl.statsSysctlOn = true;
  EXPECT_NE(formatBpf(sample(), sysctl, OutputFormat::kTable)
                .out.find("run counts: since load (kernel.bpf_stats_enabled=1)\n"),
            std::string::npos);
}

TEST(BpfTest, ProblemsGoToStderr) {
  PinnedObjects o = sample();
  o.problems = {"/sys/fs/bpf/aimesh/junk: not a BPF map, program or link, or cannot be opened"};
  CommandOutput r = formatBpf(o, BpfView{}, OutputFormat::kTable);
  EXPECT_EQ(r.exitCode, kExitOk);
  EXPECT_EQ(r.err, "meshctl: /sys/fs/bpf/aimesh/junk: not a BPF map, program or link, or cannot be opened\n");
}

TEST(BpfTest, Json) {
  CommandOutput r = formatBpf(sample(), BpfView{}, OutputFormat::kJson);
  json j = json::parse(r.out);
  EXPECT_EQ(j["pin_dir"], "/sys/fs/bpf/aimesh");
  EXPECT_EQ(j["run_stats"], json({{"window_seconds", nullptr}, {"sysctl_enabled", false}}));
  ASSERT_EQ(j["programs"].size(), 3u);
  EXPECT_EQ(j["programs"][0], json({{"name", "connect4"},
                                    {"pin", "links/connect4"},
                                    {"type", "cgroup_sock_addr"},
                                    {"attach_type", "cgroup_inet4_connect"},
                                    {"attach_to", "/sys/fs/cgroup/unified/x"},
                                    {"prog_id", 41},
                                    {"link_id", 17},
                                    {"run_count", 120},
                                    {"run_time_ns", 250000},
                                    {"avg_run_ns", 250000.0 / 120}}));
  EXPECT_TRUE(j["programs"][1]["avg_run_ns"].is_null());
  EXPECT_TRUE(j["programs"][2]["link_id"].is_null());
  ASSERT_EQ(j["maps"].size(), 2u);
  EXPECT_EQ(j["maps"][0]["max_entries"], 16384);
  EXPECT_EQ(j["maps"][0]["used"], 3);
  EXPECT_EQ(j["maps"][0]["memlock_bytes"], 1676288);
  EXPECT_TRUE(j["maps"][1]["used"].is_null());
  EXPECT_EQ(j["problems"], json::array());
}

TEST(BpfTest, Units) {
  EXPECT_EQ(formatNanoseconds(850), "850ns");
  EXPECT_EQ(formatNanoseconds(1234), "1.2µs");
  EXPECT_EQ(formatNanoseconds(2.5e6), "2.5ms");
  EXPECT_EQ(formatNanoseconds(3e9), "3.00s");
  EXPECT_EQ(formatBytes(512), "512B");
  EXPECT_EQ(formatBytes(4096), "4.0KiB");
  EXPECT_EQ(formatBytes(1676288), "1.6MiB");
  EXPECT_EQ(formatBytes(3ull << 30), "3.0GiB");
}

TEST(BpfTest, FdinfoFields) {
  const std::string map =
      "pos:\t0\nflags:\t02000002\nmnt_id:\t25\nino:\t1052\nmap_type:\t1\nkey_size:\t4\nvalue_size:\t40\n"
      "max_entries:\t16384\nmap_flags:\t0x1\nmap_extra:\t0x0\nmemlock:\t1676288\nmap_id:\t7\nfrozen:\t0\n";
  EXPECT_EQ(fdinfoField(map, "memlock"), "1676288");
  EXPECT_EQ(fdinfoField(map, "map_type"), "1");
  EXPECT_EQ(fdinfoField(map, "map"), std::nullopt);  // a prefix of another key is not the key
  EXPECT_EQ(fdinfoField(map, "prog_type"), std::nullopt);
  EXPECT_EQ(fdinfoField("link_type:\tcgroup\nlink_id:\t17\n", "link_type"), "cgroup");
}

TEST(BpfTest, StatsDeltaPerProgram) {
  std::vector<PinnedProgram> before = sample().programs, after = sample().programs;
  after[0].runCount = 130;
  after[0].runTimeNs = 260000;
  after[1].runCount = 0;
  PinnedProgram fresh = after[2];
  fresh.progId = 99;  // appeared during the window: keeps its totals
  after.push_back(fresh);
  auto d = runStatsDelta(before, after);
  ASSERT_EQ(d.size(), 4u);
  EXPECT_EQ(d[0].runCount, 10u);
  EXPECT_EQ(d[0].runTimeNs, 10000u);
  EXPECT_EQ(d[1].runCount, 0u);
  EXPECT_EQ(d[2].runCount, 0u);
  EXPECT_EQ(d[3].runCount, 3u);
}

}  // namespace
}  // namespace aimesh
