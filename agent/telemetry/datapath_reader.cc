#include "telemetry/datapath_reader.h"

#include "bpf/map_walk.h"

#include <tuple>

namespace aimesh {

BpfDatapathReader::BpfDatapathReader(const MapFds& fds, const MapLimits& limits, uint64_t penaltyHalfLifeNs,
                                     std::unique_ptr<EventLog> events)
    : fds_(fds), limits_(limits), penaltyHalfLifeNs_(penaltyHalfLifeNs), events_(std::move(events)) {}

Result<DatapathStats> BpfDatapathReader::stats(const std::vector<uint32_t>& serviceIds,
                                               const std::vector<uint32_t>& backendIds) const {
  return readStats(fds_, serviceIds, backendIds);
}

Result<std::map<uint32_t, BackendTelemetry>> BpfDatapathReader::telemetry(
    const std::vector<uint32_t>& backendIds) const {
  return readTelemetry(fds_, backendIds, penaltyHalfLifeNs_);
}

std::vector<MapOccupancy> BpfDatapathReader::occupancy() const {
  std::vector<MapOccupancy> maps;
  for (auto [name, fd, cap] : {std::tuple{"aimesh_frontends", fds_.frontends, limits_.frontends()},
                               {"aimesh_services", fds_.services, limits_.services},
                               {"aimesh_slots", fds_.slots, limits_.slots()},
                               {"aimesh_backends", fds_.backends, limits_.backends},
                               {"aimesh_revnat", fds_.revnat, limits_.revnat()}}) {
    auto n = countEntries(fd);
    maps.push_back(MapOccupancy{name, n ? *n : 0, static_cast<uint64_t>(cap)});
  }
  return maps;
}

bool BpfDatapathReader::flowEvents(uint64_t since, size_t max, std::vector<FlowEvent>* out, uint64_t* next,
                                   uint64_t* dropped) const {
  if (!events_) return false;
  *out = events_->since(since, max, next, dropped);
  return true;
}

uint64_t BpfDatapathReader::flowEventsTotal() const { return events_ ? events_->total() : 0; }

void BpfDatapathReader::logAgentEvent(AgentEvent e) const {
  if (events_) events_->append(std::move(e));
}

Result<std::vector<ClientPair>> BpfDatapathReader::clients() const { return readClients(fds_.clients); }

Status BpfDatapathReader::forgetClients(const std::vector<aimesh_client_key>& keys) const {
  return fds_.clients < 0 ? Status{} : aimesh::forgetClients(fds_.clients, keys);
}

Result<SplitStats> BpfDatapathReader::splitStats() const {
  SplitStats out;
  if (fds_.splitStats < 0) return out;
  Status st = readEntries<aimesh_split_stats_key, aimesh_split_stats>(
      fds_.splitStats,
      [&](const aimesh_split_stats_key& k, const aimesh_split_stats& v) {
        out[{k.split_id, k.target_id}] = SplitCounts{v.connects, v.datagrams};
      },
      uint64_t{limits_.services} * 64, "aimesh_split_stats");
  if (!st) return st.error();
  return out;
}

}  // namespace aimesh
