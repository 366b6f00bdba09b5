// What the agent left pinned under its pin dir, read back from the kernel
// for `meshctl bpf` and `meshctl doctor` (no agent needed):
//   <pin-dir>/aimesh_*      maps
//   <pin-dir>/links/NAME    bpf_links of the cgroup programs
//   <pin-dir>/tc/IFNAME     the TC program attached to IFNAME's ingress
// The row types are plain values so formatting (commands/bpf.cc) is tested
// without a kernel. Reading opens pins and asks for object info; it never
// changes or detaches anything.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "probe/doctor_checks.h"
#include "util/result.h"

namespace aimesh {

inline constexpr const char* kDefaultPinDir = "/sys/fs/bpf/aimesh";

struct PinnedProgram {
  std::string name;        // the program's function name without "aimesh_": "connect4", "tc_ingress"
  std::string pin;         // path under the pin dir: "links/connect4", "tc/eth1"
  std::string type;        // program type: "cgroup_sock_addr", "sched_cls"
  std::string attachType;  // "cgroup_inet4_connect", "tc ingress", or the link type
  std::string attachTo;    // cgroup directory or interface; "" when not found
  uint32_t progId = 0;
  uint32_t linkId = 0;  // 0 for TC programs (not links)
  uint64_t runCount = 0;
  uint64_t runTimeNs = 0;
};

struct PinnedMap {
  std::string name;  // pin name (the full map name: the kernel keeps only 15 characters)
  std::string type;  // "hash", "percpu_array", ...
  uint32_t id = 0, keySize = 0, valueSize = 0, maxEntries = 0;
  // Hash maps: keys present. Arrays: elements that are not all zero.
  // nullopt: not countable from user space (ringbuf, sk_storage).
  std::optional<uint64_t> used;
  std::optional<uint64_t> memlockBytes;  // /proc/self/fdinfo "memlock:"
};

struct PinnedObjects {
  std::string pinDir;
  std::vector<PinnedProgram> programs;  // links first, then TC, each sorted by pin
  std::vector<PinnedMap> maps;          // sorted by name
  std::vector<std::string> problems;    // pins that could not be read, and why
};

// The value of `key` ("memlock", "map_type", ...) in /proc/<pid>/fdinfo/<fd>
// text: "memlock:\t4096\n" → "4096".
std::optional<std::string> fdinfoField(const std::string& fdinfo, const std::string& key);

// Reads every pin under pinDir. Fails when pinDir does not exist or cannot
// be read; single pins that fail go to `problems`. countEntries: fill
// PinnedMap::used (walks hash keys, reads arrays).
Result<PinnedObjects> readPinned(const std::string& pinDir, bool countEntries);
// Re-reads run_cnt / run_time_ns of each program (by prog id).
void refreshRunStats(std::vector<PinnedProgram>& programs);
// `after`'s run counters minus `before`'s for the same prog id (a program
// not in `before` keeps its totals).
std::vector<PinnedProgram> runStatsDelta(const std::vector<PinnedProgram>& before,
                                         const std::vector<PinnedProgram>& after);
// Turns on run-time statistics (BPF_ENABLE_STATS) for as long as the returned
// fd is open; kernel.bpf_stats_enabled is left alone.
Result<int> enableRunStats();
// kernel.bpf_stats_enabled is on (read only).
bool runStatsSysctlOn();

// How many maps, links and TC programs are pinned (for doctor).
Result<PinCounts> countPins(const std::string& pinDir);

}  // namespace aimesh
