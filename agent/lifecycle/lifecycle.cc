#include "lifecycle/lifecycle.h"

#include "bpf/map_walk.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <set>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "model/snapshot.h"
#include "util/unique_fd.h"

namespace aimesh {

namespace {

uint64_t monoNs() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

uint64_t nsOf(std::chrono::milliseconds d) { return static_cast<uint64_t>(d.count()) * 1'000'000ULL; }

// The loads of the endpoints with an open connection (ids up to maxId), by
// id, streamed from batched reads: at 40,000 endpoints a vector of every load
// (2.5 MiB) was either faulted in anew every 200 ms or kept as RSS. An error
// reads as none open: nothing to do this tick.
std::vector<std::pair<uint32_t, aimesh_be_load>> readOpenLoads(int fd, uint32_t maxId) {
  std::vector<std::pair<uint32_t, aimesh_be_load>> out;
  Status st = readArray<aimesh_be_load>(
      fd, maxId + 1,
      [&](uint32_t id, const aimesh_be_load& v) {
        if (v.active > 0) out.emplace_back(id, v);
      },
      "aimesh_be_load");
  if (!st) out.clear();
  return out;
}

bool ejectedAt(const aimesh_be_load& l, uint64_t mono) { return l.skip_until_ns && mono < l.skip_until_ns; }

int64_t idleOf(const aimesh_be_load& l) { return std::clamp<int64_t>(l.idle, 0, std::max<int64_t>(0, l.active)); }

void zeroBudgets(int fd, const std::map<uint32_t, uint32_t>& budgets) {
  aimesh_lc_be zero{};
  for (auto& [id, n] : budgets) bpf_map_update_elem(fd, &id, &zero, BPF_ANY);
}

}  // namespace

const char* closeReasonName(uint8_t reason) {
  switch (reason) {
    case AIMESH_CLOSE_REMOVED: return "removed";
    case AIMESH_CLOSE_DRAINED: return "drained";
    case AIMESH_CLOSE_EJECTED: return "ejected";
    case AIMESH_CLOSE_REBALANCED: return "rebalanced";
    case AIMESH_CLOSE_MAX_AGE: return "max_age";
    case AIMESH_CLOSE_MAX_REQUESTS: return "max_requests";
    default: return "";
  }
}

const char* connStateName(uint8_t state) {
  switch (state) {
    case AIMESH_CS_IDLE: return "idle";
    case AIMESH_CS_BUSY: return "busy";
    case AIMESH_CS_NEW: return "new";
    case AIMESH_CS_UNKNOWN: return "unknown";
    case AIMESH_CS_DATAGRAM: return "datagram";
    case AIMESH_CS_CLOSING: return "closing";
    default: return "?";
  }
}

std::string Lifecycle::endpointText(const uint8_t addr[16], uint16_t port) {
  IpAddr a;
  std::memcpy(a.bytes.data(), addr, 16);
  return formatHostPort(a, port);
}

Lifecycle::Lifecycle(const LifecycleOptions& opts, const MapFds& maps)
    : opts_(opts), maps_(maps), netns_(opts.cgroup, opts.netnsDir) {}

std::unique_ptr<Lifecycle> Lifecycle::start(const LifecycleOptions& opts, const std::string& pinDir,
                                            const MapLimits& limits, const MapFds& maps) {
  std::unique_ptr<Lifecycle> lc(new Lifecycle(opts, maps));
  if (!opts.enabled) {
    lc->reason_ = "turned off (--connection-lifecycle=false)";
    return lc;
  }
  auto it = SockIter::open(pinDir, limits);
  if (!it) {
    lc->reason_ = it.error().message();
    spdlog::warn("connection lifecycle unavailable: {}; connections to removed endpoints are not closed and "
                 "pooled connections are not re-balanced (meshctl doctor)",
                 lc->reason_);
    return lc;
  }
  lc->homeNetns_ = ::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  if (lc->homeNetns_ < 0) {
    lc->reason_ = std::string("open /proc/self/ns/net: ") + std::strerror(errno);
    return lc;
  }
  lc->iter_.emplace(std::move(it.value()));
  aimesh_lc_ctl ctl{};
  ctl.idle_guard_ns = nsOf(opts.idleGuard);
  ctl.new_idle_ns = nsOf(opts.newIdle);
  ctl.drain_timeout_ns = nsOf(opts.drainTimeout);
  uint32_t zero = 0;
  bpf_map_update_elem(lc->iter_->ctlFd(), &zero, &ctl, BPF_ANY);
  lc->stats_.available = true;
  lc->thread_ = std::thread([p = lc.get()] { p->loop(); });
  return lc;
}

Lifecycle::~Lifecycle() {
  {
    std::lock_guard lk(stopMu_);
    stop_ = true;
  }
  stopCv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (homeNetns_ >= 0) ::close(homeNetns_);
}

Lifecycle::ClosedKey Lifecycle::closedKey(const ServiceRules& s, const std::string& endpoint) {
  return {s.nameSpace + "/" + s.name, s.port.port, static_cast<uint8_t>(s.port.protocol), endpoint};
}

Lifecycle::ServiceRules Lifecycle::rulesOf(const ServiceInfo& s) {
  return ServiceRules{s.name, s.nameSpace, s.model, s.port, s.algorithm, s.connections, s.backendIds};
}

Lifecycle::EndpointInfo Lifecycle::endpointInfo(const BackendInfo& b) {
  return EndpointInfo{b.serviceId, b.endpoint.weight, b.endpoint.state == EndpointState::kActive, b.targetPort,
                      b.endpoint.address};
}

void Lifecycle::setIndex(const IdIndex& index, const IndexChange& change) {
  std::lock_guard lk(mu_);
  if (change.all) replaceIndexLocked(index);
  else patchIndexLocked(index, change);
  // Bounded: series of endpoints that left go once there are many of them.
  if (closed_.size() > 2 * endpoints_.size() + 1024)
    std::erase_if(closed_, [](const auto& kv) { return !kv.second.current; });
  if (!iter_) return;
  // The rules the iterators read, per service id; only those that changed
  // are written (at 10,000 services a write each was ~10,000 system calls
  // per change). Ids of services that left keep theirs: their leftover
  // connections still drain by them.
  if (change.all) {
    for (auto& [id, s] : services_) writeRuleLocked(id, s);
  } else {
    for (uint32_t id : change.written) writeRuleLocked(id, services_.at(id));
  }
}

void Lifecycle::replaceIndexLocked(const IdIndex& index) {
  for (auto& [id, s] : services_)
    if (!index.services.count(id)) {
      goneServices_[id] = s;
      pendingRemoval_ = true;
    }
  std::map<uint32_t, EndpointInfo> eps;
  for (auto& [id, b] : index.backends) eps[id] = endpointInfo(b);
  for (auto& [id, e] : endpoints_) {
    auto it = eps.find(id);
    if (it == eps.end() || !it->second.sameEndpoint(e) || it->second.serviceId != e.serviceId) pendingRemoval_ = true;
  }
  endpoints_ = std::move(eps);
  services_.clear();
  for (auto& [id, s] : index.services) services_.emplace_hint(services_.end(), id, rulesOf(s));
  for (auto& [id, s] : services_) goneServices_.erase(id);
  std::erase_if(tokens_, [&](const auto& kv) { return !services_.count(kv.first); });
  if (closed_.empty()) return;
  for (auto& [key, c] : closed_) c.current = false;
  for (auto& [id, e] : endpoints_) {
    auto it = closed_.find(closedKey(services_.at(e.serviceId), e.text()));
    if (it != closed_.end()) it->second.current = true;
  }
}

// The same as replaceIndexLocked() for an index that differs from the one
// held only in the service ids `change` names.
void Lifecycle::patchIndexLocked(const IdIndex& index, const IndexChange& change) {
  std::map<uint32_t, EndpointInfo> left;  // the removed ids' endpoints, as they were
  for (uint32_t sid : change.removed) {
    auto s = services_.find(sid);
    if (s == services_.end()) continue;
    for (uint32_t bid : s->second.backendIds) {
      auto e = endpoints_.find(bid);
      if (e == endpoints_.end()) continue;
      if (!closed_.empty())
        if (auto c = closed_.find(closedKey(s->second, e->second.text())); c != closed_.end())
          c->second.current = false;
      left.insert(endpoints_.extract(e));
    }
    if (!index.services.count(sid)) {
      goneServices_[sid] = std::move(s->second);
      tokens_.erase(sid);
      pendingRemoval_ = true;
    }
    services_.erase(s);
  }
  for (uint32_t sid : change.written) {
    const ServiceRules& s = services_.insert_or_assign(sid, rulesOf(index.services.at(sid))).first->second;
    goneServices_.erase(sid);
    for (uint32_t bid : s.backendIds) {
      EndpointInfo e = endpointInfo(index.backends.at(bid));
      if (!closed_.empty())
        if (auto c = closed_.find(closedKey(s, e.text())); c != closed_.end()) c->second.current = true;
      endpoints_.insert_or_assign(bid, std::move(e));
    }
  }
  for (auto& [id, e] : left) {
    auto it = endpoints_.find(id);
    if (it == endpoints_.end() || !it->second.sameEndpoint(e) || it->second.serviceId != e.serviceId)
      pendingRemoval_ = true;
  }
}

void Lifecycle::writeRuleLocked(uint32_t id, const ServiceRules& s) {
  aimesh_lc_svc r{};
  r.max_age_ns = s.connections.maxAgeMs * 1'000'000ULL;
  r.max_requests = s.connections.maxRequests;
  r.drain_timeout_ns = s.connections.drainTimeoutMs * 1'000'000ULL;
  r.flags = AIMESH_LCS_F_SET;
  auto [it, added] = svcRules_.try_emplace(id, r);
  if (!added && std::memcmp(&it->second, &r, sizeof(r)) == 0) return;
  if (bpf_map_update_elem(iter_->svcFd(), &id, &r, BPF_ANY) == 0) it->second = r;
  else svcRules_.erase(it);  // written again next time
}

void Lifecycle::loop() {
  std::unique_lock lk(stopMu_);
  while (!stop_) {
    stopCv_.wait_for(lk, opts_.interval, [&] { return stop_; });
    if (stop_) break;
    lk.unlock();
    tick(std::chrono::steady_clock::now());
    lk.lock();
  }
}

// Service s's endpoints as rebalanceBudgets() takes them, in id order. An
// endpoint without an open connection (a new replica, say) still has a
// latency and may be in back-off: looked up one by one (few).
std::vector<EndpointLoad> Lifecycle::endpointLoadsLocked(const ServiceRules& s, const OpenLoads& open,
                                                         uint64_t mono) const {
  std::vector<EndpointLoad> eps;
  for (uint32_t bid : s.backendIds) {
    auto e = endpoints_.find(bid);
    if (e == endpoints_.end()) continue;
    aimesh_be_load l{};
    auto it = std::lower_bound(open.begin(), open.end(), bid, [](const auto& o, uint32_t k) { return o.first < k; });
    if (it != open.end() && it->first == bid) l = it->second;
    else if (bpf_map_lookup_elem(maps_.beLoad, &bid, &l) != 0) l = aimesh_be_load{};
    eps.push_back(EndpointLoad{bid, e->second.weight, e->second.active && e->second.weight > 0 && !ejectedAt(l, mono),
                               l.active, idleOf(l), l.ewma_ttft_ns});
  }
  std::sort(eps.begin(), eps.end(), [](const EndpointLoad& a, const EndpointLoad& b) { return a.id < b.id; });
  return eps;
}

void Lifecycle::tick(std::chrono::steady_clock::time_point now) {
  uint32_t maxId = 0;
  {
    std::lock_guard lk(mu_);
    maxId = endpoints_.empty() ? 0 : endpoints_.rbegin()->first;
  }
  // Read without the lock, so an apply's setIndex() never waits for it (at
  // 40,000 endpoints the read and a walk of every endpoint held it for ms).
  OpenLoads open = maxId ? readOpenLoads(maps_.beLoad, maxId) : OpenLoads{};
  std::map<uint32_t, uint32_t> budgets;
  bool need = false;
  {
    std::lock_guard lk(mu_);
    double dt = lastTick_.time_since_epoch().count() ? std::chrono::duration<double>(now - lastTick_).count() : 0;
    lastTick_ = now;
    uint64_t mono = monoNs();
    // Only endpoints with an open connection can need a pass, and only
    // services with one can have connections to move.
    bool anyOpen = false, anyLimits = false;
    std::set<uint32_t> rebalancing;
    for (const auto& [id, l] : open) {
      auto e = endpoints_.find(id);
      if (e == endpoints_.end()) continue;
      anyOpen = true;
      if ((!e->second.active || e->second.weight == 0 || ejectedAt(l, mono)) && idleOf(l) > 0) need = true;
      auto sit = services_.find(e->second.serviceId);
      if (sit == services_.end()) continue;
      const ConnectionPolicy& p = sit->second.connections;
      if (p.maxAgeMs || p.maxRequests) anyLimits = true;
      if (p.rebalanceOn(sit->second.algorithm)) rebalancing.insert(sit->first);
    }
    for (uint32_t sid : rebalancing) {
      const ServiceRules& s = services_.at(sid);
      std::vector<EndpointLoad> eps = endpointLoadsLocked(s, open, mono);
      Bucket& b = tokens_[sid];
      double since = b.refilled.time_since_epoch().count() ? std::chrono::duration<double>(now - b.refilled).count() : dt;
      b.tokens.refill(s.connections.rebalanceRate, since);
      b.refilled = now;
      for (auto& [id, n] : rebalanceBudgets(s.algorithm, eps, b.tokens.available())) budgets[id] = n;
    }
    if (!budgets.empty()) need = true;
    if (pendingRemoval_) need = true;
    auto since = now - lastPass_;
    if (anyLimits && since >= std::chrono::seconds(1)) need = true;
    if (anyOpen && since >= opts_.sweep) need = true;
  }
  if (!need) return;
  std::lock_guard pass(passMu_);
  for (auto& [id, n] : budgets) {
    aimesh_lc_be b{};
    b.rebalance = n;
    bpf_map_update_elem(iter_->beFd(), &id, &b, BPF_ANY);
  }
  auto seen = passLocked(true);
  zeroBudgets(iter_->beFd(), budgets);
  std::lock_guard lk(mu_);
  lastPass_ = now;
  if (!seen) {
    stats_.passErrors++;
    spdlog::warn("connection lifecycle pass: {}", seen.error().message());
    return;
  }
  account(*seen);
}

Result<std::vector<ConnectionSeen>> Lifecycle::passLocked(bool act) {
  auto t0 = std::chrono::steady_clock::now();
  aimesh_lc_ctl ctl{};
  uint32_t zero = 0;
  bpf_map_lookup_elem(iter_->ctlFd(), &zero, &ctl);
  ctl.flags = (act ? AIMESH_LC_F_ACT : 0) | (opts_.telemetry ? AIMESH_LC_F_PHASES : 0);
  if (bpf_map_update_elem(iter_->ctlFd(), &zero, &ctl, BPF_ANY) != 0) return Error::fromErrno("write aimesh_lc_ctl");
  std::vector<NetnsRef> spaces;
  {
    std::lock_guard lk(mu_);
    if (namespaces_.empty() || t0 - lastNetns_ >= opts_.netnsRefresh) {
      namespaces_ = netns_.find();
      lastNetns_ = t0;
    }
    spaces = namespaces_;
  }
  std::vector<ConnectionSeen> out;
  std::string firstError;
  for (const NetnsRef& ns : spaces) {
    UniqueFd fd(::open(ns.path.c_str(), O_RDONLY | O_CLOEXEC));
    struct stat st {};
    // The pid may have exited and its number gone to another process.
    if (!fd.valid() || ::fstat(fd.get(), &st) != 0 || static_cast<uint64_t>(st.st_ino) != ns.ino) continue;
    auto r = iter_->pass(fd.get(), homeNetns_);
    if (!r) {
      if (firstError.empty()) firstError = ns.path + ": " + r.error().message();
      continue;
    }
    for (auto& c : *r) out.push_back(ConnectionSeen{c, ns.ino});
  }
  std::lock_guard lk(mu_);
  stats_.passes++;
  stats_.passSeconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  stats_.namespaces = spaces.size();
  stats_.connections = out.size();
  if (!firstError.empty() && out.empty() && !spaces.empty()) return Error::msg(firstError);
  return out;
}

// Counts what a pass closed, spends the services' re-balancing tokens, and
// keeps looking while connections to removed endpoints remain. Holds mu_.
void Lifecycle::account(const std::vector<ConnectionSeen>& seen) {
  bool gone = false;
  for (const ConnectionSeen& c : seen) {
    const aimesh_conn& r = c.rec;
    if (r.gone && !r.closed) gone = true;
    if (!r.closed || r.closed >= AIMESH_CLOSE_MAX) continue;
    if (r.closed == AIMESH_CLOSE_REBALANCED) tokens_[r.service_id].tokens.spend(1);
    const ServiceRules* s = nullptr;
    if (auto it = services_.find(r.service_id); it != services_.end()) s = &it->second;
    else if (auto g = goneServices_.find(r.service_id); g != goneServices_.end()) s = &g->second;
    if (!s) continue;
    std::string ep = endpointText(r.daddr, ntohs(r.dport));
    auto key = std::make_tuple(s->nameSpace + "/" + s->name, s->port.port, static_cast<uint8_t>(s->port.protocol), ep);
    auto [it, fresh] = closed_.try_emplace(key);
    if (fresh) {
      it->second = ClosedSeries{s->name, s->nameSpace, s->model, s->port, ep, false, {}};
      auto e = endpoints_.find(r.backend_id);
      it->second.current = !r.gone && e != endpoints_.end() && e->second.text() == ep;
    }
    it->second.byReason[r.closed]++;
  }
  pendingRemoval_ = gone;
  if (!gone) goneServices_.clear();
}

Result<std::vector<ConnectionSeen>> Lifecycle::connections() {
  if (!iter_) return Error::msg(reason_);
  std::lock_guard pass(passMu_);
  return passLocked(false);
}

size_t Lifecycle::namespacesWalked() const {
  std::lock_guard lk(mu_);
  return stats_.namespaces;
}

std::vector<ClosedSeries> Lifecycle::closed() const {
  std::lock_guard lk(mu_);
  std::vector<ClosedSeries> out;
  for (auto& [key, c] : closed_) out.push_back(c);
  return out;
}

LifecycleStats Lifecycle::stats() const {
  std::lock_guard lk(mu_);
  return stats_;
}

}  // namespace aimesh
