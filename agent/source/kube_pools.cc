#include "source/kube_pools.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <tuple>

#include "source/kube_reader.h"

namespace aimesh::kube {

using nlohmann::json;
using detail::decodeError;
using detail::Reader;
using detail::readHeader;

namespace {

void readTargetPorts(Reader& r, const json& spec, InferencePoolObj& pool) {
  r.eachObject(spec, "targetPorts", "spec.targetPorts", true, [&](const json& item, const std::string& p) {
    auto port = r.portField(item, "number", joinPath(p, "number"), true);
    if (!port) return;
    if (std::find(pool.targetPorts.begin(), pool.targetPorts.end(), *port) != pool.targetPorts.end())
      r.fail(joinPath(p, "number"), fmt::format("port {} is listed twice", *port));
    pool.targetPorts.push_back(*port);
  });
  if (r.failed()) return;
  if (pool.targetPorts.empty() || pool.targetPorts.size() > kMaxPoolTargetPorts)
    r.fail("spec.targetPorts", fmt::format("must list 1 to {} ports, got {}", kMaxPoolTargetPorts,
                                           pool.targetPorts.size()));
}

void readPicker(Reader& r, const json& spec, InferencePoolObj& pool) {
  const json* ref = r.objectField(spec, "endpointPickerRef", "spec.endpointPickerRef", false);
  if (ref == nullptr) return;
  if (auto s = r.stringField(*ref, "name", "spec.endpointPickerRef.name", false)) pool.picker = *s;
  auto mode = r.stringField(*ref, "failureMode", "spec.endpointPickerRef.failureMode", false);
  if (!mode || *mode == "FailClose") return;
  if (*mode == "FailOpen") pool.failOpen = true;
  else r.fail("spec.endpointPickerRef.failureMode", "must be FailOpen or FailClose, got '" + *mode + "'");
}

}  // namespace

Result<InferencePoolObj> decodeInferencePool(const json& object) {
  Reader r;
  InferencePoolObj pool;
  if (!readHeader(r, object, "InferencePool", pool.meta)) return decodeError("InferencePool", pool.meta, r);
  pool.meta.annotations.clear();
  if (const json* spec = r.objectField(object, "spec", "spec", true)) {
    if (const json* sel = r.objectField(*spec, "selector", "spec.selector", true)) {
      pool.matchLabels = r.stringMap(*sel, "matchLabels", "spec.selector.matchLabels");
      if (!r.failed() && pool.matchLabels.empty())
        r.fail("spec.selector.matchLabels", "must name at least one label (a pool of every pod is not a pool)");
    }
    if (!r.failed()) readTargetPorts(r, *spec, pool);
    if (!r.failed()) readPicker(r, *spec, pool);
  }
  if (r.failed()) return decodeError("InferencePool", pool.meta, r);
  return pool;
}

Result<PodObj> decodePoolPod(const json& object) {
  auto pod = decodePod(object);
  if (!pod) return pod;
  Reader r;
  const json* status = r.objectField(object, "status", "status", false);
  if (status != nullptr) {
    r.eachObject(*status, "podIPs", "status.podIPs", false, [&](const json& item, const std::string& p) {
      if (auto ip = r.stringField(item, "ip", joinPath(p, "ip"), true)) pod->ips.push_back(*ip);
    });
    if (pod->ips.empty())
      if (auto ip = r.stringField(*status, "podIP", "status.podIP", false); ip && !ip->empty()) pod->ips.push_back(*ip);
    r.eachObject(*status, "conditions", "status.conditions", false, [&](const json& item, const std::string& p) {
      auto type = r.stringField(item, "type", joinPath(p, "type"), true);
      auto st = r.stringField(item, "status", joinPath(p, "status"), true);
      if (type && st && *type == "Ready") pod->ready = *st == "True";
    });
  }
  if (r.failed()) return decodeError("Pod", pod->meta, r);
  return pod;
}

PoolMembers poolMembers(const InferencePoolObj& pool, const std::map<std::string, PodObj>& pods) {
  PoolMembers out;
  std::vector<Endpoint> standby;
  std::string prefix = pool.meta.nameSpace + "/";
  for (auto it = pods.lower_bound(prefix); it != pods.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it) {
    const PodObj& pod = it->second;
    if (pod.finished() || pod.ips.empty()) continue;
    bool member = std::all_of(pool.matchLabels.begin(), pool.matchLabels.end(), [&](const auto& kv) {
      auto l = pod.meta.labels.find(kv.first);
      return l != pod.meta.labels.end() && l->second == kv.second;
    });
    if (!member) continue;
    EndpointState state = pod.meta.deleting ? EndpointState::kDraining : EndpointState::kActive;
    bool standing = !pod.meta.deleting && !pod.ready;
    (pod.meta.deleting ? out.draining : standing ? out.standby : out.ready)++;
    for (const std::string& text : pod.ips) {
      auto addr = IpAddr::parse(text);
      if (!addr) continue;
      for (uint16_t port : pool.targetPorts)
        (standing ? standby : out.endpoints).push_back(Endpoint{*addr, port, 1, state, pod.meta.name});
    }
  }
  if (out.ready == 0 && pool.failOpen && !standby.empty()) {
    out.failedOpen = true;
    out.endpoints.insert(out.endpoints.end(), standby.begin(), standby.end());
  }
  // One endpoint per address and port (host-network pods share an address);
  // active wins over draining.
  auto& eps = out.endpoints;
  std::sort(eps.begin(), eps.end(), [](const Endpoint& a, const Endpoint& b) {
    return std::tie(a.address, a.port, a.state) < std::tie(b.address, b.port, b.state);
  });
  eps.erase(std::unique(eps.begin(), eps.end(),
                        [](const Endpoint& a, const Endpoint& b) { return a.address == b.address && a.port == b.port; }),
            eps.end());
  return out;
}

}  // namespace aimesh::kube
