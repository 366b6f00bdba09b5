#include "telemetry/telemetry.h"

#include "bpf/map_walk.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>

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

template <class T>
bool allZero(const T& v) {
  static const T kZero{};
  return std::memcmp(&v, &kZero, sizeof(T)) == 0;
}

// The balancer's state of one endpoint as of `now`.
void addLoad(BackendTelemetry& bt, const aimesh_be_load& load, uint64_t now, uint64_t penaltyHalfLifeNs) {
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

}  // namespace

Result<std::map<uint32_t, BackendTelemetry>> readTelemetry(const MapFds& fds, const std::vector<uint32_t>& ids,
                                                           uint64_t penaltyHalfLifeNs) {
  std::map<uint32_t, BackendTelemetry> out;
  if (ids.empty()) return out;
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);  // bpf_ktime_get_ns()'s clock
  const uint64_t now = static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ULL + static_cast<uint64_t>(ts.tv_nsec);
  std::vector<uint32_t> wanted = ids;
  std::sort(wanted.begin(), wanted.end());
  const uint32_t n = wanted.back() + 1;
  auto asked = [&](uint32_t id) { return std::binary_search(wanted.begin(), wanted.end(), id); };
  // Only endpoints with something to say get an entry (an endpoint nothing
  // on this node talked to has all zeros): the arrays are read in batches
  // and an entry is made at the first non-zero value.
  Status st = readArray<aimesh_be_tel>(fds.beTel, n, [&](uint32_t id, const aimesh_be_tel& v) {
    if (!allZero(v) && asked(id)) out[id].counters = v;
  }, "aimesh_be_tel");
  if (!st) return st.error();
  if (fds.beLoad >= 0) {
    st = readArray<aimesh_be_load>(fds.beLoad, n, [&](uint32_t id, const aimesh_be_load& v) {
      if (!allZero(v) && asked(id)) addLoad(out[id], v, now, penaltyHalfLifeNs);
    }, "aimesh_be_load");
    if (!st) return st.error();
  }
  if (fds.beSignal >= 0) {
    st = readArray<aimesh_be_signal>(fds.beSignal, n, [&](uint32_t id, const aimesh_be_signal& v) {
      if (v.valid && asked(id)) out[id].signal = v;
    }, "aimesh_be_signal");
    if (!st) return st.error();
  }
  // Histograms: every endpoint with one has counters too, but an entry is
  // made for one that (oddly) has not.
  if (fds.hist >= 0) {
    bpf_map_info info{};
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(fds.hist, &info, &len) != 0) return Error::fromErrno("inspect aimesh_hist");
    st = readEntries<uint32_t, aimesh_hist>(
        fds.hist,
        [&](uint32_t k, const aimesh_hist& h) {
          if (asked(k / AIMESH_M_MAX)) out[k / AIMESH_M_MAX].hist[k % AIMESH_M_MAX].add(h);
        },
        uint64_t{info.max_entries} * 2, "aimesh_hist");
    if (!st) return st.error();
  }
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
  self->push(std::move(fe));
  return 0;
}

void EventLog::push(FlowEvent fe) {
  std::lock_guard lk(mu_);
  fe.seq = nextSeq_++;
  events_.push_back(std::move(fe));
  while (events_.size() > capacity_) events_.pop_front();
}

void EventLog::append(AgentEvent e) {
  FlowEvent fe;
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);  // bpf_ktime_get_ns()'s clock
  fe.ev.ts_ns = static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
  fe.agent = std::make_shared<const AgentEvent>(std::move(e));
  push(std::move(fe));
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
