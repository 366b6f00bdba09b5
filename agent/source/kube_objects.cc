#include "source/kube_objects.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <set>
#include <string_view>
#include <tuple>
#include <utility>

#include "model/connection_rules.h"
#include "model/service_rules.h"
#include "source/kube_reader.h"

namespace aimesh::kube {

using nlohmann::json;

namespace {

// Numbers in annotations with more digits are out of every range we accept.
constexpr size_t kMaxAnnotationDigits = 9;
constexpr size_t kMaxLabelNameLength = 63;
constexpr size_t kMaxLabelPrefixLength = 253;

}  // namespace

namespace detail {

void readMeta(Reader& r, const json& object, ObjectMeta& meta) {
  const json* m = r.objectField(object, "metadata", "metadata", true);
  if (m == nullptr) return;
  if (auto s = r.stringField(*m, "name", "metadata.name", true)) {
    if (s->empty()) r.fail("metadata.name", "must not be empty");
    meta.name = *s;
  }
  if (auto s = r.stringField(*m, "namespace", "metadata.namespace", false)) meta.nameSpace = *s;
  if (auto s = r.stringField(*m, "resourceVersion", "metadata.resourceVersion", false)) meta.resourceVersion = *s;
  if (auto s = r.stringField(*m, "uid", "metadata.uid", false)) meta.uid = *s;
  meta.labels = r.stringMap(*m, "labels", "metadata.labels");
  meta.annotations = r.stringMap(*m, "annotations", "metadata.annotations");
  // An RFC 3339 time; only whether it is set matters.
  if (r.stringField(*m, "deletionTimestamp", "metadata.deletionTimestamp", false)) meta.deleting = true;
}

// Shared start of every namespaced kind: the object is a JSON object, kind
// (when present, as in watch events) is the expected one, metadata is valid
// and has a namespace.
bool readHeader(Reader& r, const json& object, const char* kind, ObjectMeta& meta) {
  if (!object.is_object()) {
    r.fail("", std::string("must be a JSON object, got ") + describe(object));
    return false;
  }
  if (auto k = r.stringField(object, "kind", "kind", false); k && *k != kind) {
    r.fail("kind", std::string("must be ") + kind + ", got '" + *k + "'");
  }
  readMeta(r, object, meta);
  if (!r.failed() && meta.nameSpace.empty()) r.fail("metadata.namespace", "required field is missing");
  return !r.failed();
}

Error decodeError(const char* kind, const ObjectMeta& meta, const Reader& r) {
  std::string who = kind;
  if (!meta.name.empty()) who += " " + (meta.nameSpace.empty() ? meta.name : meta.key());
  return Error::msg(who + ": " + r.failure());
}

}  // namespace detail

using detail::Reader;
using detail::describe;
using detail::readMeta;
using detail::readHeader;
using detail::decodeError;

bool ServiceObj::headless() const {
  return clusterIPs.empty() || std::find(clusterIPs.begin(), clusterIPs.end(), "None") != clusterIPs.end();
}

Result<ObjectMeta> decodeMeta(const json& object) {
  Reader r;
  ObjectMeta meta;
  if (!object.is_object()) {
    r.fail("", "must be a JSON object, got " + describe(object));
  } else {
    readMeta(r, object, meta);
  }
  if (r.failed()) return Error::msg(r.failure());
  return meta;
}

Result<ServiceObj> decodeService(const json& object) {
  Reader r;
  ServiceObj svc;
  if (!readHeader(r, object, "Service", svc.meta)) return decodeError("Service", svc.meta, r);

  const json* spec = r.objectField(object, "spec", "spec", true);
  if (spec != nullptr) {
    if (auto t = r.stringField(*spec, "type", "spec.type", false); t && !t->empty()) svc.type = *t;

    if (const json* ips = r.listField(*spec, "clusterIPs", "spec.clusterIPs", false)) {
      for (size_t i = 0; i < ips->size(); ++i) {
        if (auto s = r.string((*ips)[i], indexPath("spec.clusterIPs", i))) svc.clusterIPs.push_back(*s);
      }
    }
    // Older API servers and hand-written objects have only the singular field.
    auto single = r.stringField(*spec, "clusterIP", "spec.clusterIP", false);
    if (svc.clusterIPs.empty() && single && !single->empty()) svc.clusterIPs.push_back(*single);
    if (auto s = r.stringField(*spec, "internalTrafficPolicy", "spec.internalTrafficPolicy", false); s && !s->empty())
      svc.internalTrafficPolicy = *s;
    if (auto s = r.stringField(*spec, "sessionAffinity", "spec.sessionAffinity", false); s && !s->empty())
      svc.sessionAffinity = *s;

    if (const json* ports = r.listField(*spec, "ports", "spec.ports", false)) {
      for (size_t i = 0; i < ports->size(); ++i) {
        const json& item = (*ports)[i];
        std::string p = indexPath("spec.ports", i);
        if (!item.is_object()) {
          r.fail(p, "must be an object, got " + describe(item));
          break;
        }
        ServicePort port;
        if (auto s = r.stringField(item, "name", joinPath(p, "name"), false)) port.name = *s;
        if (auto n = r.portField(item, "port", joinPath(p, "port"), true)) port.port = *n;
        if (auto proto = r.protocolField(item, joinPath(p, "protocol"), port.supported)) port.protocol = *proto;
        svc.ports.push_back(std::move(port));
      }
    }
  }
  if (r.failed()) return decodeError("Service", svc.meta, r);
  return svc;
}

Result<EndpointSliceObj> decodeEndpointSlice(const json& object) {
  Reader r;
  EndpointSliceObj slice;
  if (!readHeader(r, object, "EndpointSlice", slice.meta)) return decodeError("EndpointSlice", slice.meta, r);
  if (auto it = slice.meta.labels.find(kServiceNameLabel); it != slice.meta.labels.end()) {
    slice.serviceName = it->second;
  }
  if (auto s = r.stringField(object, "addressType", "addressType", true)) slice.addressType = *s;

  if (const json* ports = r.listField(object, "ports", "ports", false)) {
    for (size_t i = 0; i < ports->size() && !r.failed(); ++i) {
      const json& item = (*ports)[i];
      std::string p = indexPath("ports", i);
      if (!item.is_object()) {
        r.fail(p, "must be an object, got " + describe(item));
        break;
      }
      SlicePort port;
      bool supported = true;
      if (auto s = r.stringField(item, "name", joinPath(p, "name"), false)) port.name = *s;
      // No port number: "all ports" (Kubernetes API docs for EndpointPort).
      if (auto n = r.portField(item, "port", joinPath(p, "port"), false)) port.port = *n;
      if (auto proto = r.protocolField(item, joinPath(p, "protocol"), supported)) port.protocol = *proto;
      if (supported) slice.ports.push_back(std::move(port));
    }
  }

  if (const json* eps = r.listField(object, "endpoints", "endpoints", false)) {
    for (size_t i = 0; i < eps->size() && !r.failed(); ++i) {
      const json& item = (*eps)[i];
      std::string p = indexPath("endpoints", i);
      if (!item.is_object()) {
        r.fail(p, "must be an object, got " + describe(item));
        break;
      }
      SliceEndpoint ep;
      if (const json* addrs = r.listField(item, "addresses", joinPath(p, "addresses"), true)) {
        for (size_t j = 0; j < addrs->size(); ++j) {
          if (auto s = r.string((*addrs)[j], indexPath(joinPath(p, "addresses"), j))) ep.addresses.push_back(*s);
        }
      }
      std::string cp = joinPath(p, "conditions");
      if (const json* cond = r.objectField(item, "conditions", cp, false)) {
        ep.ready = r.boolField(*cond, "ready", joinPath(cp, "ready"));
        ep.serving = r.boolField(*cond, "serving", joinPath(cp, "serving"));
        ep.terminating = r.boolField(*cond, "terminating", joinPath(cp, "terminating"));
      }
      if (auto s = r.stringField(item, "nodeName", joinPath(p, "nodeName"), false)) ep.nodeName = *s;
      std::string tp = joinPath(p, "targetRef");
      if (const json* ref = r.objectField(item, "targetRef", tp, false)) {
        auto kind = r.stringField(*ref, "kind", joinPath(tp, "kind"), false);
        auto name = r.stringField(*ref, "name", joinPath(tp, "name"), false);
        if (kind && *kind == "Pod" && name) ep.pod = *name;
      }
      slice.endpoints.push_back(std::move(ep));
    }
  }
  if (r.failed()) return decodeError("EndpointSlice", slice.meta, r);
  return slice;
}

Result<PodObj> decodePod(const json& object) {
  Reader r;
  PodObj pod;
  if (!readHeader(r, object, "Pod", pod.meta)) return decodeError("Pod", pod.meta, r);
  pod.meta.annotations.clear();
  if (pod.meta.uid.empty()) r.fail("metadata.uid", "required field is missing");
  if (const json* spec = r.objectField(object, "spec", "spec", false)) {
    if (auto s = r.stringField(*spec, "nodeName", "spec.nodeName", false)) pod.nodeName = *s;
  }
  if (const json* status = r.objectField(object, "status", "status", false)) {
    if (auto s = r.stringField(*status, "phase", "status.phase", false)) pod.phase = *s;
  }
  if (r.failed()) return decodeError("Pod", pod.meta, r);
  return pod;
}

// ---- label selectors --------------------------------------------------------

namespace {

struct Token {
  enum class Kind : uint8_t {
    kIdent,
    kEquals,
    kDoubleEquals,
    kNotEquals,
    kBang,
    kOpen,
    kClose,
    kComma,
    kCompare,
    kEnd
  };
  Kind kind = Kind::kEnd;
  std::string text;
  size_t column = 0;  // 1-based
};

// The characters that end an identifier, as in apimachinery's lexer.
bool isSpecial(char c) { return c == '!' || c == '=' || c == '(' || c == ')' || c == ',' || c == '<' || c == '>'; }
bool isSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

std::vector<Token> lex(const std::string& s) {
  std::vector<Token> out;
  size_t i = 0;
  while (i < s.size()) {
    char c = s[i];
    if (isSpace(c)) {
      ++i;
      continue;
    }
    Token t;
    t.column = i + 1;
    if (isSpecial(c)) {
      // "==" and "!=" are one token each.
      bool withEq = (c == '=' || c == '!') && i + 1 < s.size() && s[i + 1] == '=';
      switch (c) {
        case '=': t.kind = withEq ? Token::Kind::kDoubleEquals : Token::Kind::kEquals; break;
        case '!': t.kind = withEq ? Token::Kind::kNotEquals : Token::Kind::kBang; break;
        case '(': t.kind = Token::Kind::kOpen; break;
        case ')': t.kind = Token::Kind::kClose; break;
        case ',': t.kind = Token::Kind::kComma; break;
        default: t.kind = Token::Kind::kCompare; break;  // '<' or '>'
      }
      size_t len = withEq ? 2 : 1;
      t.text = s.substr(i, len);
      i += len;
    } else {
      size_t start = i;
      while (i < s.size() && !isSpace(s[i]) && !isSpecial(s[i])) ++i;
      t.kind = Token::Kind::kIdent;
      t.text = s.substr(start, i - start);
    }
    out.push_back(std::move(t));
  }
  Token end;
  end.column = s.size() + 1;
  out.push_back(end);
  return out;
}

std::string describe(const Token& t) {
  if (t.kind == Token::Kind::kEnd) return "end of input";
  return "'" + t.text + "'";
}

bool alnum(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }

// A label name or value: alphanumerics, '-', '_', '.', starting and ending
// with an alphanumeric (k8s.io/apimachinery validation.IsQualifiedName).
bool validNamePart(std::string_view s) {
  return !s.empty() && s.size() <= kMaxLabelNameLength && alnum(s.front()) && alnum(s.back()) &&
         std::all_of(s.begin(), s.end(), [](char c) { return alnum(c) || c == '-' || c == '_' || c == '.'; });
}

// A DNS subdomain: lowercase alphanumerics, '-' and '.', starting and ending
// with an alphanumeric.
bool validPrefix(std::string_view s) {
  auto lowerAlnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  return !s.empty() && s.size() <= kMaxLabelPrefixLength && lowerAlnum(s.front()) && lowerAlnum(s.back()) &&
         std::all_of(s.begin(), s.end(), [&](char c) { return lowerAlnum(c) || c == '-' || c == '.'; });
}

std::optional<std::string> checkKey(const std::string& key) {
  auto slash = key.find('/');
  bool ok = slash == std::string::npos ? validNamePart(key)
                                       : validPrefix(std::string_view(key).substr(0, slash)) &&
                                             validNamePart(std::string_view(key).substr(slash + 1));
  if (ok) return std::nullopt;
  return "'" + key + "' is not a valid label key (an optional DNS-subdomain prefix and '/', then up to 63 " +
         "letters, digits, '-', '_' or '.', starting and ending with a letter or digit)";
}

std::optional<std::string> checkValue(const std::string& value) {
  if (value.empty() || validNamePart(value)) return std::nullopt;
  return "'" + value + "' is not a valid label value (up to 63 letters, digits, '-', '_' or '.', starting and " +
         "ending with a letter or digit)";
}

class SelectorParser {
 public:
  explicit SelectorParser(const std::string& text) : text_(text), tokens_(lex(text)) {}

