// bpf/lib/http1.h compiled for the host: where an HTTP/1.x response ends,
// as the cgroup_skb ingress program follows it segment by segment. The head
// parser gets exact cases; the body walker gets responses of every framing,
// cut into random segments, and must report the end at the response's last
// byte and not before (a connection judged idle mid-response could be
// closed under a client).
//
// Shims: bpf_skb_load_bytes reads from a test segment; bpf_loop is a plain
// loop (http1.h's own host path).
#include <linux/bpf.h>
#include <linux/types.h>
#include <sys/cdefs.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#define __BPF_HELPERS__  // bpf_helpers.h's guard: its helper pointers are not for the host
#ifndef __noinline
#define __noinline __attribute__((noinline))
#endif

namespace {
struct TestSkb {
  const uint8_t* data;
  uint32_t len;
};
}  // namespace

static long bpf_skb_load_bytes(const void* skb, __u32 off, void* to, __u32 len) {
  auto* s = static_cast<const TestSkb*>(skb);
  if (len == 0 || off > s->len || len > s->len - off) return -14;  // -EFAULT, as the kernel
  std::memcpy(to, s->data + off, len);
  return 0;
}

#include "lib/http1.h"

namespace aimesh {
namespace {

h1_head parseHead(const std::string& text) {
  h1_buf buf{};
  uint32_t n = std::min<size_t>(text.size(), H1_HEAD_MAX);
  std::memcpy(buf.b, text.data(), n);
  // What the per-CPU scratch holds past n is stale: make it look like a head.
  if (n + 16 <= sizeof(buf.b)) std::memcpy(buf.b + n, "\r\n\r\nContent-Len", 16);
  h1_head h{};
  h1_parse_head(&buf, n, &h);
  return h;
}

TEST(Http1Head, StreamingChunkedHeadAsVllmSendsIt) {
  auto h = parseHead(
      "HTTP/1.1 200 OK\r\ndate: Sat, 05 Dec 2026 18:00:00 GMT\r\nserver: uvicorn\r\n"
      "content-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n");
  EXPECT_EQ(h.status, 200);
  EXPECT_EQ(h.framing, AIMESH_FR_CHUNKED);
  EXPECT_EQ(h.head_len, 149u);
  EXPECT_EQ(h.empty, 0);
}

TEST(Http1Head, ContentLengthAnyCaseAndBlanks) {
  auto h = parseHead("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCONTENT-LENGTH:  1234 \r\n\r\n{\"a\"");
  EXPECT_EQ(h.framing, AIMESH_FR_LENGTH);
  EXPECT_EQ(h.length, 1234u);
  EXPECT_EQ(h.head_len, 75u);
}

TEST(Http1Head, ChunkedWinsOverContentLength) {
  auto h = parseHead("HTTP/1.1 200 OK\r\nContent-Length: 10\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
  EXPECT_EQ(h.framing, AIMESH_FR_CHUNKED);
}

TEST(Http1Head, NoBodyStatusesAndZeroLength) {
  for (const char* head : {"HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n", "HTTP/1.1 304 Not Modified\r\n\r\n",
                           "HTTP/1.1 100 Continue\r\n\r\n", "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"}) {
    auto h = parseHead(head);
    EXPECT_EQ(h.framing, AIMESH_FR_LENGTH) << head;
    EXPECT_EQ(h.empty, 1) << head;
    EXPECT_EQ(h.head_len, std::strlen(head)) << head;
  }
}

TEST(Http1Head, WhatCannotBeFollowedIsNone) {
  // A body until close, an encoding other than chunked last, a list of
  // lengths, HTTP/1.0 without a length, a head cut by the segment, not HTTP.
  for (const char* text :
       {"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbody", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n", "HTTP/1.0 200 OK\r\n\r\nbody",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Long: aaaa", "hello world, not a response\r\n\r\n",
        "HTTP/2 200\r\n\r\n"}) {
    auto h = parseHead(text);
    EXPECT_EQ(h.framing, AIMESH_FR_NONE) << text;
  }
  EXPECT_EQ(parseHead("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Long: aaaa").head_len, 0u);
  EXPECT_EQ(parseHead("hello").head_len, 0u);
}

TEST(Http1Head, LongestHeadThatFitsAndOneThatDoesNot) {
  std::string head = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-Pad: ";
  std::string fits = head + std::string(H1_HEAD_MAX - head.size() - 4, 'a') + "\r\n\r\n";
  ASSERT_EQ(fits.size(), size_t{H1_HEAD_MAX});
  auto h = parseHead(fits + "abc");
  EXPECT_EQ(h.framing, AIMESH_FR_LENGTH);
  EXPECT_EQ(h.head_len, uint32_t{H1_HEAD_MAX});
  std::string longer = head + std::string(H1_HEAD_MAX, 'a') + "\r\n\r\nabc";
  EXPECT_EQ(parseHead(longer).framing, AIMESH_FR_NONE);
}

// ---- bodies ---------------------------------------------------------------------

// Feeds `body` to h1_body() in segments of the given sizes; returns the index
// of the segment at whose end it reported completion (-1: never).
int walk(aimesh_sock& s, const std::string& body, const std::vector<size_t>& cuts, size_t* consumedAtDone) {
  size_t pos = 0;
  for (size_t i = 0; i < cuts.size(); ++i) {
    size_t n = std::min(cuts[i], body.size() - pos);
    TestSkb skb{reinterpret_cast<const uint8_t*>(body.data()) + pos, static_cast<uint32_t>(n)};
    pos += n;
    if (h1_body(&s, &skb, 0, static_cast<uint32_t>(n))) {
      *consumedAtDone = pos;
      return static_cast<int>(i);
    }
    if (s.framing == AIMESH_FR_NONE) return -2;
  }
  return -1;
}

aimesh_sock started(const std::string& head) {
  aimesh_sock s{};
  h1_head h = parseHead(head);
  h1_start(&s, &h);
  return s;
}

TEST(Http1Body, ContentLengthEndsAtTheLastByte) {
  aimesh_sock s = started("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n");
  size_t at = 0;
  EXPECT_EQ(walk(s, "0123456789", {3, 3, 3, 1}, &at), 3);
  EXPECT_EQ(at, 10u);
}

TEST(Http1Body, SseChunksThenTheLastChunk) {
  aimesh_sock s = started("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
  std::string ev1 = "data: {\"t\":1}\n\n", ev2 = "data: [DONE]\n\n";
  std::string body = fmt::format("{:x}\r\n{}\r\n{:x}\r\n{}\r\n", ev1.size(), ev1, ev2.size(), ev2);
  size_t at = 0;
  // Each event is one segment, as a streaming server writes them; the last
  // chunk comes alone.
  size_t first = 4 + ev1.size() + 2, second = 4 + ev2.size() + 2;
  EXPECT_EQ(walk(s, body + "0\r\n\r\n", {first, second, 5}, &at), 2);
  EXPECT_EQ(at, body.size() + 5);
}

TEST(Http1Body, ExtensionsTrailersAndUppercaseHex) {
  aimesh_sock s = started("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
  std::string body = "1A;name=value\r\n" + std::string(26, 'x') + "\r\n0\r\nX-Trailer: 1\r\n\r\n";
  size_t at = 0;
  EXPECT_EQ(walk(s, body, {body.size()}, &at), 0);
  EXPECT_EQ(at, body.size());
}

TEST(Http1Body, MalformedChunkSizeGivesUpSafely) {
  aimesh_sock s = started("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
  size_t at = 0;
  EXPECT_EQ(walk(s, "zz\r\nabc\r\n0\r\n\r\n", {16}, &at), -2);
  EXPECT_EQ(s.framing, AIMESH_FR_NONE);
}

// Random responses, random segmentation: the walker says "done" exactly
// when the last byte has been fed, never earlier, for every framing.
TEST(Http1Body, RandomResponsesEndExactlyAtTheirLastByte) {
  std::mt19937_64 rng(20261205);
  auto uni = [&](size_t lo, size_t hi) { return std::uniform_int_distribution<size_t>(lo, hi)(rng); };
  int cases = 0;
  for (int iter = 0; iter < 4000; ++iter) {
    bool chunked = uni(0, 1);
    std::string body, head;
    if (chunked) {
      head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
      size_t chunks = uni(0, 12);
      for (size_t c = 0; c < chunks; ++c) {
        size_t n = uni(1, uni(0, 3) ? 300 : 70000);
        std::string data(n, static_cast<char>('a' + c % 26));
        // Chunk data can hold anything, the framing bytes included.
        if (n >= 16 && uni(0, 1)) data.replace(n / 2, 7, "\r\n0\r\n\r\n");
        body += uni(0, 1) ? fmt::format("{:x}", n) : fmt::format("{:X}", n);
        if (uni(0, 4) == 0) body += ";ext=1";
        body += "\r\n" + data + "\r\n";
      }
      body += "0\r\n";
      if (uni(0, 3) == 0) body += "Trailer: x\r\n";
      body += "\r\n";
    } else {
      size_t n = uni(1, 100000);
      head = fmt::format("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", n);
      body = std::string(n, 'z');
    }
    std::vector<size_t> cuts;
    for (size_t left = body.size(); left > 0;) {
      size_t c = std::min(left, uni(1, uni(0, 1) ? 9 : 1448 * uni(1, 45)));
      cuts.push_back(c);
      left -= c;
    }
    aimesh_sock s = started(head);
    size_t at = 0;
    int seg = walk(s, body, cuts, &at);
    if (seg == -2) continue;  // more chunk framing in one segment than the walker steps: given up, safe
    ASSERT_EQ(seg, static_cast<int>(cuts.size()) - 1) << "iteration " << iter << ": done at segment " << seg << " of "
                                                      << cuts.size() << (chunked ? " (chunked)" : " (length)");
    ASSERT_EQ(at, body.size()) << "iteration " << iter;
    ++cases;
  }
  EXPECT_GT(cases, 3900);
}

}  // namespace
}  // namespace aimesh
