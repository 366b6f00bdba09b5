// SPDX-License-Identifier: GPL-2.0
/* TC ingress L4 load balancing for traffic that does not start in a local
 * socket (other nodes, node ports, workloads outside the cgroup hooks).
 *
 * A packet to a service frontend (address, port, protocol in
 * aimesh_frontends) starts a flow: a backend is picked with the same
 * selection code as the socket path (lib/lb.h; Maglev keys on the 5-tuple, so
 * every node picks alike), two aimesh_ct entries are made (forward and
 * reply), and the destination is rewritten. Later packets of the flow follow
 * the forward entry; the backend's replies, arriving on another interface
 * with the same program, follow the reply entry and get the service address
 * back as their source. Entries expire after an idle time (shorter once a FIN
 * or RST was seen). Everything else passes untouched. */
#include "lib/lb.h"
#include "lib/nat.h"

/* flows: see struct aimesh_ct (aimesh/abi.h) */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, AIMESH_MAX_CT);
	__type(key, struct aimesh_ct_key);
	__type(value, struct aimesh_ct);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} aimesh_ct SEC(".maps");

#define TC_AF_INET 2
#define TC_AF_INET6 10

/* FIB lookup of dst16 from src16 as if the packet arrived on the skb's
 * ingress device. Returns BPF_FIB_LKUP_RET_*; p->ifindex is the egress. */
static __always_inline long tc_fib(struct __sk_buff *skb, const struct nat_flow *f, const __u8 *src16,
				   const __u8 *dst16, struct bpf_fib_lookup *p)
{
	__builtin_memset(p, 0, sizeof(*p));
	p->l4_protocol = f->key.proto;
	p->ifindex = skb->ingress_ifindex;
	if (f->family == AIMESH_FAMILY_V4) {
		p->family = TC_AF_INET;
		__builtin_memcpy(&p->ipv4_src, src16 + 12, 4);
		__builtin_memcpy(&p->ipv4_dst, dst16 + 12, 4);
	} else {
		p->family = TC_AF_INET6;
		__builtin_memcpy(p->ipv6_src, src16, 16);
		__builtin_memcpy(p->ipv6_dst, dst16, 16);
	}
	return bpf_fib_lookup(skb, p, sizeof(*p), 0);
}

/* Idle timeout of a flow: aimesh_config's (the agent's --ct-*-timeout
 * flags), or the defaults. */
static __always_inline __u64 ct_timeout(const struct aimesh_ct_key *k, const struct aimesh_ct *ct)
{
	struct aimesh_config *cfg = health_config();
	__u64 t;

	if (ct->flags & AIMESH_CTF_CLOSING) {
		t = cfg ? cfg->ct_closing_timeout_ns : 0;
		return t ? t : AIMESH_CT_CLOSING_TIMEOUT_NS;
	}
	if (k->proto == AIMESH_PROTO_TCP) {
		t = cfg ? cfg->ct_tcp_timeout_ns : 0;
		return t ? t : AIMESH_CT_TCP_TIMEOUT_NS;
	}
	t = cfg ? cfg->ct_udp_timeout_ns : 0;
	return t ? t : AIMESH_CT_UDP_TIMEOUT_NS;
}

/* The key of the other direction's entry. */
static __always_inline void ct_peer_key(const struct aimesh_ct_key *k, const struct aimesh_ct *ct,
					struct aimesh_ct_key *peer)
{
	__builtin_memset(peer, 0, sizeof(*peer));
	peer->proto = k->proto;
	if (ct->dir == AIMESH_CT_FORWARD) { /* reply: backend -> client */
		__builtin_memcpy(peer->saddr, ct->addr, 16);
		peer->sport = ct->port;
		__builtin_memcpy(peer->daddr, k->saddr, 16);
		peer->dport = k->sport;
	} else { /* forward: client -> frontend */
		__builtin_memcpy(peer->saddr, k->daddr, 16);
		peer->sport = k->dport;
		__builtin_memcpy(peer->daddr, ct->addr, 16);
		peer->dport = ct->port;
	}
}

