#include "source/kube_source.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <type_traits>

namespace aimesh {

using json = nlohmann::json;

const char* toString(KubeResource r) {
  switch (r) {
    case KubeResource::kServices: return "services";
    case KubeResource::kEndpointSlices: return "endpointslices";
    case KubeResource::kPods: return "pods";
    case KubeResource::kHttpRoutes: return "httproutes";
    case KubeResource::kGrpcRoutes: return "grpcroutes";
    case KubeResource::kTcpRoutes: return "tcproutes";
    case KubeResource::kReferenceGrants: return "referencegrants";
    case KubeResource::kInferencePools: return "inferencepools";
    case KubeResource::kPoolPods: return "pool_pods";
  }
  return "?";
}

bool optionalResource(KubeResource r) { return static_cast<int>(r) >= static_cast<int>(KubeResource::kHttpRoutes); }

namespace {

const char* pathOf(KubeResource r) {
  switch (r) {
    case KubeResource::kServices: return "/api/v1/services";
    case KubeResource::kEndpointSlices: return "/apis/discovery.k8s.io/v1/endpointslices";
    case KubeResource::kPods: return "/api/v1/pods";
    case KubeResource::kHttpRoutes: return "/apis/gateway.networking.k8s.io/v1/httproutes";
    case KubeResource::kGrpcRoutes: return "/apis/gateway.networking.k8s.io/v1/grpcroutes";
    case KubeResource::kTcpRoutes: return "/apis/gateway.networking.k8s.io/v1alpha2/tcproutes";
    case KubeResource::kReferenceGrants: return "/apis/gateway.networking.k8s.io/v1beta1/referencegrants";
    case KubeResource::kInferencePools: return "/apis/inference.networking.k8s.io/v1/inferencepools";
    case KubeResource::kPoolPods: return "/api/v1/pods";
  }
  return "";
}

// What an absent optional resource turns off, and the API group to grant.
const char* featureOf(KubeResource r) {
  switch (r) {
    case KubeResource::kInferencePools: return "InferencePools";
    case KubeResource::kPoolPods: return "InferencePool members";
    default: return "mesh routes of this kind";
  }
}
const char* groupOf(KubeResource r) {
  switch (r) {
    case KubeResource::kInferencePools: return ".inference.networking.k8s.io";
    case KubeResource::kPoolPods: return "";
    default: return ".gateway.networking.k8s.io";
  }
}

std::string urlEncode(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') out.push_back(static_cast<char>(c));
    else out += fmt::format("%{:02X}", c);
  }
  return out;
}

// Typed reads of envelope fields. A field of the wrong type (a broken proxy,
// a hostile server) reads as absent: nlohmann's value() would throw, and an
// exception in a source thread would end the agent.
std::string strField(const json& j, const char* key) {
  if (!j.is_object()) return "";
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}
long intField(const json& j, const char* key) {
  if (!j.is_object()) return 0;
  auto it = j.find(key);
  return it != j.end() && it->is_number_integer() ? it->get<long>() : 0;
}
const json& objField(const json& j, const char* key) {
  static const json kEmpty = json::object();
  if (!j.is_object()) return kEmpty;
  auto it = j.find(key);
  return it != j.end() && it->is_object() ? *it : kEmpty;
}

// A Kubernetes Status (an error answer or an ERROR watch event): its code and
// message, for logs.
std::string statusText(long http, const std::string& body) {
  auto j = json::parse(body, nullptr, false);
  if (j.is_object() && j.contains("message"))
    return fmt::format("HTTP {} {}: {}", http, strField(j, "reason"), strField(j, "message"));
  return fmt::format("HTTP {}{}", http, body.empty() ? "" : ": " + body.substr(0, 200));
}

// Jittered exponential back-off ("equal jitter"): between half and all of
// min(max, base * 2^n).
std::chrono::milliseconds backoff(int attempt, std::chrono::milliseconds base, std::chrono::milliseconds max,
                                  std::mt19937_64& rng) {
  double d = static_cast<double>(base.count()) * std::pow(2.0, std::min(attempt, 20));
  d = std::min(d, static_cast<double>(max.count()));
  std::uniform_real_distribution<double> u(0.5, 1.0);
  return std::chrono::milliseconds(static_cast<long>(d * u(rng)));
}

}  // namespace

