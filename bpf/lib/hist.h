/* Latency histograms in Prometheus' schema-3 buckets (aimesh/abi.h, AIMESH_HIST_*). */
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

/* The bucket of a value (aimesh/abi.h: Prometheus schema 3, in integers). */
static __always_inline __u32 hist_bucket(__u64 ns)
{
	__u32 k, cnt;
	__u64 m;

	if (ns < AIMESH_HIST_MIN_NS)
		return 0;
	if (ns >= AIMESH_HIST_MAX_NS)
		return AIMESH_HIST_BUCKETS - 1;
	k = hist_fls64(ns); /* 9..36 here */
	m = k >= 16 ? ns >> (k - 16) : ns << (16 - k);
	/* How many thresholds m reaches, in at most four comparisons (BPF
	 * has no set-on-compare: each comparison is a branch). */
	if (m < AIMESH_HIST_T3)
		cnt = m < AIMESH_HIST_T1 ? (m < AIMESH_HIST_T0 ? 0 : 1) : (m < AIMESH_HIST_T2 ? 2 : 3);
	else if (m < AIMESH_HIST_T5)
		cnt = m < AIMESH_HIST_T4 ? 4 : 5;
	else
		cnt = m < AIMESH_HIST_T6 ? 6 : (m < AIMESH_HIST_T7 ? 7 : 8);
	return 8 * k + cnt - AIMESH_HIST_INDEX_OFFSET - AIMESH_HIST_MIN_INDEX;
}

/* What a new histogram starts from (read-only data, never written). */
static const struct aimesh_hist hist_zero;

/* The first sample of an endpoint and metric creates its histogram. Two CPUs
 * doing that at once: one insert wins, the other's BPF_NOEXIST fails, and
 * both find the winner's. A histogram is shared by every CPU: two atomic
 * adds per sample (the count is the buckets' sum). */
static __always_inline void hist_record(__u32 backend_id, __u32 metric, __u64 ns)
{
	__u32 key = backend_id * AIMESH_M_MAX + metric, b;
	struct aimesh_hist *h = bpf_map_lookup_elem(&aimesh_hist, &key);

	if (!h) {
		bpf_map_update_elem(&aimesh_hist, &key, &hist_zero, BPF_NOEXIST);
		h = bpf_map_lookup_elem(&aimesh_hist, &key);
		if (!h) {
			count_reason(AIMESH_R_HIST_FULL);
			return;
		}
	}
	b = hist_bucket(ns);
	if (b < AIMESH_HIST_BUCKETS)
		stat_add(h->buckets[b], 1);
	stat_add(h->sum_ns, ns);
}

#endif
