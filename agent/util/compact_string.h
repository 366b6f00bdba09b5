// A string that costs one pointer (8 bytes) in the struct that holds it, and
// nothing more while empty: for a rarely set name carried by every element
// of a large list (Endpoint::pod; 40,000 endpoints of a state file without
// pods would otherwise carry 40,000 empty 32-byte std::strings, in every
// copy of the snapshot and of the index). Value semantics: a copy copies
// the text. Compared by its text.
#pragma once

#include <algorithm>
#include <compare>
#include <cstdint>
#include <cstring>
#include <memory>
#include <ostream>
#include <string>
#include <string_view>

namespace aimesh {

class CompactString {
 public:
  CompactString() = default;
  CompactString(std::string_view s) { assign(s); }  // NOLINT: implicit, as std::string is
  CompactString(const std::string& s) : CompactString(std::string_view(s)) {}  // NOLINT
  CompactString(const char* s) : CompactString(std::string_view(s)) {}         // NOLINT
  CompactString(const CompactString& o) { assign(o.view()); }
  CompactString(CompactString&&) noexcept = default;
  CompactString& operator=(const CompactString& o) {
    if (this != &o) assign(o.view());
    return *this;
  }
  CompactString& operator=(CompactString&&) noexcept = default;
  ~CompactString() = default;

  std::string_view view() const {
    if (!p_) return {};
    uint32_t n;
    std::memcpy(&n, p_.get(), sizeof n);
    return {p_.get() + sizeof n, n};
  }
  std::string str() const { return std::string(view()); }
  bool empty() const { return !p_; }

  friend bool operator==(const CompactString& a, const CompactString& b) { return a.view() == b.view(); }
  friend std::strong_ordering operator<=>(const CompactString& a, const CompactString& b) {
    return a.view() <=> b.view();
  }
  friend std::ostream& operator<<(std::ostream& os, const CompactString& s) { return os << s.view(); }

 private:
  // [uint32 length][bytes]; null when empty. Longer than 4 GiB: cut there.
  void assign(std::string_view s) {
    if (s.empty()) {
      p_.reset();
      return;
    }
    auto n = static_cast<uint32_t>(std::min<size_t>(s.size(), UINT32_MAX));
    p_.reset(new char[sizeof n + n]);
    std::memcpy(p_.get(), &n, sizeof n);
    std::memcpy(p_.get() + sizeof n, s.data(), n);
  }
  std::unique_ptr<char[]> p_;
};

}  // namespace aimesh