KubeSource::KubeSource(KubeClient client, KubeSourceOptions opts) : client_(std::move(client)), opts_(std::move(opts)) {
  cache_.setOptions({.defaultAlgorithm = opts_.defaultAlgorithm, .nodeName = opts_.nodeName});
}

Result<std::unique_ptr<KubeSource>> KubeSource::start(KubeClient client, KubeSourceOptions opts) {
  std::unique_ptr<KubeSource> s(new KubeSource(std::move(client), std::move(opts)));
  if (!s->opts_.serviceSelector.empty()) {
    auto sel = kube::parseSelector(s->opts_.serviceSelector);
    if (!sel) return Error::msg("--kubernetes-selector '" + s->opts_.serviceSelector + "': " + sel.error().message());
    s->selector_ = std::move(sel.value());
  }
  for (auto r : kAllKubeResources) {
    if (r == KubeResource::kPods && !s->watchesPods()) continue;  // kPoolPods wait for a pool in run()
    s->threads_[static_cast<int>(r)] = std::thread([p = s.get(), r] { p->run(r); });
  }
  if (!s->opts_.daemonSetName.empty())
    s->threads_[kKubeResources] = std::thread([p = s.get()] { p->runDaemonSet(); });
  return s;
}

KubeSource::~KubeSource() {
  stop_.store(true);
  poolAbort_.store(true);
  {
    std::lock_guard lk(sleepMu_);
    sleepCv_.notify_all();
  }
  {
    std::lock_guard lk(mu_);
    changed_.notify_all();  // the pool pods' thread waits for a pool there
  }
  for (auto& t : threads_)
    if (t.joinable()) t.join();
}

void KubeSource::sleepFor(std::chrono::milliseconds d) {
  std::unique_lock lk(sleepMu_);
  sleepCv_.wait_for(lk, d, [&] { return stop_.load(); });
}

std::string KubeSource::query(KubeResource r, bool watch, const std::string& rv, const std::string& cont) const {
  std::string q = pathOf(r);
  // Only the pool pods' own thread writes poolScope_: reading it here, on that thread, needs no lock.
  if (r == KubeResource::kPoolPods && !poolScope_.empty()) q = "/api/v1/namespaces/" + urlEncode(poolScope_) + "/pods";
  if (watch) {
    // Jittered so the watches of many nodes do not all end together.
    static thread_local std::mt19937_64 rng{std::random_device{}()};
    auto secs = opts_.watchTimeout.count();
    std::uniform_int_distribution<long> u(std::max<long>(1, secs / 2), std::max<long>(1, secs));
    q += fmt::format("?watch=1&allowWatchBookmarks=true&resourceVersion={}&timeoutSeconds={}", urlEncode(rv), u(rng));
  } else {
    q += fmt::format("?limit={}", opts_.pageSize);
    if (!cont.empty()) q += "&continue=" + urlEncode(cont);
  }
  if (r == KubeResource::kServices && !opts_.serviceSelector.empty())
    q += "&labelSelector=" + urlEncode(opts_.serviceSelector);
  if (r == KubeResource::kPods) q += "&fieldSelector=" + urlEncode("spec.nodeName=" + opts_.nodeName);
  return q;
}

void KubeSource::fail(KubeResource r, const std::string& what) {
  std::lock_guard lk(mu_);
  stats_.resources[static_cast<int>(r)].errors++;
  if (stats_.lastError != what) spdlog::warn("kubernetes {}: {}", toString(r), what);
  stats_.lastError = what;
}

void KubeSource::run(KubeResource r) {
  std::mt19937_64 rng{std::random_device{}()};
  std::string rv;  // empty: list first
  int attempt = 0;
  bool listedOnce = false;
  while (!stop_.load()) {
    if (rv.empty()) {
      if (r == KubeResource::kPoolPods && !waitForPools()) break;  // and takes the pools' scope
      if (!list(r, &rv, listedOnce)) {
        if (stop_.load()) break;
        bool absent;
        {
          std::lock_guard lk(mu_);
          absent = stats_.resources[static_cast<int>(r)].absent;
        }
        // Not installed: look again now and then, not in a tight back-off.
        sleepFor(absent ? opts_.backoffMax : backoff(attempt++, opts_.backoffMin, opts_.backoffMax, rng));
        continue;
      }
      listedOnce = true;
      attempt = 0;
      if (r == KubeResource::kPoolPods && poolPodsStale()) {  // the pools moved (or went) while it listed
        rv.clear();
        continue;
      }
    }
    WatchEnd end = watch(r, &rv);
    if (stop_.load()) break;
    if (r == KubeResource::kPoolPods && poolPodsStale()) {
      rv.clear();  // list again (or wait for a pool), in the pools' scope now
      continue;
    }
    switch (end) {
      case WatchEnd::kResume:  // the server's timeout or a clean end: go on at once
        attempt = 0;
        break;
      case WatchEnd::kRelist:
        rv.clear();
        break;
      case WatchEnd::kError:
        sleepFor(backoff(attempt++, opts_.backoffMin, opts_.backoffMax, rng));
        break;
    }
  }
}

