// The read side's seam: everything the agent's views (/metrics, the JSON API
// and so meshctl) read from the data plane goes through DatapathReader, the
// mirror of the write side's MapWriter. BpfDatapathReader reads the pinned
// maps and the events ring buffer; unit tests use FakeDatapathReader
// (tests/fixtures/fake_datapath_reader.h) and need no kernel.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bpf/datapath.h"
#include "reconcile/limits.h"
#include "telemetry/clients.h"
#include "telemetry/stats.h"
#include "telemetry/telemetry.h"
#include "util/result.h"

namespace aimesh {

// How full one of the maps that the reconciler fills is.
struct MapOccupancy {
  std::string map;
  uint64_t entries = 0;
  uint64_t capacity = 0;
};

// What a split sent to one of its backend services (aimesh_split_stats).
struct SplitCounts {
  uint64_t connects = 0, datagrams = 0;
  bool operator==(const SplitCounts&) const = default;
};
// (split's service id, backend service's id) -> counts.
using SplitStats = std::map<std::pair<uint32_t, uint32_t>, SplitCounts>;

class DatapathReader {
 public:
  virtual ~DatapathReader() = default;
  // Per-service and per-backend counters (summed over CPUs) and the reason
  // counters, for these ids.
  virtual Result<DatapathStats> stats(const std::vector<uint32_t>& serviceIds,
                                      const std::vector<uint32_t>& backendIds) const = 0;
  // What the telemetry programs keep per backend, and the balancer's state.
  virtual Result<std::map<uint32_t, BackendTelemetry>> telemetry(const std::vector<uint32_t>& backendIds) const = 0;
  // Entries and capacity of the frontends, services, slots, backends and
  // revnat maps. Walks the maps key by key: call it without holding locks
  // that reconciles need.
  virtual std::vector<MapOccupancy> occupancy() const = 0;
  // Flow events with seq >= since (at most max), the next seq to ask for and
  // how many older ones were dropped; false if there is no event log.
  virtual bool flowEvents(uint64_t since, size_t max, std::vector<FlowEvent>* out, uint64_t* next,
                          uint64_t* dropped) const = 0;
  // Flow events received since the start.
  virtual uint64_t flowEventsTotal() const = 0;
  // Puts the agent's own event into the flow log (nothing without one).
  virtual void logAgentEvent(AgentEvent e) const = 0;
  // Every (calling cgroup, service) entry of aimesh_clients.
  virtual Result<std::vector<ClientPair>> clients() const = 0;
  // The read side's one write: entries of clients that are gone.
  virtual Status forgetClients(const std::vector<aimesh_client_key>& keys) const = 0;
  // Every entry of aimesh_split_stats.
  virtual Result<SplitStats> splitStats() const = 0;
};

class BpfDatapathReader : public DatapathReader {
 public:
  // penaltyHalfLifeNs must be the one the data plane uses (aimesh_config);
  // events may be null (no event log).
  BpfDatapathReader(const MapFds& fds, const MapLimits& limits, uint64_t penaltyHalfLifeNs,
                    std::unique_ptr<EventLog> events);
  Result<DatapathStats> stats(const std::vector<uint32_t>& serviceIds,
                              const std::vector<uint32_t>& backendIds) const override;
  Result<std::map<uint32_t, BackendTelemetry>> telemetry(const std::vector<uint32_t>& backendIds) const override;
  std::vector<MapOccupancy> occupancy() const override;
  bool flowEvents(uint64_t since, size_t max, std::vector<FlowEvent>* out, uint64_t* next,
                  uint64_t* dropped) const override;
  uint64_t flowEventsTotal() const override;
  void logAgentEvent(AgentEvent e) const override;
  Result<std::vector<ClientPair>> clients() const override;
  Status forgetClients(const std::vector<aimesh_client_key>& keys) const override;
  Result<SplitStats> splitStats() const override;

 private:
  MapFds fds_;
  MapLimits limits_;
  uint64_t penaltyHalfLifeNs_;
  std::unique_ptr<EventLog> events_;
};

}  // namespace aimesh
