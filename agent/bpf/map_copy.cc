#include "bpf/map_copy.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "bpf/map_walk.h"
#include "util/unique_fd.h"

namespace aimesh {

namespace {

Result<bpf_map_info> infoOf(int fd, const std::string& what) {
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) return Error::fromErrno("inspect " + what);
  return info;
}

bool isPerCpu(uint32_t type) {
  return type == BPF_MAP_TYPE_PERCPU_ARRAY || type == BPF_MAP_TYPE_PERCPU_HASH ||
         type == BPF_MAP_TYPE_LRU_PERCPU_HASH;
}

bool isArray(uint32_t type) {
  return type == BPF_MAP_TYPE_ARRAY || type == BPF_MAP_TYPE_PERCPU_ARRAY || type == BPF_MAP_TYPE_ARRAY_OF_MAPS;
}

bool isMapInMap(uint32_t type) { return type == BPF_MAP_TYPE_ARRAY_OF_MAPS || type == BPF_MAP_TYPE_HASH_OF_MAPS; }

// Writes one entry into `to`. A map-in-map's value read from `from` is an
// inner map id; the update wants that map's fd.
Status put(int to, const void* key, const void* value, uint32_t type, const std::string& what) {
  if (!isMapInMap(type)) {
    if (bpf_map_update_elem(to, key, value, BPF_ANY) != 0) return Error::fromErrno("copy an entry of " + what);
    return {};
  }
  uint32_t id = 0;
  std::memcpy(&id, value, sizeof(id));
  UniqueFd inner(bpf_map_get_fd_by_id(id));
  if (!inner.valid()) return Error::fromErrno(fmt::format("open inner map {} of {}", id, what));
  int fd = inner.get();
  if (bpf_map_update_elem(to, key, &fd, BPF_ANY) != 0) return Error::fromErrno("copy an entry of " + what);
  return {};
}

}  // namespace

Result<uint64_t> copyMapEntries(int from, int to, const std::string& what, uint32_t keyLimit) {
  auto src = infoOf(from, what);
  if (!src) return src.error();
  auto dst = infoOf(to, what);
  if (!dst) return dst.error();
  if (src->type != dst->type || src->key_size != dst->key_size || src->value_size != dst->value_size)
    return Error::msg(fmt::format("cannot copy {}: the new map is of another type, key or value size", what));
  size_t valueSize = isMapInMap(src->type) ? sizeof(uint32_t) : src->value_size;
  if (isPerCpu(src->type)) {
    int ncpu = libbpf_num_possible_cpus();
    if (ncpu <= 0) return Error::fromCode(ncpu, "libbpf_num_possible_cpus");
    valueSize = ((valueSize + 7) & ~size_t{7}) * static_cast<size_t>(ncpu);
  }
  std::vector<uint8_t> value(valueSize);
  uint64_t copied = 0;

  if (isArray(src->type)) {
    uint32_t n = std::min(src->max_entries, dst->max_entries);
    for (uint32_t i = 0; i < n; ++i) {
      if (bpf_map_lookup_elem(from, &i, value.data()) != 0) {
        if (errno == ENOENT) continue;  // an empty slot of an array of maps
        return Error::fromErrno(fmt::format("read entry {} of {}", i, what));
      }
      if (std::all_of(value.begin(), value.end(), [](uint8_t b) { return b == 0; })) continue;
      if (auto st = put(to, &i, value.data(), src->type, what); !st) return st.error();
      ++copied;
    }
    return copied;
  }

  Status failed;
  auto walked = walkKeys(
      from, src->key_size,
      [&](const void* key) {
        if (keyLimit != 0 && src->key_size == sizeof(uint32_t)) {
          uint32_t id = 0;
          std::memcpy(&id, key, sizeof(id));
          if (id >= keyLimit) {
            failed = Error::msg(fmt::format("{} holds id {}, which the new size ({} entries) cannot index", what,
                                            id, keyLimit));
            return false;
          }
        }
        if (bpf_map_lookup_elem(from, key, value.data()) != 0) return errno == ENOENT;  // gone meanwhile
        if (auto st = put(to, key, value.data(), src->type, what); !st) {
          failed = st.error();
          return false;
        }
        ++copied;
        return true;
      },
      std::numeric_limits<uint64_t>::max(), what.c_str());
  if (!walked) return walked.error();
  if (!failed) return failed.error();
  return copied;
}

}  // namespace aimesh
