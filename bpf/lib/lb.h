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
 * family, and backends in failure back-off (unless every pick is: then one of
 * them is used, or, for a service with AIMESH_SVC_F_FAIL_CLOSE, the
 * connection is refused). */
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

/* Verification cost. The algorithms loop over slots and table entries, and
 * the verifier walks every iteration of a bounded loop with every state the
 * body can leave behind, so the per-backend work is kept in global functions
 * (aimesh_lb_eval, aimesh_lb_random, aimesh_lb_scan, aimesh_lb_hash,
 * aimesh_lb_split_draw): the verifier checks each
 * once, on its own and for any arguments, and a loop body is a call and a
 * few compares. Inlined, the selection made each sock_addr program ~230,000
 * verified instructions and a quarter of a second to load. */

/* One backend as this call sees it. */
struct lb_cand {
	__u32 id;
	__u32 weight;
	__u32 load;    /* busy connections + queue + penalty, capped: with LB_COST */
	__u32 ewma_us; /* peak-EWMA time to first token, us, capped: with LB_COST */
	__u32 open;    /* open connections, idle ones included, capped: with LB_COST */
	__u32 backoff; /* in failure back-off */
};

#define LB_COST 1 /* aimesh_lb_eval: also fill load, ewma_us and open */

/* lb_eval/aimesh_lb_slot results. */
#define LB_UNUSABLE 0
#define LB_USABLE 1
#define LB_BACKOFF 2 /* usable, but skipped while another backend can be had */

/* Busy connections (open ones, less those idle between requests: a pooled
 * keep-alive connection waiting for its next request is no load) + queued
 * requests (scraped) + the failure penalty, which halves with time (the clock
 * is read only when there is one), capped at 65535. */
static __always_inline __u64 lb_load(__u32 backend_id, const struct aimesh_be_load *l, __u64 *now)
{
	struct aimesh_be_signal *sig = bpf_map_lookup_elem(&aimesh_be_signal, &backend_id);
	__s64 busy;
	__u64 load = 0;

	if (l) {
		busy = l->active - (l->idle > 0 ? l->idle : 0);
		load = busy > 0 ? (__u64)busy : 0;
		if (l->penalty) {
			if (!*now)
				*now = bpf_ktime_get_ns();
			load += health_penalty(l, health_config(), *now);
		}
	}
	if (sig && sig->valid)
		load += sig->queue_depth;
	return load > 65535 ? 65535 : load;
}

/* Can this backend take a new connection of this call's family (0: any)? */
static __always_inline int lb_usable(int family, const struct aimesh_backend *be)
{
	if (be->state != AIMESH_BE_ACTIVE || be->weight == 0) {
		count_reason(AIMESH_R_BACKEND_INACTIVE);
		return 0;
	}
	if (family && be->family != family) {
		count_reason(AIMESH_R_FAMILY_MISMATCH);
		return 0;
	}
	return 1;
}

/* Backend `id` for a call of `family`: LB_UNUSABLE (missing, draining,
 * weight 0 or of the wrong family; counted), LB_USABLE or LB_BACKOFF. Fills
 * *out for a usable one, its load, EWMA and open connections too with
 * LB_COST. */
__noinline int aimesh_lb_eval(__u32 id, int family, int flags, struct lb_cand *out)
{
	struct aimesh_backend *be;
	struct aimesh_be_load *l;
	__u64 now = 0, us;

	if (!out)
		return LB_UNUSABLE;
	be = bpf_map_lookup_elem(&aimesh_backends, &id);
	if (!be) {
		count_reason(AIMESH_R_BACKEND_MISSING);
		return LB_UNUSABLE;
	}
	if (!lb_usable(family, be))
		return LB_UNUSABLE;
	l = bpf_map_lookup_elem(&aimesh_be_load, &id);
	out->id = id;
	out->weight = be->weight;
	out->backoff = 0;
	if (l && l->skip_until_ns) {
		now = bpf_ktime_get_ns();
		out->backoff = now < l->skip_until_ns;
	}
	if (flags & LB_COST) {
		out->load = lb_load(id, l, &now);
		us = l ? l->ewma_ttft_ns >> 10 : 0;
		out->ewma_us = us > (1ULL << 30) ? (1ULL << 30) : us;
		out->open = l && l->active > 0 ? (l->active > 0xffffffffLL ? 0xffffffffu : (__u32)l->active) : 0;
	}
	return out->backoff ? LB_BACKOFF : LB_USABLE;
}

