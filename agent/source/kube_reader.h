// Internal to agent/source: typed reads of Kubernetes JSON objects, shared
// by the decoders of kube_objects.cc and kube_routes.cc. Not part of the
// source's interface (kube_objects.h, kube_routes.h).
#pragma once

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <map>
#include <optional>
#include <string>

#include "model/service_rules.h"
#include "model/snapshot.h"
#include "source/kube_objects.h"
#include "util/result.h"

namespace aimesh::kube::detail {

using nlohmann::json;

// How a JSON value is named in "must be X, got Y" messages.
inline std::string describe(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return v.get<bool>() ? "true" : "false";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float: return v.dump();
    case json::value_t::string: return "string \"" + v.get<std::string>() + "\"";
    case json::value_t::array: return "a list";
    case json::value_t::object: return "an object";
    case json::value_t::binary:
    case json::value_t::discarded: break;
  }
  return "nothing";
}

// Reads typed fields out of JSON objects and keeps the first problem found.
// The API server omits empty fields and sometimes writes them as null
// (a nil Go slice), so absent and null are the same here.
class Reader {
 public:
  bool failed() const { return failure_.has_value(); }
  const std::string& failure() const { return *failure_; }

  void fail(const std::string& field, const std::string& message) {
    if (failure_) return;
    failure_ = field.empty() ? message : field + ": " + message;
  }

  // The value of obj[key], or nullptr when absent or null (missing if
  // required). obj must be an object.
  const json* get(const json& obj, const char* key, const std::string& path, bool required) {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) {
      if (required) fail(path, "required field is missing");
      return nullptr;
    }
    return &*it;
  }

  std::optional<std::string> string(const json& v, const std::string& path) {
    if (!v.is_string()) {
      fail(path, "must be a string, got " + describe(v));
      return std::nullopt;
    }
    return v.get<std::string>();
  }

  std::optional<std::string> stringField(const json& obj, const char* key, const std::string& path, bool required) {
    const json* v = get(obj, key, path, required);
    return v == nullptr ? std::nullopt : string(*v, path);
  }

  std::optional<bool> boolField(const json& obj, const char* key, const std::string& path) {
    const json* v = get(obj, key, path, false);
    if (v == nullptr) return std::nullopt;
    if (!v->is_boolean()) {
      fail(path, "must be true or false, got " + describe(*v));
      return std::nullopt;
    }
    return v->get<bool>();
  }

  std::optional<long long> integer(const json& v, const std::string& path, long long min, long long max) {
    if (!v.is_number_integer()) {
      fail(path, notIntegerMessage(min, max, describe(v)));
      return std::nullopt;
    }
    // Unsigned values above the signed range are out of range anyway.
    bool huge = v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(max);
    long long n = huge ? 0 : v.get<long long>();
    if (huge || n < min || n > max) {
      fail(path, outOfRangeMessage(min, max, v.dump()));
      return std::nullopt;
    }
    return n;
  }

  std::optional<uint16_t> portField(const json& obj, const char* key, const std::string& path, bool required) {
    const json* v = get(obj, key, path, required);
    if (v == nullptr) return std::nullopt;
    auto n = integer(*v, path, kMinPort, kMaxPort);
    if (!n) return std::nullopt;
    return static_cast<uint16_t>(*n);
  }

  // The object at obj[key], or nullptr (absent, null or wrong type).
  const json* objectField(const json& obj, const char* key, const std::string& path, bool required) {
    const json* v = get(obj, key, path, required);
    if (v == nullptr) return nullptr;
    if (!v->is_object()) {
      fail(path, "must be an object, got " + describe(*v));
      return nullptr;
    }
    return v;
  }

  const json* listField(const json& obj, const char* key, const std::string& path, bool required) {
    const json* v = get(obj, key, path, required);
    if (v == nullptr) return nullptr;
    if (!v->is_array()) {
      fail(path, "must be a list, got " + describe(*v));
      return nullptr;
    }
    return v;
  }

  // f(item, path) for each item of the list at obj[key] ("spec.rules[2]"),
  // while nothing failed; an item that is no object fails.
  template <class F>
  void eachObject(const json& obj, const char* key, const std::string& path, bool required, F&& f) {
    const json* list = listField(obj, key, path, required);
    for (size_t i = 0; list != nullptr && i < list->size() && !failed(); ++i) {
      std::string p = indexPath(path, i);
      if (!(*list)[i].is_object()) fail(p, "must be an object, got " + describe((*list)[i]));
      else f((*list)[i], p);
    }
  }

  std::map<std::string, std::string> stringMap(const json& obj, const char* key, const std::string& path) {
    std::map<std::string, std::string> out;
    const json* m = objectField(obj, key, path, false);
    if (m == nullptr) return out;
    for (auto it = m->begin(); it != m->end(); ++it) {
      if (auto s = string(it.value(), keyPath(path, it.key()))) out.emplace(it.key(), *s);
    }
    return out;
  }

  // TCP, UDP or SCTP (any case); nullopt for SCTP, with supported = false.
  std::optional<Protocol> protocolField(const json& obj, const std::string& path, bool& supported) {
    supported = true;
    auto s = stringField(obj, "protocol", path, false);
    if (!s) return failed() ? std::nullopt : std::optional<Protocol>(Protocol::kTcp);
    if (auto p = parseProtocol(*s)) return p;
    std::string upper = *s;
    std::transform(upper.begin(), upper.end(), upper.begin(), [](unsigned char c) { return std::toupper(c); });
    if (upper == "SCTP") {
      supported = false;
      return std::nullopt;
    }
    fail(path, "must be TCP, UDP or SCTP, got '" + *s + "'");
    return std::nullopt;
  }

 private:
  std::optional<std::string> failure_;
};

// metadata of any object: name required, the rest optional.
void readMeta(Reader& r, const json& object, ObjectMeta& meta);
// Shared start of every namespaced kind: the object is a JSON object, kind
// (when present, as in watch events) is the expected one, metadata is valid
// and has a namespace.
bool readHeader(Reader& r, const json& object, const char* kind, ObjectMeta& meta);
// "<kind> <namespace>/<name>: <the reader's failure>".
Error decodeError(const char* kind, const ObjectMeta& meta, const Reader& r);

}  // namespace aimesh::kube::detail
