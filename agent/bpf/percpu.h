// Reading and zeroing one element of a per-CPU map. The kernel returns (and
// expects) one 8-byte-aligned copy of the value per possible CPU.
#pragma once

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "util/result.h"

namespace aimesh {

// Every CPU's copy of element `key`; `what` names the map in errors.
template <class V>
Result<std::vector<V>> lookupPerCpu(int fd, uint32_t key, const char* what) {
  int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) return Error::fromCode(ncpu, "libbpf_num_possible_cpus");
  constexpr size_t stride = (sizeof(V) + 7) & ~size_t{7};
  std::vector<uint8_t> buf(stride * ncpu);
  if (bpf_map_lookup_elem(fd, &key, buf.data()) != 0) return Error::fromErrno(std::string("lookup ") + what);
  std::vector<V> out(ncpu);
  for (int i = 0; i < ncpu; ++i) std::memcpy(&out[i], buf.data() + i * stride, sizeof(V));
  return out;
}

// Sets element `key` to zero on every CPU.
inline Status zeroPerCpu(int fd, uint32_t key, size_t valueSize, const char* what) {
  int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) return Error::fromCode(ncpu, "libbpf_num_possible_cpus");
  std::vector<uint8_t> zeros(((valueSize + 7) & ~size_t{7}) * ncpu, 0);
  if (bpf_map_update_elem(fd, &key, zeros.data(), BPF_ANY) != 0) return Error::fromErrno(std::string("zero ") + what);
  return {};
}

}  // namespace aimesh