/* The backend in slot `slot` of the service, as aimesh_lb_eval() sees it; a
 * missing slot is LB_UNUSABLE (counted: the agent writes slots before they
 * are used). */
static __always_inline int lb_slot(__u32 service_id, __u32 slot, int family, int flags, struct lb_cand *out)
{
	struct aimesh_slot_key sk = { .service_id = service_id, .slot = slot };
	struct aimesh_slot *s;

	s = bpf_map_lookup_elem(&aimesh_slots, &sk);
	if (!s) {
		count_reason(AIMESH_R_SLOT_MISSING);
		return LB_UNUSABLE;
	}
	return aimesh_lb_eval(s->backend_id, family, flags, out);
}

/* State of one selection, passed by pointer to the global functions below
 * (they take at most five arguments). */
struct lb_ctx {
	__u32 service_id;
	__s32 family;
	__u32 flags;      /* LB_COST for the algorithms that compare backends */
	__u32 rnd;        /* drives the random draws; advanced by each one */
	__u32 slot_count; /* the service's slots in use */
	__u32 slot_base;  /* the first slot of the live generation */
	__u32 hash_size;
	__u32 backend_count;
	__u32 balance_pct;
	__u32 fallback;   /* LB_FB_*: what aimesh_lb_random() does when every draw is in back-off */
};

/* lb_ctx.fallback. The first draw of a connection decides (the service's
 * flag); the second-choice draws (lb_two_choices()) only look for a backend
 * out of back-off: the first draw's pick stands otherwise, so they neither
 * count nor refuse. */
#define LB_FB_OPEN 0                        /* use the last of them (fail open); counted */
#define LB_FB_CLOSE AIMESH_SVC_F_FAIL_CLOSE /* refuse; counted */
#define LB_FB_QUIET 0x100                   /* return it (out->backoff set), uncounted */

/* One weighted-random candidate: a uniform pick over the slots (weights
 * were expanded into slots by the agent), retried a few times when it lands
 * on a backend that cannot take the connection or is in back-off. If every
 * usable pick was in back-off, the last of them is used (fail open), or the
 * service refuses (fail close): c->fallback says which. */
__noinline int aimesh_lb_random(struct lb_ctx *c, struct lb_cand *out)
{
	struct lb_cand cand = {}, fb = {};
	int i, r, have_fb = 0;
	__u32 count;

	if (!c || !out)
		return -ECONNREFUSED;
	count = c->slot_count;
	if (count == 0 || count > AIMESH_MAX_SLOTS_PER_SVC)
		return -ECONNREFUSED;
	for (i = 0; i < AIMESH_SELECT_TRIES; i++) {
		__u32 slot = c->slot_base + c->rnd % count;

		c->rnd = lb_next_rnd(c->rnd);
		r = lb_slot(c->service_id, slot, c->family, c->flags, &cand);
		if (r == LB_UNUSABLE)
			continue;
		if (r == LB_BACKOFF) {
			count_reason(AIMESH_R_EJECTED_SKIPPED);
			fb = cand;
			have_fb = 1;
			continue;
		}
		*out = cand;
		return 0;
	}
	if (!have_fb)
		return -ECONNREFUSED;
	if (c->fallback == LB_FB_CLOSE) {
		count_reason(AIMESH_R_EJECTED_REFUSED);
		return -ECONNREFUSED;
	}
	if (c->fallback == LB_FB_OPEN)
		count_reason(AIMESH_R_EJECTED_FALLBACK);
	*out = fb;
	return 0;
}

/* Is candidate a strictly cheaper than b? Cost per unit of weight (compared
 * by cross-multiplying: at most 2^46 x 2^16): for `least_conn` the load, then
 * (on a tie) the open connections, so that idle backends with equal
 * connections tie and the caller's weighted-random order spreads them by
 * weight; for `latency` (load + 1) times the peak-EWMA TTFT (Finagle's
 * peak-EWMA cost). A backend without a TTFT sample yet costs what
 * the other one does per connection: neither starved nor flooded. */
