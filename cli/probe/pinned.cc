#include "probe/pinned.h"

#include "bpf/datapath.h"
#include "bpf/map_walk.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <net/if.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <sstream>

#include <fmt/format.h>

#include "bpf/system.h"
#include "probe/kernel_probe.h"
#include "util/unique_fd.h"

namespace aimesh {
namespace fs = std::filesystem;

namespace {

// The agent's TC filter (agent/bpf/datapath.h): a fixed handle and priority
// on clsact ingress. Used only to confirm that the pinned program is the one
// attached.
constexpr uint32_t kAgentTcHandle = kTcHandle;
constexpr uint32_t kAgentTcPriority = kTcPriority;

// Walking a map's keys or an array's elements stops after this long.
constexpr auto kCountBudget = std::chrono::seconds(2);
// Arrays larger than this (bytes of all values) are not read element by element.
constexpr uint64_t kMaxArrayBytes = 256ull << 20;

std::string fdinfoOf(int fd) {
  auto t = readTextFile(fmt::format("/proc/self/fdinfo/{}", fd));
  return t ? *t : "";
}

std::string stripPrefix(std::string name) {
  return name.rfind("aimesh_", 0) == 0 ? name.substr(7) : name;
}

// The program's full function name from its BTF (the kernel keeps only 15
// characters of the name: "aimesh_skb_ingr"), or that short name.
std::string functionName(int progFd, const bpf_prog_info& info) {
  std::string fallback = info.name;
  if (info.btf_id == 0 || info.nr_func_info == 0 || info.func_info_rec_size < sizeof(bpf_func_info))
    return fallback;
  std::vector<char> recs(static_cast<size_t>(info.func_info_rec_size) * info.nr_func_info);
  bpf_prog_info again{};
  again.nr_func_info = info.nr_func_info;
  again.func_info_rec_size = info.func_info_rec_size;
  again.func_info = reinterpret_cast<uint64_t>(recs.data());
  uint32_t len = sizeof(again);
  if (bpf_obj_get_info_by_fd(progFd, &again, &len) != 0) return fallback;
  btf* b = btf__load_from_kernel_by_id(info.btf_id);
  if (b == nullptr) return fallback;
  const auto* fi = reinterpret_cast<const bpf_func_info*>(recs.data());  // the first is the entry point
  const btf_type* t = btf__type_by_id(b, fi->type_id);
  std::string name = t != nullptr ? btf__name_by_offset(b, t->name_off) : "";
  btf__free(b);
  return name.empty() ? fallback : name;
}

const char* orUnknown(const char* s) { return s != nullptr ? s : "unknown"; }

// Fills type, name, ids and run counters from the program `progFd`.
void fillProgram(int progFd, PinnedProgram& p) {
  bpf_prog_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(progFd, &info, &len) != 0) return;
  p.progId = info.id;
  p.type = orUnknown(libbpf_bpf_prog_type_str(static_cast<bpf_prog_type>(info.type)));
  p.name = stripPrefix(functionName(progFd, info));
  p.runCount = info.run_cnt;
  p.runTimeNs = info.run_time_ns;
}

// cgroup id (the directory's inode) → path, found by walking the cgroup v2
// tree once, bounded.
class CgroupPaths {
 public:
  std::string find(uint64_t id) {
    if (!walked_) walk();
    auto it = paths_.find(id);
    return it == paths_.end() ? "" : it->second;
  }

 private:
  void walk() {
    walked_ = true;
    auto root = findCgroup2Root();
    if (!root) return;
    add(*root);
    std::error_code ec;
    int budget = 200000;
    for (fs::recursive_directory_iterator it(*root, fs::directory_options::skip_permission_denied, ec), end;
         it != end && budget-- > 0; it.increment(ec)) {
      if (ec) break;
      if (it->is_directory(ec) && !it->is_symlink(ec)) add(it->path().string());
    }
  }
  void add(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) paths_.emplace(static_cast<uint64_t>(st.st_ino), path);
  }
  bool walked_ = false;
  std::map<uint64_t, std::string> paths_;
};

Result<PinnedProgram> readLink(const std::string& path, const std::string& rel, CgroupPaths& cgroups) {
  UniqueFd fd(bpf_obj_get(path.c_str()));
  if (!fd.valid()) return Error::fromErrno("open " + path);
  bpf_link_info li{};
  uint32_t len = sizeof(li);
  if (bpf_obj_get_info_by_fd(fd.get(), &li, &len) != 0) return Error::fromErrno("link info of " + path);
  PinnedProgram p;
  p.pin = rel;
  p.name = fs::path(path).filename();
  p.linkId = li.id;
  if (li.type == BPF_LINK_TYPE_CGROUP) {
    p.attachType = orUnknown(libbpf_bpf_attach_type_str(static_cast<bpf_attach_type>(li.cgroup.attach_type)));
    p.attachTo = cgroups.find(li.cgroup.cgroup_id);
    if (p.attachTo.empty()) p.attachTo = fmt::format("cgroup id {} (no such cgroup directory)", li.cgroup.cgroup_id);
  } else {
    p.attachType = orUnknown(libbpf_bpf_link_type_str(static_cast<bpf_link_type>(li.type)));
  }
  UniqueFd prog(bpf_prog_get_fd_by_id(li.prog_id));
  if (!prog.valid()) {
    p.progId = li.prog_id;
    return p;
  }
  fillProgram(prog.get(), p);
  return p;
}

