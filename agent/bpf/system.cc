#include "bpf/system.h"

#include <bpf/libbpf.h>
#include <spdlog/spdlog.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <cstdarg>
#include <fstream>
#include <sstream>

namespace aimesh {

bool isMountedAs(const std::string& dir, const std::string& fstype, const std::string& mountsFile) {
  std::ifstream in(mountsFile);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string dev, mnt, type;
    ls >> dev >> mnt >> type;
    if (mnt == dir && type == fstype) return true;
  }
  return false;
}

Result<std::string> findCgroup2Root(const std::string& mountsFile) {
  std::ifstream in(mountsFile);
  if (!in) return Error::fromErrno("open " + mountsFile);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string dev, mnt, type;
    ls >> dev >> mnt >> type;
    if (type == "cgroup2") return mnt;
  }
  return Error::msg("no cgroup2 mount in " + mountsFile + " (mount one or pass --cgroup)");
}

Result<bool> ensureBpffs(const std::string& dir, const std::string& mountsFile) {
  if (isMountedAs(dir, "bpf", mountsFile)) return false;
  ::mkdir(dir.c_str(), 0700);
  if (::mount("bpf", dir.c_str(), "bpf", 0, "mode=0700") != 0)
    return Error::fromErrno("mount bpffs at " + dir);
  return true;
}

namespace {
int libbpfPrint(enum libbpf_print_level level, const char* fmt, va_list args) {
  char buf[2048];
  int n = vsnprintf(buf, sizeof(buf), fmt, args);
  std::string msg(buf, n > 0 ? std::min<size_t>(n, sizeof(buf) - 1) : 0);
  while (!msg.empty() && msg.back() == '\n') msg.pop_back();
  switch (level) {
    case LIBBPF_WARN: spdlog::warn("libbpf: {}", msg); break;
    case LIBBPF_INFO: spdlog::debug("libbpf: {}", msg); break;
    default: spdlog::trace("libbpf: {}", msg); break;
  }
  return n;
}
}  // namespace

void routeLibbpfLogs() { libbpf_set_print(libbpfPrint); }

}  // namespace aimesh