static __always_inline int lb_cheaper(const struct lb_cand *a, const struct lb_cand *b, int by_latency)
{
	__u64 la = a->load, lb = b->load, ea, eb;

	if (by_latency) { /* at most 2^16 x 2^30, times a weight below 2^16 */
		la += 1;
		lb += 1;
		ea = a->ewma_us;
		eb = b->ewma_us;
		if (!ea)
			ea = eb;
		if (!eb)
			eb = ea;
		if (ea && eb) {
			la *= ea;
			lb *= eb;
		}
	}
	if (!by_latency && la * b->weight == lb * a->weight) {
		/* Equally busy: the one holding fewer connections, so that the
		 * connections pooled clients open (or reopen after re-balancing)
		 * spread over the endpoints instead of piling onto one. */
		la = a->open;
		lb = b->open;
	}
	return la * b->weight < lb * a->weight;
}

/* Small services (at most AIMESH_LB_SCAN_MAX slots, e.g. up to 16 replicas
 * of equal weight): compare every slot's backend, starting at a random slot
 * so ties go to a random one — exact least-loaded (join the shortest queue),
 * which two random choices only approximate when there are few replicas.
 * Returns -ENOENT if no slot is usable (the caller falls back to random). */
__noinline int aimesh_lb_scan(struct lb_ctx *c, int by_latency, struct lb_cand *out)
{
	struct lb_cand cand = {}, best = {};
	int i, r, have_best = 0;
	__u32 count, start, k;

	if (!c || !out)
		return -ENOENT;
	count = c->slot_count;
	if (count == 0 || count > AIMESH_LB_SCAN_MAX)
		return -ENOENT;
	start = c->rnd % count;
	for (i = 0; i < AIMESH_LB_SCAN_MAX; i++) {
		if ((__u32)i >= count)
			break;
		k = start + i;
		if (k >= count)
			k -= count;
		r = lb_slot(c->service_id, c->slot_base + k, c->family, LB_COST, &cand);
		if (r == LB_UNUSABLE || (have_best && cand.id == best.id))
			continue;
		if (r == LB_BACKOFF) {
			count_reason(AIMESH_R_EJECTED_SKIPPED);
			continue;
		}
		if (!have_best || lb_cheaper(&cand, &best, by_latency)) {
			best = cand;
			have_best = 1;
		}
	}
	if (!have_best)
		return -ENOENT;
	*out = best;
	return 0;
}

/* Power of two choices: draw a second candidate and keep the cheaper one
 * (the first when the second draw is in back-off or finds nothing). */
static __always_inline void lb_two_choices(struct lb_ctx *c, struct lb_cand *out, int by_latency)
{
	struct lb_cand second = {};
	int i;

	c->fallback = LB_FB_QUIET;
	/* A second, different backend (drawn again if it repeats the first). */
	for (i = 0; i < AIMESH_SELECT_TRIES; i++) {
		if (aimesh_lb_random(c, &second))
			return;
		if (second.id != out->id)
			break;
	}
	if (second.id == out->id)
		return;
	if (second.backoff)
		return;
	if (!out->backoff && !lb_cheaper(&second, out, by_latency))
		return;
	*out = second;
}

/* maglev / bounded_hash: walk the service's table from the key's entry.
 * Returns 0 and sets the pick, or -ENOENT when the table is missing or no
 * entry in reach is usable (the caller then falls back to random). */
__noinline int aimesh_lb_hash(struct lb_ctx *c, __u64 key, int bounded, struct lb_cand *out)
{
	struct lb_cand cand = {};
	struct aimesh_svc_load *sl;
	__u32 size, idx, i, *id, prev = (__u32)-1;
	__u64 total = 0, n, cap = 0, best_load = (__u64)-1;
	int r, have_best = 0;
	void *table;

	if (!c || !out)
		return -ENOENT;
	size = c->hash_size;
	n = c->backend_count;
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
		cap = ((__u64)c->balance_pct * (total + 1) + 100 * n - 1) / (100 * n);
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
		r = aimesh_lb_eval(*id, c->family, bounded ? LB_COST : 0, &cand);
		if (r == LB_UNUSABLE)
			continue;
		if (r == LB_BACKOFF) {
			count_reason(AIMESH_R_EJECTED_SKIPPED);
			continue;
		}
		if (!bounded || cand.load + 1 <= cap) {
			*out = cand;
			return 0;
		}
		if (cand.load < best_load) {
			best_load = cand.load;
			*out = cand;
			have_best = 1;
		}
	}
	if (have_best) /* everyone in reach is over the bound: the least loaded */
		return 0;
	return -ENOENT;
}

