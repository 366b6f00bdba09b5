// SPDX-License-Identifier: GPL-2.0
/* Request/response timing for sockets connected through a service, from the
 * payload segments they send and receive (cgroup_skb egress/ingress). Always
 * allows the packet. A segment without payload (handshake, ACK, FIN) costs a
 * header parse; a payload segment of a socket that is not timed (not ours,
 * or not sampled: aimesh_service.sample_skip), the parse and one array load
 * (lib/timed.h); of a timed one, a storage lookup, the HTTP/1.1 head parse or
 * body walk (lib/http1.h) and a few map updates. An RST costs a storage
 * lookup, for every socket. */
#include "lib/http1.h"
#include "lib/telemetry.h"
#include "lib/timed.h"

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_TCP_ 6
#define TCP_FLAG_RST 0x04

/* The native-order load of 4 bytes at p (an address word as it is in memory). */
static __always_inline __u32 word_at(const __u8 *p)
{
	__u32 w;

	__builtin_memcpy(&w, p, 4);
	return w;
}

/* Payload offset and length of a TCP segment, its flags, and its socket's
 * aimesh_timed slot (lib/timed.h: from the ports and the peer's address,
 * which is the destination on egress and the source on ingress); 0 if not
 * TCP. Headers are read in place (direct packet access) when they are in
 * the linear part of the skb, as they nearly always are; otherwise copied. */
static __always_inline int parse_tcp(struct __sk_buff *skb, int ingress, __u32 *off, __u32 *len, __u8 *flags,
				     __u32 *slot)
{
	__u8 *p = (__u8 *)(long)skb->data, *end = (__u8 *)(long)skb->data_end, *t;
	__u8 ip[40];
	__u8 tcp[14];
	__u32 l3, peer;
	__u16 sport, dport;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		if (p + 20 <= end) {
			if (p[9] != IPPROTO_TCP_ || (p[6] & 0x3f) || p[7])
				return 0; /* not TCP, or a fragment */
			l3 = (p[0] & 0x0f) * 4;
			peer = word_at(p + (ingress ? 12 : 16));
		} else {
			if (bpf_skb_load_bytes(skb, 0, ip, 20))
				return 0;
			if (ip[9] != IPPROTO_TCP_ || (ip[6] & 0x3f) || ip[7])
				return 0;
			l3 = (ip[0] & 0x0f) * 4;
			peer = word_at(ip + (ingress ? 12 : 16));
		}
		if (l3 < 20 || l3 > 60)
			return 0;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		if (p + 40 <= end) {
			if (p[6] != IPPROTO_TCP_) /* extension headers: not parsed */
				return 0;
			peer = word_at(p + (ingress ? 20 : 36));
		} else {
			if (bpf_skb_load_bytes(skb, 0, ip, 40))
				return 0;
			if (ip[6] != IPPROTO_TCP_)
				return 0;
			peer = word_at(ip + (ingress ? 20 : 36));
		}
		l3 = 40;
	} else {
		return 0;
	}
	t = p + l3;
	if (t + 14 <= end) {
		*off = l3 + (t[12] >> 4) * 4;
		*flags = t[13];
		sport = (__u16)(t[0] << 8 | t[1]);
		dport = (__u16)(t[2] << 8 | t[3]);
	} else {
		if (bpf_skb_load_bytes(skb, l3, tcp, sizeof(tcp)))
			return 0;
		*off = l3 + (tcp[12] >> 4) * 4;
		*flags = tcp[13];
		sport = (__u16)(tcp[0] << 8 | tcp[1]);
		dport = (__u16)(tcp[2] << 8 | tcp[3]);
	}
	*len = skb->len > *off ? skb->len - *off : 0;
	*slot = ingress ? timed_slot(dport, sport, peer) : timed_slot(sport, dport, peer);
	return 1;
}

/* Whether a timed socket may own this slot: if not, the segment's socket
 * is certainly not timed and its storage is not looked up. */
static __always_inline int maybe_timed(__u32 slot)
{
	__u32 *n = bpf_map_lookup_elem(&aimesh_timed, &slot);

	return n && *n;
}

#define H2_DATA 0x1    /* frame type 0 */
#define H2_HEADERS 0x2 /* frame type 1 */

/* HTTP/2 (RFC 9113, section 4.1): which of DATA and HEADERS frames start in
 * this segment, from up to 8 frame headers (9 bytes: length[3], type, flags,
 * stream[4]). A segment that starts inside a frame begun in an earlier
 * segment (a long DATA frame) counts as DATA. SETTINGS, PING and
 * WINDOW_UPDATE carry no request or response bytes. */
static __always_inline __u32 h2_frames(struct __sk_buff *skb, __u32 off, __u32 len)
{
	__u8 fh[4];
	__u32 pos = 0, flen, seen = 0;
	int i;

	for (i = 0; i < 8; i++) {
		if (pos + 9 > len)
			break;
		if (bpf_skb_load_bytes(skb, off + pos, fh, 4))
			break;
		if (fh[3] == 0)
			seen |= H2_DATA;
		else if (fh[3] == 1)
			seen |= H2_HEADERS;
		else if (fh[3] > 9) /* not a frame header: inside a frame */
			return H2_DATA;
		flen = ((__u32)fh[0] << 16) | ((__u32)fh[1] << 8) | fh[2];
		pos += 9 + flen;
	}
	return seen;
}

