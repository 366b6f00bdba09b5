// Which network namespaces to walk. A socket iterator sees the sockets of
// the namespace it was created in, so a pass visits every namespace where a
// process of the agent's cgroup lives (in Kubernetes each pod has its own)
// and, optionally, every namespace file in a directory such as
// /var/run/netns. Namespaces are told apart by the (device, inode) of their
// nsfs file, as `ip netns identify` does.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace aimesh {

struct NetnsRef {
  uint64_t dev = 0, ino = 0;  // identity of the namespace
  std::string path;           // a file that opens it: /proc/PID/ns/net or a file in the netns dir
  bool operator==(const NetnsRef&) const = default;
};

class NetnsFinder {
 public:
  // cgroupDir: the processes of this cgroup and its descendants (at most
  // kMaxDepth levels below). netnsDir: "" or a directory of namespace files.
  NetnsFinder(std::string cgroupDir, std::string netnsDir, std::string procRoot = "/proc");

  // The distinct namespaces now, sorted by identity. Processes seen before
  // are not looked up again while they live (a pid's namespace is
  // rechecked when the pass opens it).
  std::vector<NetnsRef> find();

  static constexpr int kMaxDepth = 8;

 private:
  std::string cgroupDir_, netnsDir_, procRoot_;
  std::map<int, NetnsRef> byPid_;  // cache of the last find()
};

}  // namespace aimesh