Result<PinnedProgram> readTcProgram(const std::string& path, const std::string& rel) {
  UniqueFd fd(bpf_obj_get(path.c_str()));
  if (!fd.valid()) return Error::fromErrno("open " + path);
  PinnedProgram p;
  p.pin = rel;
  fillProgram(fd.get(), p);
  p.attachType = "tc ingress";
  std::string ifname = fs::path(path).filename();
  int ifindex = static_cast<int>(if_nametoindex(ifname.c_str()));
  if (ifindex == 0) {
    p.attachTo = ifname + " (not in this network namespace)";
    return p;
  }
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
  LIBBPF_OPTS(bpf_tc_opts, q, .handle = kAgentTcHandle, .priority = kAgentTcPriority);
  if (bpf_tc_query(&hook, &q) == 0 && q.prog_id == p.progId) {
    p.attachTo = ifname;
  } else {
    p.attachTo = ifname + " (not attached)";
  }
  return p;
}

// Counts keys (hash maps) or non-zero elements (arrays); nullopt when the
// map cannot be walked from user space or the walk ran out of time.
std::optional<uint64_t> countUsed(int fd, const bpf_map_info& info) {
  auto deadline = std::chrono::steady_clock::now() + kCountBudget;
  switch (info.type) {
    case BPF_MAP_TYPE_HASH:
    case BPF_MAP_TYPE_LRU_HASH:
    case BPF_MAP_TYPE_PERCPU_HASH:
    case BPF_MAP_TYPE_LRU_PERCPU_HASH:
    case BPF_MAP_TYPE_HASH_OF_MAPS: {
      // A map being written may restart the walk; bound it by size and time.
      bool late = false;
      auto n = walkKeys(
          fd, info.key_size,
          [&, seen = uint64_t{0}](const void*) mutable {
            late = (++seen & 1023) == 0 && std::chrono::steady_clock::now() > deadline;
            return !late;
          },
          static_cast<uint64_t>(info.max_entries) + 1);
      if (late || !n) return std::nullopt;
      return *n;
    }
    case BPF_MAP_TYPE_ARRAY:
    case BPF_MAP_TYPE_PERCPU_ARRAY:
    case BPF_MAP_TYPE_ARRAY_OF_MAPS: {
      uint64_t valueBytes = info.value_size;
      if (info.type == BPF_MAP_TYPE_PERCPU_ARRAY) {
        int cpus = libbpf_num_possible_cpus();
        if (cpus <= 0) return std::nullopt;
        valueBytes = ((valueBytes + 7) / 8 * 8) * static_cast<uint64_t>(cpus);
      }
      if (valueBytes * info.max_entries > kMaxArrayBytes) return std::nullopt;
      std::vector<char> value(valueBytes);
      uint64_t n = 0;
      for (uint32_t i = 0; i < info.max_entries; ++i) {
        if (bpf_map_lookup_elem(fd, &i, value.data()) != 0) continue;
        if (std::any_of(value.begin(), value.end(), [](char c) { return c != 0; })) ++n;
        if ((i & 1023) == 1023 && std::chrono::steady_clock::now() > deadline) return std::nullopt;
      }
      return n;
    }
    default:
      return std::nullopt;
  }
}

Result<PinnedMap> readMap(const std::string& path, bool countEntries) {
  LIBBPF_OPTS(bpf_obj_get_opts, ro, .file_flags = BPF_F_RDONLY);
  UniqueFd fd(bpf_obj_get_opts(path.c_str(), &ro));
  if (!fd.valid()) fd.reset(bpf_obj_get(path.c_str()));  // a map that refuses read-only opens
  if (!fd.valid()) return Error::fromErrno("open " + path);
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd.get(), &info, &len) != 0) return Error::fromErrno("map info of " + path);
  PinnedMap m;
  m.name = fs::path(path).filename();
  m.type = orUnknown(libbpf_bpf_map_type_str(static_cast<bpf_map_type>(info.type)));
  m.id = info.id;
  m.keySize = info.key_size;
  m.valueSize = info.value_size;
  m.maxEntries = info.max_entries;
  if (auto mem = fdinfoField(fdinfoOf(fd.get()), "memlock")) {
    try {
      m.memlockBytes = std::stoull(*mem);
    } catch (...) {
    }
  }
  if (countEntries) m.used = countUsed(fd.get(), info);
  return m;
}

enum class PinKind { kMap, kProgram, kLink, kOther };

