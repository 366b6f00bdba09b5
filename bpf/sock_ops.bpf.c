// SPDX-License-Identifier: GPL-2.0
/* Connection lifecycle of sockets connected through a service: established
 * (connect latency, active +1), close (active -1, bytes, retransmits, RTT,
 * duration) and failed connects (refused by RST, or timed out). Only sockets
 * that the connect hook gave state to are followed; others cost one lookup
 * at connect time and nothing after. */
#include "lib/telemetry.h"
#include "lib/timed.h"

#define TCP_SYN_SENT 2
#define TCP_CLOSE 7
#define AF_INET6_ 10

/* A sampled socket is established: count it into its aimesh_timed slot, so
 * the payload programs look at its segments (lib/timed.h). */
static __always_inline void timed_open(struct bpf_sock_ops *skops, struct aimesh_sock *s)
{
	__u32 ip, slot, *n;

	/* Two loads, not one from a computed offset: the verifier only allows
	 * context reads at constant offsets. */
	if (skops->family == AF_INET6_) {
		ip = skops->remote_ip6[3];
	} else {
		ip = skops->remote_ip4;
		barrier_var(ip);
	}
	/* remote_port: network byte order in the upper 16 bits (bpf_ntohl gives the port) */
	slot = timed_slot((__u16)skops->local_port, (__u16)bpf_ntohl(skops->remote_port), ip);
	n = bpf_map_lookup_elem(&aimesh_timed, &slot);

	if (!n)
		return;
	__sync_fetch_and_add(n, 1);
	s->timed_slot = (__u16)slot;
	s->flags |= AIMESH_SKF_TIMED;
}

/* ... and out of it when it closes (its tuple may be gone by then: the slot
 * was kept). */
static __always_inline void timed_close(struct aimesh_sock *s)
{
	__u32 slot = s->timed_slot;
	__u32 *n;

	if (!(s->flags & AIMESH_SKF_TIMED))
		return;
	s->flags &= ~AIMESH_SKF_TIMED;
	n = bpf_map_lookup_elem(&aimesh_timed, &slot);
	if (n)
		__sync_fetch_and_add(n, -1);
}

static __always_inline void on_established(struct bpf_sock_ops *skops, struct aimesh_sock *s)
{
	struct aimesh_svc_load *svc;
	struct aimesh_be_load *load;
	struct aimesh_be_tel *t;
	__u64 now = bpf_ktime_get_ns();

	s->established_ns = now;
	s->flags |= AIMESH_SKF_ESTABLISHED;
	if (!(s->flags & AIMESH_SKF_UNSAMPLED)) {
		hist_record(s->backend_id, AIMESH_M_CONNECT, now - s->connect_ns);
		timed_open(skops, s);
	}
	load = bpf_map_lookup_elem(&aimesh_be_load, &s->backend_id);
	if (load) {
		__sync_fetch_and_add(&load->active, 1);
		tel_backend_ok(load);
	}
	svc = bpf_map_lookup_elem(&aimesh_svc_load, &s->service_id);
	if (svc)
		__sync_fetch_and_add(&svc->active, 1);
	t = tel_of(s->backend_id);
	if (t)
		stat_add(t->opened, 1);
	tel_event(s, s->cookie, AIMESH_EV_OPEN, now, now - s->connect_ns, 0, 0, 0);
}

static __always_inline void on_close(struct bpf_sock_ops *skops, struct aimesh_sock *s, __u32 old_state)
{
	struct aimesh_svc_load *svc;
	struct aimesh_be_load *load;
	struct aimesh_be_tel *t;
	__u64 now = bpf_ktime_get_ns();
	__u32 reason;

	if (s->flags & AIMESH_SKF_CLOSED)
		return;
	s->flags |= AIMESH_SKF_CLOSED;
	timed_close(s);
	t = tel_of(s->backend_id);

	if (!(s->flags & AIMESH_SKF_ESTABLISHED)) {
		if (old_state != TCP_SYN_SENT)
			return;
		/* Never established: the backend refused (RST) or never answered. */
		tel_backend_failed(s->backend_id, now, t);
		if (s->flags & AIMESH_SKF_RST_SEEN) {
			if (t)
				stat_add(t->failed_refused, 1);
			tel_event(s, s->cookie, AIMESH_EV_REFUSED, now, now - s->connect_ns, 0, 0, 0);
		} else {
			if (t)
				stat_add(t->failed_timeout, 1);
			tel_event(s, s->cookie, AIMESH_EV_TIMEOUT, now, now - s->connect_ns, 0, 0, 0);
		}
		return;
	}

	/* A request abandoned before its first token (the client gave up on a
	 * stalled server) took at least this long: without this sample a backend
	 * that never answers would keep a neutral latency cost. */
	if (s->phase == AIMESH_PH_AWAIT_FIRST || s->phase == AIMESH_PH_AWAIT_BODY)
		tel_observe_ttft(s->backend_id, now - s->req_start_ns, now);
	tel_end_response(s, t);
	if (s->flags & AIMESH_SKF_IDLE)
		tel_idle_add(s, -1);
	load = bpf_map_lookup_elem(&aimesh_be_load, &s->backend_id);
	if (load)
		__sync_fetch_and_add(&load->active, -1);
	svc = bpf_map_lookup_elem(&aimesh_svc_load, &s->service_id);
	if (svc)
		__sync_fetch_and_add(&svc->active, -1);
	if (!(s->flags & AIMESH_SKF_UNSAMPLED))
		hist_record(s->backend_id, AIMESH_M_RTT, (__u64)(skops->srtt_us >> 3) * NSEC_PER_USEC);
	if (t) {
		stat_add(t->closed, 1);
		stat_add(t->bytes_sent, skops->bytes_acked);
		stat_add(t->bytes_received, skops->bytes_received);
		stat_add(t->retransmits, skops->total_retrans);
		stat_add(t->conn_ns, now - s->established_ns);
		if (s->flags & AIMESH_SKF_RST_SEEN)
			stat_add(t->reset, 1);
		/* Destroyed by the lifecycle iterator, which said why. */
		reason = s->close_reason & 7;
		if (reason)
			stat_add(t->closed_by[reason], 1);
	}
	tel_event(s, s->cookie, (s->flags & AIMESH_SKF_RST_SEEN) ? AIMESH_EV_RESET : AIMESH_EV_CLOSE, now,
		  now - s->established_ns, skops->bytes_acked, skops->bytes_received, skops->total_retrans);
}

SEC("sockops")
int aimesh_sockops(struct bpf_sock_ops *skops)
{
	struct aimesh_sock *s;
	struct bpf_sock *sk = skops->sk;

	/* Most callbacks (RTO init, ECN, RWND, ...) are not ours: decide on the op
	 * before paying for the storage lookup. */
	if (skops->op != BPF_SOCK_OPS_TCP_CONNECT_CB && skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB &&
	    !(skops->op == BPF_SOCK_OPS_STATE_CB && skops->args[1] == TCP_CLOSE))
		return 1;
	if (!sk)
		return 1;
	s = bpf_sk_storage_get(&aimesh_sockets, sk, 0, 0);
	if (!s)
		return 1;

	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		/* Ours: ask for state changes so close and failure are seen. */
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		on_established(skops, s);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] == TCP_CLOSE)
			on_close(skops, s, skops->args[0]);
		break;
	}
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
