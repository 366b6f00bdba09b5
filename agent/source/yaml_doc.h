// A YAML document as a read-only tree, built from libyaml's event parser.
//
// The state-file parser (state_file.cc) reads a file of 10,000 services
// (~3 MB) on every save; yaml-cpp's node tree took ~1.4 s for that, libyaml's
// events ~85 ms. This keeps only what the state-file parser asks of a node:
// its kind, its scalar text and tag, where it starts, and its children.
// Anchors and aliases are followed (an alias is the anchored node again, not
// a copy); merge keys ("<<") are not special, as in yaml-cpp.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace aimesh::yaml {

// A position in the text, 0-based (as libyaml and yaml-cpp count); a null
// mark has line -1.
struct Mark {
  int64_t pos = -1;
  int line = -1;
  int column = -1;
  bool is_null() const { return line < 0; }
  static Mark null_mark() { return {}; }
};

enum class NodeType : uint8_t { Undefined, Null, Scalar, Sequence, Map };

class Stream;

// A node of a Stream: a handle, valid while the Stream lives. A default or
// out-of-range node is Undefined.
class Node {
 public:
  Node() = default;
  NodeType Type() const;
  bool IsDefined() const { return Type() != NodeType::Undefined; }
  bool IsNull() const { return Type() == NodeType::Null; }
  bool IsScalar() const { return Type() == NodeType::Scalar; }
  bool IsSequence() const { return Type() == NodeType::Sequence; }
  bool IsMap() const { return Type() == NodeType::Map; }
  // The text of a scalar ("" for other kinds).
  const std::string& Scalar() const;
  // As yaml-cpp tags them: "?" for a plain scalar, "!" for a quoted or block
  // one, the resolved tag where the text names one ("tag:yaml.org,2002:str").
  const std::string& Tag() const;
  yaml::Mark Mark() const;
  // Items of a sequence, pairs of a map; 0 for other kinds.
  size_t size() const;
  Node operator[](size_t i) const;  // a sequence's item
  Node key(size_t i) const;         // a map's i-th key, in file order
  Node value(size_t i) const;       // ... and its value

 private:
  friend class Stream;
  Node(const Stream* s, uint32_t idx) : s_(s), idx_(idx) {}
  const Stream* s_ = nullptr;
  uint32_t idx_ = 0;
};

// Every document of a text. parse() never throws: a syntax error is `error`
// with the libyaml problem and where it is.
class Stream {
 public:
  struct Error {
    yaml::Mark mark;
    std::string message;
  };
  static Stream parse(std::string_view text);

  bool ok() const { return error_.message.empty(); }
  const Error& error() const { return error_; }
  size_t documents() const { return roots_.size(); }
  Node document(size_t i) const { return i < roots_.size() ? Node(this, roots_[i]) : Node(); }

  Stream() = default;
  Stream(Stream&&) = default;
  Stream& operator=(Stream&&) = default;
  Stream(const Stream&) = delete;  // nodes point at their stream
  Stream& operator=(const Stream&) = delete;

 private:
  friend class Node;
  friend class Builder;
  struct Data {
    NodeType type = NodeType::Null;
    yaml::Mark mark;
    uint32_t first = 0;  // children: kids_[first, first + count); a map's are key, value, key, ...
    uint32_t count = 0;
    uint32_t tag = 0;  // tags_ index
    std::string scalar;
  };
  std::vector<Data> nodes_;
  std::vector<uint32_t> kids_;
  std::vector<std::string> tags_;  // [0] "?", [1] "!", then explicit ones
  std::vector<uint32_t> roots_;
  Error error_;
};

}  // namespace aimesh::yaml
