/* Connection lifecycle: which of the sockets the connect hook sent to a
 * backend a pass of the socket iterators (bpf/sock_iter.bpf.c) closes, and
 * why. Pure decisions over our own structs (the socket's aimesh_sock and a
 * view of the kernel socket), so the SEC("syscall") harness of the bpf test
 * tier drives them with exact inputs.
 *
 * The rules, in order (enum aimesh_close_reason):
 *   removed      the backend is no longer in aimesh_backends (or its record
 *                now names another address): UDP and idle TCP at once, busy
 *                TCP once its response ends, or drain_timeout after a pass
 *                first saw it;
 *   drained      idle, to a draining/terminating or weight-0 backend;
 *   ejected      idle, to a backend in failure back-off;
 *   max_requests idle, has carried the service's max requests;
 *   max_age      idle, older than the service's max age (jittered -10..0 %
 *                per connection, so a pool made at once is not closed at once);
 *   rebalanced   idle, to a backend the agent gave a budget (it holds more
 *                than its share): the budget counts down.
 * "Idle" is decided under the socket lock the iterator holds: no request in
 * flight (the telemetry's phase; the response's end seen through its HTTP/1.x
 * framing, lib/http1.h), no byte sent and not acked, none received and not
 * read, and the last response ended at least idle_guard_ns ago. A
 * connection whose request boundaries cannot be seen (HTTP/2, not HTTP) is
 * never idle: only the removed rule's timeout closes it. */
#ifndef AIMESH_BPF_LIFECYCLE_H
#define AIMESH_BPF_LIFECYCLE_H

#include "lib/maps.h"

/* The per-pass control, the per-service rules and the re-balancing budgets,
 * written by the agent. Not pinned: they belong to the agent that loaded the
 * iterators (the harness has its own copies). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct aimesh_lc_ctl);
} aimesh_lc_ctl SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, AIMESH_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct aimesh_lc_svc);
} aimesh_lc_svc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, AIMESH_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct aimesh_lc_be);
} aimesh_lc_be SEC(".maps");

/* What the iterator read from the kernel socket, under its lock. */
struct lc_view {
	__u8 daddr[16];  /* peer, IPv4-mapped */
	__be16 dport;
	__u8 tcp_state;  /* sk_state (TCP); 0 for UDP */
	__u8 pad;
	__u32 unacked;   /* write_seq - snd_una: a request (part) not yet acked */
	__u32 unread;    /* rcv_nxt - copied_seq, plus the backlog: a response (part) not yet read */
};

