/* Log-linear latency histograms (layout in aimesh/abi.h, AIMESH_HIST_*). */
#ifndef AIMESH_BPF_HIST_H
#define AIMESH_BPF_HIST_H

#include "lib/maps.h"

/* Index of the highest set bit (v > 0), without loops: six halving steps. */
static __always_inline __u32 hist_fls64(__u64 v)
{
	__u32 r = 0;

	if (v >> 32) { v >>= 32; r += 32; }
	if (v >> 16) { v >>= 16; r += 16; }
	if (v >> 8) { v >>= 8; r += 8; }
	if (v >> 4) { v >>= 4; r += 4; }
	if (v >> 2) { v >>= 2; r += 2; }
	if (v >> 1) { r += 1; }
	return r;
}

static __always_inline __u32 hist_bucket(__u64 ns)
{
	__u32 k;

	if (ns < (1ULL << AIMESH_HIST_MIN_SHIFT))
		return 0;
	if (ns >= (1ULL << AIMESH_HIST_MAX_SHIFT))
		return AIMESH_HIST_BUCKETS - 1;
	k = hist_fls64(ns);
	return 1 + (k - AIMESH_HIST_MIN_SHIFT) * AIMESH_HIST_SUBS +
	       ((ns >> (k - AIMESH_HIST_SUB_BITS)) & (AIMESH_HIST_SUBS - 1));
}

/* Per-CPU: plain increments, no atomics. */
static __always_inline void hist_record(__u32 backend_id, __u32 metric, __u64 ns)
{
	struct aimesh_hist *h;
	__u32 idx, b;

	if (backend_id >= AIMESH_MAX_HIST_BACKENDS || metric >= AIMESH_M_MAX) {
		count_reason(AIMESH_R_HIST_RANGE);
		return;
	}
	idx = backend_id * AIMESH_M_MAX + metric;
	h = bpf_map_lookup_elem(&aimesh_hist, &idx);
	if (!h)
		return;
	b = hist_bucket(ns);
	if (b < AIMESH_HIST_BUCKETS)
		h->buckets[b] += 1;
	h->count += 1;
	h->sum_ns += ns;
}

#endif
