// The cluster state file: a YAML description of services and endpoints that
// the agent turns into a Snapshot (format: docs/state-file.md).
//
// Parsing is strict and exhaustive: every problem in the file is reported, each
// with file, line, column and the path of the offending field, and a file with
// any problem yields no snapshot at all (the caller keeps its last good state).
// Watching the file for edits lives in file_watcher.h, not here.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
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

// What a re-read of the same file can reuse: the services of its list items
// by the items' text. A file saved with one item changed is then parsed one
// item, not 10,000: when the file's layout lets its items be cut apart
// without a YAML parser (splitStateItems()), an item whose text is
// unchanged gets the service parsed from it last time (shared, not copied),
// the others are parsed alone, and the checks across services run on the
// whole list. Anything unusual (a layout it cannot cut, any error, a
// finding across services) makes it parse the whole file, so results,
// errors and their positions are always those of a full parse. Items are
// known by a 128-bit hash of their text.
class StateFileCache {
 public:
  size_t size() const { return items_.size(); }
  // Services the last parse took from the cache (0: a full parse).
  size_t reused() const { return reused_; }

  // An item's text, as two independent 64-bit hashes.
  struct Hash {
    uint64_t a = 0, b = 0;
    bool operator==(const Hash&) const = default;
  };

  struct Entry {
    SharedServices::Ptr service;
    uint64_t seen = 0;  // the last read whose text had this item
  };

 private:
  friend struct StateFileCacheAccess;
  struct HashOf {
    size_t operator()(const Hash& h) const { return static_cast<size_t>(h.a); }
  };
  std::unordered_map<Hash, Entry, HashOf> items_;
  uint64_t reads_ = 0;
  size_t reused_ = 0;
};

// Parses YAML text; fileName is used only for error reports. With a cache,
// reuses what an earlier parse of a similar text found (StateFileCache).
ParseResult parseStateText(const std::string& text, const std::string& fileName, StateFileCache* cache = nullptr);

// Reads and parses a file. A read failure (missing file, permission, a
// directory) becomes a single ParseError with line 0.
ParseResult parseStateFile(const std::string& path, StateFileCache* cache = nullptr);

// The list items of a state file whose layout is simple enough to cut
// without a YAML parser: `services:` alone at the top (comments and blank
// lines around it), then a block sequence whose items each start with "- "
// at one indentation, and nothing in an item that could reach across lines
// or items (anchors, aliases, tags, block scalars, quotes or brackets that
// do not close on their line, tabs, carriage returns, directives). Each
// item runs from its "- " line to the next one. nullopt for anything else.
std::optional<std::vector<std::string_view>> splitStateItems(std::string_view text);

}  // namespace aimesh
