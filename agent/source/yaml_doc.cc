#include "source/yaml_doc.h"

#include <sys/mman.h>
#include <unistd.h>
#include <yaml.h>

#include <cstdint>
#include <map>
#include <memory>

namespace aimesh::yaml {

namespace {

const std::string kEmpty;

yaml::Mark markOf(const yaml_mark_t& m) {
  return yaml::Mark{static_cast<int64_t>(m.index), static_cast<int>(m.line), static_cast<int>(m.column)};
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14
#endif

// Asks the kernel to back a vector's reserved memory now, in one call,
// rather than a page fault at a time as the parse fills it: a large
// reservation is a fresh mapping, and its faults were about a quarter of a
// 2.9 MB file's parse on a VM (interleaved runs: median 184 ms with this,
// 205 ms without). Only whole pages inside the reservation are touched;
// their contents do not change. A kernel without MADV_POPULATE_WRITE
// answers EINVAL and the pages fault in as before.
template <class T>
void populate(const std::vector<T>& v) {
  static const uintptr_t kPage = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  auto begin = reinterpret_cast<uintptr_t>(v.data());
  uintptr_t end = begin + v.capacity() * sizeof(T);
  begin = (begin + kPage - 1) & ~(kPage - 1);
  end &= ~(kPage - 1);
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_POPULATE_WRITE);
}

// The plain scalars YAML 1.2's core schema reads as null (yaml-cpp's set).
bool isNullText(std::string_view s) { return s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL"; }

}  // namespace

// Builds a Stream from events. Collections under construction are a stack of
// child lists; a finished collection's children move into kids_ in one run.
class Builder {
 public:
  explicit Builder(Stream& s) : s_(s) {
    s_.tags_ = {"?", "!"};
  }

  // False once an error was recorded.
  bool onEvent(const yaml_event_t& e) {
    switch (e.type) {
      case YAML_DOCUMENT_START_EVENT: anchors_.clear(); return true;
      case YAML_SCALAR_EVENT: return onScalar(e);
      case YAML_SEQUENCE_START_EVENT:
        return open(NodeType::Sequence, e, e.data.sequence_start.anchor, e.data.sequence_start.tag);
      case YAML_MAPPING_START_EVENT:
        return open(NodeType::Map, e, e.data.mapping_start.anchor, e.data.mapping_start.tag);
      case YAML_SEQUENCE_END_EVENT:
      case YAML_MAPPING_END_EVENT: return close();
      case YAML_ALIAS_EVENT: {
        auto it = anchors_.find(reinterpret_cast<const char*>(e.data.alias.anchor));
        if (it == anchors_.end()) {
          s_.error_ = {markOf(e.start_mark),
                       "unknown anchor '" + std::string(reinterpret_cast<const char*>(e.data.alias.anchor)) + "'"};
          return false;
        }
        add(it->second);
        return true;
      }
      default: return true;
    }
  }

 private:
  uint32_t tagIndex(const yaml_char_t* tag, bool plain) {
    if (!tag) return plain ? 0 : 1;
    std::string t(reinterpret_cast<const char*>(tag));
    if (t == "!") return 1;
    for (uint32_t i = 2; i < s_.tags_.size(); ++i)
      if (s_.tags_[i] == t) return i;
    s_.tags_.push_back(std::move(t));
    return static_cast<uint32_t>(s_.tags_.size() - 1);
  }

  uint32_t newNode(NodeType type, const yaml_event_t& e, const yaml_char_t* anchor, uint32_t tag) {
    uint32_t idx = static_cast<uint32_t>(s_.nodes_.size());
    Stream::Data& d = s_.nodes_.emplace_back();
    d.type = type;
    d.mark = markOf(e.start_mark);
    d.tag = tag;
    if (anchor) anchors_[reinterpret_cast<const char*>(anchor)] = idx;
    return idx;
  }

  bool onScalar(const yaml_event_t& e) {
    const auto& sc = e.data.scalar;
    std::string_view text(reinterpret_cast<const char*>(sc.value), sc.length);
    bool plain = sc.style == YAML_PLAIN_SCALAR_STYLE || sc.style == YAML_ANY_SCALAR_STYLE;
    uint32_t tag = tagIndex(sc.tag, plain);
    NodeType type = plain && !sc.tag && isNullText(text) ? NodeType::Null : NodeType::Scalar;
    uint32_t idx = newNode(type, e, sc.anchor, tag);
    if (type == NodeType::Scalar) s_.nodes_[idx].scalar.assign(text);
    add(idx);
    return true;
  }

