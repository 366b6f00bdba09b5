/* Packet-level parsing and address translation for the TC data path: find
 * the 5-tuple of an IPv4/IPv6 TCP/UDP packet, and rewrite its destination
 * (DNAT) or source (reverse NAT) with correct IPv4 header and TCP/UDP
 * checksums. Offsets, not pointers, cross helper calls: every
 * bpf_skb_store_bytes invalidates packet pointers. */
#ifndef AIMESH_BPF_NAT_H
#define AIMESH_BPF_NAT_H

#include <linux/pkt_cls.h>

#include "lib/common.h"

#define NAT_ETH_HLEN 14
#define NAT_ETH_P_IP 0x0800
#define NAT_ETH_P_IPV6 0x86DD
#define NAT_IPPROTO_HOPOPTS 0
#define NAT_IPPROTO_ROUTING 43
#define NAT_IPPROTO_FRAGMENT 44
#define NAT_IPPROTO_DSTOPTS 60
#define NAT_IPV6_EXT_MAX 4 /* extension headers skipped before giving up */
#define NAT_TCP_FIN 0x01
#define NAT_TCP_SYN 0x02
#define NAT_TCP_RST 0x04
#define NAT_TCP_ACK 0x10

enum nat_parse {
	NAT_PASS = 0,      /* not IP, not TCP/UDP: not ours */
	NAT_OK = 1,        /* a TCP/UDP packet: the flow is filled in */
	NAT_FRAGMENT = 2,  /* an IP fragment: passed untouched */
	NAT_MALFORMED = 3, /* truncated or inconsistent headers: passed untouched */
};

struct nat_flow {
	struct aimesh_ct_key key; /* saddr, daddr (IPv4-mapped), sport, dport, proto */
	__u32 l3_off;             /* IP header, from skb->data */
	__u32 l4_off;             /* TCP/UDP header */
	__u8 family;              /* AIMESH_FAMILY_V4 / _V6 */
	__u8 tcp_flags;
	__u8 pad[2];
};

static __always_inline void nat_map_v4(__u8 *out16, const __u8 *v4)
{
	__builtin_memset(out16, 0, 10);
	out16[10] = 0xff;
	out16[11] = 0xff;
	__builtin_memcpy(out16 + 12, v4, 4);
}

/* The ports (and TCP flags) at l4_off; NAT_MALFORMED if they are not there. */
static __always_inline int nat_parse_l4(struct __sk_buff *skb, struct nat_flow *f, void *data, void *end)
{
	__u8 *l4 = (__u8 *)data + (f->l4_off & 0xffff);

	if (f->key.proto == AIMESH_PROTO_TCP) {
		if ((void *)(l4 + 20) > end)
			return NAT_MALFORMED;
		if ((l4[12] >> 4) < 5)
			return NAT_MALFORMED;
		f->tcp_flags = l4[13];
	} else {
		if ((void *)(l4 + 8) > end)
			return NAT_MALFORMED;
	}
	__builtin_memcpy(&f->key.sport, l4, 2);
	__builtin_memcpy(&f->key.dport, l4 + 2, 2);
	return NAT_OK;
}

/* Ethernet + IPv4 (options allowed) or IPv6 (hop-by-hop, routing and
 * destination-options headers skipped) + TCP/UDP. Headers must be in the
 * linear part of the skb, which bpf_skb_pull_data arranges. */
