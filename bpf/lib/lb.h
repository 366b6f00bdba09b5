/* Backend selection, shared by every data path and driven directly by the
 * SEC("syscall") test harness. Takes plain ids, a random number and a hash
 * key so a test can make it deterministic.
 *
 * Algorithms (enum aimesh_algorithm, per service):
 *   random       weighted random over the service's slots
 *   least_conn   the backend with the least load per unit of weight: every
 *                backend when the service has at most AIMESH_LB_SCAN_MAX
 *                slots, else the better of two weighted-random candidates
 *                (power of two choices)
 *   latency      the same, on cost = peak-EWMA time to first token x load
 *   maglev       the client's entry in the service's Maglev table
 *   bounded_hash the same table, but an entry whose backend holds more than
 *                balance_pct % of the service's average load is passed over
 *                for the next one
 * Load = open connections + queued requests (scraped) + failure penalty.
 * Every algorithm skips draining and weight-0 backends, backends of the wrong
 * family, and backends in failure back-off (unless every pick is). */
#ifndef AIMESH_BPF_LB_H
#define AIMESH_BPF_LB_H

#include "lib/health.h"
#include "aimesh/hash.h"

/* Next pseudo-random number for a retry (LCG, Numerical Recipes constants):
 * retries stay deterministic for a given first number. */
static __always_inline __u32 lb_next_rnd(__u32 rnd)
{
	return rnd * 1664525u + 1013904223u;
}

/* State of one selection: the clock is read at most once, and only when a
 * backend has a penalty or a back-off to compare with. */
struct lb_ctx {
	__u32 service_id;
	int family;
	__u64 now;
	struct aimesh_config *cfg;
};

static __always_inline __u64 lb_now(struct lb_ctx *c)
{
	if (!c->now)
		c->now = bpf_ktime_get_ns();
	return c->now;
}

/* The failure penalty now (the clock is read only if there is one). */
static __always_inline __u64 lb_penalty(struct lb_ctx *c, const struct aimesh_be_load *l)
{
	return l->penalty ? health_penalty(l, c->cfg, lb_now(c)) : 0;
}

/* Busy connections (open ones, less those idle between requests: a pooled
 * keep-alive connection waiting for its next request is no load) + queued
 * requests + penalty, capped at 65535. */
static __always_inline __u64 lb_load(struct lb_ctx *c, __u32 backend_id)
{
	struct aimesh_be_load *l = bpf_map_lookup_elem(&aimesh_be_load, &backend_id);
	struct aimesh_be_signal *sig = bpf_map_lookup_elem(&aimesh_be_signal, &backend_id);
	__s64 busy;
	__u64 load = 0;

	if (l) {
		busy = l->active - (l->idle > 0 ? l->idle : 0);
		load = busy > 0 ? (__u64)busy : 0;
		load += lb_penalty(c, l);
	}
	if (sig && sig->valid)
		load += sig->queue_depth;
	return load > 65535 ? 65535 : load;
}

/* In failure back-off: skipped while another backend can be had. */
static __always_inline int lb_ejected(struct lb_ctx *c, __u32 backend_id)
{
	struct aimesh_be_load *l = bpf_map_lookup_elem(&aimesh_be_load, &backend_id);

	return l && l->skip_until_ns && lb_now(c) < l->skip_until_ns;
}

/* Can this backend take a new connection of this call's family? */
static __always_inline int lb_usable(struct lb_ctx *c, const struct aimesh_backend *be)
{
	if (be->state != AIMESH_BE_ACTIVE || be->weight == 0) {
		count_reason(AIMESH_R_BACKEND_INACTIVE);
		return 0;
	}
	if (c->family && be->family != c->family) {
		count_reason(AIMESH_R_FAMILY_MISMATCH);
		return 0;
	}
	return 1;
}

/* The backend in slot sk of the service, if the slot and the backend exist
 * and the backend can take this call's connection; NULL otherwise (a missing
 * slot or backend is counted: the agent writes them before they are used). */
