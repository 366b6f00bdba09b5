#include "source/kube_routes.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <set>
#include <tuple>

#include "model/service_rules.h"
#include "source/kube_reader.h"

namespace aimesh::kube {

using nlohmann::json;
using detail::decodeError;
using detail::describe;
using detail::Reader;
using detail::readHeader;

const char* toString(RouteKind k) {
  switch (k) {
    case RouteKind::kHttp: return "HTTPRoute";
    case RouteKind::kGrpc: return "GRPCRoute";
    case RouteKind::kTcp: return "TCPRoute";
  }
  return "?";
}

namespace {

// Gateway API's weight bound is the kernel's.
static_assert(kMaxSplitWeight == 1'000'000);

bool nonEmpty(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it != obj.end() && !it->is_null() && !(it->is_array() && it->empty()) &&
         !(it->is_object() && it->empty());
}

void readParent(Reader& r, const json& item, const std::string& p, RouteParent& parent) {
  if (auto s = r.stringField(item, "group", joinPath(p, "group"), false)) parent.group = *s;
  if (auto s = r.stringField(item, "kind", joinPath(p, "kind"), false)) parent.kind = *s;
  if (auto s = r.stringField(item, "namespace", joinPath(p, "namespace"), false)) parent.nameSpace = *s;
  if (auto s = r.stringField(item, "name", joinPath(p, "name"), true)) parent.name = *s;
  if (auto s = r.stringField(item, "sectionName", joinPath(p, "sectionName"), false)) parent.sectionName = *s;
  parent.port = r.portField(item, "port", joinPath(p, "port"), false);
}

void readBackend(Reader& r, const json& item, const std::string& p, RouteBackend& b) {
  if (auto s = r.stringField(item, "group", joinPath(p, "group"), false)) b.group = *s;
  if (auto s = r.stringField(item, "kind", joinPath(p, "kind"), false)) b.kind = *s;
  if (auto s = r.stringField(item, "name", joinPath(p, "name"), true)) b.name = *s;
  if (auto s = r.stringField(item, "namespace", joinPath(p, "namespace"), false)) b.nameSpace = *s;
  b.port = r.portField(item, "port", joinPath(p, "port"), false);
  if (const json* w = r.get(item, "weight", joinPath(p, "weight"), false))
    if (auto n = r.integer(*w, joinPath(p, "weight"), 0, kMaxSplitWeight)) b.weight = static_cast<uint32_t>(*n);
  b.filters = nonEmpty(item, "filters");
}

// Whether an HTTPRoute match is the default one (every request): no
// headers, query parameters or method, and a path that is PathPrefix "/"
// (Gateway API's default) or absent.
bool defaultHttpMatch(const json& m) {
  if (!m.is_object() || nonEmpty(m, "headers") || nonEmpty(m, "queryParams") || nonEmpty(m, "method")) return false;
  auto path = m.find("path");
  if (path == m.end() || path->is_null()) return true;
  if (!path->is_object()) return false;
  // Read without throwing: a field of another type is simply not the default.
  auto text = [&](const char* key, const char* absent) -> std::optional<std::string> {
    auto it = path->find(key);
    if (it == path->end() || it->is_null()) return absent;
    return it->is_string() ? std::optional<std::string>(it->get<std::string>()) : std::nullopt;
  };
  return text("type", "PathPrefix") == "PathPrefix" && text("value", "/") == "/";
}

// A GRPCRoute match: the default has no headers and a method naming nothing.
bool defaultGrpcMatch(const json& m) {
  if (!m.is_object() || nonEmpty(m, "headers")) return false;
  auto method = m.find("method");
  if (method == m.end() || method->is_null()) return true;
  return method->is_object() && !nonEmpty(*method, "service") && !nonEmpty(*method, "method");
}

void readRule(Reader& r, RouteKind kind, const json& item, const std::string& p, RouteRule& rule) {
  if (const json* matches = r.listField(item, "matches", joinPath(p, "matches"), false)) {
    bool plain = true;
    for (const json& m : *matches) plain = plain && (kind == RouteKind::kGrpc ? defaultGrpcMatch(m) : defaultHttpMatch(m));
    if (matches->size() > 1 || !plain) rule.unsupported.push_back(joinPath(p, "matches"));
  }
  if (nonEmpty(item, "filters")) rule.unsupported.push_back(joinPath(p, "filters"));
  for (const char* ignored : {"timeouts", "retry", "sessionPersistence"})
    if (nonEmpty(item, ignored)) rule.ignored.push_back(joinPath(p, ignored));
  r.eachObject(item, "backendRefs", joinPath(p, "backendRefs"), false, [&](const json& ref, const std::string& bp) {
    RouteBackend b;
    readBackend(r, ref, bp, b);
    if (b.filters) rule.unsupported.push_back(joinPath(bp, "filters"));
    rule.backends.push_back(std::move(b));
  });
}

Result<RouteObj> decodeRoute(const json& object, RouteKind kind) {
  Reader r;
  RouteObj route;
  route.kind = kind;
  const char* k = toString(kind);
  if (!readHeader(r, object, k, route.meta)) return decodeError(k, route.meta, r);
  if (auto s = r.stringField(object["metadata"], "creationTimestamp", "metadata.creationTimestamp", false))
    route.created = *s;
  const json* spec = r.objectField(object, "spec", "spec", true);
  if (spec != nullptr) {
    r.eachObject(*spec, "parentRefs", "spec.parentRefs", false, [&](const json& item, const std::string& p) {
      readParent(r, item, p, route.parents.emplace_back());
    });
    route.hostnames = nonEmpty(*spec, "hostnames");
    r.eachObject(*spec, "rules", "spec.rules", false, [&](const json& item, const std::string& p) {
      readRule(r, kind, item, p, route.rules.emplace_back());
    });
  }
  if (r.failed()) return decodeError(k, route.meta, r);
  return route;
}

}  // namespace

Result<RouteObj> decodeHttpRoute(const json& object) { return decodeRoute(object, RouteKind::kHttp); }
Result<RouteObj> decodeGrpcRoute(const json& object) { return decodeRoute(object, RouteKind::kGrpc); }
Result<RouteObj> decodeTcpRoute(const json& object) { return decodeRoute(object, RouteKind::kTcp); }

Result<ReferenceGrantObj> decodeReferenceGrant(const json& object) {
  Reader r;
  ReferenceGrantObj g;
  if (!readHeader(r, object, "ReferenceGrant", g.meta)) return decodeError("ReferenceGrant", g.meta, r);
  g.meta.annotations.clear();
  if (const json* spec = r.objectField(object, "spec", "spec", true)) {
    r.eachObject(*spec, "from", "spec.from", true, [&](const json& item, const std::string& p) {
      ReferenceGrantObj::From f;
      f.group = r.stringField(item, "group", joinPath(p, "group"), true).value_or("");
      f.kind = r.stringField(item, "kind", joinPath(p, "kind"), true).value_or("");
      f.nameSpace = r.stringField(item, "namespace", joinPath(p, "namespace"), true).value_or("");
      g.from.push_back(std::move(f));
    });
    r.eachObject(*spec, "to", "spec.to", true, [&](const json& item, const std::string& p) {
      ReferenceGrantObj::To t;
      t.group = r.stringField(item, "group", joinPath(p, "group"), true).value_or("");
      t.kind = r.stringField(item, "kind", joinPath(p, "kind"), true).value_or("");
      t.name = r.stringField(item, "name", joinPath(p, "name"), false).value_or("");
      g.to.push_back(std::move(t));
    });
  }
  if (r.failed()) return decodeError("ReferenceGrant", g.meta, r);
  return g;
}

// ---- applyRoutes ------------------------------------------------------------

namespace {

// The snapshot service's name for port i of a Service (as buildService()
// names them).
std::string portServiceName(const ServiceObj& svc, size_t i) {
  if (svc.ports.size() == 1) return svc.meta.name;
  const ServicePort& p = svc.ports[i];
  return svc.meta.name + ":" + (p.name.empty() ? std::to_string(p.port) : p.name);
}

bool isPool(const RouteBackend& b) { return b.group == kInferenceGroup && b.kind == "InferencePool"; }

// Whether a ReferenceGrant in toNs lets the route refer to the object
// (group, kind, name) there.
bool granted(const RouteStores& stores, const RouteObj& route, const std::string& toNs, const std::string& group,
             const std::string& kind, const std::string& name) {
  if (stores.grants == nullptr) return false;
  for (const auto& [key, g] : *stores.grants) {
    if (g.meta.nameSpace != toNs || g.meta.deleting) continue;
    bool from = std::any_of(g.from.begin(), g.from.end(), [&](const ReferenceGrantObj::From& f) {
      return f.group == kGatewayGroup && f.kind == toString(route.kind) && f.nameSpace == route.meta.nameSpace;
    });
    bool to = std::any_of(g.to.begin(), g.to.end(), [&](const ReferenceGrantObj::To& t) {
      bool sameGroup = t.group == group || (group.empty() && t.group == "core");
      return sameGroup && t.kind == kind && (t.name.empty() || t.name == name);
    });
    if (from && to) return true;
  }
  return false;
}

// Where namespace/name is in services sorted by key.
std::optional<size_t> indexOf(const SharedServices& services, const std::string& ns, const std::string& name) {
  Service probe;
  probe.nameSpace = ns;
  probe.name = name;
  auto it = std::lower_bound(services.begin(), services.end(), probe, keyLess);
  if (it == services.end() || compareKeys(*it, probe) != 0) return std::nullopt;
  return static_cast<size_t>(it - services.begin());
}

// One parent port the route would make a split: the snapshot service.
struct Target {
  size_t index;  // in the snapshot's services
  uint16_t port;
};

// What applying one route decided.
struct Plan {
  std::vector<Target> targets;
  std::vector<std::vector<SplitBackend>> splits;  // one per target
  RouteNote note;
  std::vector<std::string> problems;  // non-empty: not applied
  const InferencePoolObj* pool = nullptr;  // the rule's only backendRef is this pool
  PoolMembers members;                     // of pool
};

class Applier {
 public:
  Applier(BuildResult& result, const std::map<std::string, ServiceObj>& services, const RouteStores& stores)
      : result_(result), services_(services), stores_(stores) {}