/* A FIN or RST: both directions get the short timeout. */
static __always_inline void ct_closing(const struct aimesh_ct_key *k, struct aimesh_ct *ct)
{
	struct aimesh_ct_key peer;
	struct aimesh_ct *p;

	ct->flags |= AIMESH_CTF_CLOSING;
	ct_peer_key(k, ct, &peer);
	p = bpf_map_lookup_elem(&aimesh_ct, &peer);
	if (p)
		p->flags |= AIMESH_CTF_CLOSING;
}

/* The 5-tuple as one 64-bit key for maglev/bounded_hash (lb_select mixes it
 * again into a table slot): the same on every node, so a flow that moves
 * between nodes keeps its backend. */
static __always_inline __u64 ct_flow_hash(const struct aimesh_ct_key *k)
{
	__u32 w[10];
	__u64 h = 0;
	int i;

	__builtin_memcpy(w, k->saddr, 16);
	__builtin_memcpy(w + 4, k->daddr, 16);
	w[8] = ((__u32)k->sport << 16) | k->dport;
	w[9] = k->proto;
#pragma unroll
	for (i = 0; i < 10; i++)
		h = aimesh_mix64(h ^ w[i]);
	return h;
}

/* A SYN on a known, open flow (a retransmitted SYN, or the client reusing
 * the 5-tuple): the reply entry is written again, fresh. The two entries age
 * and are evicted (LRU) separately, and a SYN-ACK that found no reply entry
 * would reach the client from the backend's address and the connect would
 * hang. */
static __always_inline void ct_refresh_reply(const struct aimesh_ct_key *k, const struct aimesh_ct *ct, __u64 now)
{
	struct aimesh_ct_key peer;
	struct aimesh_ct rev = {};

	ct_peer_key(k, ct, &peer);
	__builtin_memcpy(rev.addr, k->daddr, 16);
	rev.port = k->dport;
	rev.dir = AIMESH_CT_REPLY;
	rev.flags = ct->flags & AIMESH_CTF_LOCAL;
	rev.service_id = ct->service_id;
	rev.backend_id = ct->backend_id;
	rev.last_seen_ns = now;
	bpf_map_update_elem(&aimesh_ct, &peer, &rev, BPF_ANY);
}

/* A new flow to service `service_id`: pick, record both directions. */
static __always_inline int ct_create(struct __sk_buff *skb, struct nat_flow *f, __u32 service_id, __u64 now,
				     struct aimesh_ct *out)
{
	struct bpf_fib_lookup fib;
	__u8 flags = 0;
	struct aimesh_ct_key rkey = {};
	struct aimesh_ct rev = {};
	struct aimesh_backend *be;
	__u32 backend_id;
	__u64 hash;

	hash = ct_flow_hash(&f->key);
	if (lb_select(service_id, bpf_get_prandom_u32(), hash, f->family, &backend_id, &be))
		return -1;
	/* A frontend this node would deliver locally is a node address. */
	if (tc_fib(skb, f, f->key.saddr, f->key.daddr, &fib) == BPF_FIB_LKUP_RET_NOT_FWDED)
		flags = AIMESH_CTF_LOCAL;
	__builtin_memset(out, 0, sizeof(*out));
	__builtin_memcpy(out->addr, be->addr, 16);
	out->port = be->port;
	out->dir = AIMESH_CT_FORWARD;
	out->flags = flags;
	out->service_id = service_id;
	out->backend_id = backend_id;
	out->last_seen_ns = now;

	__builtin_memcpy(rkey.saddr, be->addr, 16);
	rkey.sport = be->port;
	__builtin_memcpy(rkey.daddr, f->key.saddr, 16);
	rkey.dport = f->key.sport;
	rkey.proto = f->key.proto;
	__builtin_memcpy(rev.addr, f->key.daddr, 16);
	rev.port = f->key.dport;
	rev.dir = AIMESH_CT_REPLY;
	rev.flags = flags;
	rev.service_id = service_id;
	rev.backend_id = backend_id;
	rev.last_seen_ns = now;
	if (bpf_map_update_elem(&aimesh_ct, &rkey, &rev, BPF_ANY) ||
	    bpf_map_update_elem(&aimesh_ct, &f->key, out, BPF_ANY)) {
		count_reason(AIMESH_R_TC_CT_FAILED);
		return -2;
	}
	return 0;
}