static __always_inline int nat_parse(struct __sk_buff *skb, struct nat_flow *f)
{
	void *data, *end;
	__u8 *p;
	__u32 off, len, end6;
	__u8 nexthdr;
	int i;

	__builtin_memset(f, 0, sizeof(*f));
	if (skb->protocol != bpf_htons(NAT_ETH_P_IP) && skb->protocol != bpf_htons(NAT_ETH_P_IPV6))
		return NAT_PASS;
	/* Enough for Ethernet, IPv6 with extension headers, and TCP. */
	len = skb->len < 200 ? skb->len : 200;
	bpf_skb_pull_data(skb, len);
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	f->l3_off = NAT_ETH_HLEN;
	p = (__u8 *)data + NAT_ETH_HLEN;

	if (skb->protocol == bpf_htons(NAT_ETH_P_IP)) {
		__u32 ihl, tot;

		if ((void *)(p + 20) > end)
			return NAT_MALFORMED;
		ihl = (p[0] & 0x0f) * 4;
		tot = ((__u32)p[2] << 8) | p[3];
		if ((p[0] >> 4) != 4 || ihl < 20 || tot < ihl || NAT_ETH_HLEN + tot > skb->len)
			return NAT_MALFORMED;
		if (p[9] != AIMESH_PROTO_TCP && p[9] != AIMESH_PROTO_UDP)
			return NAT_PASS;
		if ((p[6] & 0x3f) || p[7]) /* MF set or a fragment offset */
			return NAT_FRAGMENT;
		f->family = AIMESH_FAMILY_V4;
		f->key.proto = p[9];
		nat_map_v4(f->key.saddr, p + 12);
		nat_map_v4(f->key.daddr, p + 16);
		f->l4_off = NAT_ETH_HLEN + ihl;
		if (f->l4_off + (f->key.proto == AIMESH_PROTO_TCP ? 20 : 8) > NAT_ETH_HLEN + tot)
			return NAT_MALFORMED;
		return nat_parse_l4(skb, f, data, end);
	}

	if ((void *)(p + 40) > end)
		return NAT_MALFORMED;
	/* Extension headers and the TCP/UDP header must lie within payload_len. */
	end6 = NAT_ETH_HLEN + 40 + (((__u32)p[4] << 8) | p[5]);
	if ((p[0] >> 4) != 6 || end6 > skb->len)
		return NAT_MALFORMED;
	f->family = AIMESH_FAMILY_V6;
	__builtin_memcpy(f->key.saddr, p + 8, 16);
	__builtin_memcpy(f->key.daddr, p + 24, 16);
	nexthdr = p[6];
	off = NAT_ETH_HLEN + 40;
#pragma unroll
	for (i = 0; i < NAT_IPV6_EXT_MAX; i++) {
		__u8 *x;

		if (nexthdr == NAT_IPPROTO_FRAGMENT)
			return NAT_FRAGMENT;
		if (nexthdr != NAT_IPPROTO_HOPOPTS && nexthdr != NAT_IPPROTO_ROUTING && nexthdr != NAT_IPPROTO_DSTOPTS)
			break;
		x = (__u8 *)data + (off & 0xff);
		if ((void *)(x + 8) > end || off + 8 > end6)
			return NAT_MALFORMED;
		nexthdr = x[0];
		off += ((__u32)x[1] + 1) * 8;
		if (off > 192) /* past what was pulled: give up */
			return NAT_MALFORMED;
	}
	if (nexthdr != AIMESH_PROTO_TCP && nexthdr != AIMESH_PROTO_UDP)
		return nexthdr == NAT_IPPROTO_FRAGMENT ? NAT_FRAGMENT : NAT_PASS;
	if (off + (nexthdr == AIMESH_PROTO_TCP ? 20 : 8) > end6)
		return NAT_MALFORMED;
	f->key.proto = nexthdr;
	f->l4_off = off;
	return nat_parse_l4(skb, f, data, end);
}

/* Offset of the TCP/UDP checksum field. */
static __always_inline __u32 nat_csum_off(const struct nat_flow *f)
{
	return f->l4_off + (f->key.proto == AIMESH_PROTO_TCP ? 16 : 6);
}

/* Rewrites one address (dst: the destination, else the source) and the port
 * next to it, fixing the IPv4 header checksum and the TCP/UDP checksum (its
 * pseudo-header covers the addresses). Returns 0 or a negative error. */
static __always_inline int nat_rewrite(struct __sk_buff *skb, const struct nat_flow *f, int dst,
				       const __u8 *new_addr16, __be16 new_port)
{
	/* UDP: a zero checksum (IPv4: none) stays zero, and a computed zero is
	 * written as 0xffff (RFC 768). */
	__u64 mm = f->key.proto == AIMESH_PROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	const __u8 *old_addr = dst ? f->key.daddr : f->key.saddr;
	__be16 old_port = dst ? f->key.dport : f->key.sport;
	__u32 csum_off = nat_csum_off(f);
	int err;

	if (f->family == AIMESH_FAMILY_V4) {
		__be32 from, to;
		__u32 addr_off = f->l3_off + (dst ? 16 : 12);

		__builtin_memcpy(&from, old_addr + 12, 4);
		__builtin_memcpy(&to, new_addr16 + 12, 4);
		if (from != to) {
			if ((err = bpf_l4_csum_replace(skb, csum_off, from, to, BPF_F_PSEUDO_HDR | mm | sizeof(to))))
				return err;
			if ((err = bpf_l3_csum_replace(skb, f->l3_off + 10, from, to, sizeof(to))))
				return err;
			if ((err = bpf_skb_store_bytes(skb, addr_off, &to, sizeof(to), 0)))
				return err;
		}
	} else {
		__u32 addr_off = f->l3_off + (dst ? 24 : 8);
		__s64 diff = bpf_csum_diff((__be32 *)old_addr, 16, (__be32 *)new_addr16, 16, 0);

		if (diff < 0)
			return (int)diff;
		if ((err = bpf_l4_csum_replace(skb, csum_off, 0, (__u32)diff, BPF_F_PSEUDO_HDR | mm)))
			return err;
		if ((err = bpf_skb_store_bytes(skb, addr_off, new_addr16, 16, 0)))
			return err;
	}
	if (old_port != new_port) {
		if ((err = bpf_l4_csum_replace(skb, csum_off, old_port, new_port, mm | sizeof(new_port))))
			return err;
		if ((err = bpf_skb_store_bytes(skb, f->l4_off + (dst ? 2 : 0), &new_port, sizeof(new_port), 0)))
			return err;
	}
	return 0;
}

#endif
