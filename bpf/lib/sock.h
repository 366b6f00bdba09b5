/* Socket-address translation for the cgroup sock_addr hooks: forward
 * (service address -> backend) at connect/sendmsg, reverse (backend ->
 * service address) at recvmsg/getpeername. Entry points in sock_lb.bpf.c are
 * one line each; everything here works on struct bpf_sock_addr. */
#ifndef AIMESH_BPF_SOCK_H
#define AIMESH_BPF_SOCK_H

#include "lib/clients.h"
#include "lib/lb.h"
#include "lib/policy.h"
#include "lib/telemetry.h"

/* Read the destination (or, for recvmsg/getpeername, the peer) of the call as
 * an IPv4-mapped 16-byte address. */
static __always_inline void sock_read_addr(struct bpf_sock_addr *ctx, int family, __u8 addr[16])
{
	__u32 w[4];

	if (family == AIMESH_FAMILY_V4) {
		w[0] = 0;
		w[1] = 0;
		w[2] = bpf_htonl(0x0000ffff);
		w[3] = ctx->user_ip4;
	} else {
		w[0] = ctx->user_ip6[0];
		w[1] = ctx->user_ip6[1];
		w[2] = ctx->user_ip6[2];
		w[3] = ctx->user_ip6[3];
	}
	__builtin_memcpy(addr, w, 16);
}

/* Write an IPv4-mapped address and port back into the call. An IPv6 socket
 * reaching an IPv4 backend gets the ::ffff: form, which the kernel routes as
 * IPv4 unless the socket is IPV6_V6ONLY. */
static __always_inline void sock_write_addr(struct bpf_sock_addr *ctx, int family,
					    const __u8 addr[16], __be16 port)
{
	__u32 w[4];

	__builtin_memcpy(w, addr, 16);
	if (family == AIMESH_FAMILY_V4) {
		ctx->user_ip4 = w[3];
	} else {
		ctx->user_ip6[0] = w[0];
		ctx->user_ip6[1] = w[1];
		ctx->user_ip6[2] = w[2];
		ctx->user_ip6[3] = w[3];
	}
	ctx->user_port = (__u32)port;
}

/* Give a socket connected through a service its state, so sock_ops and
 * cgroup_skb follow it (TCP) and the lifecycle iterators know it (TCP and
 * UDP), and only it. */
static __always_inline void sock_track(struct bpf_sock_addr *ctx, __u32 svc_id, __u32 be_id, __u64 cookie,
				       const struct aimesh_backend *be, __u8 proto, __u16 sample_skip, __u64 cgroup_id)
{
	struct aimesh_sock *s;
	struct bpf_sock *sk = ctx->sk;

	if (!sk) {
		count_reason(AIMESH_R_SOCK_STORAGE_FAILED);
		return;
	}
	s = bpf_sk_storage_get(&aimesh_sockets, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!s) {
		count_reason(AIMESH_R_SOCK_STORAGE_FAILED);
		return;
	}
	/* A socket may connect again after a failed attempt: start afresh. */
	__builtin_memset(s, 0, sizeof(*s));
	s->service_id = svc_id;
	s->backend_id = be_id;
	s->connect_ns = bpf_ktime_get_ns();
	s->cookie = cookie;
	s->proto = proto;
	__builtin_memcpy(s->be_addr, be->addr, 16);
	s->be_port = be->port;
	s->cgroup_id = cgroup_id;
	/* Telemetry sampling, decided once per connection: an unsampled one is
	 * counted and balanced like any other, but its requests are not timed. */
	if (sample_skip && (bpf_get_prandom_u32() & 0xffff) < sample_skip)
		s->flags |= AIMESH_SKF_UNSAMPLED;
}

/* A call refused before it reached a backend: counted and reported as an
 * event that names the calling cgroup. */
static __always_inline void sock_refuse_event(struct bpf_sock_addr *ctx, __u32 svc_id, __u8 type, __u64 cgroup_id)
{
	struct aimesh_sock ev = { .service_id = svc_id };

	tel_event_cgroup(&ev, bpf_get_socket_cookie(ctx), type, bpf_ktime_get_ns(), cgroup_id);
}

/* connect4/6 (is_connect) and sendmsg4/6: service address -> backend.
 * Unknown destinations pass untouched (fail open); a client the service's
 * policy does not allow gets EPERM; a service with no usable backend fails
 * the call with ECONNREFUSED instead of sending into a void. */
