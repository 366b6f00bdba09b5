/* Where an HTTP/1.x response ends, seen from the client's side of the
 * connection (cgroup_skb ingress): the head says how the body is framed
 * (RFC 9112, section 6.3), and the body is then followed segment by segment
 * — a byte count for Content-Length, the chunk sizes for chunked transfer
 * coding. Knowing the end lets a pooled keep-alive connection count as idle
 * between requests (lib/lifecycle.h), which is what makes it safe to close.
 *
 * Two parts:
 *   h1_parse_head()  the head, from a copy of the segment's first bytes;
 *   h1_body()        the body, over a segment's payload, reading the skb only
 *                    at chunk-size lines (16 bytes at a time), never the data.
 * Both keep their state in the socket's struct aimesh_sock, so a response may
 * spread over any number of segments. What they cannot follow (a head longer
 * than H1_HEAD_MAX or split over segments, a body that ends at close, a
 * malformed chunk size) becomes AIMESH_FR_NONE: the response then ends at
 * the next request or at close, as before, and the connection is never
 * judged idle in between — the safe side.
 *
 * The code compiles for the host too (tests/fuzz/fuzz_http1.cc), with
 * bpf_skb_load_bytes supplied by the includer. */
#ifndef AIMESH_BPF_HTTP1_H
#define AIMESH_BPF_HTTP1_H

#include "lib/common.h"

/* Bytes of a response's first segment copied for the head parse (a power of
 * two); vLLM's, uvicorn's and Go's streaming heads are 150-250 bytes. */
#define H1_HEAD_MAX 512
/* Scratch buffer: H1_HEAD_MAX plus room for a 16-byte read at its last byte. */
#define H1_SCRATCH (H1_HEAD_MAX + 16)
/* Steps of the chunked-body walk per segment: one per chunk's data, one per
 * byte of a size line or trailer ("7b\r\n" + data: 5). A segment with more
 * (many small chunks coalesced) loses the framing. */
#define H1_BODY_STEPS 256
#define H1_MAX_CHUNK (1ULL << 40)

#ifdef __bpf__
#define H1_LOAD64(p) (*(const __u64 *)(p))
#else
#ifndef barrier_var
#define barrier_var(x) ((void)(x))
#endif
static inline __u64 H1_LOAD64(const void *p)
{
	__u64 v;

	__builtin_memcpy(&v, p, 8);
	return v;
}
#endif

/* Eight characters as the little-endian u64 they load as. */
#define H1_STR8(a, b, c, d, e, f, g, h)                                                                  \
	((__u64)(a) | (__u64)(b) << 8 | (__u64)(c) << 16 | (__u64)(d) << 24 | (__u64)(e) << 32 |           \
	 (__u64)(f) << 40 | (__u64)(g) << 48 | (__u64)(h) << 56)
/* OR-ing 0x20 into every byte lower-cases letters and keeps '-' and ':'. */
#define H1_LOWER 0x2020202020202020ULL
#define H1_ONES 0x0101010101010101ULL
#define H1_HIGHS 0x8080808080808080ULL
#define H1_NEWLINES 0x0a0a0a0a0a0a0a0aULL

struct h1_head {
	__u64 length;     /* AIMESH_FR_LENGTH: body bytes */
	__u32 head_len;   /* bytes up to and including the empty line; 0: no complete head */
	__u16 status;
	__u8 framing;     /* enum aimesh_framing */
	__u8 empty;       /* 1: no body at all (1xx, 204, 304, Content-Length: 0) */
};

/* The scratch copy of a response's first bytes: H1_HEAD_MAX of them, and
 * room for an 8-byte read at the last. */
struct h1_buf {
	__u8 b[H1_SCRATCH];
};

/* What the head scan found so far. */
struct h1_scan {
	__u32 n;          /* bytes of the segment in the buffer */
	__u32 line;       /* where the current line starts */
	__u32 head_len;
	__u8 has_length;
	__u8 chunked;
	__u8 bad;         /* a header we rely on did not parse */
	__u8 pad;
	__u64 length;
};

/* The bpf_loop context: the buffer and the scan. */
struct h1_loop {
	const struct h1_buf *buf;
	struct h1_scan scan;
};

/* Buffer reads at a masked index: the verifier needs the mask to bound the
 * offset, and the barrier keeps clang from dropping it where it can prove
 * the index is in range anyway. */
static __always_inline __u8 h1_byte(const struct h1_buf *buf, const struct h1_scan *c, __u32 i)
{
	if (i >= c->n)
		return 0;
	barrier_var(i);
	return buf->b[i & (H1_HEAD_MAX - 1)];
}

