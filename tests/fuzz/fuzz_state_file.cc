// libFuzzer target: the state-file parser (agent/source/state_file.h) on
// arbitrary bytes as YAML text. Besides crashes and sanitizer reports it
// checks the parser's contract: a snapshot exactly when there are no errors,
// errors sorted by line and column, every error inside the text (line and
// column >= 1) and naming the file, and services sorted by key(); and that
// a read through a StateFileCache primed by this text (then by a variant
// with one digit changed) gives exactly what a full parse gives.
//
//   scripts/fuzz.sh --seconds 60          (all targets; docs/testing.md)
//   build-fuzz/fuzz_state_file tests/fuzz/corpus/state_file
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "source/state_file.h"

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_state_file: invariant failed: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  aimesh::ParseResult r = aimesh::parseStateText(text, "fuzz.yaml");

  check(r.ok() == r.errors.empty(), "a snapshot exactly when there are no errors");
  for (size_t i = 0; i < r.errors.size(); ++i) {
    const aimesh::ParseError& e = r.errors[i];
    check(e.file == "fuzz.yaml", "errors name the file");
    check(e.line >= 1 && e.column >= 1, "errors in text have a line and column");
    check(!e.message.empty(), "errors have a message");
    check(!e.toString().empty(), "toString");
    if (i > 0) {
      const aimesh::ParseError& p = r.errors[i - 1];
      check(p.line < e.line || (p.line == e.line && p.column <= e.column), "errors sorted by line, column");
    }
  }
  if (r.ok()) {
    const auto& services = r.snapshot->services;
    for (size_t i = 1; i < services.size(); ++i) {
      check(services[i - 1].key() < services[i].key(), "services sorted by key, no duplicates");
    }
    for (const auto& s : services) {
      check(!s.vips.empty() && !s.ports.empty(), "a service has vips and ports");
      for (const auto& p : s.ports) check(p.port != 0, "ports are 1..65535");
    }
  }
  // The item cache never changes a result.
  aimesh::StateFileCache cache;
  auto same = [&](const std::string& t) {
    aimesh::ParseResult full = aimesh::parseStateText(t, "fuzz.yaml");
    aimesh::ParseResult cached = aimesh::parseStateText(t, "fuzz.yaml", &cache);
    check(cached.ok() == full.ok() && (!full.ok() || *cached.snapshot == *full.snapshot),
          "a cached read gives the full parse's snapshot");
    check(cached.errors.size() == full.errors.size(), "a cached read gives the full parse's errors");
    for (size_t i = 0; i < full.errors.size(); ++i)
      check(cached.errors[i].toString() == full.errors[i].toString(), "a cached read gives the same errors");
  };
  same(text);
  same(text);
  std::string variant = text;
  if (size_t d = variant.find_first_of("0123456789"); d != std::string::npos) {
    variant[d] = variant[d] == '9' ? '1' : static_cast<char>(variant[d] + 1);
    same(variant);
  }
  return 0;
}
