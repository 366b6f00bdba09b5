/* Connection lifecycle and request/response timing for sockets connected
 * through a service. Shared by sock_ops (lifecycle) and cgroup_skb (payload
 * timing); both find the socket's state in aimesh_sockets, which the connect
 * hook created. Sockets without that state are not ours: untouched. */
#ifndef AIMESH_BPF_TELEMETRY_H
#define AIMESH_BPF_TELEMETRY_H

#include "lib/clients.h"
#include "lib/health.h"
#include "lib/hist.h"

/* Keeps struct aimesh_event in the object's BTF (the ring buffer has no value
 * type), so tools and the ABI test can see its layout. */
const struct aimesh_event *aimesh_event_type __attribute__((unused));

static __always_inline struct aimesh_be_tel *tel_of(__u32 backend_id)
{
	return bpf_map_lookup_elem(&aimesh_be_tel, &backend_id);
}

/* Pending bytes (this record, with its 8-byte header, included) just went
 * past half the buffer. Another CPU's record can skip the window; the
 * agent's timer drains the buffer anyway. */
static __always_inline int tel_crossed_half(__u64 avail)
{
	const __u64 half = AIMESH_EVENTS_BYTES / 2, rec = sizeof(struct aimesh_event) + 8;

	return avail >= half && avail < half + rec;
}

static __always_inline void tel_event_full(const struct aimesh_sock *s, __u64 cookie, __u8 type, __u64 now,
					   __u64 duration_ns, __u64 sent, __u64 received, __u32 retrans,
					   __u64 cgroup_id)
{
	struct aimesh_event *e = bpf_ringbuf_reserve(&aimesh_events, sizeof(*e), 0);

	if (!e) {
		count_reason(AIMESH_R_EVENT_DROPPED);
		return;
	}
	e->ts_ns = now;
	e->cookie = cookie;
	e->duration_ns = duration_ns;
	e->bytes_sent = sent;
	e->bytes_received = received;
	e->service_id = s->service_id;
	e->backend_id = s->backend_id;
	e->requests = s->requests;
	e->retransmits = retrans;
	e->type = type;
	__builtin_memset(e->pad, 0, sizeof(e->pad));
	e->cgroup_id = cgroup_id;
	/* Waking the reader costs an IPI (irq_work) and a cross-CPU wakeup. The
	 * agent drains the buffer on a timer instead; it is woken only once,
	 * when this record makes the backlog cross half the buffer. Waking on
	 * every record past a threshold cost an IPI per connection under load. */
	bpf_ringbuf_submit(e, tel_crossed_half(bpf_ringbuf_query(&aimesh_events, BPF_RB_AVAIL_DATA))
				      ? BPF_RB_FORCE_WAKEUP
				      : BPF_RB_NO_WAKEUP);
}

/* Connection lifecycle events (sock_ops): no calling cgroup. */
static __always_inline void tel_event(const struct aimesh_sock *s, __u64 cookie, __u8 type, __u64 now,
				      __u64 duration_ns, __u64 sent, __u64 received, __u32 retrans)
{
	tel_event_full(s, cookie, type, now, duration_ns, sent, received, retrans, 0);
}

/* Calls refused at connect/sendmsg (no backend, policy), with the caller's cgroup. */
static __always_inline void tel_event_cgroup(const struct aimesh_sock *s, __u64 cookie, __u8 type, __u64 now,
					     __u64 cgroup_id)
{
	tel_event_full(s, cookie, type, now, 0, 0, 0, 0, cgroup_id);
}

/* ---- feedback to the balancer (lib/lb.h reads these in aimesh_be_load) ---- */

/* Peak-EWMA of time to first token (the first response body byte; for a
 * response whose head and body come together, the first byte). Not the
 * first byte: streaming servers such as vLLM send the head at once, before
 * the request even leaves their queue. A sample above the average replaces it
 * at once (a backend that got slow is avoided at once); a lower one pulls it
 * down with weight dt / (dt + tau), dt the time since the last sample. */
