#include "agent.h"

#include <arpa/inet.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <thread>

#include "bpf/conntrack.h"
#include "model/snapshot.h"
#include "source/file_watcher.h"
#include "source/state_file.h"
#include "telemetry/stats.h"

namespace aimesh {

using json = nlohmann::json;

Agent::Agent(AgentOptions opts, Datapath dp)
    : opts_(std::move(opts)), dp_(std::move(dp)), writer_(dp_.maps(), opts_.limits), reconciler_(writer_, opts_.limits),
      started_(std::chrono::steady_clock::now()) {
  counters_.startTimeSeconds =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

Result<std::unique_ptr<Agent>> Agent::start(const AgentOptions& opts) {
  DatapathOptions dopts;
  dopts.pinDir = opts.pinDir;
  dopts.cgroupPath = opts.cgroup;
  dopts.telemetry = opts.telemetry;
  dopts.tcInterfaces = opts.tcInterfaces;
  dopts.tuning = opts.tuning;
  dopts.limits = opts.limits;
  auto dp = Datapath::open(dopts);
  if (!dp) return dp.error();
  for (auto& p : dp->programs())
    spdlog::info("{} {} on {} (link {})", p.adopted ? "adopted" : "attached", p.name, p.attachTo, p.linkId);

  std::unique_ptr<Agent> a(new Agent(opts, std::move(dp.value())));
  // Model-server signals: the scraper's thread writes them into aimesh_be_signal.
  a->scraper_ = std::make_unique<ModelScraper>(
      ModelScraper::Options{opts.scrapeInterval, opts.scrapeTimeout, opts.scrapeNetns},
      [fd = a->dp_.maps().beSignal](uint32_t backendId, const Result<ModelSignals>& r) {
        writeModelSignals(fd, backendId, r);
      });
  LifecycleOptions lopts = opts.lifecycle;
  lopts.cgroup = opts.cgroup;
  lopts.telemetry = opts.telemetry;
  a->lifecycle_ = Lifecycle::start(lopts, opts.pinDir, opts.limits, a->dp_.maps());
  if (a->lifecycle_->available())
    spdlog::info("connection lifecycle: socket iterators loaded (namespaces of {}{}{})", opts.cgroup,
                 lopts.netnsDir.empty() ? "" : " and ", lopts.netnsDir);
  auto events = EventLog::start(a->dp_.maps().events);
  if (!events) return events.error();
  a->reader_ = std::make_unique<BpfDatapathReader>(a->dp_.maps(), opts.limits, opts.tuning.penaltyHalfLifeNs,
                                                   std::move(events.value()));
  if (!opts.stateFile.empty()) a->reload();
  if (opts.kube) {
    spdlog::info("cluster state from the Kubernetes API at {} ({})", opts.kube->server, opts.kube->source);
    auto ks = KubeSource::start(KubeClient(*opts.kube, KubeClient::Options{}), opts.kubeOptions);
    if (!ks) return ks.error();
    a->kube_ = std::move(ks.value());
  }

  HttpServerOptions httpOpts = opts.http;
  httpOpts.counters = a->httpCounters_;
  auto http = HttpServer::start(opts.metricsAddr,
                                HttpHandlers{[p = a.get()] { return p->metricsText(false); },
                                             [p = a.get()] { return p->ready(); },
                                             [p = a.get()] { return p->metricsText(true); }},
                                httpOpts);
  if (!http) return http.error();
  a->http_.emplace(std::move(http.value()));
  spdlog::info("metrics on http://{}/metrics", a->http_->address());

  auto api = ApiServer::create(opts.apiSocket, [p = a.get()](const json& req) { return p->handleApi(req); });
  if (!api) return api.error();
  a->api_.emplace(std::move(api.value()));
  spdlog::info("API on unix:{}", opts.apiSocket);
  return a;
}

bool Agent::reload() {
  ParseResult pr = parseStateFile(opts_.stateFile);
  std::lock_guard lk(mu_);
  if (!pr.ok()) {
    counters_.stateFileErrors++;
    counters_.lastStateFileOk = false;
    lastError_.clear();
    for (auto& e : pr.errors) {
      spdlog::error("{}", e.toString());
      if (!lastError_.empty()) lastError_ += "; ";
      lastError_ += e.toString();
    }
    spdlog::warn("state file rejected ({} error(s)); the last good state stays in force", pr.errors.size());
    return false;
  }
  counters_.lastStateFileOk = true;
  return applyLocked(*pr.snapshot);
}

std::vector<ScrapeTarget> Agent::scrapeTargets() const {
  std::vector<ScrapeTarget> out;
  for (auto& [sid, s] : index_.services) {
    if (!s.modelMetrics) continue;
    for (uint32_t bid : s.backendIds)
      out.push_back(ScrapeTarget{bid, index_.backends.at(bid).endpoint.address.toString(), s.modelMetrics->port,
                                 s.modelMetrics->path});
  }
  return out;
}

bool Agent::applyLocked(const Snapshot& snap) {
  IdIndex idx;
  // Policies name cgroups by path; the kernel checks ids. The snapshot kept
  // as last good has the paths only, so every apply resolves afresh.
  Snapshot resolved = snap;
  auto missing = resolvePolicies(resolved, systemCgroupLookup(), systemPodCgroupLookup(podCgroupRoot()));
  for (auto& m : missing)
    if (warnedCgroups_.insert(m.service + " " + m.path).second)
      spdlog::warn("service {}: policy allows {}, which has no cgroup now ({}); its clients are allowed once it has",
                   m.service, m.path, m.reason);
  lastPolicyCheck_ = std::chrono::steady_clock::now();
  auto r = reconciler_.reconcile(resolved, idx);
  if (!r) {
    counters_.reconcileErrors++;
    lastError_ = "apply: " + r.error().message();
    spdlog::error("reconcile failed: {}", r.error().message());
    return false;
  }
  for (auto& s : snap.services) {
    bool needsLoad = s.algorithm == Algorithm::kLeastConn || s.algorithm == Algorithm::kLatency ||
                     s.algorithm == Algorithm::kBoundedHash;
    if (needsLoad && !opts_.telemetry && warnedAlgorithm_.insert(s.key()).second)
      spdlog::warn("service {}: algorithm '{}' needs the kernel's connection counts and latencies, which "
                   "--telemetry=false turns off; every endpoint looks idle to it",
                   s.key(), toString(s.algorithm));
  }
  lastGood_ = snap;
  unresolvedCgroups_ = std::move(missing);
  index_ = std::move(idx);
  if (scraper_) scraper_->setTargets(scrapeTargets());
  if (lifecycle_) lifecycle_->setIndex(index_);
  counters_.reconciles++;
  counters_.ready = true;
  double secs = std::chrono::duration<double>(r->duration).count();
  counters_.lastReconcileSeconds = secs;
  counters_.reconcileSecondsTotal += secs;
  lastError_.clear();
  if (r->ops > 0)
    spdlog::info("applied {} service port(s), {} endpoint(s): {} map operation(s) in {:.3f} ms", index_.services.size(),
                 index_.backends.size(), r->ops, secs * 1e3);
  return true;
}

void Agent::applyKube(const kube::BuildResult& br) {
  std::lock_guard lk(mu_);
  for (auto& w : br.warnings) {
    if (kubeWarnings_.size() > 10000) kubeWarnings_.clear();  // bounded; may log some again
    if (kubeWarnings_.insert(w).second) spdlog::warn("kubernetes: {}", w);
  }
  applyLocked(br.snapshot);
}

bool Agent::uninstalling() {
  if (opts_.daemonSet.empty() || !kube_) return false;
  auto slash = opts_.daemonSet.find('/');
  std::string ns = opts_.daemonSet.substr(0, slash), name = opts_.daemonSet.substr(slash + 1);
  std::string err;
  using S = KubeSource::DaemonSetState;
  S now = kube_->daemonSet(ns, name, &err);
  // helm uninstall deletes the DaemonSet and then its ClusterRole: by the
  // time the pod gets SIGTERM the question may be forbidden. The watch of the
  // DaemonSet, opened while it was allowed, has seen the deletion.
  S watched = kube_->watchedDaemonSet();
  if (now == S::kUnknown) {
    for (int i = 0; i < 20 && watched == S::kPresent; ++i) {  // the event may be on its way
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      watched = kube_->watchedDaemonSet();
    }
  }
  S st = now != S::kUnknown ? now : watched;
  switch (st) {
    case S::kGone:
      spdlog::info("DaemonSet {} is gone{}: uninstalling, removing the data plane", opts_.daemonSet,
                   now == S::kUnknown ? " (seen by the watch)" : "");
      return true;
    case S::kDeleting:
      spdlog::info("DaemonSet {} is being deleted{}: uninstalling, removing the data plane", opts_.daemonSet,
                   now == S::kUnknown ? " (seen by the watch)" : "");
      return true;
    case S::kPresent:
      spdlog::info("DaemonSet {} is still there (an update): the data plane stays for the next agent",
                   opts_.daemonSet);
      return false;
    case S::kUnknown:
      spdlog::warn("cannot tell whether DaemonSet {} was deleted ({}): the data plane stays; "
                   "`aimesh-agent --cleanup` removes it",
                   opts_.daemonSet, err);
      return false;
  }
  return false;
}

void Agent::run(const std::atomic<bool>& stop) {
  std::optional<FileWatcher> watcher;
  if (!opts_.stateFile.empty()) {
    auto w = FileWatcher::create(opts_.stateFile);
    if (w) watcher.emplace(std::move(w.value()));
    else spdlog::error("cannot watch {}: {}", opts_.stateFile, w.error().message());
  }
  auto lastSync = std::chrono::steady_clock::now();
  auto lastSweep = lastSync;
  while (!stop.load()) {
    if (dp_.maps().ct >= 0 && std::chrono::steady_clock::now() - lastSweep >= opts_.ctSweepInterval) {
      lastSweep = std::chrono::steady_clock::now();
      auto sw = sweepConntrack(dp_.maps().ct, opts_.tuning);
      std::lock_guard lk(mu_);
      if (sw) {
        counters_.tcFlows = sw->entries - sw->expired;
        counters_.tcFlowsExpired += sw->expired;
      }
    }
    bool changed = false;
    if (kube_) {
      if (auto br = kube_->waitForChange(std::chrono::milliseconds(200))) {
        applyKube(*br);
        lastSync = std::chrono::steady_clock::now();
        continue;
      }
    } else if (watcher) {
      changed = watcher->waitForChange(std::chrono::milliseconds(200));
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    if (changed) {
      spdlog::info("{} changed", opts_.stateFile);
      reload();
      lastSync = std::chrono::steady_clock::now();
    } else if (policyRecheckDue()) {
      std::lock_guard lk(mu_);
      recheckPolicyLocked();
    } else if (std::chrono::steady_clock::now() - lastSync >= opts_.resync) {
      // Level-triggered: re-apply the last good state to repair drift.
      std::lock_guard lk(mu_);
      if (lastGood_) applyLocked(*lastGood_);
      lastSync = std::chrono::steady_clock::now();
    }
  }
}

bool Agent::policyRecheckDue() {
  std::lock_guard lk(mu_);
  return !unresolvedCgroups_.empty() && std::chrono::steady_clock::now() - lastPolicyCheck_ >= std::chrono::seconds(1);
}

void Agent::recheckPolicyLocked() {
  lastPolicyCheck_ = std::chrono::steady_clock::now();
  if (!lastGood_) return;
  Snapshot probe = *lastGood_;
  auto missing = resolvePolicies(probe, systemCgroupLookup(), systemPodCgroupLookup(podCgroupRoot()));
  if (missing == unresolvedCgroups_) return;  // nothing appeared or went away
  spdlog::info("policy: allowed cgroups changed ({} -> {} missing), applying again", unresolvedCgroups_.size(),
               missing.size());
  applyLocked(*lastGood_);
}

bool Agent::ready() {
  std::lock_guard lk(mu_);
  return counters_.ready;
}

namespace {
std::vector<uint32_t> keysOf(const auto& m) {
  std::vector<uint32_t> v;
  for (auto& [k, _] : m) v.push_back(k);
  return v;
}
}  // namespace

std::string Agent::metricsText(bool openMetrics) {
  // Occupancy walks the maps key by key (revnat can be large): do it before
  // taking the lock so a scrape does not hold up reconciles.
  std::vector<MapOccupancy> maps = reader_->occupancy();
  std::lock_guard lk(mu_);
  auto st = reader_->stats(keysOf(index_.services), keysOf(index_.backends));
  DatapathStats stats = st ? std::move(st.value()) : DatapathStats{};
  if (!st) spdlog::warn("read counters: {}", st.error().message());
  auto tel = reader_->telemetry(keysOf(index_.backends));
  if (!tel) spdlog::warn("read telemetry: {}", tel.error().message());
  AgentCounters counters = counters_;
  if (scraper_) {
    counters.modelScrapesOk = scraper_->scrapesOk();
    counters.modelScrapesFailed = scraper_->scrapesFailed();
  }
  MetricsInput in{&index_, &stats, counters, std::move(maps), AIMESH_VERSION};
  if (opts_.telemetry && tel) in.telemetry = &tel.value();
  in.events = reader_->flowEventsTotal();
  in.openMetrics = openMetrics;
  std::optional<KubeSourceStats> kubeStats;
  if (kube_) in.kube = &kubeStats.emplace(kube_->stats());
  in.http = httpCounters_.get();
  std::vector<ClosedSeries> closed;
  LifecycleStats lcStats;
  if (lifecycle_) {
    closed = lifecycle_->closed();
    lcStats = lifecycle_->stats();
    in.closed = &closed;
    in.lifecycle = &lcStats;
  }
  return renderMetrics(in);
}

json Agent::handleApi(const json& req) {
  std::string method = req.value("method", "");
  if (method == "status") return statusJson();
  if (method == "services") return servicesJson();
  if (method == "endpoints") return endpointsJson(req);
  if (method == "latency") return latencyJson(req);
  if (method == "top") return topJson();
  if (method == "flows") return flowsJson(req);
  if (method == "policy") return policyJson();
  if (method == "connections") return connectionsJson(req);
  return json{{"error", "unknown method '" + method +
                            "' (status, services, endpoints, latency, top, flows, policy, connections)"}};
}

json Agent::statusJson() {
  std::lock_guard lk(mu_);
  json progs = json::array();
  for (auto& p : dp_.programs())
    progs.push_back({{"name", p.name},
                     {"attached", true},
                     {"attach_to", p.attachTo},
                     {"link_id", p.linkId},
                     {"prog_id", p.progId},
                     {"adopted", p.adopted}});
  json out{
      {"version", AIMESH_VERSION},
      {"pid", ::getpid()},
      {"ready", counters_.ready},
      {"uptime_seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count()},
      {"cgroup", opts_.cgroup},
      {"pin_dir", opts_.pinDir},
      {"state_file", opts_.stateFile},
      {"source", kube_ ? "kubernetes" : "file"},
      {"metrics_addr", http_ ? http_->address() : opts_.metricsAddr},
      {"reconciles", counters_.reconciles},
      {"reconcile_errors", counters_.reconcileErrors},
      {"state_file_errors", counters_.stateFileErrors},
      {"last_error", lastError_},
      {"services", index_.services.size()},
      {"endpoints", index_.backends.size()},
      {"programs", progs},
      {"limits",
       {{"services", opts_.limits.services}, {"backends", opts_.limits.backends}, {"flows", opts_.limits.flows}}},
  };
  if (lifecycle_) {
    LifecycleStats ls = lifecycle_->stats();
    out["connection_lifecycle"] = {{"available", lifecycle_->available()},
                                   {"reason", lifecycle_->unavailableReason()},
                                   {"passes", ls.passes},
                                   {"pass_errors", ls.passErrors},
                                   {"namespaces", ls.namespaces},
                                   {"connections", ls.connections}};
  }
  if (kube_) {
    KubeSourceStats ks = kube_->stats();
    auto& sv = ks.resources[static_cast<int>(KubeResource::kServices)];
    auto& sl = ks.resources[static_cast<int>(KubeResource::kEndpointSlices)];
    auto& po = ks.resources[static_cast<int>(KubeResource::kPods)];
    out["kubernetes"] = {{"server", opts_.kube->server},
                         {"config", opts_.kube->source},
                         {"synced", kube_->synced()},
                         {"services", sv.objects},
                         {"endpointslices", sl.objects},
                         {"node_name", opts_.kubeOptions.nodeName},
                         {"pods", po.objects},
                         {"relists", sv.relists + sl.relists + po.relists},
                         {"watch_restarts", sv.watchRestarts + sl.watchRestarts + po.watchRestarts},
                         {"errors", sv.errors + sl.errors + po.errors},
                         {"last_error", ks.lastError}};
  }
  return out;
}

json Agent::servicesJson() {
  std::lock_guard lk(mu_);
  auto st = reader_->stats(keysOf(index_.services), {});
  json out = json::array();
  for (auto& [id, s] : index_.services) {
    json fes = json::array();
    for (auto& f : s.frontends) fes.push_back(f.toString());
    size_t active = 0;
    for (auto bid : s.backendIds) {
      auto& ep = index_.backends.at(bid).endpoint;
      active += ep.state == EndpointState::kActive && ep.weight > 0;
    }
    ServiceCounters c = st && st->services.count(id) ? st->services.at(id) : ServiceCounters{};
    out.push_back({{"name", s.name},
                   {"namespace", s.nameSpace},
                   {"model", s.model},
                   {"algorithm", toString(s.algorithm)},
                   {"service_id", id},
                   {"frontends", fes},
                   {"endpoints", s.backendIds.size()},
                   {"active_endpoints", active},
                   {"connections", c.connects},
                   {"datagrams", c.datagrams},
                   {"refused", c.refused},
                   {"denied", c.denied},
                   {"policy", s.policy.has_value()}});
  }
  return json{{"services", out}};
}

json Agent::policyJson() {
  std::lock_guard lk(mu_);
  auto st = reader_->stats(keysOf(index_.services), {});
  json out = json::array();
  for (auto& [id, s] : index_.services) {
    ServiceCounters c = st && st->services.count(id) ? st->services.at(id) : ServiceCounters{};
    json j{{"name", s.name},    {"namespace", s.nameSpace}, {"service_id", id}, {"port", s.port.port},
           {"protocol", toString(s.port.protocol)}, {"enforced", s.policy.has_value()}, {"denied", c.denied}};
    json allow = json::array();
    if (s.policy) {
      for (auto& path : s.policy->allowCgroups) {
        json a{{"cgroup", path}};
        auto miss = std::find_if(unresolvedCgroups_.begin(), unresolvedCgroups_.end(), [&](const UnresolvedCgroup& u) {
          return u.service == s.nameSpace + "/" + s.name && u.path == path;
        });
        if (miss != unresolvedCgroups_.end()) {
          a["resolved"] = false;
          a["reason"] = miss->reason;
        } else {
          a["resolved"] = true;
        }
        allow.push_back(a);
      }
      for (auto& pod : s.policy->allowPods) {
        json a{{"pod", pod.name}, {"uid", pod.uid}};
        auto miss = std::find_if(unresolvedCgroups_.begin(), unresolvedCgroups_.end(), [&](const UnresolvedCgroup& u) {
          return u.service == s.nameSpace + "/" + s.name && u.path == "pod " + pod.name;
        });
        a["resolved"] = miss == unresolvedCgroups_.end();
        if (miss != unresolvedCgroups_.end()) a["reason"] = miss->reason;
        else a["cgroup"] = pod.cgroup;
        allow.push_back(a);
      }
      if (!s.policy->podSelector.empty()) j["pod_selector"] = s.policy->podSelector;
      j["allowed_cgroup_ids"] = s.policy->allowCgroupIds;
    }
    j["allow"] = allow;
    out.push_back(j);
  }
  return json{{"services", out}};
}

json Agent::endpointsJson(const json& req) {
  std::lock_guard lk(mu_);
  std::string wantSvc = req.value("service", ""), wantNs = req.value("namespace", "");
  auto st = reader_->stats({}, keysOf(index_.backends));
  auto tel = reader_->telemetry(keysOf(index_.backends));
  json out = json::array();
  for (auto& [sid, s] : index_.services) {
    if (!wantSvc.empty() && s.name != wantSvc) continue;
    if (!wantNs.empty() && s.nameSpace != wantNs) continue;
    for (auto bid : s.backendIds) {
      const BackendInfo& b = index_.backends.at(bid);
      BackendCounters c = st && st->backends.count(bid) ? st->backends.at(bid) : BackendCounters{};
      out.push_back({{"service", s.name},
                     {"namespace", s.nameSpace},
                     {"address", b.endpoint.address.toString()},
                     {"port", b.targetPort},
                     {"protocol", toString(s.port.protocol)},
                     {"weight", b.endpoint.weight},
                     {"state", toString(b.endpoint.state)},
                     {"backend_id", bid},
                     {"connections", c.connects},
                     {"datagrams", c.datagrams}});
      // Live load and health, from the kernel (0 when telemetry is off).
      json& e = out.back();
      const BackendTelemetry* t = tel && tel->count(bid) ? &tel->at(bid) : nullptr;
      e["in_flight"] = t ? std::max<int64_t>(0, t->active) : 0;
      e["idle_connections"] = t ? std::clamp<int64_t>(t->idle, 0, std::max<int64_t>(0, t->active)) : 0;
      e["ttft_ewma_ms"] = t ? t->ewmaTtftNs / 1e6 : 0.0;
      e["failure_penalty"] = t ? t->penalty : 0.0;
      e["consecutive_failures"] = t ? t->failStreak : 0;
      e["ejected"] = t && t->ejected;
      e["ejected_for_seconds"] = t ? t->ejectedForSeconds : 0.0;
      if (t && t->signal.valid) {
        e["queued_requests"] = t->signal.queue_depth;
        e["running_requests"] = t->signal.running;
        e["kv_cache_usage"] = t->signal.kv_cache_permille / 1000.0;
      }
    }
  }
  return json{{"endpoints", out}};
}

}  // namespace aimesh

namespace aimesh {

std::string Agent::endpointName(uint32_t backendId) const {
  auto it = index_.backends.find(backendId);
  if (it == index_.backends.end()) return fmt::format("backend#{}", backendId);
  return formatHostPort(it->second.endpoint.address, it->second.targetPort);
}

namespace {
json histJson(const Histogram& h) {
  json buckets = json::array();
  for (uint32_t b = 0; b < AIMESH_HIST_BUCKETS; ++b)
    if (h.buckets[b])
      buckets.push_back({histBucketLower(b) / 1e9, histBucketUpper(b) / 1e9, h.buckets[b]});
  return json{{"count", h.count},
              {"sum_seconds", h.sumNs / 1e9},
              {"p50", h.quantileNs(0.5) / 1e9},
              {"p90", h.quantileNs(0.9) / 1e9},
              {"p99", h.quantileNs(0.99) / 1e9},
              {"buckets", buckets}};
}
}  // namespace

json Agent::latencyJson(const json& req) {
  std::lock_guard lk(mu_);
  std::string want = req.value("service", ""), ns = req.value("namespace", "");
  std::vector<uint32_t> ids;
  for (auto& [sid, s] : index_.services) {
    if (s.name != want || (!ns.empty() && s.nameSpace != ns)) continue;
    ids.insert(ids.end(), s.backendIds.begin(), s.backendIds.end());
  }
  if (ids.empty()) {
    bool known = false;
    for (auto& [sid, s] : index_.services) known |= s.name == want && (ns.empty() || s.nameSpace == ns);
    if (!known) return json{{"error", "unknown service '" + want + "'"}};
  }
  auto tel = reader_->telemetry(ids);
  if (!tel) return json{{"error", tel.error().message()}};
  json eps = json::array();
  for (uint32_t id : ids) {
    const BackendInfo& b = index_.backends.at(id);
    const ServiceInfo& s = index_.services.at(b.serviceId);
    const BackendTelemetry& t = tel->at(id);
    json metrics = json::object();
    if (t.hasHistograms)
      for (uint32_t m = 0; m < AIMESH_M_MAX; ++m) metrics[metricName(m)] = histJson(t.hist[m]);
    eps.push_back({{"service", s.name}, {"namespace", s.nameSpace}, {"model", s.model}, {"endpoint", endpointName(id)},
                   {"backend_id", id}, {"metrics", metrics}});
  }
  return json{{"endpoints", eps}};
}

json Agent::topJson() {
  std::lock_guard lk(mu_);
  auto tel = reader_->telemetry(keysOf(index_.backends));
  if (!tel) return json{{"error", tel.error().message()}};
  json eps = json::array();
  for (auto& [id, b] : index_.backends) {
    const ServiceInfo& s = index_.services.at(b.serviceId);
    const BackendTelemetry& t = tel->at(id);
    const aimesh_be_tel& c = t.counters;
    eps.push_back({{"service", s.name}, {"namespace", s.nameSpace}, {"model", s.model}, {"endpoint", endpointName(id)},
                   {"backend_id", id}, {"active", std::max<int64_t>(0, t.active)}, {"opened", c.opened},
                   {"requests", c.requests}, {"responses", c.responses},
                   {"errors", c.failed_refused + c.failed_timeout + c.reset},
                   {"ttft_p50", t.hist[AIMESH_M_TTFT].quantileNs(0.5) / 1e9},
                   {"ttft_p99", t.hist[AIMESH_M_TTFT].quantileNs(0.99) / 1e9},
                   {"gap_p50", t.hist[AIMESH_M_GAP].quantileNs(0.5) / 1e9}});
  }
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return json{{"time_seconds", ts.tv_sec + ts.tv_nsec / 1e9}, {"endpoints", eps}};
}

json Agent::flowsJson(const json& req) {
  uint64_t since = req.value("since", uint64_t{0}), next = 0, dropped = 0;
  std::vector<FlowEvent> evs;
  if (!reader_->flowEvents(since, 1000, &evs, &next, &dropped)) return json{{"error", "no event log"}};
  std::lock_guard lk(mu_);
  json out = json::array();
  for (auto& fe : evs) {
    const aimesh_event& e = fe.ev;
    auto sit = index_.services.find(e.service_id);
    out.push_back({{"seq", fe.seq},
                   {"time_seconds", e.ts_ns / 1e9},
                   {"type", eventTypeName(e.type)},
                   {"service", sit == index_.services.end() ? "" : sit->second.name},
                   {"namespace", sit == index_.services.end() ? "" : sit->second.nameSpace},
                   {"endpoint", e.backend_id ? endpointName(e.backend_id) : ""},
                   {"duration_seconds", e.duration_ns / 1e9},
                   {"bytes_sent", e.bytes_sent},
                   {"bytes_received", e.bytes_received},
                   {"requests", e.requests},
                   {"retransmits", e.retransmits},
                   {"client_cgroup_id", e.cgroup_id}});
  }
  return json{{"next", next}, {"dropped", dropped}, {"events", out}};
}

json Agent::connectionsJson(const json& req) {
  std::string wantSvc = req.value("service", ""), wantNs = req.value("namespace", "");
  if (!lifecycle_ || !lifecycle_->available())
    return json{{"available", false},
                {"reason", lifecycle_ ? lifecycle_->unavailableReason() : "not started"},
                {"endpoints", json::array()}};
  auto wanted = [&](const ServiceInfo& s) {
    return (wantSvc.empty() || s.name == wantSvc) && (wantNs.empty() || s.nameSpace == wantNs);
  };
  {
    std::lock_guard lk(mu_);
    bool known = wantSvc.empty();
    for (auto& [id, s] : index_.services) known |= wanted(s);
    if (!known) return json{{"error", "unknown service '" + (wantNs.empty() ? wantSvc : wantNs + "/" + wantSvc) + "'"}};
  }
  // The pass walks every namespace: outside the agent lock.
  auto seen = lifecycle_->connections();
  if (!seen) return json{{"error", "list connections: " + seen.error().message()}};
  std::vector<ClosedSeries> closed = lifecycle_->closed();

  std::lock_guard lk(mu_);
  auto tel = reader_->telemetry(keysOf(index_.backends));
  auto closedOf = [&](const ServiceInfo& s, const std::string& ep) {
    json c = json::object();
    for (uint8_t r = 1; r < AIMESH_CLOSE_MAX; ++r) c[closeReasonName(r)] = 0;
    for (auto& cs : closed)
      if (cs.service == s.name && cs.nameSpace == s.nameSpace && cs.port == s.port && cs.endpoint == ep)
        for (uint8_t r = 1; r < AIMESH_CLOSE_MAX; ++r) c[closeReasonName(r)] = cs.byReason[r];
    return c;
  };
  struct Row {
    json j;
    int64_t open = 0, idle = 0, busy = 0, requests = 0;
    double oldest = 0;
    json conns = json::array();
  };
  std::map<uint32_t, Row> live;                                  // by backend id
  std::map<std::pair<uint32_t, std::string>, Row> removed;       // by service id and endpoint
  for (auto& [bid, b] : index_.backends) {
    const ServiceInfo& s = index_.services.at(b.serviceId);
    if (!wanted(s)) continue;
    Row r;
    std::string ep = endpointName(bid);
    const BackendTelemetry* t = tel && tel->count(bid) ? &tel->at(bid) : nullptr;
    r.j = {{"service", s.name},     {"namespace", s.nameSpace},          {"port", s.port.port},
           {"protocol", toString(s.port.protocol)}, {"endpoint", ep},     {"backend_id", bid},
           {"state", toString(b.endpoint.state)},   {"ejected", t && t->ejected}, {"closed", closedOf(s, ep)}};
    live.emplace(bid, std::move(r));
  }
  for (const ConnectionSeen& c : *seen) {
    const aimesh_conn& rec = c.rec;
    Row* row = nullptr;
    std::string ep = Lifecycle::endpointText(rec.daddr, ntohs(rec.dport));
    if (!rec.gone) {
      auto it = live.find(rec.backend_id);
      if (it == live.end()) continue;  // another service, or filtered out
      row = &it->second;
    } else {
      auto sit = index_.services.find(rec.service_id);
      if (sit != index_.services.end() && !wanted(sit->second)) continue;
      if (sit == index_.services.end() && !wantSvc.empty()) continue;
      auto [it, fresh] = removed.try_emplace({rec.service_id, ep});
      row = &it->second;
      if (fresh) {
        json j = {{"endpoint", ep}, {"backend_id", rec.backend_id}, {"state", "removed"}, {"ejected", false}};
        if (sit != index_.services.end()) {
          j["service"] = sit->second.name;
          j["namespace"] = sit->second.nameSpace;
          j["port"] = sit->second.port.port;
          j["protocol"] = toString(sit->second.port.protocol);
          j["closed"] = closedOf(sit->second, ep);
        } else {
          j["service"] = fmt::format("service#{}", rec.service_id);
          j["namespace"] = "";
          j["port"] = 0;
          j["protocol"] = rec.proto == AIMESH_PROTO_UDP ? "UDP" : "TCP";
          j["closed"] = json::object();
        }
        row->j = std::move(j);
      }
    }
    row->open++;
    row->idle += rec.state == AIMESH_CS_IDLE;
    row->busy += rec.state == AIMESH_CS_BUSY;
    row->requests += rec.requests;
    row->oldest = std::max(row->oldest, rec.age_ns / 1e9);
    json cj = {{"cookie", rec.cookie},
               {"protocol", rec.proto == AIMESH_PROTO_UDP ? "UDP" : "TCP"},
               {"client", Lifecycle::endpointText(rec.saddr, ntohs(rec.sport))},
               {"age_seconds", rec.age_ns / 1e9},
               {"requests", rec.requests},
               {"state", connStateName(rec.state)},
               {"netns", c.netns}};
    if (rec.state == AIMESH_CS_IDLE) cj["idle_seconds"] = rec.idle_ns / 1e9;
    row->conns.push_back(std::move(cj));
  }
  json out = json::array();
  auto emit = [&](Row& r) {
    r.j["open"] = r.open;
    r.j["idle"] = r.idle;
    r.j["busy"] = r.busy;
    r.j["requests"] = r.requests;
    r.j["oldest_seconds"] = r.oldest;
    r.j["connections"] = std::move(r.conns);
    out.push_back(std::move(r.j));
  };
  for (auto& [id, r] : live) emit(r);
  for (auto& [key, r] : removed) emit(r);
  return json{{"available", true}, {"namespaces_walked", lifecycle_->namespacesWalked()}, {"reason", ""},
              {"endpoints", out}};
}

}  // namespace aimesh