/* What lb_pick() chose: the backend id, the service it belongs to (a
 * split's target, else the service asked for), and that service's telemetry
 * sampling threshold (the caller would otherwise look it up a second time). */
struct lb_choice {
	__u32 backend_id;
	__u32 service_id;
	__u16 sample_skip;
	__u16 pad;
	__u32 pad2;
};

/* A backend of plain service `service_id` (record `svc`) for a new
 * connection or datagram. `rnd` drives the random draws, `hash_key` (the
 * client's cgroup id on the socket path) the hash algorithms; `family` is 0
 * or the AIMESH_FAMILY_* the call needs. Returns 0 and fills *out, or
 * -ECONNREFUSED. */
static __always_inline int lb_pick_in(__u32 service_id, const struct aimesh_service *svc, __u32 rnd, __u64 hash_key,
				      int family, struct lb_choice *out)
{
	struct lb_ctx c = { .service_id = service_id, .family = family, .rnd = rnd };
	struct lb_cand pick = {};
	int compare;
	__u8 alg;

	out->service_id = service_id;
	out->sample_skip = svc->sample_skip;
	alg = svc->algorithm;
	compare = alg == AIMESH_ALG_LEAST_CONN || alg == AIMESH_ALG_LATENCY;
	c.flags = compare ? LB_COST : 0;
	c.slot_count = svc->slot_count;
	c.slot_base = (svc->slot_gen & 1) * AIMESH_MAX_SLOTS_PER_SVC;
	c.hash_size = svc->hash_size;
	c.backend_count = svc->backend_count;
	c.balance_pct = svc->balance_pct;
	c.fallback = svc->flags & AIMESH_SVC_F_FAIL_CLOSE; /* LB_FB_CLOSE or LB_FB_OPEN; no branch */

	if (alg == AIMESH_ALG_MAGLEV || alg == AIMESH_ALG_BOUNDED_HASH) {
		if (!aimesh_lb_hash(&c, hash_key, alg == AIMESH_ALG_BOUNDED_HASH, &pick))
			goto picked;
		count_reason(AIMESH_R_HASH_TABLE_MISS);
	}
	if (compare && !aimesh_lb_scan(&c, alg == AIMESH_ALG_LATENCY, &pick))
		goto picked;
	if (aimesh_lb_random(&c, &pick)) {
		count_reason(AIMESH_R_NO_BACKEND);
		return -ECONNREFUSED;
	}
	if (compare)
		lb_two_choices(&c, &pick, alg == AIMESH_ALG_LATENCY);
picked:
	out->backend_id = pick.id;
	return 0;
}

/* The target of split `split_id` that draw `rnd` lands on, by weight,
 * among those not in `tried` (a bit per target): its index, and its service
 * in *target_id; -1 when they weigh nothing or there is no split. The draw
 * takes the high bits of rnd x total (no modulo bias at these totals). A
 * function of its own: inlined in the caller's loop, the verifier followed
 * every combination of `tried` bits. */
__noinline int aimesh_lb_split_draw(__u32 split_id, __u32 tried, __u32 rnd, __u32 *target_id)
{
	struct aimesh_split *sp;
	__u64 total = 0, r;
	__u32 i, w, count;

	if (!target_id)
		return -1;
	sp = bpf_map_lookup_elem(&aimesh_splits, &split_id);
	if (!sp)
		return -1;
	count = sp->count;
	for (i = 0; i < AIMESH_SPLIT_MAX; i++) {
		if (i >= count)
			break;
		if (!(tried & (1u << i)))
			total += sp->targets[i].weight;
	}
	if (!total)
		return -1;
	r = ((__u64)rnd * total) >> 32;
	for (i = 0; i < AIMESH_SPLIT_MAX; i++) {
		if (i >= count)
			break;
		if (tried & (1u << i))
			continue;
		w = sp->targets[i].weight;
		if (r < w) {
			*target_id = sp->targets[i].service_id;
			return (int)i;
		}
		r -= w;
	}
	return -1;
}

