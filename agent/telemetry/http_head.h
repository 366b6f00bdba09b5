// The metrics listener's HTTP/1.x request-head parser (RFC 9112), apart from
// the listener (http_server.cc) so that it is unit-tested and fuzzed on its
// own (tests/fuzz/fuzz_http_head.cc). It reads what the listener needs and
// rejects what it does not serve; it never allocates beyond the head.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace aimesh {

struct HttpRequestHead {
  std::string method, path, version;
  std::string accept, connection;  // the headers' values joined by ","; connection in lower case
  bool hasBody = false;            // Content-Length other than 0, or Transfer-Encoding
};

// Offset just past the blank line that ends a request head ("\r\n\r\n" or a
// bare "\n\n"), or npos. `from`: bytes before it were searched already (so a
// client sending one byte at a time does not cost a rescan per byte).
std::size_t httpHeadEnd(const std::string& buf, std::size_t from = 0);

// Parses a complete head (up to httpHeadEnd()); returns 0, or the error
// status to answer with: 400 (malformed), 431 (more than maxHeaders header
// lines), 505 (an HTTP version other than 1.0 and 1.1).
int parseHttpHead(std::string_view head, std::size_t maxHeaders, HttpRequestHead& req);

std::string asciiLower(std::string_view s);
std::string_view trimSpace(std::string_view s);  // spaces and tabs at both ends

}  // namespace aimesh
