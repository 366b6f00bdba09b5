// Table cells from the agent's typed responses (view/views.h), for the
// commands in this folder. A view keeps its default for a key an older agent
// left out; the tables show "-" there instead, so an Item keeps the JSON its
// view was parsed from to tell "sent 0" from "not sent". The key is looked up
// by member through the view's own field list: renaming a key or a member is
// still a compile error here, never a silently empty column.
#pragma once

#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "commands/commands.h"
#include "view/views.h"

namespace aimesh {

// The JSON key of `member` in T's field list.
template <view::View T, class M>
const char* viewKey(M T::* member) {
  static const T probe{};
  const char* key = "";
  fields(probe, [&](const char* k, const auto& m) {
    if (static_cast<const void*>(&m) == static_cast<const void*>(&(probe.*member))) key = k;
  });
  return key;
}

// A typed value as a table cell:
// strings bare ("" is "-"), booleans yes/no, numbers as JSON prints them,
// lists comma-joined ([] is "-"), an empty optional "-".
inline std::string cellOf(const std::string& s) { return s.empty() ? "-" : s; }
inline std::string cellOf(bool b) { return b ? "yes" : "no"; }
template <class N>
  requires std::is_arithmetic_v<N>
std::string cellOf(N n) {
  return nlohmann::json(n).dump();
}
inline std::string cellOf(const std::vector<std::string>& list) {
  std::string out;
  for (const auto& s : list) out += (out.empty() ? "" : ",") + s;
  return out.empty() ? "-" : out;
}
template <class M>
std::string cellOf(const std::optional<M>& m) {
  return m ? cellOf(*m) : "-";
}

// One parsed view and the JSON it came from (pointers: rows get sorted).
template <view::View T>
class Item {
 public:
  Item(const T& view, const nlohmann::json& json) : view_(&view), json_(&json) {}
  const T& view() const { return *view_; }
  const nlohmann::json& json() const { return *json_; }

  // Whether the agent sent `member` (a null counts as not sent).
  template <class M>
  bool has(M T::* member) const {
    if (!json_->is_object()) return false;
    auto it = json_->find(viewKey(member));
    return it != json_->end() && !it->is_null();
  }
  // The member as a cell; "-" when the agent did not send it.
  template <class M>
  std::string cell(M T::* member) const {
    return has(member) ? cellOf(view_->*member) : "-";
  }

 private:
  const T* view_;
  const nlohmann::json* json_;
};

// The i-th element of `list` (a member of `parent`), paired with its JSON.
template <view::View P, view::View T>
Item<T> itemAt(const Item<P>& parent, std::vector<T> P::* list, std::size_t i) {
  return Item<T>((parent.view().*list)[i], parent.json().at(viewKey(list)).at(i));
}

// parseView() for the commands: a response that does not fit T fills
// `failure` (kExitError, the reason on err).
template <view::View T>
std::optional<T> parseResponse(const nlohmann::json& response, CommandOutput& failure) {
  auto parsed = view::parseView<T>(response);
  if (!parsed) {
    failure = CommandOutput{kExitError, "", "meshctl: " + parsed.error().message() + "\n"};
    return std::nullopt;
  }
  return std::move(*parsed);
}

}  // namespace aimesh