static __always_inline struct aimesh_backend *lb_slot_backend(struct lb_ctx *c, struct aimesh_slot_key *sk,
							      __u32 *backend_id)
{
	struct aimesh_backend *be;
	struct aimesh_slot *slot;

	slot = bpf_map_lookup_elem(&aimesh_slots, sk);
	if (!slot) {
		count_reason(AIMESH_R_SLOT_MISSING);
		return 0;
	}
	*backend_id = slot->backend_id;
	be = bpf_map_lookup_elem(&aimesh_backends, &slot->backend_id);
	if (!be) {
		count_reason(AIMESH_R_BACKEND_MISSING);
		return 0;
	}
	return lb_usable(c, be) ? be : 0;
}

/* One weighted-random candidate: a uniform pick over the slots (weights
 * were expanded into slots by the agent), retried a few times when it lands
 * on a backend that cannot take the connection or is in back-off. If every
 * usable pick was in back-off, the last of them is used (fail open). */
static __always_inline int lb_random(struct lb_ctx *c, const struct aimesh_service *svc, __u32 *rnd,
				     __u32 *backend_id, struct aimesh_backend **out)
{
	struct aimesh_slot_key sk = { .service_id = c->service_id };
	struct aimesh_backend *be, *fb = 0;
	__u32 count = svc->slot_count, base = (svc->slot_gen & 1) * AIMESH_MAX_SLOTS_PER_SVC, fb_id = 0, id = 0;
	int i;

	if (count == 0 || count > AIMESH_MAX_SLOTS_PER_SVC)
		return -ECONNREFUSED;
	for (i = 0; i < AIMESH_SELECT_TRIES; i++) {
		sk.slot = base + *rnd % count;
		*rnd = lb_next_rnd(*rnd);
		be = lb_slot_backend(c, &sk, &id);
		if (!be)
			continue;
		if (lb_ejected(c, id)) {
			count_reason(AIMESH_R_EJECTED_SKIPPED);
			fb = be;
			fb_id = id;
			continue;
		}
		*backend_id = id;
		*out = be;
		return 0;
	}
	if (fb) {
		count_reason(AIMESH_R_EJECTED_FALLBACK);
		*backend_id = fb_id;
		*out = fb;
		return 0;
	}
	return -ECONNREFUSED;
}

/* latency: peak-EWMA TTFT in microseconds, capped at 2^30. */
static __always_inline __u64 lb_ewma_us(__u32 backend_id)
{
	struct aimesh_be_load *l = bpf_map_lookup_elem(&aimesh_be_load, &backend_id);
	__u64 us = l ? l->ewma_ttft_ns >> 10 : 0;

	return us > (1ULL << 30) ? (1ULL << 30) : us;
}

/* Is candidate a strictly cheaper than b? Cost per unit of weight (compared
 * by cross-multiplying: at most 2^46 x 2^16): for `least_conn` the load, then
 * (on a tie) the open connections, so that idle backends with equal
 * connections tie and the caller's weighted-random order spreads them by
 * weight; for `latency` (load + 1) times the peak-EWMA TTFT (Finagle's
 * peak-EWMA cost). A backend without a TTFT sample yet costs what
 * the other one does per connection: neither starved nor flooded. */
/* Open connections (idle ones included), for least_conn's tie-break. */
static __always_inline __u64 lb_open(__u32 backend_id)
{
	struct aimesh_be_load *l = bpf_map_lookup_elem(&aimesh_be_load, &backend_id);

	return l && l->active > 0 ? (__u64)l->active : 0;
}

