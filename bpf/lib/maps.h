/* Every map of the socket data plane, defined once.
 *
 * The maps the agent updates while programs read them are BPF_F_NO_PREALLOC
 * hash maps: an update links in a new element and frees the old one after an
 * RCU grace period, so a reader holding a value pointer sees the old record
 * or the new one, never a mix (a preallocated map recycles the old element at
 * once, and a concurrent update could overwrite it under the reader).
 * Names are the pin names
 * (LIBBPF_PIN_BY_NAME under the agent's pin dir), so a restarted agent and
 * every object share the same maps. Key/value types come from aimesh/abi.h. */
#ifndef AIMESH_BPF_MAPS_H
#define AIMESH_BPF_MAPS_H

#include "lib/common.h"

/* service address (addr, port, proto) -> service id */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AIMESH_MAX_FRONTENDS);
	__type(key, struct aimesh_frontend_key);
	__type(value, struct aimesh_frontend);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} aimesh_frontends SEC(".maps");

/* service id -> service record; HASH so an update swaps the whole value */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AIMESH_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct aimesh_service);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} aimesh_services SEC(".maps");

/* (service id, generation * MAX_SLOTS_PER_SVC + index) -> backend id */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AIMESH_MAX_SLOTS);
	__type(key, struct aimesh_slot_key);
	__type(value, struct aimesh_slot);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} aimesh_slots SEC(".maps");

/* backend id -> address, port, state, weight */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AIMESH_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct aimesh_backend);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} aimesh_backends SEC(".maps");

/* split service id -> its backend services and weights (lib/lb.h) */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AIMESH_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct aimesh_split);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} aimesh_splits SEC(".maps");

/* (socket cookie, backend addr, port) -> frontend, for getpeername/recvmsg */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, AIMESH_MAX_REVNAT);
	__type(key, struct aimesh_revnat_key);
	__type(value, struct aimesh_revnat);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} aimesh_revnat SEC(".maps");

/* The counters below are shared by every CPU (not per-CPU arrays: a copy per
 * possible CPU made them grow to hundreds of MiB on big nodes) and updated
 * with atomic adds (stat_add). */

/* per-service counters, indexed by service id */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, AIMESH_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct aimesh_svc_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} aimesh_svc_stats SEC(".maps");

/* per-backend counters, indexed by backend id */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, AIMESH_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct aimesh_be_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} aimesh_be_stats SEC(".maps");

/* drop/deny/skip counters, indexed by enum aimesh_reason */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, AIMESH_R_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} aimesh_reasons SEC(".maps");

/* per-socket state of sockets connected through a service (freed with the
 * socket); created by the connect hook, used by sock_ops and cgroup_skb */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct aimesh_sock);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} aimesh_sockets SEC(".maps");

/* latency histograms, key backend id * AIMESH_M_MAX + metric. A histogram is
 * created by the first sample of its endpoint and metric (lib/hist.h), so
 * memory follows the endpoints that carry traffic from this node, not
 * --max-backends; shared by every CPU, updated with atomic adds. The agent
 * deletes an endpoint's histograms when it gives the id to another. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AIMESH_MAX_BACKENDS * AIMESH_M_MAX);
	__type(key, __u32);
	__type(value, struct aimesh_hist);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} aimesh_hist SEC(".maps");

/* per-backend connection lifecycle counters, indexed by backend id */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, AIMESH_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct aimesh_be_tel);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} aimesh_be_tel SEC(".maps");

/* live load per backend (open connections); shared with the balancer */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, AIMESH_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct aimesh_be_load);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} aimesh_be_load SEC(".maps");

/* (client cgroup id, service id) -> allow, for services with
 * AIMESH_SVC_F_POLICY (lib/policy.h) */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AIMESH_MAX_POLICY);
	__type(key, struct aimesh_policy_key);
	__type(value, struct aimesh_policy);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} aimesh_policy SEC(".maps");

/* (calling cgroup, service) -> counters (lib/clients.h). An entry is made by
 * the client's first call to the service; the agent deletes those of cgroups
 * that are gone and of service ids it gives to another service. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AIMESH_MAX_CLIENTS);
	__type(key, struct aimesh_client_key);
	__type(value, struct aimesh_client_stats);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} aimesh_clients SEC(".maps");

/* (split, backend service) -> what the split sent there (lib/lb.h). An entry
 * is made by the first connection; the agent deletes those of service ids it
 * gives to another service. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, AIMESH_MAX_SERVICES);
	__type(key, struct aimesh_split_stats_key);
	__type(value, struct aimesh_split_stats);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} aimesh_split_stats SEC(".maps");

/* tuple-hash slot -> open timed sockets hashing to it (lib/timed.h) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, AIMESH_TIMED_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} aimesh_timed SEC(".maps");

/* service id -> open connections over its backends (sock_ops writes) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, AIMESH_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct aimesh_svc_load);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} aimesh_svc_load SEC(".maps");

/* backend id -> scraped model-server signals (agent writes) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, AIMESH_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct aimesh_be_signal);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} aimesh_be_signal SEC(".maps");

/* [0] -> data-plane tunables (agent writes at start) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct aimesh_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} aimesh_config SEC(".maps");

/* service id -> its maglev/bounded_hash table: an array of hash_size backend
 * ids, built by the agent and swapped in with one update of this map.
 * BPF_F_INNER_MAP lets each service's table have its own size. */
struct aimesh_hash_table {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, AIMESH_DEFAULT_HASH_SIZE);
	__uint(map_flags, BPF_F_INNER_MAP);
	__type(key, __u32);
	__type(value, __u32);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, AIMESH_MAX_SERVICES);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct aimesh_hash_table);
} aimesh_hash_tables SEC(".maps");

/* connection open/close/failure records for meshctl flows */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, AIMESH_EVENTS_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} aimesh_events SEC(".maps");

/* Adds to a counter of a shared map. Two CPUs adding to the same counter at
 * the same moment contend for its cache line; nothing else does. */
#define stat_add(field, n) __sync_fetch_and_add(&(field), (n))

static __always_inline void count_reason(__u32 reason)
{
	__u64 *v = bpf_map_lookup_elem(&aimesh_reasons, &reason);

	if (v)
		*v += 1; /* per-CPU: no atomics needed */
}

#endif
