// The agent's own process facts for the standard process_* families that
// every Prometheus client library exports (client_golang's and
// prometheus_client's process collector): CPU time, memory, file
// descriptors, threads and start time, read from /proc (proc(5)) and
// getrlimit(). Reading only: telemetry/metrics.cc prints them.
//
// Each value is optional. A /proc file that cannot be read or parsed leaves
// its values (and so their families) out of that scrape; it never fails the
// scrape.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "util/result.h"

namespace aimesh {

struct ProcessStats {
  std::optional<double> cpuSeconds;        // user + system CPU time
  std::optional<uint64_t> residentBytes;   // resident set size
  std::optional<uint64_t> virtualBytes;    // virtual memory size
  std::optional<uint64_t> threads;         // OS threads
  std::optional<double> startTimeSeconds;  // Unix time the process started
  std::optional<uint64_t> openFds;         // open file descriptors
  std::optional<uint64_t> maxFds;          // soft RLIMIT_NOFILE
};

// The fields of /proc/<pid>/stat used here (proc(5) numbering): utime (14),
// stime (15), num_threads (20), starttime (22), vsize (23), rss (24). Times
// in clock ticks, rss in pages. Fails on text it cannot read.
struct ProcStat {
  uint64_t utimeTicks = 0;
  uint64_t stimeTicks = 0;
  uint64_t threads = 0;
  uint64_t startTicks = 0;  // after boot
  uint64_t vsizeBytes = 0;
  uint64_t rssPages = 0;
};
Result<ProcStat> parseProcStat(std::string_view text);

// The "btime" line of /proc/stat: when the system booted, Unix seconds.
Result<uint64_t> parseBootTime(std::string_view text);

// This process's stats. procRoot: "/proc", or a directory laid out like it
// (self/stat, self/fd/, stat) for tests. maxFds comes from getrlimit().
ProcessStats readProcessStats(const std::string& procRoot = "/proc");

}  // namespace aimesh
