// The ABI check (Cilium's alignchecker, in small): the structs of
// include/aimesh/abi.h as the BPF compiler laid them out (read from each
// object's BTF) must have the size and member offsets the C++ compiler gives
// them, and every map of sock_lb must use the abi.h type it is meant to.
//
// Parses files only: no root, no kernel. Objects are found by listing
// AIMESH_BPF_DIR, so a new *.bpf.o is checked without touching this file.
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>

#include "fixtures/bpf_objects.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "aimesh/abi.h"

namespace aimesh {
namespace {

namespace fs = std::filesystem;

struct MemberLayout {
  std::string name;
  size_t offset;
  size_t size;
};

struct StructLayout {
  std::string name;
  size_t size;
  std::vector<MemberLayout> members;
};

#define AIMESH_MEMBER(T, m) \
  MemberLayout { #m, offsetof(T, m), sizeof(std::declval<T&>().m) }

// The C++ side of every abi.h struct. A member added to abi.h but not here is
// reported by the test (BTF has a member the table does not).
const std::vector<StructLayout>& cxxLayouts() {
  static const std::vector<StructLayout> t = {
      {"aimesh_frontend_key",
       sizeof(aimesh_frontend_key),
       {AIMESH_MEMBER(aimesh_frontend_key, addr), AIMESH_MEMBER(aimesh_frontend_key, port),
        AIMESH_MEMBER(aimesh_frontend_key, proto), AIMESH_MEMBER(aimesh_frontend_key, pad)}},
      {"aimesh_frontend", sizeof(aimesh_frontend), {AIMESH_MEMBER(aimesh_frontend, service_id)}},
      {"aimesh_service",
       sizeof(aimesh_service),
       {AIMESH_MEMBER(aimesh_service, slot_count), AIMESH_MEMBER(aimesh_service, backend_count),
        AIMESH_MEMBER(aimesh_service, algorithm), AIMESH_MEMBER(aimesh_service, flags),
        AIMESH_MEMBER(aimesh_service, slot_gen), AIMESH_MEMBER(aimesh_service, pad0),
        AIMESH_MEMBER(aimesh_service, hash_size), AIMESH_MEMBER(aimesh_service, balance_pct),
        AIMESH_MEMBER(aimesh_service, sample_skip)}},
      {"aimesh_slot_key",
       sizeof(aimesh_slot_key),
       {AIMESH_MEMBER(aimesh_slot_key, service_id), AIMESH_MEMBER(aimesh_slot_key, slot)}},
      {"aimesh_slot", sizeof(aimesh_slot), {AIMESH_MEMBER(aimesh_slot, backend_id)}},
      {"aimesh_backend",
       sizeof(aimesh_backend),
       {AIMESH_MEMBER(aimesh_backend, addr), AIMESH_MEMBER(aimesh_backend, port),
        AIMESH_MEMBER(aimesh_backend, family), AIMESH_MEMBER(aimesh_backend, state),
        AIMESH_MEMBER(aimesh_backend, service_id), AIMESH_MEMBER(aimesh_backend, weight),
        AIMESH_MEMBER(aimesh_backend, pad)}},
      {"aimesh_split_target",
       sizeof(aimesh_split_target),
       {AIMESH_MEMBER(aimesh_split_target, service_id), AIMESH_MEMBER(aimesh_split_target, weight)}},
      {"aimesh_split",
       sizeof(aimesh_split),
       {AIMESH_MEMBER(aimesh_split, count), AIMESH_MEMBER(aimesh_split, pad), AIMESH_MEMBER(aimesh_split, targets)}},
      {"aimesh_split_stats_key",
       sizeof(aimesh_split_stats_key),
       {AIMESH_MEMBER(aimesh_split_stats_key, split_id), AIMESH_MEMBER(aimesh_split_stats_key, target_id)}},
      {"aimesh_split_stats",
       sizeof(aimesh_split_stats),
       {AIMESH_MEMBER(aimesh_split_stats, connects), AIMESH_MEMBER(aimesh_split_stats, datagrams)}},
      {"aimesh_revnat_key",
       sizeof(aimesh_revnat_key),
       {AIMESH_MEMBER(aimesh_revnat_key, cookie), AIMESH_MEMBER(aimesh_revnat_key, addr),
        AIMESH_MEMBER(aimesh_revnat_key, port), AIMESH_MEMBER(aimesh_revnat_key, pad0),
        AIMESH_MEMBER(aimesh_revnat_key, pad1)}},
      {"aimesh_revnat",
       sizeof(aimesh_revnat),
       {AIMESH_MEMBER(aimesh_revnat, addr), AIMESH_MEMBER(aimesh_revnat, port), AIMESH_MEMBER(aimesh_revnat, pad0),
        AIMESH_MEMBER(aimesh_revnat, service_id)}},
      {"aimesh_ct_key",
       sizeof(aimesh_ct_key),
       {AIMESH_MEMBER(aimesh_ct_key, saddr), AIMESH_MEMBER(aimesh_ct_key, daddr), AIMESH_MEMBER(aimesh_ct_key, sport),
        AIMESH_MEMBER(aimesh_ct_key, dport), AIMESH_MEMBER(aimesh_ct_key, proto), AIMESH_MEMBER(aimesh_ct_key, pad)}},
      {"aimesh_ct",
       sizeof(aimesh_ct),
       {AIMESH_MEMBER(aimesh_ct, addr), AIMESH_MEMBER(aimesh_ct, port), AIMESH_MEMBER(aimesh_ct, dir),
        AIMESH_MEMBER(aimesh_ct, flags), AIMESH_MEMBER(aimesh_ct, service_id), AIMESH_MEMBER(aimesh_ct, backend_id),
        AIMESH_MEMBER(aimesh_ct, pad), AIMESH_MEMBER(aimesh_ct, last_seen_ns)}},
      {"aimesh_svc_stats",
       sizeof(aimesh_svc_stats),
       {AIMESH_MEMBER(aimesh_svc_stats, connects), AIMESH_MEMBER(aimesh_svc_stats, datagrams),
        AIMESH_MEMBER(aimesh_svc_stats, refused), AIMESH_MEMBER(aimesh_svc_stats, denied)}},
      {"aimesh_policy_key",
       sizeof(aimesh_policy_key),
       {AIMESH_MEMBER(aimesh_policy_key, cgroup_id), AIMESH_MEMBER(aimesh_policy_key, service_id),
        AIMESH_MEMBER(aimesh_policy_key, pad)}},
      {"aimesh_policy", sizeof(aimesh_policy), {AIMESH_MEMBER(aimesh_policy, allow)}},
      {"aimesh_client_key",
       sizeof(aimesh_client_key),
       {AIMESH_MEMBER(aimesh_client_key, cgroup_id), AIMESH_MEMBER(aimesh_client_key, service_id),
        AIMESH_MEMBER(aimesh_client_key, pad)}},
      {"aimesh_client_stats",
       sizeof(aimesh_client_stats),
       {AIMESH_MEMBER(aimesh_client_stats, connects), AIMESH_MEMBER(aimesh_client_stats, datagrams),
        AIMESH_MEMBER(aimesh_client_stats, refused), AIMESH_MEMBER(aimesh_client_stats, denied),
        AIMESH_MEMBER(aimesh_client_stats, requests)}},
      {"aimesh_be_stats",
       sizeof(aimesh_be_stats),
       {AIMESH_MEMBER(aimesh_be_stats, connects), AIMESH_MEMBER(aimesh_be_stats, datagrams)}},
      {"aimesh_hist",
       sizeof(aimesh_hist),
       {AIMESH_MEMBER(aimesh_hist, buckets), AIMESH_MEMBER(aimesh_hist, sum_ns)}},
      {"aimesh_be_tel",
       sizeof(aimesh_be_tel),
       {AIMESH_MEMBER(aimesh_be_tel, opened), AIMESH_MEMBER(aimesh_be_tel, closed),
        AIMESH_MEMBER(aimesh_be_tel, failed_refused), AIMESH_MEMBER(aimesh_be_tel, failed_timeout),
        AIMESH_MEMBER(aimesh_be_tel, reset), AIMESH_MEMBER(aimesh_be_tel, requests),
        AIMESH_MEMBER(aimesh_be_tel, responses), AIMESH_MEMBER(aimesh_be_tel, chunks),
        AIMESH_MEMBER(aimesh_be_tel, bytes_sent), AIMESH_MEMBER(aimesh_be_tel, bytes_received),
        AIMESH_MEMBER(aimesh_be_tel, retransmits), AIMESH_MEMBER(aimesh_be_tel, conn_ns),
        AIMESH_MEMBER(aimesh_be_tel, ejections), AIMESH_MEMBER(aimesh_be_tel, closed_by)}},
      {"aimesh_be_load",
       sizeof(aimesh_be_load),
       {AIMESH_MEMBER(aimesh_be_load, active), AIMESH_MEMBER(aimesh_be_load, ewma_ttft_ns),
        AIMESH_MEMBER(aimesh_be_load, ewma_ts_ns), AIMESH_MEMBER(aimesh_be_load, penalty_ts_ns),
        AIMESH_MEMBER(aimesh_be_load, skip_until_ns), AIMESH_MEMBER(aimesh_be_load, penalty),
        AIMESH_MEMBER(aimesh_be_load, fail_streak), AIMESH_MEMBER(aimesh_be_load, ejections),
        AIMESH_MEMBER(aimesh_be_load, idle), AIMESH_MEMBER(aimesh_be_load, pad)}},
      {"aimesh_svc_load", sizeof(aimesh_svc_load), {AIMESH_MEMBER(aimesh_svc_load, active)}},
      {"aimesh_be_signal",
       sizeof(aimesh_be_signal),
       {AIMESH_MEMBER(aimesh_be_signal, queue_depth), AIMESH_MEMBER(aimesh_be_signal, running),
        AIMESH_MEMBER(aimesh_be_signal, kv_cache_permille), AIMESH_MEMBER(aimesh_be_signal, valid)}},
      {"aimesh_config",
       sizeof(aimesh_config),
       {AIMESH_MEMBER(aimesh_config, ewma_tau_ns), AIMESH_MEMBER(aimesh_config, penalty_half_life_ns),
        AIMESH_MEMBER(aimesh_config, eject_base_ns), AIMESH_MEMBER(aimesh_config, eject_max_ns),
        AIMESH_MEMBER(aimesh_config, penalty_per_failure), AIMESH_MEMBER(aimesh_config, eject_after), AIMESH_MEMBER(aimesh_config, ct_tcp_timeout_ns),
        AIMESH_MEMBER(aimesh_config, ct_udp_timeout_ns), AIMESH_MEMBER(aimesh_config, ct_closing_timeout_ns)}},
      {"aimesh_sock",
       sizeof(aimesh_sock),
       {AIMESH_MEMBER(aimesh_sock, service_id), AIMESH_MEMBER(aimesh_sock, backend_id),
        AIMESH_MEMBER(aimesh_sock, connect_ns), AIMESH_MEMBER(aimesh_sock, established_ns),
        AIMESH_MEMBER(aimesh_sock, req_start_ns), AIMESH_MEMBER(aimesh_sock, last_in_ns),
        AIMESH_MEMBER(aimesh_sock, chunks), AIMESH_MEMBER(aimesh_sock, requests), AIMESH_MEMBER(aimesh_sock, phase),
        AIMESH_MEMBER(aimesh_sock, flags), AIMESH_MEMBER(aimesh_sock, proto), AIMESH_MEMBER(aimesh_sock, framing),
        AIMESH_MEMBER(aimesh_sock, chunk_st), AIMESH_MEMBER(aimesh_sock, close_reason), AIMESH_MEMBER(aimesh_sock, timed_slot),
        AIMESH_MEMBER(aimesh_sock, cookie), AIMESH_MEMBER(aimesh_sock, body_left), AIMESH_MEMBER(aimesh_sock, idle_ns),
        AIMESH_MEMBER(aimesh_sock, doomed_ns), AIMESH_MEMBER(aimesh_sock, be_addr), AIMESH_MEMBER(aimesh_sock, be_port),
        AIMESH_MEMBER(aimesh_sock, pad1), AIMESH_MEMBER(aimesh_sock, pad2), AIMESH_MEMBER(aimesh_sock, cgroup_id)}},
      {"aimesh_lc_ctl",
       sizeof(aimesh_lc_ctl),
       {AIMESH_MEMBER(aimesh_lc_ctl, idle_guard_ns), AIMESH_MEMBER(aimesh_lc_ctl, new_idle_ns),
        AIMESH_MEMBER(aimesh_lc_ctl, drain_timeout_ns), AIMESH_MEMBER(aimesh_lc_ctl, flags),
        AIMESH_MEMBER(aimesh_lc_ctl, pad)}},
      {"aimesh_lc_svc",
       sizeof(aimesh_lc_svc),
       {AIMESH_MEMBER(aimesh_lc_svc, max_age_ns), AIMESH_MEMBER(aimesh_lc_svc, drain_timeout_ns),
        AIMESH_MEMBER(aimesh_lc_svc, max_requests), AIMESH_MEMBER(aimesh_lc_svc, flags)}},
      {"aimesh_lc_be", sizeof(aimesh_lc_be), {AIMESH_MEMBER(aimesh_lc_be, rebalance), AIMESH_MEMBER(aimesh_lc_be, pad)}},
      {"aimesh_conn",
       sizeof(aimesh_conn),
       {AIMESH_MEMBER(aimesh_conn, cookie), AIMESH_MEMBER(aimesh_conn, age_ns), AIMESH_MEMBER(aimesh_conn, idle_ns),
        AIMESH_MEMBER(aimesh_conn, service_id), AIMESH_MEMBER(aimesh_conn, backend_id),
        AIMESH_MEMBER(aimesh_conn, requests), AIMESH_MEMBER(aimesh_conn, proto), AIMESH_MEMBER(aimesh_conn, state),
        AIMESH_MEMBER(aimesh_conn, closed), AIMESH_MEMBER(aimesh_conn, gone), AIMESH_MEMBER(aimesh_conn, saddr),
        AIMESH_MEMBER(aimesh_conn, daddr), AIMESH_MEMBER(aimesh_conn, sport), AIMESH_MEMBER(aimesh_conn, dport),
        AIMESH_MEMBER(aimesh_conn, pad)}},
      {"aimesh_lc_test_ctx",
       sizeof(aimesh_lc_test_ctx),
       {AIMESH_MEMBER(aimesh_lc_test_ctx, sock), AIMESH_MEMBER(aimesh_lc_test_ctx, daddr),
        AIMESH_MEMBER(aimesh_lc_test_ctx, dport), AIMESH_MEMBER(aimesh_lc_test_ctx, tcp_state),
        AIMESH_MEMBER(aimesh_lc_test_ctx, pad0), AIMESH_MEMBER(aimesh_lc_test_ctx, unacked),
        AIMESH_MEMBER(aimesh_lc_test_ctx, unread), AIMESH_MEMBER(aimesh_lc_test_ctx, pad1),
        AIMESH_MEMBER(aimesh_lc_test_ctx, now_ns), AIMESH_MEMBER(aimesh_lc_test_ctx, state),
        AIMESH_MEMBER(aimesh_lc_test_ctx, closed), AIMESH_MEMBER(aimesh_lc_test_ctx, gone),
        AIMESH_MEMBER(aimesh_lc_test_ctx, pad2)}},
      {"aimesh_event",
       sizeof(aimesh_event),
       {AIMESH_MEMBER(aimesh_event, ts_ns), AIMESH_MEMBER(aimesh_event, cookie),
        AIMESH_MEMBER(aimesh_event, duration_ns), AIMESH_MEMBER(aimesh_event, bytes_sent),
        AIMESH_MEMBER(aimesh_event, bytes_received), AIMESH_MEMBER(aimesh_event, service_id),
        AIMESH_MEMBER(aimesh_event, backend_id), AIMESH_MEMBER(aimesh_event, requests),
        AIMESH_MEMBER(aimesh_event, retransmits), AIMESH_MEMBER(aimesh_event, type), AIMESH_MEMBER(aimesh_event, pad),
        AIMESH_MEMBER(aimesh_event, cgroup_id)}},
      {"aimesh_hist_ctx",
       sizeof(aimesh_hist_ctx),
       {AIMESH_MEMBER(aimesh_hist_ctx, ns), AIMESH_MEMBER(aimesh_hist_ctx, bucket), AIMESH_MEMBER(aimesh_hist_ctx, pad)}},
      {"aimesh_select_ctx",
       sizeof(aimesh_select_ctx),
       {AIMESH_MEMBER(aimesh_select_ctx, hash_key), AIMESH_MEMBER(aimesh_select_ctx, service_id),
        AIMESH_MEMBER(aimesh_select_ctx, rnd), AIMESH_MEMBER(aimesh_select_ctx, family),
        AIMESH_MEMBER(aimesh_select_ctx, pad), AIMESH_MEMBER(aimesh_select_ctx, err),
        AIMESH_MEMBER(aimesh_select_ctx, backend_id), AIMESH_MEMBER(aimesh_select_ctx, target_id)}},
  };
  return t;
}

#undef AIMESH_MEMBER

using testing::bpfObjects;

struct BtfDeleter {
  void operator()(btf* b) const { btf__free(b); }
};
struct ObjectDeleter {
  void operator()(bpf_object* o) const { bpf_object__close(o); }
};

// Compares one struct's BTF layout with the C++ table. Returns the structs'
// failures as text (empty if they agree).
std::vector<std::string> compareStruct(const btf* b, const btf_type* t, const StructLayout& want,
                                       const std::string& obj) {
  std::vector<std::string> errs;
  const std::string where = obj + ": struct " + want.name;
  if (t->size != want.size)
    errs.push_back(where + ": size BTF " + std::to_string(t->size) + " != C++ sizeof " + std::to_string(want.size));

  std::map<std::string, const btf_member*> btfMembers;
  const btf_member* m = btf_members(t);
  for (uint16_t i = 0; i < btf_vlen(t); ++i, ++m) {
    const char* name = btf__name_by_offset(b, m->name_off);
    std::string n = name ? name : "";
    btfMembers[n] = m;
    uint32_t bitOff = btf_member_bit_offset(t, i);
    if (btf_member_bitfield_size(t, i) != 0 || bitOff % 8 != 0)
      errs.push_back(where + ": member " + n + " is a bitfield or not byte aligned (BTF bit offset " +
                     std::to_string(bitOff) + ")");
    bool known = std::any_of(want.members.begin(), want.members.end(),
                             [&](const MemberLayout& ml) { return ml.name == n; });
    if (!known)
      errs.push_back(where + ": BTF member " + n + " (BTF offset " + std::to_string(bitOff / 8) +
                     ") is not in the C++ table of this test: abi.h changed, update the table");
  }
  for (const auto& ml : want.members) {
    auto it = btfMembers.find(ml.name);
    if (it == btfMembers.end()) {
      errs.push_back(where + ": member " + ml.name + " (C++ offset " + std::to_string(ml.offset) +
                     ") missing from BTF");
      continue;
    }
    auto idx = static_cast<uint32_t>(it->second - btf_members(t));
    uint32_t btfOff = btf_member_bit_offset(t, idx) / 8;
    if (btfOff != ml.offset)
      errs.push_back(where + ": member " + ml.name + " BTF offset " + std::to_string(btfOff) +
                     " != C++ offset " + std::to_string(ml.offset));
    long sz = btf__resolve_size(b, it->second->type);
    if (sz < 0 || static_cast<size_t>(sz) != ml.size)
      errs.push_back(where + ": member " + ml.name + " BTF size " + std::to_string(sz) + " != C++ size " +
                     std::to_string(ml.size));
  }
  return errs;
}

TEST(BtfLayout, ObjectsExist) {
  auto objs = bpfObjects();
  EXPECT_FALSE(objs.empty()) << "no *.bpf.o in " << AIMESH_BPF_DIR << " (build the bpf_objects target)";
  EXPECT_TRUE(std::any_of(objs.begin(), objs.end(), [](const std::string& p) {
    return fs::path(p).filename() == "sock_lb.bpf.o";
  })) << "no sock_lb.bpf.o in " << AIMESH_BPF_DIR;
}

TEST(BtfLayout, AbiStructsMatchCxx) {
  std::set<std::string> seen;
  for (const auto& path : bpfObjects()) {
    const std::string obj = fs::path(path).filename().string();
    std::unique_ptr<btf, BtfDeleter> b(btf__parse_elf(path.c_str(), nullptr));
    ASSERT_TRUE(b) << "btf__parse_elf(" << path << ") failed: errno " << errno << " (built without -g?)";
    for (const auto& want : cxxLayouts()) {
      int id = btf__find_by_name_kind(b.get(), want.name.c_str(), BTF_KIND_STRUCT);
      if (id < 0) continue;  // this object does not use the struct
      seen.insert(want.name);
      for (const auto& e : compareStruct(b.get(), btf__type_by_id(b.get(), static_cast<uint32_t>(id)), want, obj))
        ADD_FAILURE() << e;
    }
  }
  // Every abi.h struct must be checked against at least one object, or the
  // check above says nothing about it.
  for (const auto& want : cxxLayouts())
    EXPECT_TRUE(seen.count(want.name)) << "struct " << want.name << " is in no object's BTF in " << AIMESH_BPF_DIR;
}

struct MapAbi {
  std::string key;    // BTF type name of the key
  size_t keySize;
  std::string value;  // BTF type name of the value
  size_t valueSize;
  uint32_t maxEntries;
};

const std::map<std::string, MapAbi>& mapAbis() {
  static const std::map<std::string, MapAbi> m = {
      {"aimesh_frontends",
       {"aimesh_frontend_key", sizeof(aimesh_frontend_key), "aimesh_frontend", sizeof(aimesh_frontend),
        AIMESH_MAX_FRONTENDS}},
      {"aimesh_services", {"__u32", sizeof(__u32), "aimesh_service", sizeof(aimesh_service), AIMESH_MAX_SERVICES}},
      {"aimesh_slots",
       {"aimesh_slot_key", sizeof(aimesh_slot_key), "aimesh_slot", sizeof(aimesh_slot), AIMESH_MAX_SLOTS}},
      {"aimesh_backends", {"__u32", sizeof(__u32), "aimesh_backend", sizeof(aimesh_backend), AIMESH_MAX_BACKENDS}},
      {"aimesh_revnat",
       {"aimesh_revnat_key", sizeof(aimesh_revnat_key), "aimesh_revnat", sizeof(aimesh_revnat), AIMESH_MAX_REVNAT}},
      {"aimesh_svc_stats",
       {"__u32", sizeof(__u32), "aimesh_svc_stats", sizeof(aimesh_svc_stats), AIMESH_MAX_SERVICES}},
      {"aimesh_be_stats", {"__u32", sizeof(__u32), "aimesh_be_stats", sizeof(aimesh_be_stats), AIMESH_MAX_BACKENDS}},
      {"aimesh_reasons", {"__u32", sizeof(__u32), "__u64", sizeof(__u64), AIMESH_R_MAX}},
      {"aimesh_sockets", {"int", sizeof(int), "aimesh_sock", sizeof(aimesh_sock), 0}},
      {"aimesh_hist",
       {"__u32", sizeof(__u32), "aimesh_hist", sizeof(aimesh_hist), AIMESH_MAX_BACKENDS * AIMESH_M_MAX}},
      {"aimesh_be_tel", {"__u32", sizeof(__u32), "aimesh_be_tel", sizeof(aimesh_be_tel), AIMESH_MAX_BACKENDS}},
      {"aimesh_be_load", {"__u32", sizeof(__u32), "aimesh_be_load", sizeof(aimesh_be_load), AIMESH_MAX_BACKENDS}},
      {"aimesh_svc_load", {"__u32", sizeof(__u32), "aimesh_svc_load", sizeof(aimesh_svc_load), AIMESH_MAX_SERVICES}},
      {"aimesh_be_signal",
       {"__u32", sizeof(__u32), "aimesh_be_signal", sizeof(aimesh_be_signal), AIMESH_MAX_BACKENDS}},
      {"aimesh_config", {"__u32", sizeof(__u32), "aimesh_config", sizeof(aimesh_config), 1}},
      {"aimesh_policy",
       {"aimesh_policy_key", sizeof(aimesh_policy_key), "aimesh_policy", sizeof(aimesh_policy), AIMESH_MAX_POLICY}},
      {"aimesh_clients",
       {"aimesh_client_key", sizeof(aimesh_client_key), "aimesh_client_stats", sizeof(aimesh_client_stats),
        AIMESH_MAX_CLIENTS}},
      {"aimesh_splits", {"__u32", sizeof(__u32), "aimesh_split", sizeof(aimesh_split), AIMESH_MAX_SERVICES}},
      {"aimesh_split_stats",
       {"aimesh_split_stats_key", sizeof(aimesh_split_stats_key), "aimesh_split_stats", sizeof(aimesh_split_stats),
        AIMESH_MAX_SERVICES}},
      {"aimesh_ct", {"aimesh_ct_key", sizeof(aimesh_ct_key), "aimesh_ct", sizeof(aimesh_ct), AIMESH_MAX_CT}},
      {"aimesh_timed", {"__u32", sizeof(__u32), "__u32", sizeof(__u32), AIMESH_TIMED_SLOTS}},
      // The lifecycle iterators' own maps (sock_iter, lc_harness; not pinned).
      {"aimesh_lc_ctl", {"__u32", sizeof(__u32), "aimesh_lc_ctl", sizeof(aimesh_lc_ctl), 1}},
      {"aimesh_lc_svc", {"__u32", sizeof(__u32), "aimesh_lc_svc", sizeof(aimesh_lc_svc), AIMESH_MAX_SERVICES}},
      {"aimesh_lc_be", {"__u32", sizeof(__u32), "aimesh_lc_be", sizeof(aimesh_lc_be), AIMESH_MAX_BACKENDS}},
      // sock_telemetry's per-CPU copy of a response head (bpf/lib/http1.h).
      {"aimesh_h1_scratch", {"__u32", sizeof(__u32), "h1_buf", 512 + 16, 1}},
      // An array of maps holds map fds (4 bytes) with no BTF value type; each
      // inner map is an array of backend ids (checked by the e2e tests).
      {"aimesh_hash_tables", {"__u32", sizeof(__u32), "<no BTF type>", sizeof(__u32), AIMESH_MAX_SERVICES}},
      // A ring buffer has no key or value type; max_entries is its size in bytes.
      {"aimesh_events", {"<no BTF type>", 0, "<no BTF type>", 0, AIMESH_EVENTS_BYTES}},
  };
  return m;
}

std::string btfTypeName(const btf* b, uint32_t id) {
  if (!b || id == 0) return "<no BTF type>";
  const btf_type* t = btf__type_by_id(b, id);
  if (!t) return "<bad BTF id " + std::to_string(id) + ">";
  const char* n = btf__name_by_offset(b, t->name_off);
  return n && *n ? n : "<anonymous>";
}

// Each aimesh map in every object uses the abi.h key/value type (by BTF name
// and by size) and limit; sock_lb has every map. Opening parses only.
TEST(BtfLayout, MapTypesMatchAbi) {
  for (const auto& path : bpfObjects()) {
    const std::string obj = fs::path(path).filename().string();
    std::unique_ptr<bpf_object, ObjectDeleter> o(bpf_object__open_file(path.c_str(), nullptr));
    ASSERT_TRUE(o) << "bpf_object__open_file(" << path << ") failed: errno " << errno;
    const btf* b = bpf_object__btf(o.get());
    std::set<std::string> found;
    bpf_map* m;
    bpf_object__for_each_map(m, o.get()) {
      if (bpf_map__is_internal(m)) continue;  // .rodata, .bss, ...
      const std::string name = bpf_map__name(m);
      auto it = mapAbis().find(name);
      if (it == mapAbis().end()) {
        if (name.starts_with("aimesh_"))
          ADD_FAILURE() << obj << ": map " << name << " is not in this test's table: add its abi.h types";
        continue;
      }
      found.insert(name);
      const MapAbi& want = it->second;
      EXPECT_EQ(bpf_map__key_size(m), want.keySize) << obj << ": map " << name << " key size";
      EXPECT_EQ(bpf_map__value_size(m), want.valueSize) << obj << ": map " << name << " value size";
      EXPECT_EQ(bpf_map__max_entries(m), want.maxEntries) << obj << ": map " << name << " max_entries";
      EXPECT_EQ(btfTypeName(b, bpf_map__btf_key_type_id(m)), want.key) << obj << ": map " << name << " BTF key type";
      EXPECT_EQ(btfTypeName(b, bpf_map__btf_value_type_id(m)), want.value)
          << obj << ": map " << name << " BTF value type";
    }
    if (obj == "sock_lb.bpf.o") {
      // sock_lb creates every pinned map but the TC path's conntrack table,
      // which only exists (and costs memory) when --tc-interfaces is given.
      // The lifecycle maps and the head scratch belong to their objects.
      for (const auto& [name, abi] : mapAbis())
        EXPECT_TRUE(name == "aimesh_ct" || name.starts_with("aimesh_lc_") || name == "aimesh_h1_scratch" ||
                    found.count(name))
            << obj << " has no map " << name;
    }
    EXPECT_TRUE(obj != "tc_lb.bpf.o" || found.count("aimesh_ct")) << obj << " has no map aimesh_ct";
  }
}

}  // namespace
}  // namespace aimesh
