// libFuzzer target: the TC path's packet parser and rewriter, the real
// bpf/lib/nat.h (used by bpf/tc_lb.bpf.c) compiled for the host. The input is
// one Ethernet frame, as BPF_PROG_TEST_RUN would hand it to the program.
//
// The shims below stand in for what nat.h takes from the kernel:
//  - struct __sk_buff is replaced by one whose data/data_end are real
//    pointers (the kernel's are 32-bit fields the verifier rewrites). data
//    points to a separate heap copy of exactly the linear part of the packet,
//    so a read past data_end is a heap-buffer-overflow for ASan even when the
//    frame has more bytes. The linear part starts as the Ethernet header
//    (what eth_type_trans pulled) and grows by bpf_skb_pull_data only.
//  - skb->protocol is set as eth_type_trans does (the EtherType, or 802.3).
//  - bpf_skb_store_bytes, bpf_l3_csum_replace, bpf_l4_csum_replace and
//    bpf_csum_diff do what net/core/filter.c does for an skb without
//    checksum offload (CHECKSUM_NONE, as in BPF_PROG_TEST_RUN), and fail the
//    run if nat.h passes an offset the kernel would refuse (odd, or past the
//    packet): the kernel would return an error and tc_lb would drop the
//    packet, which for a packet nat_parse accepted is a bug.
//
// Invariants checked on every frame nat_parse accepts (NAT_OK): offsets and
// headers inside the frame and inside what was pulled; the flow equals the
// bytes at those offsets; a DNAT rewrite followed by a reverse-NAT rewrite
// leaves a frame that parses to the expected flow, with the IPv4 header
// checksum and the TCP/UDP checksum still valid if they were (recomputed
// from scratch with tests/fixtures/packets.h), and a zero UDP checksum kept.
#include <linux/bpf.h>
#include <linux/types.h>
#include <sys/cdefs.h>  // __always_inline, as bpf_helpers.h would give it

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "fixtures/packets.h"

// libbpf's bpf_helpers.h declares each helper as a pointer to a helper
// number; the definitions below stand in for them.
#define __BPF_HELPERS__
#include <bpf/bpf_endian.h>

#define __sk_buff aimesh_fuzz_skb
struct aimesh_fuzz_skb {
  __u32 len;
  __u32 protocol;  // network order, as the kernel's
  unsigned long data, data_end;
  // The shim's own state: the whole frame and the linear copy data points at.
  std::vector<uint8_t>* frame;
  std::vector<uint8_t>* linear;
};

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_nat_parse: invariant failed: %s\n", what);
  std::abort();
}
void check(bool ok, const char* what) {
  if (!ok) fail(what);
}

// The linear copy, made again from the frame (as after a pull or a store:
// both invalidate packet pointers, which nat.h must not keep across them).
void relinearize(struct aimesh_fuzz_skb* skb, size_t linear) {
  skb->linear->assign(skb->frame->begin(), skb->frame->begin() + static_cast<long>(linear));
  skb->linear->shrink_to_fit();
  skb->data = reinterpret_cast<unsigned long>(skb->linear->data());
  skb->data_end = skb->data + linear;
}

// Kernel checksum arithmetic (include/net/checksum.h) on raw memory words:
// one's-complement sums do not depend on byte order (RFC 1071 2(B)).
uint32_t csumAdd(uint32_t a, uint32_t b) {
  uint32_t r = a + b;
  return r + (r < b);
}
uint32_t csumSub(uint32_t a, uint32_t b) { return csumAdd(a, ~b); }
uint16_t csumFold(uint32_t c) {
  c = (c & 0xffff) + (c >> 16);
  c = (c & 0xffff) + (c >> 16);
  return static_cast<uint16_t>(~c);
}

// A __sum16 at offset: the kernel refuses an odd offset and pulls (makes
// writable) up to offset + 2, failing past the packet.
uint16_t* sumAt(struct aimesh_fuzz_skb* skb, __u32 offset) {
  check(offset <= 0xffff && !(offset & 1), "csum offset is even and < 64 KiB");
  check(offset + 2 <= skb->len, "csum field inside the packet");
  return reinterpret_cast<uint16_t*>(skb->frame->data() + offset);
}

}  // namespace

static long bpf_skb_pull_data(struct aimesh_fuzz_skb* skb, __u32 len) {
  if (len > skb->len) return -ENOMEM;
  size_t cur = skb->data_end - skb->data;
  relinearize(skb, std::max<size_t>(cur, len));
  return 0;
}

static long bpf_skb_store_bytes(struct aimesh_fuzz_skb* skb, __u32 offset, const void* from, __u32 len,
                                __u64 flags) {
  check(flags == 0, "store flags");
  check(static_cast<uint64_t>(offset) + len <= skb->len, "store inside the packet");
  size_t linear = skb->data_end - skb->data;
  std::memcpy(skb->frame->data() + offset, from, len);
  relinearize(skb, std::max<size_t>(linear, offset + len));
  return 0;
}

