/* Backend selection, shared by every data path and driven directly by the
 * SEC("syscall") test harness. Takes plain ids and a random number so a test
 * can make it deterministic. */
#ifndef AIMESH_BPF_LB_H
#define AIMESH_BPF_LB_H

#include "lib/maps.h"

/* Next pseudo-random number for a retry (LCG, Numerical Recipes constants):
 * retries stay deterministic for a given first number. */
static __always_inline __u32 lb_next_rnd(__u32 rnd)
{
	return rnd * 1664525u + 1013904223u;
}

/* Weighted random: weights were expanded into slot_count slots by the agent,
 * so a uniform pick over slots is a weighted pick over backends. A pick that
 * lands on a backend that cannot take the connection (drained a moment ago,
 * or not of the required `family`: an IPv4 socket needs an IPv4 backend, an
 * unconnected IPv6 UDP send an IPv6 one) is counted and retried a few times.
 * Returns 0 and sets *backend_id / *out, or -ECONNREFUSED. */
static __always_inline int lb_select(__u32 service_id, __u32 rnd, int family,
				     __u32 *backend_id, struct aimesh_backend **out)
{
	struct aimesh_service *svc;
	struct aimesh_slot_key sk = {};
	struct aimesh_slot *slot;
	struct aimesh_backend *be;
	__u32 count, base;
	int i;

	svc = bpf_map_lookup_elem(&aimesh_services, &service_id);
	if (!svc) {
		count_reason(AIMESH_R_SERVICE_MISSING);
		return -ECONNREFUSED;
	}
	/* Read the record once: count and generation must come from the same one. */
	count = svc->slot_count;
	base = (svc->slot_gen & 1) * AIMESH_MAX_SLOTS_PER_SVC;
	if (count == 0 || count > AIMESH_MAX_SLOTS_PER_SVC) {
		count_reason(AIMESH_R_NO_BACKEND);
		return -ECONNREFUSED;
	}

	sk.service_id = service_id;
	for (i = 0; i < AIMESH_SELECT_TRIES; i++) {
		sk.slot = base + rnd % count;
		rnd = lb_next_rnd(rnd);
		slot = bpf_map_lookup_elem(&aimesh_slots, &sk);
		if (!slot) {
			count_reason(AIMESH_R_SLOT_MISSING);
			continue;
		}
		be = bpf_map_lookup_elem(&aimesh_backends, &slot->backend_id);
		if (!be) {
			count_reason(AIMESH_R_BACKEND_MISSING);
			continue;
		}
		if (be->state != AIMESH_BE_ACTIVE || be->weight == 0) {
			count_reason(AIMESH_R_BACKEND_INACTIVE);
			continue;
		}
		if (family && be->family != family) {
			count_reason(AIMESH_R_FAMILY_MISMATCH);
			continue;
		}
		*backend_id = slot->backend_id;
		*out = be;
		return 0;
	}
	count_reason(AIMESH_R_NO_BACKEND);
	return -ECONNREFUSED;
}

#endif