static __always_inline __u64 h1_word(const struct h1_buf *buf, __u32 i)
{
	barrier_var(i);
	return H1_LOAD64(buf->b + (i & (H1_HEAD_MAX - 1)));
}

/* "Content-Length:" value in [p, end): blanks, decimal digits, blanks. A
 * list of lengths or anything else is not a length we follow. */
static __always_inline void h1_content_length(const struct h1_buf *buf, struct h1_scan *c, __u32 p, __u32 end)
{
	__u64 v = 0;
	__u32 i;
	__u8 b;

	for (i = 0; i < 4; i++) { /* leading and trailing blanks */
		b = h1_byte(buf, c, p);
		if (p < end && (b == ' ' || b == '\t'))
			p++;
		b = h1_byte(buf, c, end - 1);
		if (end > p && (b == ' ' || b == '\t'))
			end--;
	}
	if (end <= p || end - p > 18) {
		c->bad = 1;
		return;
	}
	for (i = 0; i < 18; i++) {
		if (p + i >= end)
			break;
		b = h1_byte(buf, c, p + i);
		if (b < '0' || b > '9') {
			c->bad = 1;
			return;
		}
		v = v * 10 + (b - '0');
	}
	c->length = v;
	c->has_length = 1;
}

/* "Transfer-Encoding:" value in [p, end): chunked only if it is the last
 * coding (RFC 9112, section 6.3, rule 4): the last non-blank bytes spell
 * "chunked". Anything else (gzip alone) ends at close. */
static __always_inline void h1_transfer_encoding(const struct h1_buf *buf, struct h1_scan *c, __u32 p, __u32 end)
{
	__u32 i;
	__u64 w;
	__u8 b;

	for (i = 0; i < 4; i++) { /* trailing blanks */
		b = h1_byte(buf, c, end - 1);
		if (end > p && (b == ' ' || b == '\t'))
			end--;
	}
	if (end < p + 7) {
		c->bad = 1;
		return;
	}
	w = h1_word(buf, end - 7) | H1_LOWER;
	if ((w & 0x00ffffffffffffffULL) == H1_STR8('c', 'h', 'u', 'n', 'k', 'e', 'd', 0))
		c->chunked = 1;
	else
		c->bad = 1;
}

/* A complete line [p, nl) ('\n' at nl): the empty line ends the head;
 * Content-Length and Transfer-Encoding are read; other headers are skipped.
 * A global function, so the verifier checks it once rather than for every
 * line of every loop iteration. */
__noinline int aimesh_h1_line(const struct h1_buf *buf, struct h1_scan *c, __u32 p, __u32 nl)
{
	__u32 end = nl;
	__u64 w1, w2, w3;
	__u8 b;

	if (!buf || !c)
		return 0;
	if (end > p && h1_byte(buf, c, end - 1) == '\r')
		end--;
	if (end == p) {
		c->head_len = nl + 1;
		return 0;
	}
	b = h1_byte(buf, c, p) | 0x20;
	if ((b != 'c' && b != 't') || end < p + 16)
		return 0;
	w1 = h1_word(buf, p) | H1_LOWER;
	w2 = h1_word(buf, p + 8) | H1_LOWER;
	if (w1 == H1_STR8('c', 'o', 'n', 't', 'e', 'n', 't', '-') &&
	    (w2 & 0x00ffffffffffffffULL) == H1_STR8('l', 'e', 'n', 'g', 't', 'h', ':', 0)) {
		h1_content_length(buf, c, p + 15, end);
		return 0;
	}
	if (end < p + 18)
		return 0;
	w3 = h1_word(buf, p + 16) | H1_LOWER;
	if (w1 == H1_STR8('t', 'r', 'a', 'n', 's', 'f', 'e', 'r') && w2 == H1_STR8('-', 'e', 'n', 'c', 'o', 'd', 'i', 'n') &&
	    (w3 & 0xffffULL) == H1_STR8('g', ':', 0, 0, 0, 0, 0, 0))
		h1_transfer_encoding(buf, c, p + 18, end);
	return 0;
}

/* One 8-byte word of the head: find its '\n' bytes (SWAR zero-byte test on
 * word ^ "\n\n\n\n\n\n\n\n", each candidate confirmed), and hand each
 * line that ends there to aimesh_h1_line(). Returns 1 to stop the loop. */
