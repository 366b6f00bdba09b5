// libFuzzer target: the metrics listener's request-head parser
// (agent/telemetry/http_head.h) on arbitrary bytes, as a client on the
// node's network could send them. Besides crashes and sanitizer reports it
// checks the parser's contract: the head's end is found the same whether the
// bytes arrive at once or one at a time; the status is 0, 400, 431 or 505;
// a parsed request has a method of capitals, a path starting with '/', an
// HTTP/1.0 or 1.1 version, at most maxHeaders header lines, and a lower-case
// Connection value.
//
//   scripts/fuzz.sh --seconds 60 fuzz_http_head     (docs/testing.md)
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "telemetry/http_head.h"

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_http_head: invariant failed: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 64 * 1024) return 0;  // the listener's head limit is far below
  std::string buf(reinterpret_cast<const char*>(data), size);
  std::size_t end = aimesh::httpHeadEnd(buf);

  // The same bytes arriving one at a time (the listener searches on from
  // where it stopped) find the same end.
  std::string grown;
  std::size_t incremental = std::string::npos, searched = 0;
  for (char c : buf) {
    grown += c;
    incremental = aimesh::httpHeadEnd(grown, searched);
    if (incremental != std::string::npos) break;
    searched = grown.size();
  }
  check(incremental == end, "incremental search finds the same end");
  check(end == std::string::npos || end <= size, "end inside the buffer");

  constexpr std::size_t kMaxHeaders = 8;
  aimesh::HttpRequestHead req;
  std::string_view head = end == std::string::npos ? std::string_view(buf) : std::string_view(buf).substr(0, end);
  int status = aimesh::parseHttpHead(head, kMaxHeaders, req);
  check(status == 0 || status == 400 || status == 431 || status == 505, "status is 0, 400, 431 or 505");
  if (status != 0) return 0;
  check(!req.method.empty(), "a method");
  for (char c : req.method) check((c >= 'A' && c <= 'Z') || c == '-' || c == '_', "method of capitals");
  check(!req.path.empty() && req.path[0] == '/', "path starts with /");
  check(req.path.find('?') == std::string::npos, "path without the query");
  check(req.version == "HTTP/1.1" || req.version == "HTTP/1.0", "HTTP/1.0 or 1.1");
  for (char c : req.connection) check(!(c >= 'A' && c <= 'Z'), "connection in lower case");
  return 0;
}
