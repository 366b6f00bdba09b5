// Walks a map's keys with bpf_map_get_next_key(): the one loop that counts
// entries, lists the reconciler's maps, sweeps conntrack and sizes pinned
// maps for meshctl. A key deleted while the walk is on it restarts a hash
// map's walk from the start: a walk of a map that others write should pass
// a `limit` (or stop from f).
#pragma once

#include <bpf/bpf.h>

#include <cerrno>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "util/result.h"

namespace aimesh {

// Calls f(key) for each key (keySize bytes) until f returns false or `limit`
// keys were visited. Returns how many keys f saw; an error only if the walk
// itself failed (not at its normal end).
template <class F>
Result<uint64_t> walkKeys(int fd, size_t keySize, F f, uint64_t limit = std::numeric_limits<uint64_t>::max(),
                          const char* what = "map") {
  std::vector<uint8_t> key(keySize), next(keySize);
  const void* prev = nullptr;
  uint64_t n = 0;
  while (n < limit) {
    if (bpf_map_get_next_key(fd, prev, next.data()) != 0) {
      if (errno != ENOENT) return Error::fromErrno(std::string("iterate ") + what);
      break;
    }
    ++n;
    key.swap(next);
    prev = key.data();
    if (!f(static_cast<const void*>(key.data()))) break;
  }
  return n;
}

// The same over a typed key: f(const K&).
template <class K, class F>
Result<uint64_t> walkKeys(int fd, F f, uint64_t limit = std::numeric_limits<uint64_t>::max(),
                          const char* what = "map") {
  return walkKeys(
      fd, sizeof(K), [&](const void* k) { return f(*static_cast<const K*>(k)); }, limit, what);
}

}  // namespace aimesh
