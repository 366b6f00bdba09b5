// Reads what the telemetry programs keep per backend: lifecycle counters,
// the active-connection gauge, and latency histograms (those that exist: a
// histogram is created by its first sample). Also the consumer of the events ring buffer.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "aimesh/abi.h"
#include "bpf/datapath.h"
#include "telemetry/model_scraper.h"
#include "telemetry/histogram.h"
#include "util/result.h"

struct ring_buffer;

namespace aimesh {

// "connect", "ttfb", "ttft", "gap", "duration", "rtt".
const char* metricName(uint32_t metric);
// "open", "close", "refused", "timeout", "reset", "no_backend".
const char* eventTypeName(uint8_t type);

struct BackendTelemetry {
  aimesh_be_tel counters{};
  int64_t active = 0;
  int64_t idle = 0;  // of active, idle between requests (aimesh_be_load.idle)
  // Balancer state (aimesh_be_load / aimesh_be_signal), read at the same time.
  uint64_t ewmaTtftNs = 0;       // 0: no sample yet
  double penalty = 0;            // decayed to now
  uint32_t failStreak = 0;
  bool ejected = false;          // in failure back-off now
  double ejectedForSeconds = 0;  // back-off left
  aimesh_be_signal signal{};     // valid = 0 when not scraped
  std::array<Histogram, AIMESH_M_MAX> hist{};
};

// penaltyHalfLifeNs must be the one the data plane uses (aimesh_config).
Result<std::map<uint32_t, BackendTelemetry>> readTelemetry(
    const MapFds& fds, const std::vector<uint32_t>& backendIds,
    uint64_t penaltyHalfLifeNs = AIMESH_DEFAULT_PENALTY_HALF_LIFE_NS);

// Writes one scrape's outcome into aimesh_be_signal: the signals (clamped),
// or all zero with valid = 0 after a failed scrape, so the balancer stops
// using stale numbers. Called from the scraper's thread.
void writeModelSignals(int beSignalFd, uint32_t backendId, const Result<ModelSignals>& r);

// An event of the agent's own in the flow log: a canary guard's transition
// (type guard_tripped, guard_probing or guard_ok; endpoint: the backend
// service, namespace/name).
struct AgentEvent {
  std::string type, service, nameSpace, endpoint, reason;
  bool operator==(const AgentEvent&) const = default;
};

struct FlowEvent {
  uint64_t seq = 0;
  aimesh_event ev{};  // an agent event has only ev.ts_ns (monotonic, as the kernel's)
  std::shared_ptr<const AgentEvent> agent;  // set: the agent's, not the kernel's
};

// Polls the ring buffer on its own thread and keeps the last `capacity`
// events with increasing sequence numbers.
class EventLog {
 public:
  static Result<std::unique_ptr<EventLog>> start(int ringbufFd, size_t capacity = 4096);
  ~EventLog();
  // Events with seq >= since (at most `max`), the next seq to ask for, and how
  // many events older than `since` were dropped from the log.
  std::vector<FlowEvent> since(uint64_t since, size_t max, uint64_t* next, uint64_t* dropped) const;
  uint64_t total() const;
  // The agent's own event, in sequence with the kernel's (now, monotonic).
  void append(AgentEvent e);

 private:
  EventLog() = default;
  void push(FlowEvent fe);
  static int onEvent(void* ctx, void* data, size_t size);
  ring_buffer* rb_ = nullptr;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  mutable std::mutex mu_;
  std::deque<FlowEvent> events_;
  size_t capacity_ = 4096;
  uint64_t nextSeq_ = 1;
};

}  // namespace aimesh