  Result<Selector> run() {
    Selector sel;
    if (peek().kind == Token::Kind::kEnd) return sel;
    for (;;) {
      if (!requirement(sel)) return error();
      const Token& t = next();
      if (t.kind == Token::Kind::kEnd) break;
      if (t.kind != Token::Kind::kComma) {
        fail(t, "expected ',' or end of input, got " + describe(t));
        return error();
      }
    }
    return sel;
  }

 private:
  const Token& peek() const { return tokens_[pos_]; }
  const Token& next() {
    const Token& t = tokens_[pos_];
    if (pos_ + 1 < tokens_.size()) ++pos_;
    return t;
  }

  void fail(const Token& at, const std::string& message) {
    message_ = message + " (column " + std::to_string(at.column) + ")";
  }
  Error error() const { return Error::msg("label selector \"" + text_ + "\": " + message_); }

  bool key(const Token& t, std::string& out) {
    if (t.kind != Token::Kind::kIdent) {
      fail(t, "expected a label key, got " + describe(t));
      return false;
    }
    if (auto bad = checkKey(t.text)) {
      fail(t, *bad);
      return false;
    }
    out = t.text;
    return true;
  }

  bool value(const Token& t, std::vector<std::string>& out) {
    if (auto bad = checkValue(t.text)) {
      fail(t, *bad);
      return false;
    }
    out.push_back(t.text);
    return true;
  }

