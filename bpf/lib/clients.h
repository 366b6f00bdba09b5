/* Who calls which service: per (calling cgroup, service) counters in
 * aimesh_clients. The connect/sendmsg hooks count calls (made, refused,
 * denied) and create the entry; the telemetry counts requests of sampled
 * connections into the entry their connect made. */
#ifndef AIMESH_BPF_CLIENTS_H
#define AIMESH_BPF_CLIENTS_H

#include "lib/maps.h"

/* What a new entry starts from (read-only data, never written). */
static const struct aimesh_client_stats client_zero;

/* The entry of (cgroup_id, service_id), made if `create` and missing. A
 * full map is counted (AIMESH_R_CLIENT_FULL) and the call goes uncounted
 * per client; every other counter stays exact. */
static __always_inline struct aimesh_client_stats *client_stats(__u64 cgroup_id, __u32 service_id, int create)
{
	struct aimesh_client_key k = {};
	struct aimesh_client_stats *c;

	k.cgroup_id = cgroup_id;
	k.service_id = service_id;
	c = bpf_map_lookup_elem(&aimesh_clients, &k);
	if (c || !create)
		return c;
	bpf_map_update_elem(&aimesh_clients, &k, &client_zero, BPF_NOEXIST);
	c = bpf_map_lookup_elem(&aimesh_clients, &k);
	if (!c)
		count_reason(AIMESH_R_CLIENT_FULL);
	return c;
}

#endif