static __always_inline int lc_addr_eq(const __u8 *a, const __u8 *b)
{
	const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;

	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

/* Still connected to the backend the connect hook chose? A socket connected
 * again elsewhere later keeps its storage but is no longer ours. */
static __always_inline int lc_ours(const struct aimesh_sock *s, const struct lc_view *v)
{
	return s->be_port == v->dport && lc_addr_eq(s->be_addr, v->daddr);
}

/* The backend this socket was sent to is gone: no record under its id, or
 * the id now names another address or service (ids are reused). */
static __always_inline int lc_gone(const struct aimesh_sock *s, struct aimesh_backend **out)
{
	__u32 id = s->backend_id;
	struct aimesh_backend *be = bpf_map_lookup_elem(&aimesh_backends, &id);

	*out = be;
	return !be || be->service_id != s->service_id || be->port != s->be_port || !lc_addr_eq(be->addr, s->be_addr);
}

static __always_inline __u64 lc_age(const struct aimesh_sock *s, __u64 now)
{
	__u64 t = s->established_ns ? s->established_ns : s->connect_ns;

	return now > t ? now - t : 0;
}

static __always_inline __u8 lc_state(const struct aimesh_sock *s, const struct lc_view *v, __u64 now,
				     const struct aimesh_lc_ctl *ctl)
{
	if (s->proto == AIMESH_PROTO_UDP)
		return AIMESH_CS_DATAGRAM;
	if (v->tcp_state != 1 /* TCP_ESTABLISHED */)
		return AIMESH_CS_CLOSING;
	if (!(ctl->flags & AIMESH_LC_F_PHASES) || (s->flags & AIMESH_SKF_H2))
		return AIMESH_CS_UNKNOWN;
	if (v->unacked || v->unread)
		return AIMESH_CS_BUSY;
	switch (s->phase) {
	case AIMESH_PH_IDLE:
		if (s->requests == 0)
			return AIMESH_CS_NEW;
		if (!(s->flags & AIMESH_SKF_IDLE))
			return AIMESH_CS_UNKNOWN;
		return now >= s->idle_ns + ctl->idle_guard_ns ? AIMESH_CS_IDLE : AIMESH_CS_BUSY;
	case AIMESH_PH_AWAIT_FIRST:
		return AIMESH_CS_BUSY;
	default:
		return s->framing == AIMESH_FR_NONE ? AIMESH_CS_UNKNOWN : AIMESH_CS_BUSY;
	}
}

/* A connection's max age with its jitter: -10..0 %, fixed per connection. */
static __always_inline __u64 lc_max_age(__u64 max_age, __u64 cookie)
{
	__u64 h = (cookie * 0x9E3779B97F4A7C15ULL) >> 54; /* 0..1023 */

	return max_age - (max_age / 10240) * h;
}

/* The verdict for one socket: an enum aimesh_close_reason, 0 to leave it.
 * May stamp doomed_ns and count a re-balancing budget down. */
static __always_inline __u8 lc_decide(struct aimesh_sock *s, __u8 state, int gone, const struct aimesh_backend *be,
				      __u64 now, const struct aimesh_lc_ctl *ctl)
{
	__u32 svc_id = s->service_id, be_id = s->backend_id;
	struct aimesh_lc_svc *rules = bpf_map_lookup_elem(&aimesh_lc_svc, &svc_id);
	struct aimesh_be_load *load;
	struct aimesh_lc_be *budget;
	__u64 drain, max_age = 0;
	__u32 max_requests = 0;
	int idle;

	drain = ctl->drain_timeout_ns;
	if (rules && (rules->flags & AIMESH_LCS_F_SET)) {
		drain = rules->drain_timeout_ns;
		max_age = rules->max_age_ns;
		max_requests = rules->max_requests;
	}
	idle = state == AIMESH_CS_IDLE ||
	       (state == AIMESH_CS_NEW && lc_age(s, now) >= ctl->new_idle_ns);
	if (gone) {
		if (idle || state == AIMESH_CS_DATAGRAM || state == AIMESH_CS_CLOSING)
			return AIMESH_CLOSE_REMOVED;
		if (!s->doomed_ns)
			s->doomed_ns = now;
		return now - s->doomed_ns >= drain ? AIMESH_CLOSE_REMOVED : AIMESH_CLOSE_NONE;
	}
	s->doomed_ns = 0; /* back (an endpoint removed and added again) */
	if (!idle || !be)
		return AIMESH_CLOSE_NONE;
	if (be->state != AIMESH_BE_ACTIVE || be->weight == 0)
		return AIMESH_CLOSE_DRAINED;
	load = bpf_map_lookup_elem(&aimesh_be_load, &be_id);
	if (load && load->skip_until_ns && now < load->skip_until_ns)
		return AIMESH_CLOSE_EJECTED;
	if (max_requests && s->requests >= max_requests)
		return AIMESH_CLOSE_MAX_REQUESTS;
	if (max_age && lc_age(s, now) >= lc_max_age(max_age, s->cookie))
		return AIMESH_CLOSE_MAX_AGE;
	budget = bpf_map_lookup_elem(&aimesh_lc_be, &be_id);
	if (budget && budget->rebalance) {
		/* One pass at a time runs (the agent serialises them): no race
		 * between the check and the decrement. */
		budget->rebalance -= 1;
		return AIMESH_CLOSE_REBALANCED;
	}
	return AIMESH_CLOSE_NONE;
}

static __always_inline struct aimesh_lc_ctl *lc_ctl(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&aimesh_lc_ctl, &zero);
}

#endif
