/* Connection tracking for the TC data path (bpf/tc_lb.bpf.c): the flow table
 * aimesh_ct and what a packet does to it.
 *
 * A packet to a service frontend starts a flow: a backend is picked with the
 * selection code of the socket path (lib/lb.h; Maglev keys on the 5-tuple,
 * so every node picks alike) and two entries are made, the forward one (key:
 * client -> frontend; value: the backend) and the reply one (key: backend ->
 * client; value: the frontend). Later packets of the flow find the forward
 * entry by the 5-tuple they carry (struct nat_flow's key, lib/nat.h); the
 * backend's replies, arriving on another interface with the same program,
 * find the reply entry. An entry idle for longer than its timeout is
 * forgotten when its next packet comes (the agent's sweep deletes the
 * others); a FIN or RST shortens the timeout of both directions. Layouts and
 * default timeouts are in aimesh/abi.h. */
#ifndef AIMESH_BPF_CONNTRACK_H
#define AIMESH_BPF_CONNTRACK_H

#include "lib/lb.h"
#include "lib/nat.h"

/* flows: see struct aimesh_ct (aimesh/abi.h). Defined here and not in
 * lib/maps.h: only tc_lb includes this header, so the table (preallocated,
 * --max-flows entries) exists only when the agent loads the TC path. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, AIMESH_MAX_CT);
	__type(key, struct aimesh_ct_key);
	__type(value, struct aimesh_ct);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} aimesh_ct SEC(".maps");

/* Address families of struct bpf_fib_lookup (linux/socket.h's AF_INET/6). */
#define CT_AF_INET 2
#define CT_AF_INET6 10

/* A known flow's last_seen_ns is written at most this often, so a busy flow
 * does not write its entry on every packet; the timeouts are far longer. */
#define CT_TOUCH_INTERVAL_NS NSEC_PER_SEC

/* What ct_create() returns. */
enum ct_create {
	CT_CREATED = 0,     /* both entries recorded; out is the forward one */
	CT_NO_BACKEND = -1, /* the service has no usable backend (not counted) */
	CT_FAILED = -2,     /* the entries could not be recorded (counted) */
};

/* FIB lookup of f's destination from src->addr (f's source if src is NULL),
 * IPv4-mapped for IPv4, as if the packet arrived on the skb's ingress device.
 * Returns BPF_FIB_LKUP_RET_*; on success *ifindex is the egress device.
 * A global function, so its 64-byte lookup struct is on a frame of its own:
 * the TC program's frame also carries the balancer's calls, and the chain of
 * frames must fit in 512 bytes. */
__noinline long aimesh_ct_fib(struct __sk_buff *skb, const struct nat_flow *f, const struct aimesh_ct *src,
			      __u32 *ifindex)
{
	struct bpf_fib_lookup p = {};
	const __u8 *src16;
	long rc;

	if (!f || !ifindex)
		return BPF_FIB_LKUP_RET_NOT_FWDED;
	src16 = src ? src->addr : f->key.saddr;
	p.l4_protocol = f->key.proto;
	p.ifindex = skb->ingress_ifindex;
	if (f->family == AIMESH_FAMILY_V4) {
		p.family = CT_AF_INET;
		__builtin_memcpy(&p.ipv4_src, src16 + 12, 4);
		__builtin_memcpy(&p.ipv4_dst, f->key.daddr + 12, 4);
	} else {
		p.family = CT_AF_INET6;
		__builtin_memcpy(p.ipv6_src, src16, 16);
		__builtin_memcpy(p.ipv6_dst, f->key.daddr, 16);
	}
	rc = bpf_fib_lookup(skb, &p, sizeof(p), 0);
	*ifindex = p.ifindex;
	return rc;
}

/* Idle timeout of the flow entry ct under key k, in ns: aimesh_config's (the
 * agent's --ct-*-timeout-seconds flags), or the AIMESH_CT_*_TIMEOUT_NS
 * defaults. A closing flow has the closing timeout whatever its protocol. */
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

/* Fills peer with the key of the other direction's entry of the flow whose
 * entry ct is stored under k. */
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

/* A FIN or RST on the flow of entry ct (under k): both directions get the
 * short timeout. */
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