  bool requirement(Selector& sel) {
    Requirement req;
    const Token& first = next();
    if (first.kind == Token::Kind::kBang) {
      if (!key(next(), req.key)) return false;
      req.op = Requirement::Op::kDoesNotExist;
      sel.requirements.push_back(std::move(req));
      return true;
    }
    if (!key(first, req.key)) return false;

    const Token& op = peek();
    switch (op.kind) {
      case Token::Kind::kComma:
      case Token::Kind::kEnd: req.op = Requirement::Op::kExists; break;
      case Token::Kind::kEquals:
      case Token::Kind::kDoubleEquals:
      case Token::Kind::kNotEquals: {
        next();
        req.op = op.kind == Token::Kind::kNotEquals ? Requirement::Op::kNotEquals : Requirement::Op::kEquals;
        // "a=" compares with the empty value, as kubectl does.
        if (peek().kind == Token::Kind::kIdent) {
          if (!value(next(), req.values)) return false;
        } else if (peek().kind == Token::Kind::kComma || peek().kind == Token::Kind::kEnd) {
          req.values.emplace_back();
        } else {
          fail(peek(), "expected a value after " + describe(op) + ", got " + describe(peek()));
          return false;
        }
        break;
      }
      case Token::Kind::kIdent:
        if (op.text == "in" || op.text == "notin") {
          next();
          req.op = op.text == "in" ? Requirement::Op::kIn : Requirement::Op::kNotIn;
          if (!valueSet(op, req.values)) return false;
          break;
        }
        fail(op, "expected an operator (=, ==, !=, in, notin), ',' or end of input after key '" + req.key + "', got " +
                     describe(op));
        return false;
      case Token::Kind::kCompare:
        fail(op, "operator " + describe(op) + " is not supported; use =, ==, !=, in, notin, a bare key or !key");
        return false;
      default:
        fail(op, "expected an operator (=, ==, !=, in, notin), ',' or end of input after key '" + req.key + "', got " +
                     describe(op));
        return false;
    }
    std::sort(req.values.begin(), req.values.end());
    req.values.erase(std::unique(req.values.begin(), req.values.end()), req.values.end());
    sel.requirements.push_back(std::move(req));
    return true;
  }

