#include "telemetry/http_head.h"

#include <algorithm>
#include <vector>

namespace aimesh {

std::string asciiLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  return out;
}

std::string_view trimSpace(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::size_t httpHeadEnd(const std::string& buf, std::size_t from) {
  from = from > 2 ? from - 2 : 0;
  for (std::size_t i = buf.find('\n', from); i != std::string::npos; i = buf.find('\n', i + 1)) {
    std::size_t j = i + 1;
    if (j < buf.size() && buf[j] == '\r') ++j;
    if (j < buf.size() && buf[j] == '\n') return j + 1;
  }
  return std::string::npos;
}


int parseHttpHead(std::string_view head, std::size_t maxHeaders, HttpRequestHead& req) {
  std::vector<std::string_view> lines;
  while (!head.empty()) {
    std::size_t nl = head.find('\n');
    std::string_view line = head.substr(0, nl);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    head.remove_prefix(nl == std::string_view::npos ? head.size() : nl + 1);
    if (line.empty()) break;
    lines.push_back(line);
  }
  if (lines.empty()) return 400;
  // Request line: METHOD SP request-target SP HTTP-version (RFC 9112 §3).
  std::string_view rl = lines[0];
  std::size_t sp1 = rl.find(' ');
  std::size_t sp2 = sp1 == std::string_view::npos ? sp1 : rl.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || rl.find(' ', sp2 + 1) != std::string_view::npos) return 400;
  req.method = std::string(rl.substr(0, sp1));
  std::string_view target = rl.substr(sp1 + 1, sp2 - sp1 - 1);
  req.version = std::string(rl.substr(sp2 + 1));
  if (req.method.empty() || !std::all_of(req.method.begin(), req.method.end(),
                                         [](char c) { return (c >= 'A' && c <= 'Z') || c == '-' || c == '_'; })) {
    return 400;
  }
  if (req.version.rfind("HTTP/", 0) != 0) return 400;
  if (req.version != "HTTP/1.1" && req.version != "HTTP/1.0") return 505;
  if (target.empty() || target[0] != '/') return 400;
  req.path = std::string(target.substr(0, target.find('?')));

  if (lines.size() - 1 > maxHeaders) return 431;
  for (std::size_t i = 1; i < lines.size(); ++i) {
    std::string_view line = lines[i];
    // Obsolete line folding is rejected (RFC 9112 §5.2).
    if (line.front() == ' ' || line.front() == '\t') return 400;
    std::size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) return 400;
    std::string_view rawName = line.substr(0, colon);
    if (rawName.find_first_of(" \t") != std::string_view::npos) return 400;
    std::string name = asciiLower(rawName);
    std::string_view value = trimSpace(line.substr(colon + 1));
    if (name == "accept") {
      if (!req.accept.empty()) req.accept += ",";
      req.accept += value;
    } else if (name == "connection") {
      if (!req.connection.empty()) req.connection += ",";
      req.connection += asciiLower(value);
    } else if (name == "transfer-encoding") {
      req.hasBody = true;
    } else if (name == "content-length") {
      if (value != "0") req.hasBody = true;
    }
  }
  return 0;
}

}  // namespace aimesh
