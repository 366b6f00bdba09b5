#include "reconcile/bpf_map_writer.h"
#include "bpf/percpu.h"
#include "telemetry/telemetry.h"
#include "util/overloaded.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <cstring>
#include <vector>

namespace aimesh {

aimesh_frontend_key toAbi(const FrontendKey& k) {
  aimesh_frontend_key a{};
  std::memcpy(a.addr, k.addr.bytes.data(), 16);
  a.port = htons(k.port);
  a.proto = static_cast<uint8_t>(k.proto);
  return a;
}

FrontendKey fromAbi(const aimesh_frontend_key& a) {
  FrontendKey k;
  std::memcpy(k.addr.bytes.data(), a.addr, 16);
  k.port = ntohs(a.port);
  k.proto = static_cast<Protocol>(a.proto);
  return k;
}

aimesh_backend toAbi(const BackendRecord& b) {
  aimesh_backend a{};
  std::memcpy(a.addr, b.addr.bytes.data(), 16);
  a.port = htons(b.port);
  a.family = b.addr.isV4() ? AIMESH_FAMILY_V4 : AIMESH_FAMILY_V6;
  a.state = static_cast<uint8_t>(b.state);
  a.service_id = b.serviceId;
  a.weight = b.weight;
  return a;
}

BackendRecord fromAbi(const aimesh_backend& a) {
  BackendRecord b;
  std::memcpy(b.addr.bytes.data(), a.addr, 16);
  b.port = ntohs(a.port);
  b.state = static_cast<EndpointState>(a.state);
  b.serviceId = a.service_id;
  b.weight = a.weight;
  return b;
}

aimesh_service toAbi(const ServiceRecord& s) {
  aimesh_service a{};
  a.slot_count = s.slotCount;
  a.backend_count = s.backendCount;
  a.algorithm = static_cast<uint8_t>(s.algorithm);
  a.slot_gen = s.slotGen;
  return a;
}

ServiceRecord fromAbi(const aimesh_service& a) {
  return ServiceRecord{a.slot_count, a.backend_count, static_cast<Algorithm>(a.algorithm), a.slot_gen};
}

namespace {

Status update(int fd, const void* k, const void* v, const char* map) {
  if (bpf_map_update_elem(fd, k, v, BPF_ANY) != 0) return Error::fromErrno(std::string("update ") + map);
  return {};
}

Status remove(int fd, const void* k, const char* map) {
  if (bpf_map_delete_elem(fd, k) != 0 && errno != ENOENT) return Error::fromErrno(std::string("delete ") + map);
  return {};
}

template <class K, class V, class F>
Status forEach(int fd, const char* map, F f) {
  K key{}, next{};
  K* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    V v{};
    if (bpf_map_lookup_elem(fd, &next, &v) == 0) f(next, v);
    key = next;
    prev = &key;
  }
  if (errno != ENOENT) return Error::fromErrno(std::string("iterate ") + map);
  return {};
}
}  // namespace

Status BpfMapWriter::apply(const MapOp& op) {
  return std::visit(
      Overloaded{
          [&](const ResetServiceStats& o) {
            return zeroPerCpu(fds_.svcStats, o.id, sizeof(aimesh_svc_stats), "aimesh_svc_stats");
          },
          [&](const ResetBackendStats& o) {
            Status st = zeroPerCpu(fds_.beStats, o.id, sizeof(aimesh_be_stats), "aimesh_be_stats");
            if (!st || fds_.beTel < 0) return st;
            return resetTelemetry(fds_, o.id);
          },
          [&](const UpsertBackend& o) {
            auto v = toAbi(o.rec);
            return update(fds_.backends, &o.id, &v, "aimesh_backends");
          },
          [&](const UpsertSlot& o) {
            aimesh_slot_key k{o.key.serviceId, o.key.slot};
            aimesh_slot v{o.backendId};
            return update(fds_.slots, &k, &v, "aimesh_slots");
          },
          [&](const UpsertService& o) {
            auto v = toAbi(o.rec);
            return update(fds_.services, &o.id, &v, "aimesh_services");
          },
          [&](const UpsertFrontend& o) {
            auto k = toAbi(o.key);
            aimesh_frontend v{o.serviceId};
            return update(fds_.frontends, &k, &v, "aimesh_frontends");
          },
          [&](const DeleteFrontend& o) {
            auto k = toAbi(o.key);
            return remove(fds_.frontends, &k, "aimesh_frontends");
          },
          [&](const DeleteService& o) { return remove(fds_.services, &o.id, "aimesh_services"); },
          [&](const DeleteSlot& o) {
            aimesh_slot_key k{o.key.serviceId, o.key.slot};
            return remove(fds_.slots, &k, "aimesh_slots");
          },
          [&](const DeleteBackend& o) { return remove(fds_.backends, &o.id, "aimesh_backends"); },
      },
      op);
}

Result<KernelState> BpfMapWriter::read() const {
  KernelState s;
  Status st = forEach<aimesh_frontend_key, aimesh_frontend>(
      fds_.frontends, "aimesh_frontends",
      [&](const aimesh_frontend_key& k, const aimesh_frontend& v) { s.frontends[fromAbi(k)] = v.service_id; });
  if (!st) return st.error();
  st = forEach<uint32_t, aimesh_service>(fds_.services, "aimesh_services",
                                         [&](uint32_t k, const aimesh_service& v) { s.services[k] = fromAbi(v); });
  if (!st) return st.error();
  st = forEach<aimesh_slot_key, aimesh_slot>(fds_.slots, "aimesh_slots",
                                             [&](const aimesh_slot_key& k, const aimesh_slot& v) {
                                               s.slots[SlotKey{k.service_id, k.slot}] = v.backend_id;
                                             });
  if (!st) return st.error();
  st = forEach<uint32_t, aimesh_backend>(fds_.backends, "aimesh_backends",
                                         [&](uint32_t k, const aimesh_backend& v) { s.backends[k] = fromAbi(v); });
  if (!st) return st.error();
  return s;
}

}  // namespace aimesh