SEC("tc")
int aimesh_tc_ingress(struct __sk_buff *skb)
{
	struct aimesh_frontend_key fk = {};
	struct aimesh_frontend *fe;
	struct aimesh_ct *ct, fresh;
	struct nat_flow f;
	__u64 now;
	int r;

	r = nat_parse(skb, &f);
	if (r != NAT_OK) {
		if (r == NAT_FRAGMENT)
			count_reason(AIMESH_R_TC_FRAGMENT);
		else if (r == NAT_MALFORMED)
			count_reason(AIMESH_R_TC_MALFORMED);
		return TC_ACT_OK;
	}

	now = bpf_ktime_get_ns();
	ct = bpf_map_lookup_elem(&aimesh_ct, &f.key);
	if (ct && now - ct->last_seen_ns > ct_timeout(&f.key, ct)) {
		bpf_map_delete_elem(&aimesh_ct, &f.key);
		ct = 0;
	}
	if (ct && ct->dir == AIMESH_CT_FORWARD && f.key.proto == AIMESH_PROTO_TCP &&
	    (f.tcp_flags & (NAT_TCP_SYN | NAT_TCP_ACK)) == NAT_TCP_SYN) {
		if (ct->flags & AIMESH_CTF_CLOSING) {
			/* A new connection on the tuple of a closed one: balance it anew. */
			bpf_map_delete_elem(&aimesh_ct, &f.key);
			ct = 0;
		} else {
			ct->last_seen_ns = now;
			ct_refresh_reply(&f.key, ct, now);
		}
	}
	if (ct) {
		if (now - ct->last_seen_ns > 1000000000ULL)
			ct->last_seen_ns = now;
		if (f.key.proto == AIMESH_PROTO_TCP && (f.tcp_flags & (NAT_TCP_FIN | NAT_TCP_RST)) &&
		    !(ct->flags & AIMESH_CTF_CLOSING))
			ct_closing(&f.key, ct);
		__builtin_memcpy(fresh.addr, ct->addr, 16);
		fresh.port = ct->port;
		fresh.dir = ct->dir;
		fresh.flags = ct->flags;
		if (nat_rewrite(skb, &f, fresh.dir == AIMESH_CT_FORWARD, fresh.addr, fresh.port)) {
			count_reason(AIMESH_R_TC_REWRITE_FAILED); /* never send half a rewrite */
			return TC_ACT_SHOT;
		}
		if (fresh.dir == AIMESH_CT_REPLY && (fresh.flags & AIMESH_CTF_LOCAL)) {
			/* From a node address now: straight to the client's interface. */
			struct bpf_fib_lookup fib;
			long rc = tc_fib(skb, &f, fresh.addr, f.key.daddr, &fib);

			if (rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH)
				return bpf_redirect_neigh(fib.ifindex, 0, 0, 0);
		}
		return TC_ACT_OK;
	}

	/* Not a known flow: a new one only if it is addressed to a service. */
	__builtin_memcpy(fk.addr, f.key.daddr, 16);
	fk.port = f.key.dport;
	fk.proto = f.key.proto;
	fe = bpf_map_lookup_elem(&aimesh_frontends, &fk);
	if (!fe)
		return TC_ACT_OK;
	r = ct_create(skb, &f, fe->service_id, now, &fresh);
	if (r) {
		if (r == -1)
			count_reason(AIMESH_R_TC_NO_BACKEND);
		return TC_ACT_SHOT;
	}
	if (nat_rewrite(skb, &f, 1, fresh.addr, fresh.port)) {
		count_reason(AIMESH_R_TC_REWRITE_FAILED);
		return TC_ACT_SHOT;
	}
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
