// Walks a map's keys with bpf_map_get_next_key(): the one loop that counts
// entries, lists the reconciler's maps, sweeps conntrack and sizes pinned
// maps for meshctl. A key deleted while the walk is on it restarts a hash
// map's walk from the start: a walk of a map that others write should pass
// a `limit` (or stop from f).
#pragma once

#include <bpf/bpf.h>

#include <cerrno>
#include <algorithm>
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


// Calls f(key, value) for every entry, 256 per system call
// (BPF_MAP_LOOKUP_BATCH). Where the kernel has no batch lookups (EINVAL,
// ENOTSUPP), or a hash bucket holds more than a batch (ENOSPC), the keys are
// walked instead (at most `limit`) and each looked up; one deleted since the
// walk is skipped.
template <class K, class V, class F>
Status readEntries(int fd, F f, uint64_t limit, const char* what) {
  constexpr uint32_t kBatch = 256;
  std::vector<K> keys(kBatch);
  std::vector<V> values(kBatch);
  K batch{}, next{};
  for (bool first = true;; first = false) {
    uint32_t count = kBatch;
    int rc = bpf_map_lookup_batch(fd, first ? nullptr : &batch, &next, keys.data(), values.data(), &count, nullptr);
    int err = rc != 0 ? errno : 0;
    if (rc != 0 && err != ENOENT) {
      if (first && err != EFAULT) break;  // walk instead
      errno = err;
      return Error::fromErrno(std::string("read ") + what);
    }
    for (uint32_t i = 0; i < count; ++i) f(keys[i], values[i]);
    if (err == ENOENT) return {};  // the end of the map
    batch = next;
  }
  std::vector<K> all;
  auto walked = walkKeys<K>(fd, [&](const K& k) { return all.push_back(k), true; }, limit, what);
  if (!walked) return walked.error();
  V v{};
  for (const K& k : all) {
    if (bpf_map_lookup_elem(fd, &k, &v) != 0) {
      if (errno == ENOENT) continue;
      return Error::fromErrno(std::string("read ") + what);
    }
    f(k, v);
  }
  return {};
}

// Calls f(index, value) for entries [0, n) of an array map, 1,024 per system
// call (BPF_MAP_LOOKUP_BATCH), or one lookup each where the kernel has no
// batch lookups. A scrape at 40,000 endpoints reads its arrays this way in
// ~40 calls instead of 40,000.
template <class V, class F>
Status readArray(int fd, uint32_t n, F f, const char* what) {
  constexpr uint32_t kBatch = 1024;
  std::vector<uint32_t> keys(kBatch);
  std::vector<V> values(kBatch);
  uint32_t batch = 0, next = 0, done = 0;
  while (done < n) {
    uint32_t count = std::min(kBatch, n - done);
    int rc = bpf_map_lookup_batch(fd, done == 0 ? nullptr : &batch, &next, keys.data(), values.data(), &count,
                                  nullptr);
    int err = rc != 0 ? errno : 0;
    if (rc != 0 && err != ENOENT) {
      if (done == 0 && err != EFAULT) break;  // one by one instead
      errno = err;
      return Error::fromErrno(std::string("read ") + what);
    }
    for (uint32_t i = 0; i < count && keys[i] < n; ++i) f(keys[i], values[i]);
    done += count;
    if (err == ENOENT || count == 0) return {};  // the end of the array
    batch = next;
  }
  if (done >= n) return {};
  V v{};
  for (uint32_t k = 0; k < n; ++k) {
    if (bpf_map_lookup_elem(fd, &k, &v) != 0) {
      if (errno == ENOENT) return {};  // past the array's end
      return Error::fromErrno(std::string("read ") + what);
    }
    f(k, v);
  }
  return {};
}

// How many entries a hash map has, 1,024 per system call where the kernel
// batches lookups (keys and values are read and dropped), else by walking
// its keys; at most `limit`.
inline Result<uint64_t> countHashEntries(int fd, uint32_t keySize, uint32_t valueSize, uint64_t limit) {
  constexpr uint32_t kBatch = 1024;
  std::vector<uint8_t> keys(size_t{kBatch} * keySize), values(size_t{kBatch} * valueSize), batch(keySize),
      next(keySize);
  uint64_t n = 0;
  for (bool first = true; n < limit; first = false) {
    uint32_t count = kBatch;
    int rc = bpf_map_lookup_batch(fd, first ? nullptr : batch.data(), next.data(), keys.data(), values.data(),
                                  &count, nullptr);
    int err = rc != 0 ? errno : 0;
    if (rc != 0 && err != ENOENT) {
      if (first && err != EFAULT) return walkKeys(fd, keySize, [](const void*) { return true; }, limit);
      errno = err;
      return Error::fromErrno("count map entries");
    }
    n += count;
    if (err == ENOENT) break;
    batch.swap(next);
  }
  return std::min(n, limit);
}

}  // namespace aimesh