/* "PRI * HTTP/2.0" opens an HTTP/2 connection (RFC 9113, section 3.4). */
static __always_inline int h2_preface(struct __sk_buff *skb, __u32 off, __u32 len)
{
	char p[8];

	if (len < 24 || bpf_skb_load_bytes(skb, off, p, 8))
		return 0;
	return p[0] == 'P' && p[1] == 'R' && p[2] == 'I' && p[3] == ' ' && p[4] == '*' && p[6] == 'H';
}

/* The socket's state, if it is ours. bpf_sk_storage_get() takes the
 * skb's sock_common and returns nothing for a request or timewait socket,
 * so no bpf_sk_fullsock() call is needed first. */
static __always_inline struct aimesh_sock *sock_state(struct __sk_buff *skb)
{
	struct bpf_sock *sk = skb->sk;

	if (!sk)
		return 0;
	return bpf_sk_storage_get(&aimesh_sockets, sk, 0, 0);
}

SEC("cgroup_skb/egress")
int aimesh_skb_egress(struct __sk_buff *skb)
{
	struct aimesh_sock *s;
	__u32 off, len, slot;
	__u8 flags;

	/* Most segments (handshake, ACKs, FINs) carry no payload, and most
	 * sockets are not timed: decide on the headers and aimesh_timed before
	 * paying for the socket-storage lookup. */
	if (!parse_tcp(skb, 0, &off, &len, &flags, &slot) || len == 0 || !maybe_timed(slot))
		return 1;
	s = sock_state(skb);
	if (!s || (s->flags & AIMESH_SKF_UNSAMPLED))
		return 1;
	if (s->requests == 0 && !(s->flags & AIMESH_SKF_H2) && h2_preface(skb, off, len)) {
		/* The preface and SETTINGS are not a request. */
		s->flags |= AIMESH_SKF_H2;
		return 1;
	}
	/* HTTP/2: a request starts with a HEADERS frame; control frames are not one. */
	if ((s->flags & AIMESH_SKF_H2) && !(h2_frames(skb, off, len) & H2_HEADERS))
		return 1;
	tel_egress_payload(s, bpf_ktime_get_ns());
	return 1;
}

/* Per-CPU copy of a response's first bytes, for the head parse. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct h1_buf);
} aimesh_h1_scratch SEC(".maps");

/* The first payload segment of an HTTP/1.x response: its head says how the
 * body is framed, and whether this segment holds any body byte. Returns the
 * head's length (0 if there is no complete head in the segment). */
static __always_inline __u32 h1_response_head(struct __sk_buff *skb, struct aimesh_sock *s, __u32 off, __u32 len,
					       __u16 *status)
{
	struct h1_head h = {};
	__u32 zero = 0;
	__u64 n = len; /* 64-bit: the bounds checks then land on the register the helper gets */
	struct h1_buf *buf = bpf_map_lookup_elem(&aimesh_h1_scratch, &zero);

	if (n > H1_HEAD_MAX)
		n = H1_HEAD_MAX;
	barrier_var(n); /* bounds checked on the register passed to the helper */
	if (buf && n >= 12 && n <= H1_HEAD_MAX && !bpf_skb_load_bytes(skb, off, buf, n))
		h1_parse_head(buf, (__u32)n, &h);
	*status = h.status;
	h1_start(s, &h);
	return h.head_len;
}

/* The body walk, verified once as a function of its own (a global
 * function) instead of once per call site. */
__noinline int aimesh_h1_body(struct __sk_buff *skb, struct aimesh_sock *s, __u32 off, __u32 len)
{
	if (!s)
		return 0;
	return h1_body(s, skb, off, len);
}

SEC("cgroup_skb/ingress")
int aimesh_skb_ingress(struct __sk_buff *skb)
{
	struct aimesh_sock *s;
	__u32 off, len, head, slot;
	__u16 status = 0;
	__u8 flags;
	__u32 frames;
	__u64 now;

	if (!parse_tcp(skb, 1, &off, &len, &flags, &slot))
		return 1;
	if (flags & TCP_FLAG_RST) {
		/* every connection, timed or not: failures are counted exactly */
		s = sock_state(skb);
		if (s)
			s->flags |= AIMESH_SKF_RST_SEEN;
		return 1;
	}
	if (len == 0 || !maybe_timed(slot))
		return 1;
	s = sock_state(skb);
	if (!s || (s->flags & AIMESH_SKF_UNSAMPLED))
		return 1;
	if (s->flags & AIMESH_SKF_H2) {
		frames = h2_frames(skb, off, len);
		if (!frames)
			return 1; /* control frames only */
		tel_ingress_payload(s, bpf_ktime_get_ns(), 0, frames & H2_DATA);
		return 1;
	}
	if (s->phase == AIMESH_PH_IDLE)
		return 1; /* nothing asked: not a response */
	now = bpf_ktime_get_ns();
	if (s->phase == AIMESH_PH_AWAIT_FIRST) {
		/* Only the first segment of a response can be a bare head. */
		head = h1_response_head(skb, s, off, len, &status);
		if (head && status < 200) {
			/* 100 Continue and other interim answers: the response is
			 * still to come. 101 (an upgrade) leaves HTTP: not followed. */
			if (status == 101 || head < len)
				s->framing = AIMESH_FR_NONE;
			else
				return 1;
		}
		tel_ingress_payload(s, now, head && head >= len, 1);
		if (head && aimesh_h1_body(skb, s, off + head, len - head))
			tel_response_done(s, now);
		return 1;
	}
	tel_ingress_payload(s, now, 0, 1);
	if (aimesh_h1_body(skb, s, off, len))
		tel_response_done(s, now);
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
