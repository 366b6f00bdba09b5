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
#include <cstring>
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


// The BPF_MAP_LOOKUP_BATCH loop behind readEntries(), readArray() and
// countHashEntries(): calls of up to `batch` entries until the map's end or
// `max` entries, handing each call's keys and values (keySize and valueSize
// bytes each, packed) to f(keys, values, count). Returns false, having read
// nothing, when the kernel has no batch lookups for the map (the first call
// fails with EINVAL, ENOTSUPP, or ENOSPC for a hash bucket larger than a
// batch), so the caller can fall back; an error for a failure after that.
template <class F>
Result<bool> lookupBatches(int fd, size_t keySize, size_t valueSize, uint32_t batch, uint64_t max, F f,
                           const char* what) {
  std::vector<uint8_t> keys(batch * keySize), values(batch * valueSize), in(keySize), out(keySize);
  uint64_t done = 0;
  for (bool first = true; done < max; first = false) {
    uint32_t count = static_cast<uint32_t>(std::min<uint64_t>(batch, max - done));
    int rc = bpf_map_lookup_batch(fd, first ? nullptr : in.data(), out.data(), keys.data(), values.data(), &count,
                                  nullptr);
    int err = rc != 0 ? errno : 0;
    if (rc != 0 && err != ENOENT) {
      if (first && err != EFAULT) return false;
      errno = err;
      return Error::fromErrno(std::string("read ") + what);
    }
    f(keys.data(), values.data(), count);
    done += count;
    if (err == ENOENT || count == 0) break;  // the end of the map
    in.swap(out);
  }
  return true;
}

// Calls f(key, value) for each of `count` keys and values packed as a
// batch lookup returns them.
template <class K, class V, class F>
void forEachPair(const uint8_t* keys, const uint8_t* values, uint32_t count, F&& f) {
  K k;
  V v;
  for (uint32_t i = 0; i < count; ++i) {
    std::memcpy(&k, keys + i * sizeof(K), sizeof(K));
    std::memcpy(&v, values + i * sizeof(V), sizeof(V));
    f(k, v);
  }
}

// Calls f(key, value) for every entry, 256 per system call
// (BPF_MAP_LOOKUP_BATCH). Where the kernel has no batch lookups (EINVAL,
// ENOTSUPP), or a hash bucket holds more than a batch (ENOSPC), the keys are
// walked instead (at most `limit`) and each looked up; one deleted since the
// walk is skipped.
template <class K, class V, class F>
Status readEntries(int fd, F f, uint64_t limit, const char* what) {
  auto batched = lookupBatches(
      fd, sizeof(K), sizeof(V), 256, std::numeric_limits<uint64_t>::max(),
      [&](const uint8_t* keys, const uint8_t* values, uint32_t count) {
        forEachPair<K, V>(keys, values, count, f);
      },
      what);
  if (!batched) return batched.error();
  if (*batched) return {};
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
  auto batched = lookupBatches(
      fd, sizeof(uint32_t), sizeof(V), 1024, n,
      [&](const uint8_t* keys, const uint8_t* values, uint32_t count) {
        forEachPair<uint32_t, V>(keys, values, count, [&](uint32_t k, const V& v) {
          if (k < n) f(k, v);
        });
      },
      what);
  if (!batched) return batched.error();
  if (*batched) return {};
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
  uint64_t n = 0;
  auto batched = lookupBatches(
      fd, keySize, valueSize, 1024, limit, [&](const uint8_t*, const uint8_t*, uint32_t count) { n += count; },
      "map entries");
  if (!batched) return batched.error();
  if (!*batched) return walkKeys(fd, keySize, [](const void*) { return true; }, limit);
  return n;
}

}  // namespace aimesh