/* A split's two-stage pick: a target service drawn by weight, then a backend
 * of it with its own algorithm. A target with no usable backend (a fail-close
 * one whose picks were all in back-off included) is passed over (counted)
 * and the draw repeated among the others; -ECONNREFUSED when
 * none has one. The target's own draws use a mix of rnd, so they do not
 * depend on which target the first draw chose. Each draw looks the split up
 * again: under a weight change a retry may see the new weights, which are as
 * good as the old ones, and never half of either. Everything here is
 * inlined: another frame would take the TC program's call chain past the
 * 512-byte stack limit. */
static __always_inline int lb_split(__u32 split_id, __u32 rnd, __u64 hash_key, int family, struct lb_choice *out)
{
	struct aimesh_service *svc;
	__u32 tried = 0, i, target = 0;
	int t;

	for (i = 0; i < AIMESH_SPLIT_MAX; i++) {
		t = aimesh_lb_split_draw(split_id, tried, rnd, &target);
		if (t < 0 || t >= AIMESH_SPLIT_MAX)
			break;
		tried |= 1u << t;
		rnd = (__u32)aimesh_mix64(rnd);
		svc = bpf_map_lookup_elem(&aimesh_services, &target);
		/* A target is a plain service (the agent never writes a split's). */
		if (svc && !(svc->flags & AIMESH_SVC_F_SPLIT) && !lb_pick_in(target, svc, rnd, hash_key, family, out))
			return 0;
		count_reason(AIMESH_R_SPLIT_FAILOVER);
		rnd = lb_next_rnd(rnd);
	}
	if (!tried) /* no record, or nothing with weight */
		count_reason(AIMESH_R_NO_BACKEND);
	return -ECONNREFUSED;
}

/* Pick a backend of service `service_id` for a new connection or datagram
 * (lb_pick_in()); a split picks one of its backend services first
 * (lb_split()). Returns 0 and fills *out, or -ECONNREFUSED. */
static __always_inline int lb_pick(__u32 service_id, __u32 rnd, __u64 hash_key, int family, struct lb_choice *out)
{
	struct aimesh_service *svc;

	svc = bpf_map_lookup_elem(&aimesh_services, &service_id);
	if (!svc) {
		count_reason(AIMESH_R_SERVICE_MISSING);
		return -ECONNREFUSED;
	}
	if (svc->flags & AIMESH_SVC_F_SPLIT)
		return lb_split(service_id, rnd, hash_key, family, out);
	return lb_pick_in(service_id, svc, rnd, hash_key, family, out);
}

/* Counts a split's connection (or datagram) to the target it chose. */
static __always_inline void lb_split_count(__u32 split_id, __u32 target_id, int is_connect)
{
	struct aimesh_split_stats_key k = { .split_id = split_id, .target_id = target_id };
	struct aimesh_split_stats *st, zero = {};

	st = bpf_map_lookup_elem(&aimesh_split_stats, &k);
	if (!st) {
		bpf_map_update_elem(&aimesh_split_stats, &k, &zero, BPF_NOEXIST);
		st = bpf_map_lookup_elem(&aimesh_split_stats, &k);
		if (!st)
			return;
	}
	if (is_connect)
		stat_add(st->connects, 1);
	else
		stat_add(st->datagrams, 1);
}

/* lb_pick() for a caller that wants the backend too: sets *backend_id and
 * *out (looked up again: a global function cannot hand back a map value),
 * *target_id (the service the backend belongs to) and *sample_skip if not
 * null. Returns 0 or -ECONNREFUSED. */
static __always_inline int lb_select(__u32 service_id, __u32 rnd, __u64 hash_key, int family,
				     __u32 *backend_id, struct aimesh_backend **out, __u32 *target_id,
				     __u16 *sample_skip)
{
	struct lb_choice ch = {};
	struct aimesh_backend *be;
	int err;

	err = lb_pick(service_id, rnd, hash_key, family, &ch);
	if (err)
		return err;
	be = bpf_map_lookup_elem(&aimesh_backends, &ch.backend_id);
	if (!be) {
		count_reason(AIMESH_R_BACKEND_MISSING);
		return -ECONNREFUSED;
	}
	*backend_id = ch.backend_id;
	*out = be;
	if (target_id)
		*target_id = ch.service_id;
	if (sample_skip)
		*sample_skip = ch.sample_skip;
	return 0;
}

#endif