static long bpf_l3_csum_replace(struct aimesh_fuzz_skb* skb, __u32 offset, __u64 from, __u64 to, __u64 flags) {
  check((flags & ~static_cast<__u64>(BPF_F_HDR_FIELD_MASK)) == 0, "l3 csum flags");
  check((flags & BPF_F_HDR_FIELD_MASK) == 2 || (flags & BPF_F_HDR_FIELD_MASK) == 4, "l3 csum size");
  uint16_t* p = sumAt(skb, offset);
  uint16_t v;
  std::memcpy(&v, p, 2);
  v = csumFold(csumAdd(csumSub(~static_cast<uint32_t>(v), static_cast<uint32_t>(from)), static_cast<uint32_t>(to)));
  std::memcpy(p, &v, 2);
  relinearize(skb, skb->data_end - skb->data);
  return 0;
}

static long bpf_l4_csum_replace(struct aimesh_fuzz_skb* skb, __u32 offset, __u64 from, __u64 to, __u64 flags) {
  check((flags & ~static_cast<__u64>(BPF_F_MARK_MANGLED_0 | BPF_F_PSEUDO_HDR | BPF_F_HDR_FIELD_MASK)) == 0,
        "l4 csum flags");
  uint16_t* p = sumAt(skb, offset);
  uint16_t v;
  std::memcpy(&v, p, 2);
  bool mangled0 = flags & BPF_F_MARK_MANGLED_0;
  if (mangled0 && v == 0) return 0;  // UDP without a checksum stays without
  switch (flags & BPF_F_HDR_FIELD_MASK) {
    case 0:
      check(from == 0, "l4 csum by diff: from is 0");
      v = csumFold(csumAdd(static_cast<uint32_t>(to), ~static_cast<uint32_t>(v)));
      break;
    case 2:
    case 4:
      v = csumFold(
          csumAdd(csumSub(~static_cast<uint32_t>(v), static_cast<uint32_t>(from)), static_cast<uint32_t>(to)));
      break;
    default: fail("l4 csum size");
  }
  if (mangled0 && v == 0) v = 0xffff;  // CSUM_MANGLED_0
  std::memcpy(p, &v, 2);
  relinearize(skb, skb->data_end - skb->data);
  return 0;
}

static __s64 bpf_csum_diff(__be32* from, __u32 from_size, __be32* to, __u32 to_size, __wsum seed) {
  check(from_size % 4 == 0 && to_size % 4 == 0, "csum_diff sizes are multiples of 4");
  uint32_t sum = seed;
  for (__u32 i = 0; i < from_size / 4; ++i) sum = csumAdd(sum, ~static_cast<uint32_t>(from[i]));
  for (__u32 i = 0; i < to_size / 4; ++i) sum = csumAdd(sum, static_cast<uint32_t>(to[i]));
  return sum;
}

// nat.h is C written for clang -target bpf with -Wall; here it is C++ with
// -Wextra too, and it has a parameter it does not use.
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wunused-parameter"
#include "lib/nat.h"
#pragma clang diagnostic pop

namespace {

using aimesh::testing::Addr16;

struct Skb {
  std::vector<uint8_t> frame, linear;
  struct aimesh_fuzz_skb skb = {};

  explicit Skb(std::vector<uint8_t> bytes) : frame(std::move(bytes)) {
    skb.len = static_cast<__u32>(frame.size());
    uint16_t type = static_cast<uint16_t>(frame[12] << 8 | frame[13]);
    skb.protocol = bpf_htons(type >= 0x600 ? type : 0x0001 /* ETH_P_802_3 */);
    skb.frame = &frame;
    skb.linear = &linear;
    relinearize(&skb, 14);  // eth_type_trans pulled the Ethernet header
  }
};

uint16_t be16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }

struct Checksums {
  bool ipValid = false;  // IPv4 header checksum
  bool l4Valid = false;
  bool udpZero = false;
};

// From scratch, with the test fixtures' RFC 1071 code (not the shims').
Checksums checksums(const std::vector<uint8_t>& b, const nat_flow& f) {
  Checksums c;
  const uint8_t* ip = b.data() + f.l3_off;
  const uint8_t* l4 = b.data() + f.l4_off;
  size_t l4len;
  if (f.family == AIMESH_FAMILY_V4) {
    size_t ihl = (ip[0] & 0x0f) * 4u;
    c.ipValid = aimesh::testing::ipv4HeaderChecksum(ip, ihl) == 0;
    l4len = be16(ip + 2) - ihl;
    c.l4Valid = aimesh::testing::l4ChecksumV4(ip + 12, ip + 16, f.key.proto, l4, l4len) == 0;
  } else {
    l4len = be16(ip + 4) - (f.l4_off - f.l3_off - 40);
    c.l4Valid = aimesh::testing::l4ChecksumV6(ip + 8, ip + 24, f.key.proto, l4, l4len) == 0;
  }
  c.udpZero = f.key.proto == AIMESH_PROTO_UDP && be16(l4 + 6) == 0;
  return c;
}