static __always_inline int lb_cheaper(struct lb_ctx *c, __u32 a, const struct aimesh_backend *ba, __u32 b,
				      const struct aimesh_backend *bb, int by_latency)
{
	__u64 la = lb_load(c, a), lb = lb_load(c, b), ea, eb;

	if (by_latency) {
		la += 1;
		lb += 1;
		ea = lb_ewma_us(a);
		eb = lb_ewma_us(b);
		if (!ea)
			ea = eb;
		if (!eb)
			eb = ea;
		if (ea && eb) {
			la *= ea;
			lb *= eb;
		}
	}
	if (!by_latency && la * bb->weight == lb * ba->weight) {
		/* Equally busy: the one holding fewer connections, so that the
		 * connections pooled clients open (or reopen after re-balancing)
		 * spread over the endpoints instead of piling onto one. */
		la = lb_open(a);
		lb = lb_open(b);
	}
	return la * bb->weight < lb * ba->weight;
}

/* Small services (at most AIMESH_LB_SCAN_MAX slots, e.g. up to 16 replicas
 * of equal weight): compare every slot's backend, starting at a random slot
 * so ties go to a random one — exact least-loaded (join the shortest queue),
 * which two random choices only approximate when there are few replicas.
 * Returns -ENOENT if no slot is usable (the caller falls back to random). */
static __always_inline int lb_scan(struct lb_ctx *c, const struct aimesh_service *svc, __u32 rnd,
				   __u32 *backend_id, struct aimesh_backend **out, int by_latency)
{
	struct aimesh_slot_key sk = { .service_id = c->service_id };
	struct aimesh_backend *be, *best = 0;
	__u32 count = svc->slot_count, base = (svc->slot_gen & 1) * AIMESH_MAX_SLOTS_PER_SVC, start, k, best_id = 0, id = 0;
	int i;

	if (count == 0 || count > AIMESH_LB_SCAN_MAX)
		return -ENOENT;
	start = rnd % count;
	for (i = 0; i < AIMESH_LB_SCAN_MAX; i++) {
		if ((__u32)i >= count)
			break;
		k = start + i;
		if (k >= count)
			k -= count;
		sk.slot = base + k;
		be = lb_slot_backend(c, &sk, &id);
		if (!be || (best && id == best_id))
			continue;
		if (lb_ejected(c, id)) {
			count_reason(AIMESH_R_EJECTED_SKIPPED);
			continue;
		}
		if (!best || lb_cheaper(c, id, be, best_id, best, by_latency)) {
			best = be;
			best_id = id;
		}
	}
	if (!best)
		return -ENOENT;
	*backend_id = best_id;
	*out = best;
	return 0;
}

/* Power of two choices: draw a second candidate and keep the cheaper one. */
static __always_inline void lb_two_choices(struct lb_ctx *c, const struct aimesh_service *svc, __u32 *rnd,
					   __u32 *backend_id, struct aimesh_backend **out, int by_latency)
{
	struct aimesh_backend *b2 = 0;
	__u32 id2 = 0;
	int i;

	/* A second, different backend (drawn again if it repeats the first). */
	for (i = 0; i < AIMESH_SELECT_TRIES; i++) {
		if (lb_random(c, svc, rnd, &id2, &b2))
			return;
		if (id2 != *backend_id)
			break;
	}
	if (id2 == *backend_id)
		return;
	if (lb_ejected(c, *backend_id) && !lb_ejected(c, id2))
		goto second;
	if (lb_ejected(c, id2))
		return;
	if (!lb_cheaper(c, id2, b2, *backend_id, *out, by_latency))
		return;
second:
	*backend_id = id2;
	*out = b2;
}

/* maglev / bounded_hash: walk the service's table from the key's entry.
 * Returns 0 and sets the pick, or -ENOENT when the table is missing or no
 * entry in reach is usable (the caller then falls back to random). */