static __always_inline void tel_observe_ttft(__u32 backend_id, __u64 sample, __u64 now)
{
	struct aimesh_be_load *l = bpf_map_lookup_elem(&aimesh_be_load, &backend_id);
	struct aimesh_config *cfg;
	__u64 old, dt, tau, w;

	if (!l)
		return;
	if (sample > (1ULL << 40))
		sample = 1ULL << 40;
	old = l->ewma_ttft_ns;
	if (old == 0 || sample >= old) {
		l->ewma_ttft_ns = sample;
	} else {
		cfg = health_config();
		tau = cfg && cfg->ewma_tau_ns ? cfg->ewma_tau_ns : AIMESH_DEFAULT_EWMA_TAU_NS;
		dt = now > l->ewma_ts_ns ? now - l->ewma_ts_ns : 0;
		if (dt > (1ULL << 40))
			dt = 1ULL << 40;
		w = (dt << 10) / (dt + tau); /* 0..1024 */
		l->ewma_ttft_ns = old - (((old - sample) * w) >> 10);
	}
	l->ewma_ts_ns = now;
}

/* A connect to the backend failed (refused, or no answer): add a decaying
 * penalty, and after eject_after failures in a row start a back-off that
 * doubles with every further one (capped). The balancer skips a backend in
 * back-off; when it ends the backend is tried again, and one more failure
 * starts the next, longer back-off at once. */
static __always_inline void tel_backend_failed(__u32 backend_id, __u64 now, struct aimesh_be_tel *t)
{
	struct aimesh_be_load *l = bpf_map_lookup_elem(&aimesh_be_load, &backend_id);
	struct aimesh_config *cfg = health_config();
	__u64 pen, base, max, backoff;
	__u32 per, after, streak, ej;

	if (!l)
		return;
	per = cfg ? cfg->penalty_per_failure : AIMESH_DEFAULT_PENALTY_PER_FAILURE;
	after = cfg ? cfg->eject_after : AIMESH_DEFAULT_EJECT_AFTER;
	base = cfg && cfg->eject_base_ns ? cfg->eject_base_ns : AIMESH_DEFAULT_EJECT_BASE_NS;
	max = cfg && cfg->eject_max_ns ? cfg->eject_max_ns : AIMESH_DEFAULT_EJECT_MAX_NS;

	pen = health_penalty(l, cfg, now) + per;
	l->penalty = pen > 65535 ? 65535 : (__u32)pen;
	l->penalty_ts_ns = now;

	/* Plain read-modify-write: two failures racing on two CPUs may count
	 * as one, which only delays a back-off by one failure. */
	streak = l->fail_streak + 1;
	l->fail_streak = streak;
	if (!after || streak < after || now < l->skip_until_ns)
		return;
	ej = l->ejections;
	backoff = base << (ej > 16 ? 16 : ej);
	if (backoff > max)
		backoff = max;
	l->skip_until_ns = now + backoff;
	l->ejections = ej + 1;
	if (t)
		stat_add(t->ejections, 1);
}

/* A connect succeeded: the failure streak and the back-off exponent reset
 * (the penalty decays on its own). */
static __always_inline void tel_backend_ok(struct aimesh_be_load *l)
{
	if (l->fail_streak)
		l->fail_streak = 0;
	if (l->ejections)
		l->ejections = 0;
}

/* Connections idle between requests, per backend: the balancer counts only
 * the others as load (a pooled keep-alive connection that waits for its next
 * request is no load), and the lifecycle iterator may close them. */
static __always_inline void tel_idle_add(struct aimesh_sock *s, int delta)
{
	struct aimesh_be_load *l = bpf_map_lookup_elem(&aimesh_be_load, &s->backend_id);

	if (delta > 0)
		s->flags |= AIMESH_SKF_IDLE;
	else
		s->flags &= ~AIMESH_SKF_IDLE;
	if (l)
		__sync_fetch_and_add(&l->idle, delta);
}

