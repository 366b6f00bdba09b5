/* Endpoint health in aimesh_be_load, shared by its writer (lib/telemetry.h:
 * failed connects add a penalty) and its reader (lib/lb.h: the penalty is
 * part of an endpoint's load). The tunables are in aimesh_config. */
#ifndef AIMESH_BPF_HEALTH_H
#define AIMESH_BPF_HEALTH_H

#include "lib/maps.h"

static __always_inline struct aimesh_config *health_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&aimesh_config, &zero);
}

/* The failure penalty at `now`: it halves every penalty_half_life_ns. */
static __always_inline __u64 health_penalty(const struct aimesh_be_load *l, const struct aimesh_config *cfg,
					    __u64 now)
{
	__u64 hl = cfg && cfg->penalty_half_life_ns ? cfg->penalty_half_life_ns : AIMESH_DEFAULT_PENALTY_HALF_LIFE_NS;
	__u64 halvings;

	if (!l->penalty || now <= l->penalty_ts_ns)
		return l->penalty;
	halvings = (now - l->penalty_ts_ns) / hl;
	return halvings >= 32 ? 0 : l->penalty >> halvings;
}

#endif
