// The cgroup v2 id of a cgroup directory: what bpf_get_current_cgroup_id()
// returns for a process in it, and what BPF attach and policy maps key on.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <string>

#include "util/result.h"

namespace aimesh {

// The directory's inode number is its cgroup id.
inline Result<uint64_t> cgroupId(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return Error::fromErrno("stat cgroup " + path);
  return static_cast<uint64_t>(st.st_ino);
}

}  // namespace aimesh