template <class F>
decltype(auto) KubeSource::withStore(KubeResource r, F&& f) {
  switch (r) {
    case KubeResource::kServices: return f(services_, &kube::decodeService);
    case KubeResource::kEndpointSlices: return f(slices_, &kube::decodeEndpointSlice);
    case KubeResource::kPods: return f(pods_, &kube::decodePod);
    case KubeResource::kHttpRoutes: return f(httpRoutes_, &kube::decodeHttpRoute);
    case KubeResource::kGrpcRoutes: return f(grpcRoutes_, &kube::decodeGrpcRoute);
    case KubeResource::kTcpRoutes: return f(tcpRoutes_, &kube::decodeTcpRoute);
    case KubeResource::kInferencePools: return f(pools_, &kube::decodeInferencePool);
    case KubeResource::kPoolPods: return f(poolPods_, &kube::decodePoolPod);
    case KubeResource::kReferenceGrants: break;
  }
  return f(grants_, &kube::decodeReferenceGrant);
}

namespace {
// What a store change means for the snapshot cache.
void noteChange(kube::SnapshotCache& cache, KubeResource, const std::string& key, const kube::ServiceObj*,
                const kube::ServiceObj*) {
  cache.serviceChanged(key);
}
void noteChange(kube::SnapshotCache& cache, KubeResource, const std::string& key,
                const kube::EndpointSliceObj* before, const kube::EndpointSliceObj* after) {
  cache.sliceChanged(key, before, after);
}
void noteChange(kube::SnapshotCache& cache, KubeResource r, const std::string&, const kube::PodObj*,
                const kube::PodObj*) {
  if (r == KubeResource::kPods) cache.podsChanged();  // pool pods are read by kube::applyRoutes
}
// Routes and pools are applied to every snapshot built (kube::applyRoutes): nothing to note.
void noteChange(kube::SnapshotCache&, KubeResource, const std::string&, const kube::RouteObj*, const kube::RouteObj*) {}
void noteChange(kube::SnapshotCache&, KubeResource, const std::string&, const kube::ReferenceGrantObj*,
                const kube::ReferenceGrantObj*) {}
void noteChange(kube::SnapshotCache&, KubeResource, const std::string&, const kube::InferencePoolObj*,
                const kube::InferencePoolObj*) {}
}  // namespace