PinKind kindOf(const std::string& path) {
  UniqueFd fd(bpf_obj_get(path.c_str()));
  if (!fd.valid()) return PinKind::kOther;
  std::string info = fdinfoOf(fd.get());
  if (fdinfoField(info, "link_type")) return PinKind::kLink;
  if (fdinfoField(info, "prog_type")) return PinKind::kProgram;
  if (fdinfoField(info, "map_type")) return PinKind::kMap;
  return PinKind::kOther;
}

// Pins directly under pinDir and one level below (links/, tc/), sorted.
std::vector<std::string> pinPaths(const std::string& pinDir, std::error_code& ec) {
  std::vector<std::string> out;
  for (auto& e : fs::directory_iterator(pinDir, ec)) {
    if (e.is_directory()) {
      std::error_code sub;
      for (auto& f : fs::directory_iterator(e.path(), sub))
        if (!f.is_directory()) out.push_back(f.path().string());
    } else {
      out.push_back(e.path().string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

std::optional<std::string> fdinfoField(const std::string& fdinfo, const std::string& key) {
  std::istringstream in(fdinfo);
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() <= key.size() || line.compare(0, key.size(), key) != 0 || line[key.size()] != ':') continue;
    size_t v = line.find_first_not_of(" \t", key.size() + 1);
    return v == std::string::npos ? "" : line.substr(v);
  }
  return std::nullopt;
}

Result<PinnedObjects> readPinned(const std::string& pinDir, bool countEntries) {
  std::error_code ec;
  if (!fs::is_directory(pinDir, ec))
    return Error::msg("no pin dir " + pinDir + " (the agent has not run with this --pin-dir, or it was cleaned up)");
  PinnedObjects out;
  out.pinDir = pinDir;
  auto paths = pinPaths(pinDir, ec);
  if (ec) return Error::fromCode(ec.value(), "read " + pinDir);
  CgroupPaths cgroups;
  std::vector<PinnedProgram> tc;
  for (const auto& path : paths) {
    std::string rel = fs::path(path).lexically_relative(pinDir).string();
    switch (kindOf(path)) {
      case PinKind::kLink: {
        auto p = readLink(path, rel, cgroups);
        if (p) out.programs.push_back(std::move(*p));
        else out.problems.push_back(p.error().message());
        break;
      }
      case PinKind::kProgram: {
        auto p = readTcProgram(path, rel);
        if (p) tc.push_back(std::move(*p));
        else out.problems.push_back(p.error().message());
        break;
      }
      case PinKind::kMap: {
        auto m = readMap(path, countEntries);
        if (m) out.maps.push_back(std::move(*m));
        else out.problems.push_back(m.error().message());
        break;
      }
      case PinKind::kOther:
        out.problems.push_back(path + ": not a BPF map, program or link, or cannot be opened");
        break;
    }
  }
  out.programs.insert(out.programs.end(), tc.begin(), tc.end());
  std::sort(out.maps.begin(), out.maps.end(), [](const PinnedMap& a, const PinnedMap& b) { return a.name < b.name; });
  return out;
}

void refreshRunStats(std::vector<PinnedProgram>& programs) {
  for (auto& p : programs) {
    UniqueFd fd(bpf_prog_get_fd_by_id(p.progId));
    if (!fd.valid()) continue;
    bpf_prog_info info{};
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(fd.get(), &info, &len) != 0) continue;
    p.runCount = info.run_cnt;
    p.runTimeNs = info.run_time_ns;
  }
}

std::vector<PinnedProgram> runStatsDelta(const std::vector<PinnedProgram>& before,
                                         const std::vector<PinnedProgram>& after) {
  std::vector<PinnedProgram> out = after;
  for (auto& p : out) {
    auto it = std::find_if(before.begin(), before.end(), [&](const PinnedProgram& b) { return b.progId == p.progId; });
    if (it == before.end()) continue;
    p.runCount = p.runCount >= it->runCount ? p.runCount - it->runCount : 0;
    p.runTimeNs = p.runTimeNs >= it->runTimeNs ? p.runTimeNs - it->runTimeNs : 0;
  }
  return out;
}

Result<int> enableRunStats() {
  int fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
  if (fd < 0) return Error::fromErrno("enable BPF run-time statistics (BPF_ENABLE_STATS; needs CAP_SYS_ADMIN)");
  return fd;
}

bool runStatsSysctlOn() {
  auto t = readTextFile("/proc/sys/kernel/bpf_stats_enabled");
  return t && !t->empty() && (*t)[0] == '1';
}

Result<PinCounts> countPins(const std::string& pinDir) {
  PinCounts c;
  std::error_code ec;
  if (!fs::is_directory(pinDir, ec)) return c;
  c.dirExists = true;
  auto paths = pinPaths(pinDir, ec);
  if (ec) return Error::fromCode(ec.value(), "read " + pinDir);
  for (const auto& p : paths) {
    switch (kindOf(p)) {
      case PinKind::kMap: ++c.maps; break;
      case PinKind::kLink: ++c.links; break;
      case PinKind::kProgram: ++c.tcPrograms; break;
      case PinKind::kOther: break;
    }
  }
  return c;
}

}  // namespace aimesh