  void run();

 private:
  std::vector<const RouteObj*> meshRoutes() const;
  void checkRules(const RouteObj& route, Plan& plan) const;
  void findTargets(const RouteObj& route, Plan& plan) const;
  void resolveBackends(const RouteObj& route, Plan& plan) const;
  void resolvePool(const RouteObj& route, Plan& plan) const;
  const ServiceObj* parentObj(const Service& parent) const;
  void applyPool(const RouteObj& route, Plan& plan);
  std::optional<std::string> resolveBackend(const RouteObj& route, const RouteBackend& b, const Target& t,
                                            SplitBackend& out) const;
  std::optional<CanaryGuardSpec> guard(const RouteObj& route, Plan& plan) const;
  void apply(const RouteObj& route, Plan& plan);

  BuildResult& result_;
  const std::map<std::string, ServiceObj>& services_;
  const RouteStores& stores_;
  std::map<size_t, std::string> claimed_;  // snapshot index -> the route that made it a split
  std::map<std::string, std::string> backends_;  // key of a split's backend -> the route
  std::vector<RouteNote> notes_;
};

// Routes with a Service parent, oldest first (the winner of a conflict).
std::vector<const RouteObj*> Applier::meshRoutes() const {
  std::vector<const RouteObj*> out;
  for (const auto* store : {stores_.http, stores_.grpc, stores_.tcp}) {
    if (store == nullptr) continue;
    for (const auto& [key, route] : *store) {
      if (route.meta.deleting) continue;
      if (std::any_of(route.parents.begin(), route.parents.end(), [](const RouteParent& p) { return p.isService(); }))
        out.push_back(&route);
    }
  }
  std::sort(out.begin(), out.end(), [](const RouteObj* a, const RouteObj* b) {
    return std::tie(a->created, a->meta.nameSpace, a->meta.name, a->kind) <
           std::tie(b->created, b->meta.nameSpace, b->meta.name, b->kind);
  });
  return out;
}

void Applier::checkRules(const RouteObj& route, Plan& plan) const {
  if (route.rules.size() != 1) {
    plan.problems.push_back(fmt::format("has {} rules; only a single rule can be applied to connections",
                                        route.rules.size()));
    return;
  }
  const RouteRule& rule = route.rules[0];
  for (const std::string& u : rule.unsupported)
    plan.problems.push_back(u + ": only a rule for every request, without filters, can be applied to connections");
  if (rule.backends.empty()) plan.problems.push_back("spec.rules[0] has no backendRefs");
  if (rule.backends.size() > kMaxSplitBackends)
    plan.problems.push_back(fmt::format("spec.rules[0] has {} backendRefs; at most {}", rule.backends.size(),
                                        kMaxSplitBackends));
  for (const std::string& i : rule.ignored)
    plan.note.notes.push_back(i + " ignored (connections are balanced before any request is seen)");
  if (route.hostnames)
    plan.note.notes.push_back("spec.hostnames ignored (a mesh route applies to its parent Service's address)");
}

void Applier::findTargets(const RouteObj& route, Plan& plan) const {
  const SharedServices& snap = result_.snapshot.services;
  for (size_t i = 0; i < route.parents.size(); ++i) {
    const RouteParent& p = route.parents[i];
    if (!p.isService()) continue;
    std::string where = indexPath("spec.parentRefs", i);
    std::string ns = p.nameSpace.empty() ? route.meta.nameSpace : p.nameSpace;
    plan.note.parents.push_back(ns + "/" + p.name);
    if (ns != route.meta.nameSpace) {
      plan.problems.push_back(where + ": Service " + ns + "/" + p.name + " is in another namespace (consumer routes "
                              "apply to one namespace's clients, which a split of the Service cannot tell apart)");
      continue;
    }
    auto svc = services_.find(ns + "/" + p.name);
    if (svc == services_.end()) {
      plan.problems.push_back(where + ": Service " + ns + "/" + p.name + " does not exist");
      continue;
    }
    size_t before = plan.targets.size();
    for (size_t k = 0; k < svc->second.ports.size(); ++k) {
      const ServicePort& sp = svc->second.ports[k];
      if (!sp.supported || sp.protocol != Protocol::kTcp) continue;
      if ((p.port && *p.port != sp.port) || (!p.sectionName.empty() && p.sectionName != sp.name)) continue;
      auto at = indexOf(snap, ns, portServiceName(svc->second, k));
      if (!at) continue;
      plan.targets.push_back(Target{*at, sp.port});
    }
    if (plan.targets.size() == before)
      plan.problems.push_back(where + ": Service " + ns + "/" + p.name +
                              (p.port ? " has no TCP port " + std::to_string(*p.port) : std::string(" has no TCP port")) +
                              " that the mesh balances (a headless Service, or none of its ports)");
  }
}

std::optional<std::string> Applier::resolveBackend(const RouteObj& route, const RouteBackend& b, const Target& t,
                                                   SplitBackend& out) const {
  if (isPool(b)) return "an InferencePool must be the rule's only backendRef (a split between a pool and other backends is not supported)";
  if (!b.isService())
    return "kind " + (b.group.empty() ? "" : b.group + "/") + b.kind + " is not supported (Services, or one InferencePool)";
  std::string ns = b.nameSpace.empty() ? route.meta.nameSpace : b.nameSpace;
  std::string key = ns + "/" + b.name;
  const Service& parent = result_.snapshot.services[t.index];
  if (ns != route.meta.nameSpace && !granted(stores_, route, ns, "", "Service", b.name))
    return "Service " + key + " is in another namespace, and no ReferenceGrant there allows it";
  auto svc = services_.find(key);
  if (svc == services_.end()) return "Service " + key + " does not exist";
  if (ns == parent.nameSpace && (b.name == parent.name || parent.name.rfind(b.name + ":", 0) == 0))
    return "names the parent Service itself (a split's backends are other Services)";
  const auto& ports = svc->second.ports;
  uint16_t want = b.port ? *b.port : ports.size() == 1 ? ports[0].port : t.port;
  for (size_t k = 0; k < ports.size(); ++k) {
    if (ports[k].port != want || ports[k].protocol != Protocol::kTcp || !ports[k].supported) continue;
    out.service = portServiceName(svc->second, k);
    if (result_.snapshot.services.find(ns, out.service, true) == nullptr)
      return "Service " + key + " has no address the mesh balances (headless, or skipped)";
    out.nameSpace = ns == parent.nameSpace ? "" : ns;
    out.port = want;
    out.weight = b.weight;
    return std::nullopt;
  }
  return "Service " + key + " has no TCP port " + std::to_string(want);
}

void Applier::resolveBackends(const RouteObj& route, Plan& plan) const {
  const RouteRule& rule = route.rules[0];
  for (const Target& t : plan.targets) {
    std::vector<SplitBackend> split;
    for (size_t i = 0; i < rule.backends.size(); ++i) {
      SplitBackend b;
      std::string where = indexPath("spec.rules[0].backendRefs", i);
      if (auto bad = resolveBackend(route, rule.backends[i], t, b)) {
        if (rule.backends[i].weight == 0) plan.note.notes.push_back(where + " (weight 0) dropped: " + *bad);
        else plan.problems.push_back(where + ": " + *bad);
        continue;
      }
      auto same = [&](const SplitBackend& o) {
        return o.service == b.service && o.nameSpace == b.nameSpace && o.port == b.port;
      };
      if (std::any_of(split.begin(), split.end(), same)) {
        plan.problems.push_back(where + ": names a Service and port another backendRef names too");
        continue;
      }
      split.push_back(std::move(b));
    }
    if (!plan.problems.empty()) return;
    if (split.empty()) {
      plan.problems.push_back("no backendRef resolves");
      return;
    }
    plan.splits.push_back(std::move(split));
  }
}

// A rule whose only backendRef is an InferencePool: the pool and its members.
void Applier::resolvePool(const RouteObj& route, Plan& plan) const {
  const RouteBackend& b = route.rules[0].backends[0];
  const std::string where = "spec.rules[0].backendRefs[0]";
  std::string ns = b.nameSpace.empty() ? route.meta.nameSpace : b.nameSpace;
  std::string key = ns + "/" + b.name;
  plan.note.pool = key;
  if (ns != route.meta.nameSpace && !granted(stores_, route, ns, kInferenceGroup, "InferencePool", b.name)) {
    plan.problems.push_back(where + ": InferencePool " + key +
                            " is in another namespace, and no ReferenceGrant there allows it");
    return;
  }
  if (b.weight == 0) {
    plan.problems.push_back(where + ": InferencePool " + key + " has weight 0 (it would get no connections)");
    return;
  }
  auto it = stores_.pools == nullptr ? decltype(stores_.pools->end()){} : stores_.pools->find(key);
  if (stores_.pools == nullptr || it == stores_.pools->end() || it->second.meta.deleting) {
    plan.problems.push_back(where + ": InferencePool " + key + " does not exist");
    return;
  }
  if (b.port) plan.note.notes.push_back(where + ".port ignored (the pool's spec.targetPorts are used)");
  plan.pool = &it->second;
  static const std::map<std::string, PodObj> kNoPods;
  plan.members = poolMembers(it->second, stores_.poolPods != nullptr ? *stores_.poolPods : kNoPods);
}

// The Service object a snapshot service was built from (its port's name cut).
const ServiceObj* Applier::parentObj(const Service& parent) const {
  auto svc = services_.find(parent.nameSpace + "/" + parent.name.substr(0, parent.name.find(':')));
  return svc == services_.end() ? nullptr : &svc->second;
}

// The parent's ports balance the pool's members.
void Applier::applyPool(const RouteObj& route, Plan& plan) {
  if (route.meta.annotations.count(kCanaryGuardAnnotation) != 0)
    plan.note.notes.push_back(std::string(kCanaryGuardAnnotation) + " ignored: a guard needs a split, not a pool");
  const InferencePoolObj& pool = *plan.pool;
  for (const Target& t : plan.targets) {
    const Service& parent = result_.snapshot.services[t.index];
    const ServiceObj* obj = parentObj(parent);
    auto annotated = [&](const char* a) { return obj != nullptr && obj->meta.annotations.count(a) != 0; };
    Service s = parent;
    s.endpoints = plan.members.endpoints;
    if (!annotated(kAlgorithmAnnotation)) s.algorithm = Algorithm::kLatency;
    if (!annotated(kModelMetricsPortAnnotation)) s.modelMetrics = ModelMetricsSpec{pool.targetPorts.front(), "/metrics"};
    s.failClose = !pool.failOpen;
    result_.snapshot.services.set(t.index, SharedServices::make(std::move(s)));
    claimed_[t.index] = route.name();
    plan.note.pooled.push_back(parent.key());
  }
  std::sort(plan.note.pooled.begin(), plan.note.pooled.end());
}

std::optional<CanaryGuardSpec> Applier::guard(const RouteObj& route, Plan& plan) const {
  const std::string* text = nullptr;
  std::string from = "the route's";
  if (auto it = route.meta.annotations.find(kCanaryGuardAnnotation); it != route.meta.annotations.end()) {
    text = &it->second;
  } else if (!plan.targets.empty()) {
    if (const ServiceObj* svc = parentObj(result_.snapshot.services[plan.targets[0].index])) {
      auto it2 = svc->meta.annotations.find(kCanaryGuardAnnotation);
      if (it2 != svc->meta.annotations.end()) {
        text = &it2->second;
        from = "the parent Service's";
      }
    }
  }
  if (text == nullptr) return std::nullopt;
  auto g = parseCanaryGuardText(*text);
  if (!g) {
    plan.note.notes.push_back(from + " " + kCanaryGuardAnnotation + " '" + *text + "' ignored: " + g.error().message());
    return std::nullopt;
  }
  return std::move(g.value());
}

void Applier::apply(const RouteObj& route, Plan& plan) {
  std::optional<CanaryGuardSpec> g = guard(route, plan);
  if (g && !g->primary.empty()) {
    // The annotation names a Service; the split names its snapshot service.
    const auto& split = plan.splits.front();
    auto named = std::find_if(split.begin(), split.end(), [&](const SplitBackend& b) {
      return b.service == g->primary || b.service.rfind(g->primary + ":", 0) == 0;
    });
    if (named == split.end()) {
      plan.note.notes.push_back(std::string(kCanaryGuardAnnotation) + " ignored: primary '" + g->primary +
                                "' is not a backendRef");
      g.reset();
    } else {
      g->primary = named->service;
    }
  }
  if (g && plan.splits.front().size() < 2) {
    plan.note.notes.push_back(std::string(kCanaryGuardAnnotation) + " ignored: a guard needs two backendRefs or more");
    g.reset();
  }
  for (size_t i = 0; i < plan.targets.size(); ++i) {
    const Target& t = plan.targets[i];
    const Service& parent = result_.snapshot.services[t.index];
    Service s;
    s.name = parent.name;
    s.nameSpace = parent.nameSpace;
    s.model = parent.model;
    s.vips = parent.vips;
    s.ports = parent.ports;
    s.policy = parent.policy;
    s.split = plan.splits[i];
    for (const SplitBackend& b : s.split)
      backends_[(b.nameSpace.empty() ? s.nameSpace : b.nameSpace) + "/" + b.service] = route.name();
    if (g) s.canaryGuard = *g;
    result_.snapshot.services.set(t.index, SharedServices::make(std::move(s)));
    claimed_[t.index] = route.name();
    plan.note.splits.push_back(parent.key());
  }
  std::sort(plan.note.splits.begin(), plan.note.splits.end());
}

void Applier::run() {
  for (const RouteObj* route : meshRoutes()) {
    Plan plan;
    plan.note.route = route->name();
    checkRules(*route, plan);
    findTargets(*route, plan);
    std::sort(plan.note.parents.begin(), plan.note.parents.end());
    plan.note.parents.erase(std::unique(plan.note.parents.begin(), plan.note.parents.end()), plan.note.parents.end());
    const auto& backends = route->rules.size() == 1 ? route->rules[0].backends : std::vector<RouteBackend>{};
    bool pooled = backends.size() == 1 && isPool(backends[0]);
    if (!plan.problems.empty()) plan.targets.clear();
    else if (pooled) resolvePool(*route, plan);
    else resolveBackends(*route, plan);
    for (const Target& t : plan.targets) {
      auto c = claimed_.find(t.index);
      if (c != claimed_.end())
        plan.problems.push_back("Service " + result_.snapshot.services[t.index].key() + " is already " +
                                (pooled ? "taken" : "split") + " by " + c->second + " (the older route wins)");
      else if (auto b = backends_.find(result_.snapshot.services[t.index].key()); !pooled && b != backends_.end())
        plan.problems.push_back("Service " + b->first + " is a backend of the split " + b->second +
                                " made (splits of splits are not allowed)");
    }
    for (const auto& split : plan.splits)
      for (const SplitBackend& b : split) {
        const Service* s = result_.snapshot.services.find(
            b.nameSpace.empty() ? route->meta.nameSpace : b.nameSpace, b.service, true);
        if (s != nullptr && !s->split.empty())
          plan.problems.push_back("backend Service " + s->key() + " is itself a split (splits of splits are not allowed)");
      }
    if (plan.problems.empty()) {
      if (pooled) applyPool(*route, plan);
      else apply(*route, plan);
      plan.note.state = plan.note.notes.empty() ? RouteNote::State::kApplied : RouteNote::State::kPartial;
    } else {
      plan.note.state = RouteNote::State::kNotApplied;
      plan.note.notes.insert(plan.note.notes.begin(), plan.problems.begin(), plan.problems.end());
    }
    if (plan.note.state != RouteNote::State::kApplied) {
      std::string what = plan.note.state == RouteNote::State::kPartial ? "applied in part" : "not applied";
      for (const std::string& n : plan.note.notes) result_.warnings.push_back(route->name() + ": " + what + ": " + n);
    }
    notes_.push_back(std::move(plan.note));
  }
  std::sort(notes_.begin(), notes_.end(), [](const RouteNote& a, const RouteNote& b) { return a.route < b.route; });
  if (notes_.empty()) result_.snapshot.routes.reset();
  else result_.snapshot.routes = std::move(notes_);
}

}  // namespace

void applyRoutes(BuildResult& result, const std::map<std::string, ServiceObj>& services, const RouteStores& routes) {
  Applier(result, services, routes).run();
}

}  // namespace aimesh::kube
