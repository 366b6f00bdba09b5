// Who calls which service: the names the agent gives the cgroups that the
// kernel counts calls of (aimesh_clients, bpf/clients_map.h) — a pod ("namespace/name") when the
// cgroup is a pod's or one of its containers' and the pod is known, else the
// cgroup's path under the attach cgroup. The cgroup walk touches the
// system; clientName() and buildClients() (views.h) are pure.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "bpf/clients_map.h"

namespace aimesh {

// "namespace/name" of the pod with this uid, if known.
using PodNameLookup = std::function<std::optional<std::string>(const std::string& uid)>;

// A client's name from its cgroup path relative to the attach cgroup ("/" is
// the attach cgroup itself, "/a/b" below it): the pod's name when one of the
// path's directories is a kubelet pod directory (policy_resolver.h,
// podUidOfCgroupDir) whose uid `pods` knows, else the path.
std::string clientName(const std::string& relPath, const PodNameLookup& pods);

// The cgroups under one root, by id (a cgroup v2 id is its directory's inode
// number and its kernfs file handle). On a cgroup v2 file system an id is
// opened by its handle (open_by_handle_at, as the agent may: it runs with
// CAP_DAC_READ_SEARCH): one system call per id, and ESTALE says exactly that
// the cgroup is gone. Elsewhere (a plain directory tree, as in unit tests, or
// where handles are refused) the tree is walked, again when asked about an
// id it does not know, at most once per `minRewalk`. Not thread-safe: the
// agent calls it under its lock.
class CgroupIndex {
 public:
  explicit CgroupIndex(std::string root, std::chrono::milliseconds minRewalk = std::chrono::seconds(5));
  ~CgroupIndex();
  CgroupIndex(const CgroupIndex&) = delete;
  CgroupIndex& operator=(const CgroupIndex&) = delete;
  // At most once per `minRewalk`: walks the tree again, or checks every known
  // id's handle again. How a cgroup that went away is noticed (goneSince).
  void refresh();
  // The path of `id` relative to the root ("/" for the root), or nullopt.
  std::optional<std::string> path(uint64_t id);
  // True once `id` is known to be gone: its handle is stale, or a complete
  // walk that started after `since` did not find it (ids are never reused).
  bool goneSince(uint64_t id, std::chrono::steady_clock::time_point since) const;
  uint64_t walks() const { return walks_; }
  bool byHandle() const { return mountFd_ >= 0; }

 private:
  void walk();
  // By handle: the id's path, or nullopt (gone_ gets it on ESTALE).
  std::optional<std::string> open(uint64_t id);
  std::string root_;
  int mountFd_ = -1;  // the root, open: handles are opened relative to it
  std::chrono::milliseconds minRewalk_;
  std::chrono::steady_clock::time_point lastWalk_{};
  bool walked_ = false;
  bool complete_ = false;  // the last walk saw the whole tree
  uint64_t walks_ = 0;
  std::map<uint64_t, std::string> byId_;
  std::set<uint64_t> gone_;  // by handle: ids whose handle went stale
};

}  // namespace aimesh