  // "(x, y, z)" after in / notin; empty entries between commas are the
  // empty value, as in apimachinery.
  bool valueSet(const Token& op, std::vector<std::string>& out) {
    const Token& open = next();
    if (open.kind != Token::Kind::kOpen) {
      fail(open, "expected '(' after '" + op.text + "', got " + describe(open));
      return false;
    }
    if (peek().kind == Token::Kind::kClose) {
      fail(peek(), "'" + op.text + "' needs at least one value");
      return false;
    }
    for (;;) {
      if (peek().kind == Token::Kind::kIdent) {
        if (!value(next(), out)) return false;
      } else {
        out.emplace_back();
      }
      const Token& t = next();
      if (t.kind == Token::Kind::kClose) return true;
      if (t.kind != Token::Kind::kComma) {
        std::string after = out.back().empty() ? "'('" : "'" + out.back() + "'";
        fail(t, "expected ',' or ')' after " + after + ", got " + describe(t));
        return false;
      }
    }
  }

  std::string text_;
  std::vector<Token> tokens_;
  size_t pos_ = 0;
  std::string message_;
};

}  // namespace

Result<Selector> parseSelector(const std::string& text) { return SelectorParser(text).run(); }

bool matches(const Selector& selector, const std::map<std::string, std::string>& labels) {
  for (const Requirement& req : selector.requirements) {
    auto it = labels.find(req.key);
    bool has = it != labels.end();
    auto in = [&] { return has && std::binary_search(req.values.begin(), req.values.end(), it->second); };
    bool ok = false;
    switch (req.op) {
      case Requirement::Op::kEquals:
      case Requirement::Op::kIn: ok = in(); break;
      case Requirement::Op::kNotEquals:
      case Requirement::Op::kNotIn: ok = !in(); break;
      case Requirement::Op::kExists: ok = has; break;
      case Requirement::Op::kDoesNotExist: ok = !has; break;
    }
    if (!ok) return false;
  }
  return true;
}

// ---- mapping to a Snapshot --------------------------------------------------

namespace {

using Warnings = std::vector<std::string>;

// One endpoint address of a slice that passed the checks, with its state.
struct SliceAddress {
  IpAddr address;
  EndpointState state;
  const std::string* pod;  // the slice endpoint's targetRef pod, "" if none
};
struct UsableSlice {
  const EndpointSliceObj* slice;
  std::vector<SliceAddress> addresses;
};

std::optional<long long> parseAnnotationInt(const std::string& s) {
  if (s.empty() || s.size() > kMaxAnnotationDigits ||
      !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  return std::stoll(s);
}

// Kubernetes semantics (discovery.k8s.io/v1 EndpointConditions): a nil ready
// or terminating is "unknown" and read as ready / not terminating.
std::optional<EndpointState> stateOf(const SliceEndpoint& ep) {
  if (ep.ready.value_or(true)) return EndpointState::kActive;
  if (ep.terminating.value_or(false)) return EndpointState::kDraining;
  return std::nullopt;  // not started yet, or failing its readiness probe
}

// The slice's usable addresses; warns once per slice about what it skips.
// onlyNode: keep only the endpoints on that node (internalTrafficPolicy Local).
std::optional<UsableSlice> usable(const EndpointSliceObj& slice, Warnings& w, const std::string* onlyNode) {
  std::string who = "EndpointSlice " + slice.meta.key();
  bool v4 = slice.addressType == "IPv4";
  if (!v4 && slice.addressType != "IPv6") {
    w.push_back(who + ": addressType " + slice.addressType + " is not supported (only IPv4 and IPv6); skipped");
    return std::nullopt;
  }
  UsableSlice out{&slice, {}};
  for (size_t i = 0; i < slice.endpoints.size(); ++i) {
    const SliceEndpoint& ep = slice.endpoints[i];
    if (onlyNode && ep.nodeName != *onlyNode) continue;
    auto state = stateOf(ep);
    for (size_t j = 0; j < ep.addresses.size(); ++j) {
      auto addr = IpAddr::parse(ep.addresses[j]);
      if (!addr || addr->isV4() != v4) {
        w.push_back(who + ": " + indexPath(joinPath(indexPath("endpoints", i), "addresses"), j) + ": '" +
                    ep.addresses[j] + "' is not an " + slice.addressType + " address; skipped");
        continue;
      }
      if (state) out.addresses.push_back(SliceAddress{*addr, *state, &ep.pod});
    }
  }
  return out;
}

// The aimesh.io/* annotations of one Service, and where warnings about them go.
class Annotations {
 public:
  Annotations(const ServiceObj& svc, Warnings& w) : svc_(svc), w_(w) {}

  // The annotation's value, or nullptr when it is not set.
  const std::string* find(const char* name) const {
    auto it = svc_.meta.annotations.find(name);
    return it == svc_.meta.annotations.end() ? nullptr : &it->second;
  }

  void warn(const char* name, const std::string& message) {
    w_.push_back("Service " + svc_.meta.key() + ": annotation " + name + ": " + message);
  }

  // Sets `field` from annotation `name` when it is set and `parse` accepts
  // it; otherwise warns with the parser's message and `kept()`, which says
  // what stays in force ("; using ...").
  template <class Parse, class T, class Kept>
  void parseInto(const char* name, Parse parse, T& field, Kept kept) {
    const std::string* v = find(name);
    if (v == nullptr) return;
    if (auto parsed = parse(*v)) {
      field = *parsed;
    } else {
      warn(name, parsed.error().message() + kept());
    }
  }

 private:
  const ServiceObj& svc_;
  Warnings& w_;
};

void applyHashTableSizeAnnotation(Annotations& ann, Service& base) {
  const std::string* v = ann.find(kHashTableSizeAnnotation);
  if (v == nullptr) return;
  std::string keep = "; using " + std::to_string(base.hashTableSize);
  auto n = parseAnnotationInt(*v);
  if (!n) {
    ann.warn(kHashTableSizeAnnotation, notIntegerMessage(kMinHashTableSize, kMaxHashTableSize, "'" + *v + "'") + keep);
  } else if (auto bad = checkHashTableSize(*n, *v)) {
    ann.warn(kHashTableSizeAnnotation, *bad + keep);
  } else {
    base.hashTableSize = static_cast<uint32_t>(*n);
  }
}

// Model metrics are scraped only with a valid port; the path is optional.
void applyModelMetricsAnnotations(Annotations& ann, Service& base) {
  const std::string* port = ann.find(kModelMetricsPortAnnotation);
  const std::string* path = ann.find(kModelMetricsPathAnnotation);
  if (port == nullptr) {
    if (path != nullptr) {
      ann.warn(kModelMetricsPathAnnotation,
               std::string("is set without ") + kModelMetricsPortAnnotation + "; model metrics not scraped");
    }
    return;
  }
  const std::string notScraped = "; model metrics not scraped";
  auto n = parseAnnotationInt(*port);
  if (!n) {
    ann.warn(kModelMetricsPortAnnotation, notIntegerMessage(kMinPort, kMaxPort, "'" + *port + "'") + notScraped);
    return;
  }
  if (*n < kMinPort || *n > kMaxPort) {
    ann.warn(kModelMetricsPortAnnotation, outOfRangeMessage(kMinPort, kMaxPort, *port) + notScraped);
    return;
  }
  ModelMetricsSpec spec;
  spec.port = static_cast<uint16_t>(*n);
  if (path != nullptr) {
    if (auto bad = checkMetricsPath(*path)) {
      ann.warn(kModelMetricsPathAnnotation, *bad + "; using " + spec.path);
    } else {
      spec.path = *path;
    }
  }
  base.modelMetrics = spec;
}

// The connection policy; the rules are the state file's (model/connection_rules.h).
void applyConnectionAnnotations(Annotations& ann, Service& base) {
  ConnectionPolicy& cp = base.connections;
  ann.parseInto(kRebalanceAnnotation, parseBoolText, cp.rebalance, [&] {
    return std::string("; using the default for ") + toString(base.algorithm) + " (" +
           (cp.rebalanceOn(base.algorithm) ? "on" : "off") + ")";
  });
  ann.parseInto(kRebalanceRateAnnotation, parseRebalanceRate, cp.rebalanceRate,
                [&] { return fmt::format("; using {:g}", cp.rebalanceRate); });
  ann.parseInto(kMaxRequestsAnnotation, parseMaxRequests, cp.maxRequests,
                [&] { return "; using " + std::to_string(cp.maxRequests); });
  ann.parseInto(kMaxConnectionAgeAnnotation, parseDurationMs, cp.maxAgeMs,
                [&] { return "; using " + formatDurationMs(cp.maxAgeMs); });
  ann.parseInto(kDrainTimeoutAnnotation, parseDurationMs, cp.drainTimeoutMs,
                [&] { return "; using " + formatDurationMs(cp.drainTimeoutMs); });
}

// Reads the aimesh.io/* annotations into base; bad values keep the default.
void applyAnnotations(const ServiceObj& svc, Service& base, Warnings& w) {
  Annotations ann(svc, w);
  ann.parseInto(kAlgorithmAnnotation, parseAlgorithmText, base.algorithm,
                [&] { return std::string("; using ") + toString(base.algorithm); });
  if (const std::string* v = ann.find(kModelAnnotation)) base.model = *v;
  applyHashTableSizeAnnotation(ann, base);
  applyModelMetricsAnnotations(ann, base);
  applyConnectionAnnotations(ann, base);
  ann.parseInto(kTelemetrySampleAnnotation, parseTelemetrySample, base.telemetrySample,
                [&] { return fmt::format("; using {:g}", base.telemetrySample); });
}

// The workload policy annotations: which pods of this node may connect.
// Fails closed: whatever cannot be read allows nobody.
void applyPolicyAnnotations(const ServiceObj& svc, const std::map<std::string, PodObj>* pods, Service& base,
                            Warnings& w) {
  const auto& ann = svc.meta.annotations;
  auto podsIt = ann.find(kAllowPodsAnnotation), nsIt = ann.find(kAllowNamespacesAnnotation);
  if (podsIt == ann.end() && nsIt == ann.end()) return;
  std::string who = "Service " + svc.meta.key() + ": ";
  PolicySpec policy;

  std::vector<std::string> namespaces{svc.meta.nameSpace};
  bool anyNamespace = false, ok = true;
  if (nsIt != ann.end()) {
    namespaces.clear();
    size_t start = 0;
    const std::string& text = nsIt->second;
    while (start <= text.size()) {
      size_t comma = text.find(',', start);
      std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      start = comma == std::string::npos ? text.size() + 1 : comma + 1;
      item.erase(0, item.find_first_not_of(" \t"));
      item.erase(item.find_last_not_of(" \t") + 1);
      if (item == "*") {
        anyNamespace = true;
      } else if (!checkDnsLabel(item)) {  // a namespace name (RFC 1123 label)
        namespaces.push_back(item);
      } else {
        w.push_back(who + "annotation " + kAllowNamespacesAnnotation + ": '" + item +
                    "' is not a namespace name (nor '*'); the policy allows nobody");
        ok = false;
        break;
      }
    }
    std::sort(namespaces.begin(), namespaces.end());
    namespaces.erase(std::unique(namespaces.begin(), namespaces.end()), namespaces.end());
  }

  Selector selector;
  std::string selectorText = podsIt == ann.end() ? "" : podsIt->second;
  if (ok && podsIt != ann.end()) {
    auto sel = parseSelector(selectorText);
    if (!sel) {
      w.push_back(who + "annotation " + kAllowPodsAnnotation + ": " + sel.error().message() +
                  "; the policy allows nobody");
      ok = false;
    } else {
      selector = std::move(sel.value());
    }
  }
  std::string where = anyNamespace ? "every namespace" : "";
  for (size_t i = 0; !anyNamespace && i < namespaces.size(); ++i) where += (i ? "," : "") + namespaces[i];
  policy.podSelector = (selectorText.empty() ? std::string("every pod") : selectorText) + " in " + where;

  if (ok && pods == nullptr) {
    w.push_back(who + "has a workload policy, but the agent does not watch the pods of its node (no --node-name); "
                      "the policy allows nobody");
    ok = false;
  }
  if (ok) {
    for (const auto& [key, pod] : *pods) {
      if (pod.finished()) continue;
      if (!anyNamespace && !std::binary_search(namespaces.begin(), namespaces.end(), pod.meta.nameSpace)) continue;
      if (!matches(selector, pod.meta.labels)) continue;
      policy.allowPods.push_back(AllowedPod{pod.meta.key(), pod.meta.uid, ""});
    }
    std::sort(policy.allowPods.begin(), policy.allowPods.end());
  } else {
    policy.podSelector += " (not in force: allows nobody)";
  }
  base.policy = std::move(policy);
}

// internalTrafficPolicy Local: the node whose endpoints are the only ones
// used, or null for every endpoint (Cluster, or this node unknown: warned).
const std::string* localNode(const ServiceObj& svc, const MappingOptions& opts, Warnings& w) {
  if (svc.internalTrafficPolicy != "Local") return nullptr;
  if (!opts.nodeName.empty()) return &opts.nodeName;
  w.push_back("Service " + svc.meta.key() +
              ": internalTrafficPolicy Local needs the agent's --node-name; using every endpoint");
  return nullptr;
}

// Appends one Snapshot Service per supported port of svc; `svcSlices` are
// its EndpointSlices in key order.
void buildService(const ServiceObj& svc, const std::vector<const EndpointSliceObj*>& svcSlices,
                  const std::map<std::string, PodObj>* pods, const MappingOptions& opts,
                  std::vector<SharedServices::Ptr>& out, Warnings& w) {
  // Normal states, not problems: nothing to balance at a virtual IP.
  if (svc.meta.deleting || svc.type == "ExternalName" || svc.headless()) return;
  std::string who = "Service " + svc.meta.key();

  Service base;
  base.nameSpace = svc.meta.nameSpace;
  for (size_t i = 0; i < svc.clusterIPs.size(); ++i) {
    auto a = IpAddr::parse(svc.clusterIPs[i]);
    if (!a) {
      w.push_back(who + ": " + indexPath("spec.clusterIPs", i) + ": '" + svc.clusterIPs[i] +
                  "' is not an IP address; skipped");
      continue;
    }
    if (std::find(base.vips.begin(), base.vips.end(), *a) == base.vips.end()) base.vips.push_back(*a);
  }
  if (base.vips.empty()) {
    w.push_back(who + ": no usable cluster IP; skipped");
    return;
  }
  if (svc.ports.empty()) {
    w.push_back(who + ": has no ports; skipped");
    return;
  }
  // The algorithm: the annotation's, else maglev for ClientIP affinity
  // (one client pod, one endpoint), else the agent's default.
  base.algorithm = svc.sessionAffinity == "ClientIP" ? Algorithm::kMaglev : opts.defaultAlgorithm;
  applyAnnotations(svc, base, w);
  applyPolicyAnnotations(svc, pods, base, w);

  const std::string* onlyNode = localNode(svc, opts, w);
  std::vector<UsableSlice> slices;
  for (const EndpointSliceObj* s : svcSlices) {
    if (auto u = usable(*s, w, onlyNode)) slices.push_back(std::move(*u));
  }

  for (size_t i = 0; i < svc.ports.size(); ++i) {
    const ServicePort& sp = svc.ports[i];
    if (!sp.supported) {
      w.push_back(who + ": " + indexPath("spec.ports", i) + " (" + (sp.name.empty() ? "" : "'" + sp.name + "', ") +
                  std::to_string(sp.port) + "/SCTP): SCTP is not supported; skipped");
      continue;
    }
    Service s = base;
    if (svc.ports.size() == 1) {
      s.name = svc.meta.name;
    } else {
      // Kubernetes requires names on the ports of a multi-port Service.
      s.name = svc.meta.name + ":" + (sp.name.empty() ? std::to_string(sp.port) : sp.name);
    }
    s.ports = {PortSpec{sp.port, sp.protocol}};

    std::map<std::pair<IpAddr, uint16_t>, std::pair<EndpointState, const std::string*>> endpoints;
    for (const UsableSlice& u : slices) {
      auto port = std::find_if(u.slice->ports.begin(), u.slice->ports.end(),
                               [&](const SlicePort& p) { return p.name == sp.name && p.protocol == sp.protocol; });
      if (port == u.slice->ports.end()) continue;
      for (const SliceAddress& a : u.addresses) {
        auto [it, inserted] = endpoints.emplace(std::make_pair(a.address, port->port), std::make_pair(a.state, a.pod));
        // A slice being rebalanced lists an endpoint twice: active wins.
        if (!inserted && a.state == EndpointState::kActive) it->second = {EndpointState::kActive, a.pod};
      }
    }
    for (const auto& [ap, st] : endpoints) {
      Endpoint ep;
      ep.address = ap.first;
      ep.port = ap.second;
      ep.state = st.first;
      ep.pod = *st.second;
      s.endpoints.push_back(ep);
    }
    out.push_back(SharedServices::make(std::move(s)));
  }
}

}  // namespace

namespace {

bool hasPolicy(const ServiceObj& svc) {
  const auto& ann = svc.meta.annotations;
  return ann.count(kAllowPodsAnnotation) || ann.count(kAllowNamespacesAnnotation);
}

// Which service owns each frontend (address, port, protocol): the first in
// key order that claims it. One sort of every claim instead of a tree built
// anew per event (at 10,000 Services, most of an event's cost). Returns, for
// the claims that lost, (index in `built`, vip index, owner's index), sorted:
// rare, so a list. `dup[i]`: built[i] is skipped and claims nothing.
std::vector<std::tuple<uint32_t, uint32_t, uint32_t>> lostFrontends(
    const std::vector<const SharedServices::Ptr*>& built, const std::vector<bool>& dup) {
  struct Claim {
    IpAddr vip;
    uint16_t port;
    Protocol proto;
    uint32_t service;  // index in `built`
    uint32_t vip_index;
    auto operator<=>(const Claim&) const = default;
  };
  std::vector<Claim> claims;
  claims.reserve(built.size());
  for (size_t i = 0; i < built.size(); ++i) {
    const Service& s = **built[i];
    if (dup[i]) continue;
    for (size_t v = 0; v < s.vips.size(); ++v)
      claims.push_back(Claim{s.vips[v], s.ports[0].port, s.ports[0].protocol, static_cast<uint32_t>(i),
                             static_cast<uint32_t>(v)});
  }
  std::sort(claims.begin(), claims.end());
  std::vector<std::tuple<uint32_t, uint32_t, uint32_t>> lost;
  for (size_t k = 1; k < claims.size(); ++k) {
    const Claim &owner = claims[k - 1], &c = claims[k];
    if (c.vip != owner.vip || c.port != owner.port || c.proto != owner.proto) continue;
    lost.emplace_back(c.service, c.vip_index, owner.service);
    claims[k].service = owner.service;  // so a third claim names the first owner too
  }
  std::sort(lost.begin(), lost.end());
  return lost;
}

// The snapshot from every Service's build, in Service key order: one
// service per key (ports of one name), one service per frontend (the first
// in key order keeps it, so the outcome does not depend on input order).
BuildResult assemble(const std::vector<const ServiceBuild*>& builds, AssembleNotes* notes = nullptr) {
  BuildResult result;
  auto note = [&](const Service& s, std::string warning) {
    if (notes) {
      notes->special.insert(&s);
      notes->warnings.push_back(warning);
    }
    result.warnings.push_back(std::move(warning));
  };
  std::vector<const SharedServices::Ptr*> built;
  for (const ServiceBuild* b : builds) {
    result.warnings.insert(result.warnings.end(), b->warnings.begin(), b->warnings.end());
    for (const SharedServices::Ptr& s : b->services) built.push_back(&s);
  }
  auto byKey = [](const SharedServices::Ptr* a, const SharedServices::Ptr* b) { return keyLess(**a, **b); };
  // Builds come in store-key order, which is key order unless a Service has
  // several ports: then sort (a sorted input still costs a merge sort).
  if (!std::is_sorted(built.begin(), built.end(), byKey)) std::stable_sort(built.begin(), built.end(), byKey);

  result.snapshot.services.reserve(built.size());
  // A second port of the same name (same key) is skipped, and claims nothing.
  std::vector<bool> dup(built.size());
  for (size_t i = 1, kept = 0; i < built.size(); ++i) {
    if (compareKeys(**built[kept], **built[i]) == 0) dup[i] = true;
    else kept = i;
  }
  std::vector<std::tuple<uint32_t, uint32_t, uint32_t>> lost = lostFrontends(built, dup);

  for (size_t i = 0; i < built.size(); ++i) {
    const Service& s = **built[i];
    if (dup[i]) {
      note(s, "Service " + s.key() + ": " + toString(s.ports[0].protocol) + " port " +
                  std::to_string(s.ports[0].port) + " has the same name as another port; skipped");
      continue;
    }
    const PortSpec& port = s.ports[0];
    auto it = std::lower_bound(lost.begin(), lost.end(), std::make_tuple(static_cast<uint32_t>(i), 0u, 0u));
    if (it == lost.end() || std::get<0>(*it) != i) {
      result.snapshot.services.push_back(*built[i]);  // shared: unchanged services cost a pointer
      continue;
    }
    std::vector<IpAddr> vips;
    for (size_t v = 0; v < s.vips.size(); ++v) {
      if (it != lost.end() && std::get<0>(*it) == i && std::get<1>(*it) == v) {
        note(s, "Service " + s.key() + ": " + formatFrontend(s.vips[v], port.port, port.protocol) +
                    " is already used by Service " + (**built[std::get<2>(*it)]).key() + "; skipped");
        ++it;
      } else {
        vips.push_back(s.vips[v]);
      }
    }
    if (vips.empty()) continue;
    Service& out = result.snapshot.services.emplace_back(s);
    out.vips = std::move(vips);
  }
  return result;
}

}  // namespace

ServiceBuild buildService(const ServiceObj& svc, const std::vector<const EndpointSliceObj*>& slices,
                          const std::map<std::string, PodObj>* pods, const MappingOptions& opts) {
  ServiceBuild b;
  b.usesPods = hasPolicy(svc);
  buildService(svc, slices, pods, opts, b.services, b.warnings);
  return b;
}

BuildResult buildSnapshot(const std::map<std::string, ServiceObj>& services,
                          const std::map<std::string, EndpointSliceObj>& slices,
                          const std::map<std::string, PodObj>* pods, const MappingOptions& opts) {
  // Slices by (namespace, service name), each list in slice-key order.
  std::map<std::pair<std::string, std::string>, std::vector<const EndpointSliceObj*>> index;
  for (const auto& [key, slice] : slices) {
    if (!slice.serviceName.empty()) index[{slice.meta.nameSpace, slice.serviceName}].push_back(&slice);
  }
  std::vector<ServiceBuild> builds;
  builds.reserve(services.size());
  static const std::vector<const EndpointSliceObj*> kNone;
  for (const auto& [key, svc] : services) {
    auto it = index.find({svc.meta.nameSpace, svc.meta.name});
    builds.push_back(buildService(svc, it == index.end() ? kNone : it->second, pods, opts));
  }
  std::vector<const ServiceBuild*> all;
  for (auto& b : builds) all.push_back(&b);
  return assemble(all);
}

// ---- SnapshotCache ----------------------------------------------------------

void SnapshotCache::serviceChanged(const std::string& key) { dirty_.insert(key); }

void SnapshotCache::sliceChanged(const std::string& key, const EndpointSliceObj* before,
                                 const EndpointSliceObj* after) {
  for (const EndpointSliceObj* s : {before, after}) {
    if (!s || s->serviceName.empty()) continue;
    auto owner = std::make_pair(s->meta.nameSpace, s->serviceName);
    if (s == before) {
      auto it = slicesOf_.find(owner);
      if (it != slicesOf_.end() && it->second.erase(key) && it->second.empty()) slicesOf_.erase(it);
    } else {
      slicesOf_[owner].insert(key);
    }
    dirty_.insert(owner.first + "/" + owner.second);
  }
}

void SnapshotCache::podsChanged() { pods_ = true; }

void SnapshotCache::reset() { all_ = true; }

BuildResult SnapshotCache::build(const std::map<std::string, ServiceObj>& services,
                                 const std::map<std::string, EndpointSliceObj>& slices,
                                 const std::map<std::string, PodObj>* pods) {
  if ((pods != nullptr) != hadPods_) pods_ = true;
  hadPods_ = pods != nullptr;
  bool patchable = !all_ && last_.has_value();
  if (all_) {
    builds_.clear();
    warned_.clear();
    slicesOf_.clear();
    for (const auto& [key, slice] : slices)
      if (!slice.serviceName.empty()) slicesOf_[{slice.meta.nameSpace, slice.serviceName}].insert(key);
    for (const auto& [key, svc] : services) dirty_.insert(key);
  }
  if (pods_) {
    for (auto& [key, b] : builds_)
      if (b.usesPods) dirty_.insert(key);
  }
  std::vector<std::pair<ServiceBuild, const ServiceBuild*>> rebuilt;  // (before, now)
  std::vector<const EndpointSliceObj*> svcSlices;
  for (const std::string& key : dirty_) {
    auto svc = services.find(key);
    auto was = builds_.find(key);
    if (svc == services.end() || was == builds_.end()) patchable = false;  // gone or new
    if (svc == services.end()) {
      builds_.erase(key);
      warned_.erase(key);
      continue;
    }
    svcSlices.clear();
    if (auto it = slicesOf_.find({svc->second.meta.nameSpace, svc->second.meta.name}); it != slicesOf_.end())
      for (const std::string& sk : it->second)
        if (auto sl = slices.find(sk); sl != slices.end()) svcSlices.push_back(&sl->second);
    ServiceBuild now = buildService(svc->second, svcSlices, pods, opts_);
    if (now.warnings.empty()) warned_.erase(key);
    else warned_.insert(key);
    if (was == builds_.end()) {
      builds_.emplace(key, std::move(now));
    } else {
      if (patchable) rebuilt.emplace_back(std::move(was->second), &was->second);
      was->second = std::move(now);
    }
  }
  dirty_.clear();
  all_ = pods_ = false;
  if (patchable && patch(rebuilt)) {
    ++patched_;
    return *last_;
  }
  std::vector<const ServiceBuild*> all;
  all.reserve(builds_.size());
  for (auto& [key, b] : builds_) all.push_back(&b);
  AssembleNotes notes;
  last_ = assemble(all, &notes);
  notes_ = std::move(notes);
  return *last_;
}

// The last snapshot with the rebuilt Services swapped in, when that is what
// assemble() would give: each rebuilt Service has the same names, addresses
// and ports as before (so no frontend changes hands) and was neither skipped
// nor trimmed last time. Then an event costs its Services, not all of them.
bool SnapshotCache::patch(const std::vector<std::pair<ServiceBuild, const ServiceBuild*>>& rebuilt) {
  SharedServices& services = last_->snapshot.services;
  std::vector<std::pair<size_t, SharedServices::Ptr>> swaps;  // checked first: all or nothing
  for (const auto& [before, now] : rebuilt) {
    if (before.services.size() != now->services.size()) return false;
    for (size_t i = 0; i < before.services.size(); ++i) {
      const Service &b = *before.services[i], &n = *now->services[i];
      if (notes_.special.count(&b) || b.name != n.name || b.nameSpace != n.nameSpace || b.vips != n.vips ||
          b.ports != n.ports)
        return false;
      auto at = std::lower_bound(services.begin(), services.end(), b, keyLess);
      if (at == services.end() || at.ptr() != before.services[i]) return false;
      swaps.emplace_back(static_cast<size_t>(at - services.begin()), now->services[i]);
    }
  }
  for (auto& [at, ptr] : swaps) services.set(at, std::move(ptr));
  std::vector<std::string> warnings;
  for (const std::string& key : warned_) {
    const ServiceBuild& b = builds_.at(key);
    warnings.insert(warnings.end(), b.warnings.begin(), b.warnings.end());
  }
  warnings.insert(warnings.end(), notes_.warnings.begin(), notes_.warnings.end());
  last_->warnings = std::move(warnings);
  return true;
}

}  // namespace aimesh::kube