static __always_inline int lb_hash(struct lb_ctx *c, const struct aimesh_service *svc, __u64 key, int bounded,
				   __u32 *backend_id, struct aimesh_backend **out)
{
	struct aimesh_backend *be, *best = 0;
	struct aimesh_svc_load *sl;
	__u32 size = svc->hash_size, idx, i, *id, best_id = 0, prev = (__u32)-1;
	__u64 total = 0, n = svc->backend_count, cap = 0, load, best_load = (__u64)-1;
	void *table;

	if (size == 0 || size > AIMESH_MAX_HASH_SIZE)
		return -ENOENT;
	table = bpf_map_lookup_elem(&aimesh_hash_tables, &c->service_id);
	if (!table)
		return -ENOENT;
	if (bounded && n) {
		sl = bpf_map_lookup_elem(&aimesh_svc_load, &c->service_id);
		if (sl && sl->active > 0)
			total = (__u64)sl->active;
		/* Bound on a backend's load with this connection, CHLB style:
		 * ceil(balance x (total + 1) / n). */
		cap = ((__u64)svc->balance_pct * (total + 1) + 100 * n - 1) / (100 * n);
		if (cap < 1)
			cap = 1;
	}
	idx = aimesh_hash_slot(key, size);
	for (i = 0; i < AIMESH_HASH_WALK; i++) {
		__u32 k = idx + i < size ? idx + i : idx + i - size;

		id = bpf_map_lookup_elem(table, &k);
		if (!id)
			return -ENOENT;
		if (*id == prev)
			continue;
		prev = *id;
		be = bpf_map_lookup_elem(&aimesh_backends, id);
		if (!be || !lb_usable(c, be))
			continue;
		if (lb_ejected(c, *id)) {
			count_reason(AIMESH_R_EJECTED_SKIPPED);
			continue;
		}
		if (!bounded) {
			*backend_id = *id;
			*out = be;
			return 0;
		}
		load = lb_load(c, *id);
		if (load + 1 <= cap) {
			*backend_id = *id;
			*out = be;
			return 0;
		}
		if (load < best_load) {
			best_load = load;
			best = be;
			best_id = *id;
		}
	}
	if (best) { /* everyone in reach is over the bound: the least loaded */
		*backend_id = best_id;
		*out = best;
		return 0;
	}
	return -ENOENT;
}

/* Pick a backend of service `service_id` for a new connection or datagram.
 * `rnd` drives the random draws, `hash_key` (the client's cgroup id on the
 * socket path) the hash algorithms; `family` is 0 or the AIMESH_FAMILY_* the
 * call needs. Returns 0 and sets *backend_id / *out, or -ECONNREFUSED.
 * `sample_skip`, if not null, gets the service's telemetry sampling threshold
 * (the caller would otherwise look the service up a second time). */
static __always_inline int lb_select(__u32 service_id, __u32 rnd, __u64 hash_key, int family,
				     __u32 *backend_id, struct aimesh_backend **out, __u16 *sample_skip)
{
	struct lb_ctx c = { .service_id = service_id, .family = family };
	struct aimesh_service *svc;
	__u8 alg;

	svc = bpf_map_lookup_elem(&aimesh_services, &service_id);
	if (!svc) {
		count_reason(AIMESH_R_SERVICE_MISSING);
		return -ECONNREFUSED;
	}
	if (sample_skip)
		*sample_skip = svc->sample_skip;
	alg = svc->algorithm;
	if (alg != AIMESH_ALG_RANDOM)
		c.cfg = health_config();

	if (alg == AIMESH_ALG_MAGLEV || alg == AIMESH_ALG_BOUNDED_HASH) {
		if (!lb_hash(&c, svc, hash_key, alg == AIMESH_ALG_BOUNDED_HASH, backend_id, out))
			return 0;
		count_reason(AIMESH_R_HASH_TABLE_MISS);
	}
	if ((alg == AIMESH_ALG_LEAST_CONN || alg == AIMESH_ALG_LATENCY) &&
	    !lb_scan(&c, svc, rnd, backend_id, out, alg == AIMESH_ALG_LATENCY))
		return 0;
	if (lb_random(&c, svc, &rnd, backend_id, out)) {
		count_reason(AIMESH_R_NO_BACKEND);
		return -ECONNREFUSED;
	}
	if (alg == AIMESH_ALG_LEAST_CONN || alg == AIMESH_ALG_LATENCY)
		lb_two_choices(&c, svc, &rnd, backend_id, out, alg == AIMESH_ALG_LATENCY);
	return 0;
}

#endif