// nat_parse, and the invariants of what it returns.
int parse(Skb& s, nat_flow& f) {
  int r = nat_parse(&s.skb, &f);
  check(r == NAT_PASS || r == NAT_OK || r == NAT_FRAGMENT || r == NAT_MALFORMED, "a known verdict");
  if (r != NAT_OK) return r;
  size_t linear = s.skb.data_end - s.skb.data;
  size_t l4len = f.key.proto == AIMESH_PROTO_TCP ? 20 : 8;
  check(f.key.proto == AIMESH_PROTO_TCP || f.key.proto == AIMESH_PROTO_UDP, "TCP or UDP");
  check(f.l3_off == 14, "l3 after Ethernet");
  check(f.l4_off >= f.l3_off + (f.family == AIMESH_FAMILY_V4 ? 20 : 40), "l4 after l3");
  check(f.l4_off + l4len <= s.frame.size(), "l4 header inside the frame");
  check(f.l4_off + l4len <= linear, "l4 header inside what was pulled");
  const uint8_t* ip = s.frame.data() + f.l3_off;
  const uint8_t* l4 = s.frame.data() + f.l4_off;
  check(std::memcmp(&f.key.sport, l4, 2) == 0 && std::memcmp(&f.key.dport, l4 + 2, 2) == 0, "ports");
  if (f.family == AIMESH_FAMILY_V4) {
    check(s.skb.protocol == bpf_htons(NAT_ETH_P_IP) && (ip[0] >> 4) == 4, "IPv4 family");
    check(ip[9] == f.key.proto, "IPv4 protocol");
    check(std::memcmp(f.key.saddr + 12, ip + 12, 4) == 0 && std::memcmp(f.key.daddr + 12, ip + 16, 4) == 0,
          "IPv4 addresses");
    check(f.l4_off == f.l3_off + (ip[0] & 0x0f) * 4u, "l4 after the IPv4 options");
    check(f.l3_off + be16(ip + 2) <= s.frame.size() && f.l4_off + l4len <= f.l3_off + be16(ip + 2u),
          "l4 header inside the IPv4 total length");
  } else {
    check(f.family == AIMESH_FAMILY_V6, "a family");
    check(s.skb.protocol == bpf_htons(NAT_ETH_P_IPV6) && (ip[0] >> 4) == 6, "IPv6 family");
    check(std::memcmp(f.key.saddr, ip + 8, 16) == 0 && std::memcmp(f.key.daddr, ip + 24, 16) == 0,
          "IPv6 addresses");
    check(f.l4_off + l4len <= f.l3_off + 40u + be16(ip + 4), "l4 header inside the IPv6 payload length");
  }
  if (f.key.proto == AIMESH_PROTO_TCP) check(f.tcp_flags == l4[13], "TCP flags");
  return r;
}

// One rewrite (dst: DNAT to a backend, else reverse NAT of the source), then
// the frame parsed again must show exactly that change, checksums intact.
void rewriteAndCheck(Skb& s, const nat_flow& f, int dst, const Addr16& addr, uint16_t port) {
  Checksums before = checksums(s.frame, f);
  __be16 nport = bpf_htons(port);
  check(nat_rewrite(&s.skb, &f, dst, addr.data(), nport) == 0, "nat_rewrite succeeds on a parsed packet");
  nat_flow g;
  check(parse(s, g) == NAT_OK, "a rewritten packet parses");
  nat_flow want = f;
  std::memcpy(dst ? want.key.daddr : want.key.saddr, addr.data(), 16);
  (dst ? want.key.dport : want.key.sport) = nport;
  check(std::memcmp(&g.key, &want.key, sizeof(g.key)) == 0, "the rewrite changed exactly the address and port");
  check(g.l3_off == f.l3_off && g.l4_off == f.l4_off && g.family == f.family && g.tcp_flags == f.tcp_flags,
        "offsets unchanged");
  Checksums after = checksums(s.frame, g);
  if (f.family == AIMESH_FAMILY_V4 && before.ipValid) check(after.ipValid, "IPv4 header checksum kept valid");
  if (before.udpZero) {
    check(after.udpZero, "a zero UDP checksum stays zero");
  } else if (before.l4Valid) {
    check(after.l4Valid, "TCP/UDP checksum kept valid");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header, and
  // nat.h pulls at most 200 bytes: longer frames add nothing but time.
  if (size < 14 || size > 4096) return 0;
  Skb s(std::vector<uint8_t>(data, data + size));
  nat_flow f;
  if (parse(s, f) != NAT_OK) return 0;

  bool v4 = f.family == AIMESH_FAMILY_V4;
  Addr16 backend = v4 ? aimesh::testing::mappedV4(10, 99, 0, 7) : aimesh::testing::v6("fd99::7");
  Addr16 frontend = v4 ? aimesh::testing::mappedV4(10, 96, 0, 1) : aimesh::testing::v6("fd96::1");
  rewriteAndCheck(s, f, 1, backend, 8000);  // DNAT, as for a new flow
  nat_flow g;
  check(parse(s, g) == NAT_OK, "parses again");
  rewriteAndCheck(s, g, 0, frontend, 80);  // reverse NAT, as for a reply
  return 0;
}