static long h1_scan_word(__u32 i, void *ctx)
{
	struct h1_loop *l = (struct h1_loop *)ctx;
	struct h1_scan *c = &l->scan;
	const struct h1_buf *buf = l->buf;
	__u32 base = i * 8, k, nl;
	__u64 x, m;

	if (c->head_len || base >= c->n || base >= H1_HEAD_MAX)
		return 1;
	x = h1_word(buf, base) ^ H1_NEWLINES;
	m = (x - H1_ONES) & ~x & H1_HIGHS;
	if (!m)
		return 0;
	for (k = 0; k < 8; k++) {
		if (!((m >> (k * 8 + 7)) & 1))
			continue;
		nl = base + k;
		if (h1_byte(buf, c, nl) != '\n')
			continue;
		if (c->line) /* the status line (line 0) has been checked already */
			aimesh_h1_line(buf, c, c->line, nl);
		c->line = nl + 1;
		if (c->head_len)
			return 1;
	}
	return 0;
}

#ifndef __bpf__
/* Host builds: bpf_loop is a plain loop. */
static inline long h1_host_loop(__u32 n, long (*cb)(__u32, void *), void *ctx)
{
	__u32 i;

	for (i = 0; i < n; i++)
		if (cb(i, ctx))
			return i + 1;
	return n;
}
#define H1_LOOP(n, cb, ctx) h1_host_loop((n), (cb), (ctx))
#else
#define H1_LOOP(n, cb, ctx) bpf_loop((n), (cb), (ctx), 0)
#endif

/* Parses a response head from the first n bytes of buf (n <= H1_HEAD_MAX;
 * buf holds H1_SCRATCH bytes). */
static __always_inline void h1_parse_head(const struct h1_buf *buf, __u32 n, struct h1_head *h)
{
	struct h1_loop l;
	const __u8 *b = buf->b;
	__u64 w;

	__builtin_memset(h, 0, sizeof(*h));
	__builtin_memset(&l, 0, sizeof(l));
	l.buf = buf;
	l.scan.n = n;
	if (n < 12 || n > H1_HEAD_MAX)
		return;
	w = H1_LOAD64(b);
	if ((w & 0x00ffffffffffffffULL) != H1_STR8('H', 'T', 'T', 'P', '/', '1', '.', 0) || b[8] != ' ')
		return;
	if (b[9] < '1' || b[9] > '5' || b[10] < '0' || b[10] > '9' || b[11] < '0' || b[11] > '9')
		return;
	h->status = (b[9] - '0') * 100 + (b[10] - '0') * 10 + (b[11] - '0');
	H1_LOOP(H1_HEAD_MAX / 8, h1_scan_word, &l);
	if (!l.scan.head_len)
		return;
	h->head_len = l.scan.head_len;
	/* RFC 9112, section 6.3: no body for 1xx, 204 and 304 (and HEAD, which
	 * the response does not tell: a HEAD answer with a Content-Length is
	 * followed as a body that never comes, so the connection stays busy). */
	if (h->status < 200 || h->status == 204 || h->status == 304) {
		h->empty = 1;
		h->framing = AIMESH_FR_LENGTH;
		return;
	}
	if (l.scan.chunked) {
		h->framing = AIMESH_FR_CHUNKED;
		return;
	}
	if (l.scan.bad || !l.scan.has_length)
		return; /* AIMESH_FR_NONE: ends at close, or not followed */
	h->framing = AIMESH_FR_LENGTH;
	h->length = l.scan.length;
	h->empty = l.scan.length == 0;
}

/* One byte of chunked framing outside chunk data. Returns 0, or -1 on a
 * framing error. */
static __always_inline int h1_chunk_byte(struct aimesh_sock *s, __u8 b)
{
	__u8 d;

	switch (s->chunk_st) {
	case AIMESH_CH_SIZE:
		if (b >= '0' && b <= '9')
			d = b - '0';
		else if ((b | 0x20) >= 'a' && (b | 0x20) <= 'f')
			d = (b | 0x20) - 'a' + 10;
		else if (b == ';' || b == ' ' || b == '\t') {
			s->chunk_st = AIMESH_CH_EXT;
			return 0;
		} else if (b == '\r') {
			s->chunk_st = AIMESH_CH_SIZE_LF;
			return 0;
		} else if (b == '\n') {
			goto line_end;
		} else {
			return -1;
		}
		s->body_left = s->body_left * 16 + d;
		return s->body_left > H1_MAX_CHUNK ? -1 : 0;
	case AIMESH_CH_EXT:
		if (b == '\r')
			s->chunk_st = AIMESH_CH_SIZE_LF;
		else if (b == '\n')
			goto line_end;
		return 0;
	case AIMESH_CH_SIZE_LF:
		if (b != '\n')
			return -1;
		goto line_end;
	case AIMESH_CH_TRAILER_BOL:
		if (b == '\r')
			s->chunk_st = AIMESH_CH_END_LF;
		else if (b == '\n')
			s->chunk_st = AIMESH_CH_DONE;
		else
			s->chunk_st = AIMESH_CH_TRAILER;
		return 0;
	case AIMESH_CH_TRAILER:
		if (b == '\n')
			s->chunk_st = AIMESH_CH_TRAILER_BOL;
		return 0;
	case AIMESH_CH_END_LF:
		if (b != '\n')
			return -1;
		s->chunk_st = AIMESH_CH_DONE;
		return 0;
	default:
		return -1;
	}
line_end:
	if (s->body_left == 0) {
		s->chunk_st = AIMESH_CH_TRAILER_BOL; /* the last chunk: trailers, then an empty line */
	} else {
		s->body_left += 2; /* the data, then its CRLF */
		s->chunk_st = AIMESH_CH_DATA;
	}
	return 0;
}