bool KubeSource::list(KubeResource r, std::string* rv, bool relist) {
  return withStore(r, [&](auto& store, auto decode) {
    std::remove_reference_t<decltype(store)> fresh;
    uint64_t decodeErrors = 0;
    std::string cont, listRv;
    do {
      auto resp = client_.get(query(r, false, "", cont), &stop_);
      if (!resp) {
        if (!stop_.load()) fail(r, "list: " + resp.error().message());
        return false;
      }
      if (resp->status == 410 && !cont.empty()) {
        // The continue token expired mid-list: start the list over.
        fresh.clear();
        cont.clear();
        continue;
      }
      if (optionalResource(r) && (resp->status == 404 || resp->status == 403)) {
        markAbsent(r, resp->status, resp->body);
        return false;
      }
      if (resp->status != 200) {
        if (r == KubeResource::kPods && resp->status == 403) podsForbidden();
        fail(r, "list: " + statusText(resp->status, resp->body));
        return false;
      }
      auto j = json::parse(resp->body, nullptr, false);
      if (!j.is_object() || !j.contains("items") || !j["items"].is_array()) {
        fail(r, "list: the answer is not a Kubernetes list");
        return false;
      }
      const json& meta = objField(j, "metadata");
      listRv = strField(meta, "resourceVersion");
      cont = strField(meta, "continue");
      for (auto& item : j["items"]) {
        auto o = decode(item);
        if (!o) {
          decodeErrors++;
          spdlog::warn("kubernetes {}: skipped: {}", toString(r), o.error().message());
          continue;
        }
        if (r == KubeResource::kServices && selector_ && !kube::matches(*selector_, o->meta.labels)) continue;
        fresh[o->meta.key()] = std::move(o.value());
      }
    } while (!cont.empty() && !stop_.load());
    if (stop_.load()) return false;
    if (listRv.empty()) {
      fail(r, "list: no metadata.resourceVersion in the answer");
      return false;
    }
    std::lock_guard lk(mu_);
    auto& st = stats_.resources[static_cast<int>(r)];
    bool changed = fresh != store || !st.synced;
    if (st.absent) spdlog::info("kubernetes {}: served now; {} are on", toString(r), featureOf(r));
    st.absent = false;
    if (changed && !optionalResource(r)) cache_.reset();  // the others are read by kube::applyRoutes
    store = std::move(fresh);
    st.objects = store.size();
    st.lists++;
    if (relist) st.relists++;
    st.decodeErrors += decodeErrors;
    st.synced = true;
    if (changed && r == KubeResource::kInferencePools) poolsChangedLocked();
    if (changed) {
      version_++;
      changed_.notify_all();
    }
    *rv = listRv;
    return true;
  });
}

// Applies one ADDED / MODIFIED / DELETED object to the store; false if it
// could not be decoded (skipped, counted).
bool KubeSource::applyEvent(KubeResource r, const std::string& type, const json& obj) {
  auto& st = stats_.resources[static_cast<int>(r)];
  bool del = type == "DELETED";
  (del ? st.deleted : type == "ADDED" ? st.added : st.modified)++;
  auto meta = kube::decodeMeta(obj);
  if (!meta) {
    st.decodeErrors++;
    spdlog::warn("kubernetes {}: {} event skipped: {}", toString(r), type, meta.error().message());
    return false;
  }
  std::string key = meta->nameSpace + "/" + meta->name;
  bool changed = withStore(r, [&](auto& store, auto decode) {
    std::optional<typename std::remove_reference_t<decltype(store)>::mapped_type> o;
    if (!del) {
      auto d = decode(obj);
      if (!d) {
        st.decodeErrors++;
        spdlog::warn("kubernetes {}: {} event skipped: {}", toString(r), type, d.error().message());
      } else if (r != KubeResource::kServices || !selector_ || kube::matches(*selector_, d->meta.labels)) {
        o = std::move(d.value());
      }
    }
    // An object that no longer decodes (or a Service that no longer matches
    // the selector) is no longer ours: same as deleted.
    bool c = false;
    auto it = store.find(key);
    if (o) {
      if (it == store.end() || !(it->second == *o)) {
        noteChange(cache_, r, key, it == store.end() ? nullptr : &it->second, &*o);
        store[key] = std::move(*o);
        c = true;
      }
    } else if (it != store.end()) {
      noteChange(cache_, r, key, &it->second, nullptr);
      store.erase(it);
      c = true;
    }
    st.objects = store.size();
    return c;
  });
  if (changed && r == KubeResource::kInferencePools) poolsChangedLocked();
  if (changed) {
    if (version_ == taken_) firstChange_ = std::chrono::steady_clock::now();
    version_++;
    changed_.notify_all();
  }
  return true;
}