/* The response in flight (if any) ends: at its last byte when its framing
 * is known (lib/http1.h), else at the next request or at close. */
static __always_inline void tel_end_response(struct aimesh_sock *s, struct aimesh_be_tel *t)
{
	if (s->phase == AIMESH_PH_IDLE || s->phase == AIMESH_PH_AWAIT_FIRST)
		return;
	hist_record(s->backend_id, AIMESH_M_DURATION, s->last_in_ns - s->req_start_ns);
	if (t)
		stat_add(t->responses, 1);
	s->phase = AIMESH_PH_IDLE;
}

/* The last byte of the response arrived (its framing says so): the
 * connection is idle until the next request. */
static __always_inline void tel_response_done(struct aimesh_sock *s, __u64 now)
{
	tel_end_response(s, tel_of(s->backend_id));
	s->phase = AIMESH_PH_IDLE;
	s->framing = AIMESH_FR_NONE;
	s->idle_ns = now;
	if ((s->flags & (AIMESH_SKF_ESTABLISHED | AIMESH_SKF_IDLE | AIMESH_SKF_CLOSED)) == AIMESH_SKF_ESTABLISHED)
		tel_idle_add(s, 1);
}

/* A payload segment leaves the socket: the first one after the response
 * started (or with nothing in flight) starts a request. More payload while
 * waiting for the answer belongs to the same request (a body in pieces). */
static __always_inline void tel_egress_payload(struct aimesh_sock *s, __u64 now)
{
	struct aimesh_client_stats *c;
	struct aimesh_be_tel *t;

	if (s->phase == AIMESH_PH_AWAIT_FIRST)
		return;
	t = tel_of(s->backend_id);
	tel_end_response(s, t);
	if (s->flags & AIMESH_SKF_IDLE)
		tel_idle_add(s, -1);
	s->phase = AIMESH_PH_AWAIT_FIRST;
	s->framing = AIMESH_FR_NONE;
	s->req_start_ns = now;
	s->chunks = 0;
	s->requests += 1;
	if (t)
		stat_add(t->requests, 1);
	c = client_stats(s->cgroup_id, s->service_id, 0);
	if (c)
		stat_add(c->requests, 1);
}

/* A payload segment arrives. `headers_only` says it is an HTTP/1.x response
 * head with no body byte (the next segment is then the first token);
 * `has_body` is false for HTTP/2 segments that carry no DATA frame. */
static __always_inline void tel_ingress_payload(struct aimesh_sock *s, __u64 now, int headers_only,
						int has_body)
{
	struct aimesh_be_tel *t;

	switch (s->phase) {
	case AIMESH_PH_AWAIT_FIRST:
		hist_record(s->backend_id, AIMESH_M_TTFB, now - s->req_start_ns);
		if (headers_only || !has_body) {
			s->phase = AIMESH_PH_AWAIT_BODY;
		} else {
			hist_record(s->backend_id, AIMESH_M_TTFT, now - s->req_start_ns);
			tel_observe_ttft(s->backend_id, now - s->req_start_ns, now);
			s->phase = AIMESH_PH_STREAMING;
		}
		break;
	case AIMESH_PH_AWAIT_BODY:
		if (!has_body)
			break;
		hist_record(s->backend_id, AIMESH_M_TTFT, now - s->req_start_ns);
		tel_observe_ttft(s->backend_id, now - s->req_start_ns, now);
		s->phase = AIMESH_PH_STREAMING;
		break;
	case AIMESH_PH_STREAMING:
		hist_record(s->backend_id, AIMESH_M_GAP, now - s->last_in_ns);
		break;
	default:
		return; /* nothing asked: not a response */
	}
	s->last_in_ns = now;
	s->chunks += 1;
	t = tel_of(s->backend_id);
	if (t)
		stat_add(t->chunks, 1);
}

#endif
