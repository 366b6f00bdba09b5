// host:port text for addresses held as strings (listen addresses, scrape
// targets, the API server's): an IPv6 literal goes in brackets (RFC 3986,
// section 3.2.2), so that its colons are not read as the port's. The one
// place this is written; model/snapshot.h has formatHostPort() for an IpAddr,
// built on this.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace aimesh {

// host as it goes before ":port" or into a URL: "fd00::1" → "[fd00::1]".
// IPv4 literals and names (no ':') and hosts already in brackets are
// returned as they are.
inline std::string bracketHost(std::string_view host) {
  std::string out;
  bool v6 = host.find(':') != std::string_view::npos && host.front() != '[';
  out.reserve(host.size() + 2);
  if (v6) out += '[';
  out += host;
  if (v6) out += ']';
  return out;
}

// "10.0.0.1:8000", "[fd00::1]:8000", "localhost:8000".
inline std::string formatHostPort(std::string_view host, uint16_t port) {
  // Appends, not a chain of operator+: g++ 12 at -O3 reports a false
  // -Wrestrict inside chained std::string concatenation.
  std::string out = bracketHost(host);
  out += ':';
  out += std::to_string(port);
  return out;
}

}  // namespace aimesh