KubeSource::WatchEnd KubeSource::watch(KubeResource r, std::string* rv) {
  {
    std::lock_guard lk(mu_);
    auto& st = stats_.resources[static_cast<int>(r)];
    if (st.watches++ > 0) st.watchRestarts++;
  }
  WatchEnd end = WatchEnd::kResume;
  std::string errorBody;
  auto onLine = [&](std::string_view line) -> bool {
    auto ev = json::parse(line, nullptr, false);
    if (!ev.is_object() || !ev.contains("type") || !ev["type"].is_string() || !ev.contains("object") ||
        !ev["object"].is_object()) {
      fail(r, fmt::format("watch: not a watch event: {}", std::string(line.substr(0, 200))));
      end = WatchEnd::kError;
      return false;
    }
    std::string type = ev["type"];
    const json& obj = ev["object"];
    if (type == "ERROR") {
      long code = intField(obj, "code");
      if (code == 410) {
        spdlog::info("kubernetes {}: watch from resourceVersion {} expired ({}); listing again", toString(r), *rv,
                     strField(obj, "message"));
        end = WatchEnd::kRelist;
      } else {
        fail(r, "watch: " + statusText(code, obj.dump()));
        end = WatchEnd::kError;
      }
      return false;
    }
    std::string objRv;
    objRv = strField(objField(obj, "metadata"), "resourceVersion");
    std::lock_guard lk(mu_);
    if (type == "BOOKMARK") {
      stats_.resources[static_cast<int>(r)].bookmarks++;
    } else if (type == "ADDED" || type == "MODIFIED" || type == "DELETED") {
      applyEvent(r, type, obj);
    } else {
      spdlog::warn("kubernetes {}: unknown watch event type '{}' ignored", toString(r), type);
    }
    if (!objRv.empty()) *rv = objRv;
    return true;
  };
  // The pool pods' watch also ends when the pools move to another scope.
  const std::atomic<bool>* abort = r == KubeResource::kPoolPods ? &poolAbort_ : &stop_;
  auto status = client_.stream(query(r, true, *rv, ""), onLine, &errorBody, abort);
  if (stop_.load() || abort->load()) return WatchEnd::kResume;
  if (!status) {
    fail(r, "watch: " + status.error().message());
    return WatchEnd::kError;
  }
  if (*status == 410) {
    spdlog::info("kubernetes {}: watch answered 410 Gone; listing again", toString(r));
    return WatchEnd::kRelist;
  }
  if (optionalResource(r) && (*status == 404 || *status == 403)) return WatchEnd::kRelist;  // the CRD went away: list says
  if (*status != 200) {
    fail(r, "watch: " + statusText(*status, errorBody));
    return WatchEnd::kError;
  }
  return end;
}

std::optional<kube::BuildResult> KubeSource::waitForChange(std::chrono::milliseconds timeout) {
  std::unique_lock lk(mu_);
  auto ready = [&] { return syncedLocked() && (!handedOut_ || version_ != taken_); };
  if (!changed_.wait_for(lk, timeout, ready)) return std::nullopt;
  taken_ = version_;
  handedOut_ = true;
  bool podsListed = watchesPods() && stats_.resources[static_cast<int>(KubeResource::kPods)].synced;
  auto t0 = std::chrono::steady_clock::now();
  kube::BuildResult built = cache_.build(services_, slices_, podsListed ? &pods_ : nullptr);
  kube::applyRoutes(built, services_,
                    kube::RouteStores{&httpRoutes_, &grpcRoutes_, &tcpRoutes_, &grants_, &pools_, &poolPods_});
  using Ms = std::chrono::duration<double, std::milli>;
  spdlog::debug("kubernetes: built the state of {} service(s) in {:.1f} ms, {:.1f} ms after the first event in it",
                built.snapshot.services.size(), Ms(std::chrono::steady_clock::now() - t0).count(),
                Ms(t0 - firstChange_).count());
  return built;
}

// Without permission to list pods (a hand-made ClusterRole from before
// workload policies), waiting for them would hold back every Service: go on
// without them, so policies allow nobody, and keep trying.
void KubeSource::podsForbidden() {
  std::lock_guard lk(mu_);
  if (podsForbidden_) return;
  podsForbidden_ = true;
  spdlog::error("kubernetes pods: listing this node's pods is forbidden (RBAC: get, list, watch on pods); Services "
                "with a workload policy allow nobody until it is granted");
  version_++;
  changed_.notify_all();
}

bool KubeSource::syncedLocked() const {
  const auto& res = stats_.resources;
  for (auto r : kAllKubeResources)
    if (optionalResource(r) && r != KubeResource::kPoolPods && !res[static_cast<int>(r)].synced) return false;
  if (poolPodsNeededLocked() && !res[static_cast<int>(KubeResource::kPoolPods)].synced) return false;
  return res[static_cast<int>(KubeResource::kServices)].synced &&
         res[static_cast<int>(KubeResource::kEndpointSlices)].synced &&
         (!watchesPods() || res[static_cast<int>(KubeResource::kPods)].synced || podsForbidden_);
}

