#include "telemetry/telemetry.h"

#include "bpf/map_walk.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <cerrno>
#include <cstring>

namespace aimesh {

const char* metricName(uint32_t metric) {
  switch (metric) {
    case AIMESH_M_CONNECT: return "connect";
    case AIMESH_M_TTFB: return "ttfb";
    case AIMESH_M_TTFT: return "ttft";
    case AIMESH_M_GAP: return "gap";
    case AIMESH_M_DURATION: return "duration";
    case AIMESH_M_RTT: return "rtt";
    default: return "unknown";
  }
}

const char* eventTypeName(uint8_t type) {
  switch (type) {
    case AIMESH_EV_OPEN: return "open";
    case AIMESH_EV_CLOSE: return "close";
    case AIMESH_EV_REFUSED: return "refused";
    case AIMESH_EV_TIMEOUT: return "timeout";
    case AIMESH_EV_RESET: return "reset";
    case AIMESH_EV_NO_BACKEND: return "no_backend";
    case AIMESH_EV_DENIED: return "denied";
    default: return "unknown";
  }
}

namespace {

// Adds histogram `key` to its endpoint's telemetry, if `out` asks for it.
void addHistogram(std::map<uint32_t, BackendTelemetry>& out, uint32_t key, const aimesh_hist& h) {
  auto it = out.find(key / AIMESH_M_MAX);
  if (it != out.end()) it->second.hist[key % AIMESH_M_MAX].add(h);
}

// The histograms of the endpoints in `out`. Only those that have had a
// sample exist in the kernel, so read the map's entries (its size follows the
// endpoints with traffic) rather than look up every endpoint's.
Status readHistograms(int fd, std::map<uint32_t, BackendTelemetry>& out) {
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) return Error::fromErrno("inspect aimesh_hist");
  return readEntries<uint32_t, aimesh_hist>(
      fd, [&](uint32_t k, const aimesh_hist& h) { addHistogram(out, k, h); }, uint64_t{info.max_entries} * 2,
      "aimesh_hist");
}

}  // namespace

Result<std::map<uint32_t, BackendTelemetry>> readTelemetry(const MapFds& fds, const std::vector<uint32_t>& ids,
                                                           uint64_t penaltyHalfLifeNs) {
  std::map<uint32_t, BackendTelemetry> out;
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);  // bpf_ktime_get_ns()'s clock
  const uint64_t now = static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ULL + static_cast<uint64_t>(ts.tv_nsec);
  for (uint32_t id : ids) {
    BackendTelemetry& bt = out[id];
    if (bpf_map_lookup_elem(fds.beTel, &id, &bt.counters) != 0) return Error::fromErrno("read aimesh_be_tel");
    aimesh_be_load load{};
    if (bpf_map_lookup_elem(fds.beLoad, &id, &load) == 0) {
      bt.active = load.active;
      bt.idle = load.idle;
      bt.ewmaTtftNs = load.ewma_ttft_ns;
      bt.failStreak = load.fail_streak;
      if (load.penalty) {
        double halvings = now > load.penalty_ts_ns && penaltyHalfLifeNs
                              ? double(now - load.penalty_ts_ns) / double(penaltyHalfLifeNs)
                              : 0.0;
        bt.penalty = halvings >= 32 ? 0 : double(load.penalty >> static_cast<int>(halvings));
      }
      if (load.skip_until_ns > now) {
        bt.ejected = true;
        bt.ejectedForSeconds = double(load.skip_until_ns - now) / 1e9;
      }
    }
    if (fds.beSignal >= 0) bpf_map_lookup_elem(fds.beSignal, &id, &bt.signal);
  }
  if (Status st = readHistograms(fds.hist, out); !st) return st.error();
  return out;
}

void writeModelSignals(int fd, uint32_t backendId, const Result<ModelSignals>& r) {
  if (fd < 0) return;
  auto clamp = [](double v, double max) -> uint32_t {
    if (!(v > 0)) return 0;  // NaN and negatives
    return v >= max ? static_cast<uint32_t>(max) : static_cast<uint32_t>(v + 0.5);
  };
  aimesh_be_signal s{};
  if (r) {
    s.queue_depth = r->hasWaiting ? clamp(r->waiting, 65535) : 0;
    s.running = r->hasRunning ? clamp(r->running, 65535) : 0;
    s.kv_cache_permille = r->hasKvCache ? clamp(r->kvCacheUsage * 1000, 1000) : 0;
    s.valid = 1;
  }
  bpf_map_update_elem(fd, &backendId, &s, BPF_ANY);
}

int EventLog::onEvent(void* ctx, void* data, size_t size) {
  auto* self = static_cast<EventLog*>(ctx);
  if (size < sizeof(aimesh_event)) return 0;
  FlowEvent fe;
  std::memcpy(&fe.ev, data, sizeof(aimesh_event));
  std::lock_guard lk(self->mu_);
  fe.seq = self->nextSeq_++;
  self->events_.push_back(fe);
  while (self->events_.size() > self->capacity_) self->events_.pop_front();
  return 0;
}

Result<std::unique_ptr<EventLog>> EventLog::start(int fd, size_t capacity) {
  std::unique_ptr<EventLog> log(new EventLog());
  log->capacity_ = capacity;
  log->rb_ = ring_buffer__new(fd, &EventLog::onEvent, log.get(), nullptr);
  if (!log->rb_) return Error::fromErrno("open events ring buffer");
  log->thread_ = std::thread([p = log.get()] {
    // Programs submit without waking us (a wakeup per event is too costly);
    // poll() returns on a forced wakeup or the timeout, then drain.
    while (!p->stop_.load()) {
      ring_buffer__poll(p->rb_, 100);
      ring_buffer__consume(p->rb_);
    }
  });
  return log;
}

EventLog::~EventLog() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
  if (rb_) ring_buffer__free(rb_);
}

std::vector<FlowEvent> EventLog::since(uint64_t since, size_t max, uint64_t* next, uint64_t* dropped) const {
  std::lock_guard lk(mu_);
  std::vector<FlowEvent> out;
  uint64_t first = events_.empty() ? nextSeq_ : events_.front().seq;
  *dropped = since < first && since > 0 ? first - since : 0;
  for (auto& e : events_) {
    if (e.seq < since) continue;
    if (out.size() >= max) break;
    out.push_back(e);
  }
  *next = out.empty() ? std::max(since, first) : out.back().seq + 1;
  if (out.empty() && since > nextSeq_) *next = nextSeq_;
  return out;
}

uint64_t EventLog::total() const {
  std::lock_guard lk(mu_);
  return nextSeq_ - 1;
}

}  // namespace aimesh
