// Maglev lookup-table builder (Eisenbud et al., "Maglev: A Fast and Reliable
// Software Network Load Balancer", NSDI 2016, section 3.4), weighted the way
// Katran does it. Pure and deterministic: the same backend set gives the same
// table on every agent, whatever the input order. Writing the table into the
// kernel (and choosing its size per service) is the reconciler's job, not
// this file's; the BPF side only indexes it with aimesh_hash_slot().
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace aimesh {

// Largest table the kernel side accepts (AIMESH_MAX_HASH_SIZE in abi.h): the
// largest prime below 2^16.
inline constexpr uint32_t kMaglevMaxSize = 65521;

struct MaglevBackend {
  uint32_t id;          // kernel backend id, written into the table
  std::string key;      // stable identity, e.g. "10.77.0.2:8000" — the permutation depends only on this
  uint16_t weight = 1;  // 0 = gets no entries
};

// Builds a Maglev table of `size` entries: each entry is a backend id.
//
// Each backend walks its own permutation of the table (offset = h1(key) %
// size, skip = h2(key) % (size - 1) + 1, h1/h2 two seeded FNV-1a 64 hashes
// finished with fmix64) and takes the next free entry when it is its turn.
// Turns are weighted: every round each backend gains `weight` credit and
// takes a turn when its credit reaches the largest weight, so entries are
// shared in proportion to weight. With equal weights every backend gets
// size/N entries, give or take one.
//
// Backends are sorted by (key, id, weight) first, so the input order does not
// matter. Weight-0 backends get no entries; if no backend has a weight > 0 the
// result is empty. Two backends with the same key get the same permutation
// (still deterministic, but they then share entries less evenly): keys should
// be unique.
//
// Throws std::invalid_argument if `size` is not a prime in [2, kMaglevMaxSize]:
// the size is chosen by the agent, not read from the network or the OS, so a
// bad one is a bug in the caller (check with isPrime() when the size comes
// from configuration), not a Result-style environmental error.
//
// Not minimally disruptive (paper, section 3.4): removing one of N backends
// moves its 1/N of the keys plus about 1% more at 16381 entries and N = 50
// (about 0.5% at 65521); see tests/unit/lb/maglev_test.cc.
//
// Cost: O(size log N) turns plus the permutation walks (expected
// O(size log size)), whatever the weights: about 1 ms for 16381 entries and
// 100 backends, about 6 ms for 65521 entries and 5000 backends.
std::vector<uint32_t> buildMaglevTable(std::vector<MaglevBackend> backends, uint32_t size);

// True if n is prime (trial division; n < 2 is not prime).
bool isPrime(uint32_t n);

}  // namespace aimesh