// An optional resource the API server does not serve (404: the CRD is not
// installed) or forbids (403): synced and empty, said once per change.
void KubeSource::markAbsent(KubeResource r, long status, const std::string& body) {
  std::lock_guard lk(mu_);
  auto& st = stats_.resources[static_cast<int>(r)];
  bool was = st.absent && st.synced;
  st.absent = st.synced = true;
  if (!was) {
    if (status == 404)
      spdlog::info("kubernetes {}: not served by the API server (its CRD is not installed); {} are off until it is "
                   "(looked for again every {} s)",
                   toString(r), featureOf(r), opts_.backoffMax.count() / 1000.0);
    else
      spdlog::error("kubernetes {}: listing is forbidden ({}); {} are off (RBAC: get, list, watch on {}{})",
                    toString(r), statusText(status, body), featureOf(r),
                    r == KubeResource::kPoolPods ? "pods" : toString(r), groupOf(r));
  }
  bool had = withStore(r, [](auto& store, auto) {
    bool any = !store.empty();
    store.clear();
    return any;
  });
  bool changed = had || !was;
  st.objects = 0;
  if (changed && r == KubeResource::kInferencePools) poolsChangedLocked();
  if (changed) {
    version_++;
    changed_.notify_all();
  }
}

bool KubeSource::poolPodsNeededLocked() const {
  const auto& st = stats_.resources[static_cast<int>(KubeResource::kInferencePools)];
  return st.synced && !st.absent && !pools_.empty();
}

bool KubeSource::waitForPools() {
  std::unique_lock lk(mu_);
  changed_.wait(lk, [&] { return stop_.load() || poolPodsNeededLocked(); });
  poolScope_ = poolScopeLocked();
  poolAbort_.store(stop_.load());
  return !stop_.load();
}

// The namespace every InferencePool is in, or "" (all namespaces) when they
// are in several: the pods listed and watched for their members.
std::string KubeSource::poolScopeLocked() const {
  if (pools_.empty()) return "";
  const std::string& first = pools_.begin()->second.meta.nameSpace;
  // pools_ is keyed "namespace/name": the first and the last differ if any do.
  return pools_.rbegin()->second.meta.nameSpace == first ? first : "";
}

// After the pools changed (mu_ held): if the pods watched for their members
// are no longer the right ones (no pool left, or the pools' scope moved), end
// that watch now, and hold the next state back until they are listed again.
void KubeSource::poolsChangedLocked() {
  if (poolAbort_.load()) return;
  auto& st = stats_.resources[static_cast<int>(KubeResource::kPoolPods)];
  if (!st.synced) return;  // not listed yet: the list will use the scope of now
  if (!poolPodsNeededLocked() || poolScope_ != poolScopeLocked()) {
    poolAbort_.store(true);
    if (poolPodsNeededLocked()) st.synced = false;
  }
}

// When the pool pods' watch ended: true if they must be listed again (the
// pools moved to another scope) or dropped (no pool left: the pods of every
// node are not kept); else the watch goes on (and poolAbort_ is cleared,
// under the lock poolsChangedLocked() sets it under, so no change is lost).
bool KubeSource::poolPodsStale() {
  std::lock_guard lk(mu_);
  if (!poolPodsNeededLocked()) {
    dropPoolPodsLocked();
    return true;
  }
  if (poolScope_ != poolScopeLocked()) return true;
  poolAbort_.store(false);
  return false;
}

void KubeSource::dropPoolPodsLocked() {
  auto& st = stats_.resources[static_cast<int>(KubeResource::kPoolPods)];
  bool had = !poolPods_.empty();
  poolPods_.clear();
  st.objects = 0;
  st.synced = false;
  if (had) {
    version_++;
    changed_.notify_all();
  }
}

bool KubeSource::synced() const {
  std::lock_guard lk(mu_);
  return syncedLocked();
}

KubeSourceStats KubeSource::stats() const {
  std::lock_guard lk(mu_);
  return stats_;
}

std::optional<std::string> KubeSource::podName(const std::string& uid) const {
  std::lock_guard lk(mu_);
  for (const auto& [key, pod] : pods_)
    if (pod.meta.uid == uid) return pod.meta.nameSpace + "/" + pod.meta.name;
  return std::nullopt;
}