  bool open(NodeType type, const yaml_event_t& e, const yaml_char_t* anchor, const yaml_char_t* tag) {
    uint32_t idx = newNode(type, e, anchor, tagIndex(tag, true));
    add(idx);
    open_.push_back(idx);
    if (open_.size() > pending_.size()) pending_.emplace_back();
    pending_[open_.size() - 1].clear();
    return true;
  }

  bool close() {
    if (open_.empty()) return true;
    std::vector<uint32_t>& kids = pending_[open_.size() - 1];
    Stream::Data& d = s_.nodes_[open_.back()];
    d.first = static_cast<uint32_t>(s_.kids_.size());
    d.count = static_cast<uint32_t>(kids.size());
    s_.kids_.insert(s_.kids_.end(), kids.begin(), kids.end());
    open_.pop_back();
    return true;
  }

  // A finished node goes to its parent collection, or is a document's root.
  void add(uint32_t idx) {
    if (open_.empty()) s_.roots_.push_back(idx);
    else pending_[open_.size() - 1].push_back(idx);
  }

  Stream& s_;
  std::map<std::string, uint32_t, std::less<>> anchors_;
  std::vector<uint32_t> open_;                  // collections being built, outermost first
  std::vector<std::vector<uint32_t>> pending_;  // their children so far (reused per depth)
};

Stream Stream::parse(std::string_view text) {
  Stream s;
  yaml_parser_t parser;
  if (!yaml_parser_initialize(&parser)) {
    s.error_ = {Mark::null_mark(), "cannot initialize the YAML parser (out of memory)"};
    return s;
  }
  std::unique_ptr<yaml_parser_t, decltype(&yaml_parser_delete)> guard(&parser, yaml_parser_delete);
  yaml_parser_set_input_string(&parser, reinterpret_cast<const unsigned char*>(text.data()), text.size());
  // About one node per 7 bytes of a state file: reserve rather than move
  // every node several times as the vector grows.
  s.nodes_.reserve(text.size() / 7 + 16);
  s.kids_.reserve(text.size() / 7 + 16);
  populate(s.nodes_);
  populate(s.kids_);
  Builder b(s);
  for (;;) {
    yaml_event_t e;
    if (!yaml_parser_parse(&parser, &e)) {
      std::string msg = parser.problem ? parser.problem : "invalid YAML";
      if (parser.context) msg += std::string(" ") + parser.context;
      s.error_ = {markOf(parser.problem_mark), std::move(msg)};
      break;
    }
    bool end = e.type == YAML_STREAM_END_EVENT;
    bool ok = b.onEvent(e);
    yaml_event_delete(&e);
    if (end || !ok) break;
  }
  if (!s.ok()) {
    s.roots_.clear();
    s.nodes_.clear();
    s.kids_.clear();
  }
  return s;
}

NodeType Node::Type() const {
  if (!s_ || idx_ >= s_->nodes_.size()) return NodeType::Undefined;
  return s_->nodes_[idx_].type;
}

const std::string& Node::Scalar() const { return IsDefined() ? s_->nodes_[idx_].scalar : kEmpty; }

const std::string& Node::Tag() const { return IsDefined() ? s_->tags_[s_->nodes_[idx_].tag] : kEmpty; }

yaml::Mark Node::Mark() const { return IsDefined() ? s_->nodes_[idx_].mark : yaml::Mark::null_mark(); }

size_t Node::size() const {
  NodeType t = Type();
  if (t == NodeType::Sequence) return s_->nodes_[idx_].count;
  if (t == NodeType::Map) return s_->nodes_[idx_].count / 2;
  return 0;
}

Node Node::operator[](size_t i) const {
  if (!IsSequence() || i >= size()) return Node();
  return Node(s_, s_->kids_[s_->nodes_[idx_].first + i]);
}

Node Node::key(size_t i) const {
  if (!IsMap() || i >= size()) return Node();
  return Node(s_, s_->kids_[s_->nodes_[idx_].first + 2 * i]);
}

Node Node::value(size_t i) const {
  if (!IsMap() || i >= size()) return Node();
  return Node(s_, s_->kids_[s_->nodes_[idx_].first + 2 * i + 1]);
}

}  // namespace aimesh::yaml
