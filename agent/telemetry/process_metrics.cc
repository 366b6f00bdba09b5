#include "telemetry/process_metrics.h"

#include <sys/resource.h>
#include <unistd.h>

#include <charconv>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

namespace aimesh {

namespace {

// /proc files report size 0: read to the end rather than by st_size.
std::optional<std::string> slurp(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::ostringstream s;
  s << in.rdbuf();
  if (in.bad()) return std::nullopt;
  return s.str();
}

std::optional<uint64_t> toU64(std::string_view s) {
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

std::vector<std::string_view> splitSpaces(std::string_view s) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\n')) ++i;
    size_t j = i;
    while (j < s.size() && s[j] != ' ' && s[j] != '\n') ++j;
    if (j > i) out.push_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

// Entries of the fd directory, the one listing it included (as
// client_golang counts).
std::optional<uint64_t> countEntries(const std::string& dir) {
  std::error_code ec;
  std::filesystem::directory_iterator it(dir, ec);
  if (ec) return std::nullopt;
  uint64_t n = 0;
  for (; it != std::filesystem::directory_iterator(); it.increment(ec)) {
    if (ec) return std::nullopt;
    ++n;
  }
  if (ec) return std::nullopt;
  return n;
}

}  // namespace

Result<ProcStat> parseProcStat(std::string_view text) {
  // comm (field 2) is in parentheses and may itself hold spaces and ')':
  // the fields resume after the last ')'.
  size_t close = text.rfind(')');
  if (close == std::string_view::npos) return Error::msg("/proc stat: no ')' after the command name");
  std::vector<std::string_view> f = splitSpaces(text.substr(close + 1));
  // f[0] is field 3 (state): field N is f[N - 3].
  auto field = [&](int n) -> std::optional<uint64_t> {
    size_t i = static_cast<size_t>(n - 3);
    return i < f.size() ? toU64(f[i]) : std::nullopt;
  };
  auto utime = field(14), stime = field(15), threads = field(20), start = field(22), vsize = field(23),
       rss = field(24);
  if (!utime || !stime || !threads || !start || !vsize || !rss)
    return Error::msg("/proc stat: " + std::to_string(f.size() + 2) + " fields, or one that is not a number");
  return ProcStat{*utime, *stime, *threads, *start, *vsize, *rss};
}

Result<uint64_t> parseBootTime(std::string_view text) {
  for (size_t start = 0; start < text.size();) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(start, end - start);
    start = end + 1;
    if (!line.starts_with("btime ")) continue;
    std::vector<std::string_view> f = splitSpaces(line);
    if (auto v = f.size() == 2 ? toU64(f[1]) : std::nullopt) return *v;
    return Error::msg("/proc/stat: btime is not a number");
  }
  return Error::msg("/proc/stat: no btime line");
}

ProcessStats readProcessStats(const std::string& procRoot) {
  ProcessStats p;
  // USER_HZ: the unit of the stat times (100 on every Linux ABI, asked anyway).
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const long pageSize = sysconf(_SC_PAGESIZE);
  std::optional<std::string> statText = slurp(procRoot + "/self/stat");
  Result<ProcStat> st = statText ? parseProcStat(*statText) : Result<ProcStat>(Error::msg("unreadable"));
  if (st && ticks > 0) {
    p.cpuSeconds = static_cast<double>(st->utimeTicks + st->stimeTicks) / ticks;
    p.threads = st->threads;
    p.virtualBytes = st->vsizeBytes;
    if (pageSize > 0) p.residentBytes = st->rssPages * static_cast<uint64_t>(pageSize);
    // starttime counts from boot; btime places boot on the wall clock
    // (whole seconds, as client_golang computes it).
    std::optional<std::string> sys = slurp(procRoot + "/stat");
    Result<uint64_t> boot = sys ? parseBootTime(*sys) : Result<uint64_t>(Error::msg("unreadable"));
    if (boot) p.startTimeSeconds = static_cast<double>(*boot) + static_cast<double>(st->startTicks) / ticks;
  }
  p.openFds = countEntries(procRoot + "/self/fd");
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0) p.maxFds = static_cast<uint64_t>(lim.rlim_cur);
  return p;
}

}  // namespace aimesh