/* The 5-tuple k as one 64-bit key for maglev/bounded_hash (lb_select mixes
 * it again into a table slot): the same on every node, so a flow that moves
 * between nodes keeps its backend. Global, for the same reason as
 * aimesh_ct_fib(): its words stay off the TC program's frame. */
__noinline __u64 aimesh_ct_flow_hash(const struct aimesh_ct_key *k)
{
	__u32 w[10];
	__u64 h = 0;
	int i;

	if (!k)
		return 0;
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
 * the 5-tuple; k and ct are its forward entry): the reply entry is written
 * again, fresh, seen at now. The two entries age and are evicted (LRU)
 * separately, and a SYN-ACK that found no reply entry would reach the client
 * from the backend's address and the connect would hang. */
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

/* The entry of the packet's flow f at now, or 0 if it has none (never had
 * one, or it was forgotten here: idle past its timeout, or a closed TCP flow
 * whose 5-tuple a new SYN reuses, which is balanced anew). On the way: a SYN
 * on an open flow refreshes its reply entry, the entry's last_seen_ns is
 * moved to now (at most every CT_TOUCH_INTERVAL_NS), and a first FIN or RST
 * marks both directions closing. The pointer is into the map (an LRU hash
 * whose entries other CPUs update and recycle): the caller rewrites from a
 * copy of the fields it needs. */
static __always_inline struct aimesh_ct *ct_lookup(const struct nat_flow *f, __u64 now)
{
	struct aimesh_ct *ct;

	ct = bpf_map_lookup_elem(&aimesh_ct, &f->key);
	if (ct && now - ct->last_seen_ns > ct_timeout(&f->key, ct)) {
		bpf_map_delete_elem(&aimesh_ct, &f->key);
		ct = 0;
	}
	if (ct && ct->dir == AIMESH_CT_FORWARD && f->key.proto == AIMESH_PROTO_TCP &&
	    (f->tcp_flags & (NAT_TCP_SYN | NAT_TCP_ACK)) == NAT_TCP_SYN) {
		if (ct->flags & AIMESH_CTF_CLOSING) {
			/* A new connection on the tuple of a closed one: balance it anew. */
			bpf_map_delete_elem(&aimesh_ct, &f->key);
			ct = 0;
		} else {
			ct->last_seen_ns = now;
			ct_refresh_reply(&f->key, ct, now);
		}
	}
	if (ct) {
		if (now - ct->last_seen_ns > CT_TOUCH_INTERVAL_NS)
			ct->last_seen_ns = now;
		if (f->key.proto == AIMESH_PROTO_TCP && (f->tcp_flags & (NAT_TCP_FIN | NAT_TCP_RST)) &&
		    !(ct->flags & AIMESH_CTF_CLOSING))
			ct_closing(&f->key, ct);
	}
	return ct;
}

/* A new flow f to service `service_id` (its frontend in aimesh_frontends is
 * f's destination), seen at now: pick a backend and record both directions.
 * Fills out with the forward entry. Returns an enum ct_create: CT_CREATED,
 * CT_NO_BACKEND, or CT_FAILED (counted as AIMESH_R_TC_CT_FAILED). */
static __always_inline int ct_create(struct __sk_buff *skb, struct nat_flow *f, __u32 service_id, __u64 now,
				     struct aimesh_ct *out)
{
	__u32 ifindex;
	__u8 flags = 0;
	struct aimesh_ct_key rkey = {};
	struct aimesh_ct rev = {};
	struct aimesh_backend *be;
	__u32 backend_id, target_id = 0;
	__u64 hash;

	hash = aimesh_ct_flow_hash(&f->key);
	if (lb_select(service_id, bpf_get_prandom_u32(), hash, f->family, &backend_id, &be, &target_id, 0))
		return CT_NO_BACKEND;
	if (target_id != service_id)
		lb_split_count(service_id, target_id, 1);
	/* A frontend this node would deliver locally is a node address. */
	if (aimesh_ct_fib(skb, f, 0, &ifindex) == BPF_FIB_LKUP_RET_NOT_FWDED)
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
		return CT_FAILED;
	}
	return CT_CREATED;
}

#endif