static __always_inline int sock_forward(struct bpf_sock_addr *ctx, int family, int is_connect)
{
	struct aimesh_frontend_key fk = {};
	struct aimesh_revnat_key rk = {};
	struct aimesh_revnat rv = {};
	struct aimesh_frontend *fe;
	struct aimesh_backend *be = 0;
	struct aimesh_svc_stats *ss;
	struct aimesh_be_stats *bs;
	struct aimesh_client_stats *cs;
	__u64 cgroup_id;
	__u32 svc_id, be_id = 0, target_id = 0;
	__u16 sample_skip = 0;
	int err, need;

	if (ctx->protocol != AIMESH_PROTO_TCP && ctx->protocol != AIMESH_PROTO_UDP)
		return SYS_PROCEED;
	sock_read_addr(ctx, family, fk.addr);
	fk.port = (__be16)ctx->user_port;
	fk.proto = (__u8)ctx->protocol;
	fe = bpf_map_lookup_elem(&aimesh_frontends, &fk);
	if (!fe)
		return SYS_PROCEED;
	svc_id = fe->service_id;
	cgroup_id = bpf_get_current_cgroup_id();
	cs = client_stats(cgroup_id, svc_id, 1);

	if (!policy_allows(svc_id)) {
		ss = bpf_map_lookup_elem(&aimesh_svc_stats, &svc_id);
		if (ss)
			stat_add(ss->denied, 1);
		if (cs)
			stat_add(cs->denied, 1);
		sock_refuse_event(ctx, svc_id, AIMESH_EV_DENIED, cgroup_id);
		bpf_set_retval(-EPERM);
		return SYS_REJECT;
	}

	/* An IPv4 socket can only reach IPv4 backends. An IPv6 socket reaches an
	 * IPv4 backend through its ::ffff: form at connect(), but the kernel
	 * refuses an unconnected UDPv6 send rewritten to a mapped address
	 * (ENOTSUPP in udpv6_sendmsg), so sendmsg6 needs an IPv6 backend. */
	need = family == AIMESH_FAMILY_V4 ? AIMESH_FAMILY_V4 : (is_connect ? 0 : AIMESH_FAMILY_V6);
	err = lb_select(svc_id, bpf_get_prandom_u32(), cgroup_id, need, &be_id, &be, &target_id, &sample_skip);
	if (err || !be) {
		ss = bpf_map_lookup_elem(&aimesh_svc_stats, &svc_id);
		if (ss)
			stat_add(ss->refused, 1);
		if (cs)
			stat_add(cs->refused, 1);
		sock_refuse_event(ctx, svc_id, AIMESH_EV_NO_BACKEND, cgroup_id);
		bpf_set_retval(-ECONNREFUSED);
		return SYS_REJECT;
	}

	/* Remember the frontend for this socket and backend so the reverse
	 * hooks can show the service address to the application. */
	rk.cookie = bpf_get_socket_cookie(ctx);
	__builtin_memcpy(rk.addr, be->addr, 16);
	rk.port = be->port;
	__builtin_memcpy(rv.addr, fk.addr, 16);
	rv.port = fk.port;
	rv.service_id = svc_id;
	if (bpf_map_update_elem(&aimesh_revnat, &rk, &rv, BPF_ANY))
		count_reason(AIMESH_R_REVNAT_FAILED);

	sock_write_addr(ctx, family, be->addr, be->port);

	/* The socket belongs to the service its backend does (a split's
	 * target): its telemetry and lifecycle rules are that service's. */
	if (is_connect)
		sock_track(ctx, target_id, be_id, rk.cookie, be, fk.proto, sample_skip, cgroup_id);
	if (target_id != svc_id)
		lb_split_count(svc_id, target_id, is_connect);

	ss = bpf_map_lookup_elem(&aimesh_svc_stats, &svc_id);
	bs = bpf_map_lookup_elem(&aimesh_be_stats, &be_id);
	if (is_connect) {
		if (ss)
			stat_add(ss->connects, 1);
		if (bs)
			stat_add(bs->connects, 1);
		if (cs)
			stat_add(cs->connects, 1);
	} else {
		if (ss)
			stat_add(ss->datagrams, 1);
		if (bs)
			stat_add(bs->datagrams, 1);
		if (cs)
			stat_add(cs->datagrams, 1);
	}
	return SYS_PROCEED;
}

/* recvmsg4/6 and getpeername4/6: backend -> service address, if this socket
 * was sent to that backend through a service. Always proceeds. */
static __always_inline int sock_reverse(struct bpf_sock_addr *ctx, int family)
{
	struct aimesh_revnat_key rk = {};
	struct aimesh_revnat *rv;

	rk.cookie = bpf_get_socket_cookie(ctx);
	sock_read_addr(ctx, family, rk.addr);
	rk.port = (__be16)ctx->user_port;
	rv = bpf_map_lookup_elem(&aimesh_revnat, &rk);
	if (rv)
		sock_write_addr(ctx, family, rv->addr, rv->port);
	return SYS_PROCEED;
}

#endif