/* The bpf_loop context of a body walk. */
struct h1_body_loop {
	void *skb;
	struct aimesh_sock *s;
	__u32 off, len;  /* the payload */
	__u32 pos;       /* bytes of it consumed */
	__u32 wpos, wlen; /* the window: bytes at pos - wpos .. */
	int done;
	__u8 win[16];
};

/* One step of a chunked body: skip (what is left of) a chunk's data, or
 * take one byte of a size line or trailer from the window, loading the next
 * 16 bytes when it is used up. Returns 1 to stop the loop. */
static long h1_body_step(__u32 i __attribute__((unused)), void *ctx)
{
	struct h1_body_loop *l = (struct h1_body_loop *)ctx;
	struct aimesh_sock *s = l->s;
	__u64 skip, n;

	if (!s)
		return 1;
	if (s->chunk_st == AIMESH_CH_DONE) {
		l->done = 1;
		return 1;
	}
	if (l->pos >= l->len)
		return 1;
	if (s->chunk_st == AIMESH_CH_DATA) {
		skip = s->body_left;
		if (skip > l->len - l->pos)
			skip = l->len - l->pos;
		l->pos += (__u32)skip;
		s->body_left -= skip;
		if (s->body_left == 0)
			s->chunk_st = AIMESH_CH_SIZE;
		l->wlen = 0;
		return 0;
	}
	if (l->wpos >= l->wlen) {
		n = l->len - l->pos;
		if (n >= sizeof(l->win)) {
			n = sizeof(l->win);
			if (bpf_skb_load_bytes(l->skb, l->off + l->pos, l->win, sizeof(l->win)))
				goto lost;
		} else {
			/* The barrier keeps clang from dropping the mask as
			 * redundant: the verifier needs it to bound the length. */
			barrier_var(n);
			n &= sizeof(l->win) - 1;
			if (n == 0 || bpf_skb_load_bytes(l->skb, l->off + l->pos, l->win, n))
				goto lost;
		}
		l->wpos = 0;
		l->wlen = n;
	}
	n = l->wpos;
	barrier_var(n);
	if (h1_chunk_byte(s, l->win[n & (sizeof(l->win) - 1)]))
		goto lost;
	l->wpos++;
	l->pos++;
	return 0;
lost:
	s->framing = AIMESH_FR_NONE;
	return 1;
}

/* Follows the response body over len payload bytes at off in skb. Returns 1
 * when the response is complete. What it cannot follow (a framing error, more
 * chunk framing in one segment than H1_BODY_STEPS allows) sets
 * AIMESH_FR_NONE. */
static __always_inline int h1_body(struct aimesh_sock *s, void *skb, __u32 off, __u32 len)
{
	struct h1_body_loop l;

	if (s->framing == AIMESH_FR_LENGTH) {
		if (len >= s->body_left) {
			s->body_left = 0;
			return 1;
		}
		s->body_left -= len;
		return 0;
	}
	if (s->framing != AIMESH_FR_CHUNKED)
		return 0;
	__builtin_memset(&l, 0, sizeof(l));
	l.skb = skb;
	l.s = s;
	l.off = off;
	l.len = len;
	H1_LOOP(H1_BODY_STEPS, h1_body_step, &l);
	if (l.done || s->chunk_st == AIMESH_CH_DONE)
		return 1;
	if (l.pos < len)
		s->framing = AIMESH_FR_NONE; /* out of steps */
	return 0;
}

/* A new response starts: its framing from the head just parsed. */
static __always_inline void h1_start(struct aimesh_sock *s, const struct h1_head *h)
{
	s->framing = h->head_len ? h->framing : (__u8)AIMESH_FR_NONE;
	s->chunk_st = AIMESH_CH_SIZE;
	s->body_left = h->framing == AIMESH_FR_LENGTH ? h->length : 0;
}

#endif
