// SPDX-License-Identifier: GPL-2.0
/* Connection lifecycle: socket iterators the agent runs (a "pass") in each
 * network namespace that holds sockets of its cgroup. Every socket with an
 * aimesh_sockets entry that is still connected to the backend the connect
 * hook chose is reported (struct aimesh_conn, bpf_seq_write), and destroyed
 * with bpf_sock_destroy() (Linux >= 6.5) when lib/lifecycle.h says so. The
 * iterators hold the socket lock while the program runs, so the idle check
 * and the destroy see the same socket state as the application.
 * Entry points read the kernel socket into a struct lc_view; the decision is
 * lib/lifecycle.h's. Other sockets cost one storage lookup. */
#include "lib/kernel.h"
#include "lib/lifecycle.h"

extern int bpf_sock_destroy(struct sock_common *sk) __ksym;

/* Keeps struct aimesh_conn in the object's BTF (it only travels through
 * bpf_seq_write), so tools and the ABI test see its layout. */
const struct aimesh_conn *aimesh_conn_type __attribute__((unused));

static __always_inline void iter_addr(const struct sock_common *skc, int family, int peer, __u8 out[16])
{
	__u32 w[4];

	if (family == AIMESH_AF_INET6) {
		if (peer) {
			w[0] = skc->skc_v6_daddr.in6_u.u6_addr32[0];
			w[1] = skc->skc_v6_daddr.in6_u.u6_addr32[1];
			w[2] = skc->skc_v6_daddr.in6_u.u6_addr32[2];
			w[3] = skc->skc_v6_daddr.in6_u.u6_addr32[3];
		} else {
			w[0] = skc->skc_v6_rcv_saddr.in6_u.u6_addr32[0];
			w[1] = skc->skc_v6_rcv_saddr.in6_u.u6_addr32[1];
			w[2] = skc->skc_v6_rcv_saddr.in6_u.u6_addr32[2];
			w[3] = skc->skc_v6_rcv_saddr.in6_u.u6_addr32[3];
		}
	} else {
		w[0] = 0;
		w[1] = 0;
		w[2] = bpf_htonl(0x0000ffff);
		w[3] = peer ? skc->skc_daddr : skc->skc_rcv_saddr;
	}
	__builtin_memcpy(out, w, 16);
}

/* One socket: report it, and destroy it if the rules say so. */
static __always_inline int iter_visit(struct seq_file *seq, struct sock_common *skc, struct aimesh_sock *s,
				      const struct lc_view *v, struct aimesh_conn *rec)
{
	struct aimesh_lc_ctl *ctl = lc_ctl();
	struct aimesh_backend *be = 0;
	struct aimesh_be_tel *t;
	__u64 now = bpf_ktime_get_ns();
	__u8 state, reason = 0;
	int gone;

	if (!ctl || !lc_ours(s, v))
		return 0;
	state = lc_state(s, v, now, ctl);
	gone = lc_gone(s, &be);
	if (ctl->flags & AIMESH_LC_F_ACT)
		reason = lc_decide(s, state, gone, be, now, ctl);
	if (reason) {
		/* sock_ops counts the close (TCP) and reads why from here. */
		s->close_reason = reason;
		if (bpf_sock_destroy(skc)) {
			s->close_reason = 0;
			reason = 0;
		} else if (s->proto == AIMESH_PROTO_UDP) {
			t = bpf_map_lookup_elem(&aimesh_be_tel, &s->backend_id);
			if (t) {
				stat_add(t->closed, 1);
				stat_add(t->closed_by[reason & 7], 1);
			}
		}
	}
	rec->cookie = s->cookie;
	rec->age_ns = lc_age(s, now);
	rec->idle_ns = state == AIMESH_CS_IDLE ? now - s->idle_ns : 0;
	rec->service_id = s->service_id;
	rec->backend_id = s->backend_id;
	rec->requests = s->requests;
	rec->proto = s->proto;
	rec->state = state;
	rec->closed = reason;
	rec->gone = gone;
	__builtin_memcpy(rec->daddr, v->daddr, 16);
	rec->dport = v->dport;
	bpf_seq_write(seq, rec, sizeof(*rec));
	return 0;
}

SEC("iter/tcp")
int aimesh_iter_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct aimesh_conn rec = {};
	struct lc_view v = {};
	struct aimesh_sock *s;
	struct tcp_sock *tp;
	struct sock *sk;
	int family;

	if (!skc)
		return 0;
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0; /* time-wait and request sockets: nothing to close */
	s = bpf_sk_storage_get(&aimesh_sockets, tp, 0, 0);
	if (!s)
		return 0;
	sk = (struct sock *)tp;
	family = skc->skc_family;
	iter_addr(skc, family, 1, v.daddr);
	v.dport = skc->skc_dport;
	v.tcp_state = skc->skc_state;
	v.unacked = tp->write_seq - tp->snd_una;
	v.unread = tp->rcv_nxt - tp->copied_seq + (__u32)sk->sk_backlog.len;
	iter_addr(skc, family, 0, rec.saddr);
	rec.sport = bpf_htons(skc->skc_num);
	return iter_visit(ctx->meta->seq, skc, s, &v, &rec);
}

SEC("iter/udp")
int aimesh_iter_udp(struct bpf_iter__udp *ctx)
{
	struct udp_sock *up = ctx->udp_sk;
	struct aimesh_conn rec = {};
	struct lc_view v = {};
	struct sock_common *skc;
	struct aimesh_sock *s;
	int family;

	if (!up)
		return 0;
	s = bpf_sk_storage_get(&aimesh_sockets, up, 0, 0);
	if (!s)
		return 0;
	skc = (struct sock_common *)up;
	family = skc->skc_family;
	iter_addr(skc, family, 1, v.daddr);
	v.dport = skc->skc_dport;
	iter_addr(skc, family, 0, rec.saddr);
	rec.sport = bpf_htons(skc->skc_num);
	return iter_visit(ctx->meta->seq, skc, s, &v, &rec);
}

char LICENSE[] SEC("license") = "GPL";
