#include "lb/maglev.h"

#include <algorithm>
#include <functional>
#include <stdexcept>
#include <tuple>
#include <utility>

#include "aimesh/hash.h"

namespace aimesh {
namespace {

// Seeds for the two permutation hashes (offset and skip). Fixed forever: a
// change reshuffles every table on an upgrade.
constexpr uint64_t kOffsetSeed = 0x6d61676c65763031ULL;  // "maglev01"
constexpr uint64_t kSkipSeed = 0x6d61676c65763032ULL;    // "maglev02"

// FNV-1a 64 with the seed folded into the offset basis, then fmix64: FNV
// alone mixes the last bytes poorly (keys differ only in the final port
// digit), fmix64 spreads every input bit over the whole output. Deterministic
// across runs and machines, unlike std::hash.
uint64_t hashKey(const std::string& key, uint64_t seed) {
  uint64_t h = 0xcbf29ce484222325ULL ^ aimesh_mix64(seed);
  for (unsigned char c : key) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return aimesh_mix64(h);
}

}  // namespace

bool isPrime(uint32_t n) {
  if (n < 2) return false;
  if (n % 2 == 0) return n == 2;
  for (uint64_t d = 3; d * d <= n; d += 2)
    if (n % d == 0) return false;
  return true;
}

std::vector<uint32_t> buildMaglevTable(std::vector<MaglevBackend> backends, uint32_t size) {
  if (size > kMaglevMaxSize || !isPrime(size))
    throw std::invalid_argument("maglev table size " + std::to_string(size) + " is not a prime in [2, " +
                                std::to_string(kMaglevMaxSize) + "]");

  std::erase_if(backends, [](const MaglevBackend& b) { return b.weight == 0; });
  if (backends.empty()) return {};
  // Every agent must build the same table from the same set.
  std::sort(backends.begin(), backends.end(), [](const MaglevBackend& a, const MaglevBackend& b) {
    return std::tie(a.key, a.id, a.weight) < std::tie(b.key, b.id, b.weight);
  });

  const size_t n = backends.size();
  std::vector<uint32_t> next(n), skip(n), turns(n, 0);
  uint64_t maxWeight = 0;
  for (size_t i = 0; i < n; ++i) {
    next[i] = static_cast<uint32_t>(hashKey(backends[i].key, kOffsetSeed) % size);
    // size is prime and skip in [1, size-1], so the walk visits every entry.
    skip[i] = static_cast<uint32_t>(hashKey(backends[i].key, kSkipSeed) % (size - 1) + 1);
    maxWeight = std::max<uint64_t>(maxWeight, backends[i].weight);
  }

  // Katran's weighting: every round each backend, in key order, gains
  // `weight` credit and takes a turn when its credit reaches the largest
  // weight (then pays that much back). Its k-th turn therefore falls in round
  // ceil(k * maxWeight / weight), so turns are popped from a min-heap of
  // (round, key order) instead of visiting every backend every round: with
  // one heavy backend and many light ones there are ~size rounds, and an
  // O(N) scan per round would be O(size * N).
  auto turnRound = [&](size_t i) {
    uint64_t w = backends[i].weight;
    return (static_cast<uint64_t>(turns[i] + 1) * maxWeight + w - 1) / w;
  };
  using Turn = std::pair<uint64_t, uint32_t>;  // (round, index in key order)
  std::vector<Turn> heap;
  heap.reserve(n);
  for (size_t i = 0; i < n; ++i) heap.emplace_back(turnRound(i), static_cast<uint32_t>(i));
  std::make_heap(heap.begin(), heap.end(), std::greater<>());

  std::vector<uint32_t> table(size);
  std::vector<uint8_t> taken(size, 0);
  for (uint32_t filled = 0; filled < size; ++filled) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>());
    const uint32_t i = heap.back().second;
    // Next entry of i's permutation that nobody took yet (there is one:
    // the permutation covers the whole table and it is not full).
    uint32_t c = next[i];
    while (taken[c]) {
      c += skip[i];
      if (c >= size) c -= size;
    }
    taken[c] = 1;
    table[c] = backends[i].id;
    c += skip[i];
    next[i] = c >= size ? c - size : c;
    ++turns[i];
    heap.back().first = turnRound(i);
    std::push_heap(heap.begin(), heap.end(), std::greater<>());
  }
  return table;
}

}  // namespace aimesh
