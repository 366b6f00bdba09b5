// libFuzzer target: the state-file parser (agent/source/state_file.h) on
// arbitrary bytes as YAML text. Besides crashes and sanitizer reports it
// checks the parser's contract: a snapshot exactly when there are no errors,
// errors sorted by line and column, every error inside the text (line and
// column >= 1) and naming the file, and services sorted by key().
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
  return 0;
}
