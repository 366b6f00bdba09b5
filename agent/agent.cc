#include "agent.h"

#include <arpa/inet.h>
#include <malloc.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <future>
#include <thread>

#include "bpf/conntrack.h"
#include "model/snapshot.h"
#include "telemetry/stats.h"

namespace aimesh {

using json = nlohmann::json;

Agent::Agent(AgentOptions opts, std::optional<Datapath> dp, std::unique_ptr<MapWriter> writer)
    : opts_(std::move(opts)), dp_(std::move(dp)), writer_(std::move(writer)), reconciler_(*writer_, opts_.limits),
      started_(std::chrono::steady_clock::now()) {
  counters_.startTimeSeconds =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

Result<std::unique_ptr<Agent>> Agent::start(const AgentOptions& opts) {
  // The state file is read while the kernel verifies the programs (~0.7 s
  // here): at 10,000 services its parse (~0.3 s) then costs no start time.
  // The watcher exists before the read, so a save during it is not missed.
  std::unique_ptr<StateFileSource> fileSource;
  std::future<std::optional<StateUpdate>> firstState;
  if (!opts.stateFile.empty()) {
    fileSource = std::make_unique<StateFileSource>(opts.stateFile);
    firstState = std::async(std::launch::async, [s = fileSource.get()] { return s->current(); });
  }
  auto dp = Datapath::open(opts.datapathOptions());
  if (!dp) {
    if (firstState.valid()) firstState.wait();
    return dp.error();
  }
  for (auto& p : dp->programs())
    spdlog::info("{} {} on {} (link {})", p.adopted ? "adopted" : "attached", p.name, p.attachTo, p.linkId);

  auto writer = std::make_unique<BpfMapWriter>(dp->maps(), opts.limits);
  std::unique_ptr<Agent> a(new Agent(opts, std::move(dp.value()), std::move(writer)));
  // Model-server signals: the scraper's thread writes them into aimesh_be_signal.
  a->scraper_ = std::make_unique<ModelScraper>(
      ModelScraper::Options{opts.scrapeInterval, opts.scrapeTimeout, opts.scrapeNetns},
      [fd = a->dp_->maps().beSignal](uint32_t backendId, const Result<ModelSignals>& r) {
        writeModelSignals(fd, backendId, r);
      });
  LifecycleOptions lopts = opts.lifecycleOptions();
  a->lifecycle_ = Lifecycle::start(lopts, opts.pinDir, opts.limits, a->dp_->maps());
  if (a->lifecycle_->available())
    spdlog::info("connection lifecycle: socket iterators loaded (namespaces of {}{}{})", opts.cgroup,
                 lopts.netnsDir.empty() ? "" : " and ", lopts.netnsDir);
  auto events = EventLog::start(a->dp_->maps().events);
  if (!events) return events.error();
  a->reader_ = std::make_unique<BpfDatapathReader>(a->dp_->maps(), opts.limits, opts.tuning.penaltyHalfLifeNs,
                                                   std::move(events.value()));
  if (fileSource) {
    a->source_ = std::move(fileSource);
    if (std::optional<StateUpdate> u = firstState.get()) a->applyUpdate(std::move(*u));
    releaseFreedMemory();
  }
  if (opts.kube) {
    spdlog::info("cluster state from the Kubernetes API at {} ({})", opts.kube->server, opts.kube->source);
    auto ks = KubeSource::start(KubeClient(*opts.kube, KubeClient::Options{}), opts.kubeOptions);
    if (!ks) return ks.error();
    a->kube_ = std::move(ks.value());
    a->source_ = std::make_unique<KubeStateSource>(*a->kube_, opts.kube->server);
  }

  HttpServerOptions httpOpts = opts.http;
  httpOpts.counters = a->httpCounters_;
  auto http = HttpServer::start(opts.metricsAddr,
                                HttpHandlers{[p = a.get()] { return p->metricsText(MetricsFormat::kText); },
                                             [p = a.get()] { return p->ready(); },
                                             [p = a.get()] { return p->metricsText(MetricsFormat::kOpenMetrics); },
                                             [p = a.get()] { return p->metricsText(MetricsFormat::kProtobuf); }},
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

std::unique_ptr<Agent> Agent::assemble(AgentOptions opts, AgentParts parts) {
  std::unique_ptr<Agent> a(new Agent(std::move(opts), std::nullopt, std::move(parts.writer)));
  a->reader_ = std::move(parts.reader);
  a->source_ = std::move(parts.source);
  return a;
}

// Parsing a state file allocates many times what the parsed state keeps;
// glibc keeps freed memory in its heaps, so return it to the kernel now
// rather than carry the peak as RSS until the next change.
void Agent::releaseFreedMemory() { ::malloc_trim(0); }

bool Agent::fullApplyLast() {
  std::lock_guard lk(mu_);
  return reconciler_.lastChange().all;
}

bool Agent::reload() {
  std::optional<StateUpdate> u = source_ ? source_->current() : std::nullopt;
  return u && applyUpdate(std::move(*u));
}

bool Agent::applyUpdate(StateUpdate u) {
  std::lock_guard lk(mu_);
  for (auto& w : u.warnings) {
    if (sourceWarnings_.size() > 10000) sourceWarnings_.clear();  // bounded; may log some again
    if (sourceWarnings_.insert(w).second) spdlog::warn("{}", w);
  }
  if (!u.ok()) {
    counters_.stateFileErrors++;
    counters_.lastStateFileOk = false;
    lastError_.clear();
    for (auto& e : u.errors) {
      spdlog::error("{}", e);
      if (!lastError_.empty()) lastError_ += "; ";
      lastError_ += e;
    }
    spdlog::warn("state file rejected ({} error(s)); the last good state stays in force", u.errors.size());
    return false;
  }
  counters_.lastStateFileOk = true;
  return applyLocked(std::move(*u.snapshot));
}

std::vector<ScrapeTarget> Agent::scrapeTargets() const {
  std::vector<ScrapeTarget> out;
  for (auto& [sid, s] : index().services) {
    if (!s.modelMetrics) continue;
    for (uint32_t bid : s.backendIds)
      out.push_back(ScrapeTarget{bid, index().backends.at(bid).endpoint.address.toString(), s.modelMetrics->port,
                                 s.modelMetrics->path});
  }
  return out;
}

bool Agent::applyLocked(Snapshot snap, Reconciler::Verify verify) {
  auto t0 = std::chrono::steady_clock::now();
  // Policies name cgroups by path; the kernel checks ids. Every apply
  // resolves afresh (the paths stay in the snapshot).
  auto missing = resolvePolicies(snap, systemCgroupLookup(), systemPodCgroupLookup(podCgroupRoot()));
  for (auto& m : missing)
    if (warnedCgroups_.insert(m.service + " " + m.path).second)
      spdlog::warn("service {}: policy allows {}, which has no cgroup now ({}); its clients are allowed once it has",
                   m.service, m.path, m.reason);
  lastPolicyCheck_ = std::chrono::steady_clock::now();
  // Splits name services; the plan needs their addresses, and the canary
  // guard's weights.
  bool anySplits = applyGuardWeights(snap, guard_.weights());
  for (auto& m : resolveSplits(snap))
    if (warnedSplits_.insert(m.split + " " + m.backend + " " + m.reason).second)
      spdlog::warn("split {}: backend service {} is left out ({}); its share goes to the others", m.split, m.backend,
                   m.reason);
  // Warned before the snapshot moves into the reconciler.
  for (auto& s : snap.services) {
    bool needsLoad = s.algorithm == Algorithm::kLeastConn || s.algorithm == Algorithm::kLatency ||
                     s.algorithm == Algorithm::kBoundedHash;
    if (needsLoad && !opts_.telemetry && warnedAlgorithm_.insert(s.key()).second)
      spdlog::warn("service {}: algorithm '{}' needs the kernel's connection counts and latencies, which "
                   "--telemetry=false turns off; every endpoint looks idle to it",
                   s.key(), toString(s.algorithm));
  }
  auto r = reconciler_.reconcile(std::move(snap), verify);
  if (!r) {
    counters_.reconcileErrors++;
    lastError_ = "apply: " + r.error().message();
    spdlog::error("reconcile failed: {}", r.error().message());
    return false;
  }
  unresolvedCgroups_ = std::move(missing);
  anySplits_ = anySplits;
  if (scraper_) scraper_->setTargets(scrapeTargets());
  if (lifecycle_) lifecycle_->setIndex(index(), reconciler_.lastChange());
  counters_.reconciles++;
  counters_.ready = true;
  double secs = std::chrono::duration<double>(r->duration).count();
  counters_.lastReconcileSeconds = secs;
  counters_.reconcileSecondsTotal += secs;
  lastError_.clear();
  spdlog::debug("apply took {:.1f} ms, of which reconcile {:.1f} ms ({} of {} services planned)",
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count(), secs * 1e3,
                r->planned, reconciler_.applied()->services.size());
  if (r->ops > 0)
    spdlog::info("applied {} service port(s), {} endpoint(s): {} map operation(s) in {:.3f} ms", index().services.size(),
                 index().backends.size(), r->ops, secs * 1e3);
  return true;
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

// Deletes the TC balancer's idle flows every ctSweepInterval.
void Agent::sweepFlows() {
  auto now = std::chrono::steady_clock::now();
  if (!dp_ || dp_->maps().ct < 0 || now - lastSweep_ < opts_.ctSweepInterval) return;
  lastSweep_ = now;
  auto sw = sweepConntrack(dp_->maps().ct, opts_.tuning);
  std::lock_guard lk(mu_);
  if (sw) {
    counters_.tcFlows = sw->entries - sw->expired;
    counters_.tcFlowsExpired += sw->expired;
  }
}

void Agent::run(const std::atomic<bool>& stop) {
  constexpr std::chrono::milliseconds kTick{200};
  auto lastSync = std::chrono::steady_clock::now();
  // The heap an update freed goes back to the kernel at once after a full
  // apply (a first one, a relist: a large peak), else once updates pause for
  // a tick: a trim after every watch event made the next one fault its pages
  // in again.
  bool trimDue = false;
  while (!stop.load()) {
    sweepFlows();
    guardTick();
    std::optional<StateUpdate> u;
    if (source_) u = source_->next(kTick);
    else std::this_thread::sleep_for(kTick);
    if (u) {
      applyUpdate(std::move(*u));
      u.reset();
      trimDue = true;
      if (fullApplyLast()) {
        releaseFreedMemory();
        trimDue = false;
      }
      lastSync = std::chrono::steady_clock::now();
    } else if (trimDue) {
      releaseFreedMemory();
      trimDue = false;
    } else if (policyRecheckDue()) {
      std::lock_guard lk(mu_);
      recheckPolicyLocked();
    } else if (std::chrono::steady_clock::now() - lastSync >= opts_.resync) {
      // Level-triggered: re-apply the last good state to repair drift.
      std::lock_guard lk(mu_);
      if (reconciler_.applied()) applyLocked(*reconciler_.applied(), Reconciler::Verify::kRead);
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
  if (!reconciler_.applied()) return;
  Snapshot probe = *reconciler_.applied();
  auto missing = resolvePolicies(probe, systemCgroupLookup(), systemPodCgroupLookup(podCgroupRoot()));
  if (missing == unresolvedCgroups_) return;  // nothing appeared or went away
  spdlog::info("policy: allowed cgroups changed ({} -> {} missing), applying again", unresolvedCgroups_.size(),
               missing.size());
  applyLocked(std::move(probe));
}

bool Agent::ready() {
  std::lock_guard lk(mu_);
  return counters_.ready;
}

std::string Agent::metricsText(MetricsFormat format) {
  // Occupancy walks the maps key by key (revnat can be large): do it before
  // taking the lock so a scrape does not hold up reconciles; /proc too.
  std::vector<MapOccupancy> maps = reader_->occupancy();
  ProcessStats process = readProcessStats();
  std::lock_guard lk(mu_);
  auto st = reader_->stats(serviceIds(index()), backendIds(index()));
  DatapathStats stats = st ? std::move(st.value()) : DatapathStats{};
  if (!st) spdlog::warn("read counters: {}", st.error().message());
  auto tel = reader_->telemetry(backendIds(index()));
  if (!tel) spdlog::warn("read telemetry: {}", tel.error().message());
  AgentCounters counters = counters_;
  if (scraper_) {
    counters.modelScrapesOk = scraper_->scrapesOk();
    counters.modelScrapesFailed = scraper_->scrapesFailed();
  }
  MetricsInput in{&index(), &stats, counters, std::move(maps), AIMESH_VERSION};
  if (opts_.telemetry && tel) in.telemetry = &tel.value();
  in.events = reader_->flowEventsTotal();
  in.openMetrics = format == MetricsFormat::kOpenMetrics;
  in.bucketsPerOctave = opts_.histogramBucketsPerOctave;
  in.idleSeries = opts_.metricsIdleSeries;
  view::Clients clients = clientsLocked();
  in.clients = &clients;
  view::Routes routes = routesLocked({});
  in.routes = &routes;
  in.process = &process;
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
  return format == MetricsFormat::kProtobuf ? renderMetricsProtobuf(in) : renderMetrics(in);
}

json Agent::handleApi(const json& req) {
  std::string method = req.value("method", "");
  ServiceFilter filter{req.value("service", ""), req.value("namespace", "")};
  auto answer = [](const auto& view) -> json {
    if constexpr (requires { view.error(); }) {
      if (!view) return json{{"error", view.error().message()}};
      return *view;
    } else {
      return view;
    }
  };
  if (method == "status") return answer(statusView());
  if (method == "services") return answer(servicesView());
  if (method == "endpoints") return answer(endpointsView(filter));
  if (method == "latency") return answer(latencyView(filter));
  if (method == "top") return answer(topView());
  if (method == "flows") return answer(flowsView(req.value("since", uint64_t{0})));
  if (method == "policy") return answer(policyView());
  if (method == "connections") return answer(connectionsView(filter));
  if (method == "clients") return answer(clientsView());
  if (method == "routes") return answer(routesView(filter));
  return json{{"error", "unknown method '" + method +
                            "' (status, services, endpoints, latency, top, flows, policy, connections, clients, "
                            "routes)"}};
}

view::Status Agent::statusView() {
  std::lock_guard lk(mu_);
  view::Status out{
      .version = AIMESH_VERSION,
      .pid = ::getpid(),
      .ready = counters_.ready,
      .uptimeSeconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count(),
      .cgroup = opts_.cgroup,
      .pinDir = opts_.pinDir,
      .stateFile = opts_.stateFile,
      .source = kube_ ? "kubernetes" : "file",
      .metricsAddr = http_ ? http_->address() : opts_.metricsAddr,
      .reconciles = counters_.reconciles,
      .reconcileErrors = counters_.reconcileErrors,
      .stateFileErrors = counters_.stateFileErrors,
      .lastError = lastError_,
      .services = index().services.size(),
      .endpoints = index().backends.size(),
      .limits = {opts_.limits.services, opts_.limits.backends, opts_.limits.flows},
  };
  if (dp_)
    for (auto& p : dp_->programs())
      out.programs.push_back({.name = p.name, .attached = true, .attachTo = p.attachTo, .linkId = p.linkId,
                              .progId = p.progId, .adopted = p.adopted});
  if (lifecycle_) {
    LifecycleStats ls = lifecycle_->stats();
    out.connectionLifecycle = view::LifecycleStatus{.available = lifecycle_->available(),
                                                    .reason = lifecycle_->unavailableReason(),
                                                    .passes = ls.passes,
                                                    .passErrors = ls.passErrors,
                                                    .namespaces = ls.namespaces,
                                                    .connections = ls.connections};
  }
  if (kube_) {
    KubeSourceStats ks = kube_->stats();
    auto& sv = ks.resources[static_cast<int>(KubeResource::kServices)];
    auto& sl = ks.resources[static_cast<int>(KubeResource::kEndpointSlices)];
    auto& po = ks.resources[static_cast<int>(KubeResource::kPods)];
    out.kubernetes = view::KubernetesStatus{.server = opts_.kube->server,
                                            .config = opts_.kube->source,
                                            .synced = kube_->synced(),
                                            .services = sv.objects,
                                            .endpointslices = sl.objects,
                                            .nodeName = opts_.kubeOptions.nodeName,
                                            .pods = po.objects,
                                            .relists = sv.relists + sl.relists + po.relists,
                                            .watchRestarts = sv.watchRestarts + sl.watchRestarts + po.watchRestarts,
                                            .errors = sv.errors + sl.errors + po.errors,
                                            .lastError = ks.lastError};
  }
  return out;
}

view::ServiceList Agent::servicesView() {
  std::lock_guard lk(mu_);
  auto st = reader_->stats(serviceIds(index()), {});
  return buildServices(index(), st ? &st.value() : nullptr);
}

view::Policy Agent::policyView() {
  std::lock_guard lk(mu_);
  auto st = reader_->stats(serviceIds(index()), {});
  return buildPolicy(index(), st ? &st.value() : nullptr, unresolvedCgroups_);
}

view::EndpointList Agent::endpointsView(const ServiceFilter& filter) {
  std::lock_guard lk(mu_);
  auto st = reader_->stats({}, backendIds(index()));
  auto tel = reader_->telemetry(backendIds(index()));
  return buildEndpoints(index(), filter, st ? &st.value() : nullptr, tel ? &tel.value() : nullptr);
}

Result<view::Latency> Agent::latencyView(const ServiceFilter& filter) {
  std::lock_guard lk(mu_);
  auto ids = latencyBackends(index(), filter);
  if (!ids) return ids.error();
  auto tel = reader_->telemetry(*ids);
  if (!tel) return tel.error();
  return buildLatency(index(), *ids, *tel);
}

Result<view::Top> Agent::topView() {
  std::lock_guard lk(mu_);
  auto tel = reader_->telemetry(backendIds(index()));
  if (!tel) return tel.error();
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  view::Top top = buildTop(index(), *tel, ts.tv_sec + ts.tv_nsec / 1e9);
  markGuardedLocked(top);
  return top;
}

view::Clients Agent::clientsView() {
  std::lock_guard lk(mu_);
  return clientsLocked();
}

view::Clients Agent::clientsLocked() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  const double monoSeconds = ts.tv_sec + ts.tv_nsec / 1e9;
  const auto readAt = std::chrono::steady_clock::now();
  auto pairs = reader_->clients();
  if (!pairs) {
    spdlog::warn("read clients: {}", pairs.error().message());
    return view::Clients{.timeSeconds = monoSeconds, .topK = opts_.clientTopK};
  }
  if (!clientCgroups_ && !opts_.cgroup.empty()) {
    clientCgroups_ = std::make_unique<CgroupIndex>(opts_.cgroup);
    spdlog::info("client cgroups under {} are named {}", opts_.cgroup,
                 clientCgroups_->byHandle() ? "by file handle" : "by walking the tree (no cgroup v2 file handles here)");
  }
  if (clientCgroups_ && !pairs->empty()) clientCgroups_->refresh();  // notices cgroups that went away
  PodNameLookup pods;
  if (kube_) pods = [this](const std::string& uid) { return kube_->podName(uid); };
  std::vector<NamedClient> named;
  std::vector<aimesh_client_key> gone;
  for (const ClientPair& p : *pairs) {
    uint64_t id = p.key.cgroup_id;
    auto path = clientCgroups_ ? clientCgroups_->path(id) : std::nullopt;
    if (path) {
      named.push_back(NamedClient{clientName(*path, pods), p});
    } else if (clientCgroups_ && clientCgroups_->goneSince(id, readAt)) {
      gone.push_back(p.key);  // its cgroup was removed: the client's series end
    } else {
      named.push_back(NamedClient{fmt::format("cgroup:{}", id), p});
    }
  }
  if (!gone.empty())
    if (Status st = reader_->forgetClients(gone); !st) spdlog::warn("forget clients: {}", st.error().message());
  return buildClients(index(), named, opts_.clientTopK, monoSeconds);
}

Result<view::Flows> Agent::flowsView(uint64_t since) {
  uint64_t next = 0, dropped = 0;
  std::vector<FlowEvent> evs;
  if (!reader_->flowEvents(since, 1000, &evs, &next, &dropped)) return Error::msg("no event log");
  std::lock_guard lk(mu_);
  return buildFlows(index(), evs, next, dropped);
}

Result<view::Connections> Agent::connectionsView(const ServiceFilter& filter) {
  if (!lifecycle_ || !lifecycle_->available())
    return view::Connections{.available = false,
                             .reason = lifecycle_ ? lifecycle_->unavailableReason() : "not started"};
  {
    std::lock_guard lk(mu_);
    bool known = filter.name.empty();
    for (auto& [id, s] : index().services) known |= filter.matches(s);
    if (!known) return Error::msg("unknown service '" + filter.text() + "'");
  }
  // The pass walks every namespace: outside the agent lock.
  auto seen = lifecycle_->connections();
  if (!seen) return Error::msg("list connections: " + seen.error().message());
  std::vector<ClosedSeries> closed = lifecycle_->closed();
  std::lock_guard lk(mu_);
  auto tel = reader_->telemetry(backendIds(index()));
  return buildConnections(index(), filter, *seen, closed, tel ? &tel.value() : nullptr,
                          lifecycle_->namespacesWalked());
}

}  // namespace aimesh
