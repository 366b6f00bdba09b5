// The cluster state file: a YAML description of services and endpoints that
// the agent turns into a Snapshot (format: docs/state-file.md).
//
// Parsing is strict and exhaustive: every problem in the file is reported, each
// with file, line, column and the path of the offending field, and a file with
// any problem yields no snapshot at all (the caller keeps its last good state).
// Watching the file for edits lives in file_watcher.h, not here.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "model/snapshot.h"

namespace aimesh {

struct ParseError {
  std::string file;
  int line = 0;    // 1-based; 0 when the problem is not inside the text (read error)
  int column = 0;  // 1-based; 0 when line is 0
  std::string field;  // e.g. "services[0].endpoints[1].port"; empty for syntax errors
  std::string message;

  // "FILE:LINE:COL: FIELD: MESSAGE", e.g.
  // "state.yaml:12:22: services[0].endpoints[1].port: must be 1..65535, got 70000".
  // Without a line: "FILE: MESSAGE"; without a field the "FIELD: " part is left out.
  std::string toString() const;
};

struct ParseResult {
  std::optional<Snapshot> snapshot;  // set only when errors is empty
  std::vector<ParseError> errors;    // sorted by line, then column

  bool ok() const { return snapshot.has_value(); }
};

// Parses YAML text; fileName is used only for error reports.
ParseResult parseStateText(const std::string& text, const std::string& fileName);

// Reads and parses a file. A read failure (missing file, permission, a
// directory) becomes a single ParseError with line 0.
ParseResult parseStateFile(const std::string& path);

}  // namespace aimesh