namespace {
KubeSource::DaemonSetState dsStateOf(const json& obj) {
  const json& meta = objField(obj, "metadata");
  return meta.contains("deletionTimestamp") && !meta["deletionTimestamp"].is_null()
             ? KubeSource::DaemonSetState::kDeleting
             : KubeSource::DaemonSetState::kPresent;
}
}  // namespace

// List + watch of one DaemonSet by name; only its state is kept. Failures
// are retried like the other watches but not counted as the source's errors
// (the data plane does not depend on them).
void KubeSource::runDaemonSet() {
  std::mt19937_64 rng{std::random_device{}()};
  std::string base = fmt::format("/apis/apps/v1/namespaces/{}/daemonsets?fieldSelector={}",
                                 urlEncode(opts_.daemonSetNamespace),
                                 urlEncode("metadata.name=" + opts_.daemonSetName));
  std::string rv, where = opts_.daemonSetNamespace + "/" + opts_.daemonSetName;
  int attempt = 0;
  auto retry = [&](const std::string& why) {
    spdlog::debug("kubernetes daemonset {}: {}", where, why);
    sleepFor(backoff(attempt++, opts_.backoffMin, opts_.backoffMax, rng));
  };
  while (!stop_.load()) {
    if (rv.empty()) {
      auto resp = client_.get(base, &stop_);
      if (stop_.load()) break;
      if (!resp || resp->status != 200) {
        retry(resp ? statusText(resp->status, resp->body) : resp.error().message());
        continue;
      }
      auto j = json::parse(resp->body, nullptr, false);
      if (!j.is_object() || !j.contains("items") || !j["items"].is_array()) {
        retry("list: not a Kubernetes list");
        continue;
      }
      watchedDs_.store(j["items"].empty() ? DaemonSetState::kGone : dsStateOf(j["items"][0]));
      rv = strField(objField(j, "metadata"), "resourceVersion");
      if (rv.empty()) {
        retry("list: no resourceVersion");
        continue;
      }
    }
    bool relist = false;
    std::string errorBody;
    auto status = client_.stream(
        base + fmt::format("&watch=1&allowWatchBookmarks=true&resourceVersion={}&timeoutSeconds={}", urlEncode(rv),
                           opts_.watchTimeout.count()),
        [&](std::string_view line) {
          auto ev = json::parse(line, nullptr, false);
          if (!ev.is_object() || !ev.contains("object") || !ev["object"].is_object()) return false;
          std::string type = strField(ev, "type");
          const json& obj = ev["object"];
          if (type == "ERROR") {
            relist = intField(obj, "code") == 410;
            return false;
          }
          if (type == "DELETED") watchedDs_.store(DaemonSetState::kGone);
          else if (type == "ADDED" || type == "MODIFIED") watchedDs_.store(dsStateOf(obj));
          if (auto v = strField(objField(obj, "metadata"), "resourceVersion"); !v.empty()) rv = v;
          return true;
        },
        &errorBody, &stop_);
    if (stop_.load()) break;
    if (relist || (status && *status == 410)) {
      rv.clear();
    } else if (!status || *status != 200) {
      retry(status ? statusText(*status, errorBody) : status.error().message());
    } else {
      attempt = 0;
    }
  }
}

KubeSource::DaemonSetState KubeSource::daemonSet(const std::string& nameSpace, const std::string& name,
                                                 std::string* error) const {
  auto resp = client_.get(fmt::format("/apis/apps/v1/namespaces/{}/daemonsets/{}", urlEncode(nameSpace),
                                      urlEncode(name)));
  if (!resp) {
    if (error) *error = resp.error().message();
    return DaemonSetState::kUnknown;
  }
  if (resp->status == 404) return DaemonSetState::kGone;
  if (resp->status != 200) {
    if (error) *error = statusText(resp->status, resp->body);
    return DaemonSetState::kUnknown;
  }
  auto j = json::parse(resp->body, nullptr, false);
  if (!j.is_object()) {
    if (error) *error = "the answer is not JSON";
    return DaemonSetState::kUnknown;
  }
  return dsStateOf(j);
}

std::optional<StateUpdate> KubeStateSource::next(std::chrono::milliseconds timeout) {
  auto br = source_.waitForChange(timeout);
  if (!br) return std::nullopt;
  StateUpdate u;
  u.snapshot = std::move(br->snapshot);
  for (auto& w : br->warnings) u.warnings.push_back("kubernetes: " + w);
  return u;
}

}  // namespace aimesh
