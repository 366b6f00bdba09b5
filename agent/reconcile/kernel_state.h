// What the BPF maps hold (or should hold), in id space, as comparable C++
// values. The reconciler computes a desired KernelState from a Snapshot and
// diffs it against the state read back from the maps; nothing here touches
// the kernel. Conversion to the ABI structs is in bpf_map_writer.cc.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "aimesh/abi.h"
#include "model/snapshot.h"

namespace aimesh {

struct FrontendKey {
  IpAddr addr;
  uint16_t port = 0;  // host byte order
  Protocol proto = Protocol::kTcp;
  auto operator<=>(const FrontendKey&) const = default;
  std::string toString() const;  // "10.96.0.20:8000/TCP", "[fd00::20]:8000/TCP"
};

struct ServiceRecord {
  uint32_t slotCount = 0;
  uint32_t backendCount = 0;
  Algorithm algorithm = Algorithm::kRandom;
  uint8_t slotGen = 0;
  uint32_t hashSize = 0;    // entries of this service's hash table; 0 = none
  uint16_t balancePct = 0;  // bounded_hash load bound
  bool policy = false;      // AIMESH_SVC_F_POLICY: only clients in `policy` entries may connect
  bool split = false;       // AIMESH_SVC_F_SPLIT: `splits` names its backend services
  bool failClose = false;   // AIMESH_SVC_F_FAIL_CLOSE: refuse rather than use a backend in back-off
  uint16_t sampleSkip = 0;  // telemetry sampling (telemetrySkip()); 0: every connection measured
  auto operator<=>(const ServiceRecord&) const = default;
};

struct SlotKey {
  uint32_t serviceId = 0;
  uint32_t slot = 0;  // generation * AIMESH_MAX_SLOTS_PER_SVC + index
  auto operator<=>(const SlotKey&) const = default;
};

struct BackendRecord {
  IpAddr addr;
  uint16_t port = 0;  // host byte order
  EndpointState state = EndpointState::kActive;
  uint32_t serviceId = 0;
  uint16_t weight = 1;
  auto operator<=>(const BackendRecord&) const = default;
};

// aimesh_splits value: the backend services of a split and their weights,
// in the split's order (service ids of the same port of each).
struct SplitRecord {
  std::vector<std::pair<uint32_t, uint32_t>> targets;  // (service id, weight)
  auto operator<=>(const SplitRecord&) const = default;
};

// aimesh_policy key: this cgroup (and its descendants) may use this service.
struct PolicyKey {
  uint64_t cgroupId = 0;
  uint32_t serviceId = 0;
  auto operator<=>(const PolicyKey&) const = default;
};

struct KernelState {
  std::map<FrontendKey, uint32_t> frontends;  // -> service id
  std::map<uint32_t, ServiceRecord> services;
  std::map<SlotKey, uint32_t> slots;          // -> backend id
  std::map<uint32_t, BackendRecord> backends;
  // maglev / bounded_hash services: service id -> table of backend ids
  std::map<uint32_t, std::vector<uint32_t>> hashTables;
  std::map<PolicyKey, uint32_t> policy;  // -> 1 (allow)
  std::map<uint32_t, SplitRecord> splits;  // split service id -> its backend services
  auto operator<=>(const KernelState&) const = default;
};

}  // namespace aimesh
