#include "source/state_file.h"

#include "model/connection_rules.h"
#include "model/service_rules.h"
#include "source/yaml_doc.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <map>
#include <sstream>
#include <string_view>
#include <tuple>

namespace aimesh {

std::string ParseError::toString() const {
  std::string out = file;
  if (line > 0) out += ":" + std::to_string(line) + ":" + std::to_string(column);
  out += ": ";
  if (!field.empty()) out += field + ": ";
  out += message;
  return out;
}

namespace {

// A state file is a few KiB; anything far bigger is a mistake (wrong path, a
// log file) and not worth holding in memory.
constexpr off_t kMaxFileSize = 16 * 1024 * 1024;

// Numbers with more digits are out of every range we accept; they are
// reported as out of range without converting (std::stoll would overflow).
constexpr size_t kMaxIntDigits = 18;

// How a node is named in "must be X, got Y" messages.
std::string describe(const yaml::Node& n) {
  switch (n.Type()) {
    case yaml::NodeType::Null: return "null";
    case yaml::NodeType::Scalar:
      // Plain scalars are tagged "?", quoted ones "!".
      if (n.Tag() == "!") return "string \"" + n.Scalar() + "\"";
      return "'" + n.Scalar() + "'";
    case yaml::NodeType::Sequence: return "a list";
    case yaml::NodeType::Map: return "a map";
    case yaml::NodeType::Undefined: break;
  }
  return "nothing";
}

size_t editDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// An allowed cgroup: an absolute path of a cgroup v2 directory, without
// "." or ".." components (the agent resolves it to the directory's id).
std::optional<std::string> checkCgroupPath(const std::string& s) {
  if (s.empty() || s[0] != '/') return "must be an absolute cgroup v2 directory path, got '" + s + "'";
  if (s.size() > 4096) return "is longer than 4096 characters";
  size_t start = 1;
  while (start <= s.size()) {
    size_t end = s.find('/', start);
    if (end == std::string::npos) end = s.size();
    std::string_view part(s.data() + start, end - start);
    if (part == "." || part == "..") return "must not contain '.' or '..' components, got '" + s + "'";
    start = end + 1;
  }
  if (s.find('\0') != std::string::npos) return "must not contain NUL characters";
  return std::nullopt;
}

// One key/value pair of a YAML map.
struct Field {
  yaml::Node key;
  yaml::Node value;
};

using Fields = std::map<std::string, Field, std::less<>>;

class StateParser {
 public:
  explicit StateParser(std::string fileName) : fileName_(std::move(fileName)) {}

  // `fileOrder`, if given, gets the services in file order (when parsed
  // without errors).
  ParseResult run(const std::string& text, SharedServices* fileOrder = nullptr) {
    ParseResult result;
    yaml::Stream docs = yaml::Stream::parse(text);
    if (!docs.ok()) {
      // libyaml names what it expected; say what it found there too.
      const yaml::Mark& m = docs.error().mark;
      std::string msg = docs.error().message;
      if (!m.is_null() && static_cast<size_t>(m.pos) < text.size() && std::isprint(static_cast<unsigned char>(text[m.pos])))
        msg += fmt::format(", found '{}'", text[m.pos]);
      error(m, "", msg);
      result.errors = std::move(errors_);
      return result;
    }

    Snapshot snap;
    if (docs.documents() == 0 || (docs.documents() == 1 && docs.document(0).IsNull())) {
      error(yaml::Mark::null_mark(), "services", "the document is empty; expected a top-level 'services' list");
    } else {
      if (docs.documents() > 1) {
        error(docs.document(1).Mark(), "",
              "only one YAML document is allowed, found " + std::to_string(docs.documents()));
      }
      parseRoot(docs.document(0), snap);
    }

    // Cross-service checks run last; report in file order regardless.
    std::stable_sort(errors_.begin(), errors_.end(), [](const ParseError& x, const ParseError& y) {
      return std::tie(x.line, x.column) < std::tie(y.line, y.column);
    });
    if (errors_.empty()) {
      if (fileOrder) *fileOrder = snap.services;
      snap.services.sortByKey();
      result.snapshot = std::move(snap);
    }
    result.errors = std::move(errors_);
    return result;
  }

  // The services of a file cut into items (splitStateItems()): an item
  // whose text the cache knows gets its service from there, the others are
  // parsed alone. nullopt if any item has a problem or the checks across
  // services find one: the caller then parses the whole file, for exact
  // positions. On success the cache holds exactly these items.
  std::optional<ParseResult> runItems(const std::vector<std::string_view>& items, StateFileCache& cache);

 private:
  std::optional<Service> parseItem(std::string_view item, size_t index) {
    yaml::Stream docs = yaml::Stream::parse(item);
    if (!docs.ok() || docs.documents() != 1) return std::nullopt;
    yaml::Node root = docs.document(0);
    if (!root.IsSequence() || root.size() != 1) return std::nullopt;
    ServiceInfo info;
    info.path = indexPath("services", index);
    Service svc;
    if (!parseService(root[0], svc, info) || !errors_.empty()) return std::nullopt;
    return svc;
  }

  // What the cross-service checks need to know about one parsed service.
  struct SplitRef {
    yaml::Mark mark;
    std::string path;  // "services[3].split[1]"
  };
  struct Vip {
    IpAddr addr;
    yaml::Mark mark;
    size_t index = 0;  // position in the file's list
  };
  struct ServiceInfo {
    std::string path;  // "services[3]"
    std::string key;   // namespace/name, empty if either is invalid
    yaml::Mark nameMark;
    std::vector<Vip> vips;        // unique within the service
    std::vector<PortSpec> ports;  // unique within the service
    std::vector<SplitRef> split;  // where each of svc.split is (the same order)
  };

  void error(const yaml::Mark& mark, std::string field, std::string message) {
    ParseError e;
    e.file = fileName_;
    // YAML marks are 0-based; editors count from 1.
    e.line = mark.is_null() ? 1 : mark.line + 1;
    e.column = mark.is_null() ? 1 : mark.column + 1;
    e.field = std::move(field);
    e.message = std::move(message);
    errors_.push_back(std::move(e));
  }

  // A null value ("port:" with nothing after it) is marked at the next token,
  // often on the next line; the key is where the reader should look.
  static yaml::Mark markOf(const Field& f) { return f.value.IsNull() ? f.key.Mark() : f.value.Mark(); }

  static const Field* find(const Fields& fields, std::string_view name) {
    auto it = fields.find(name);
    return it == fields.end() ? nullptr : &it->second;
  }

  // Collects a map's fields, reporting unknown and repeated keys.
  Fields collect(const yaml::Node& map, const std::string& path, std::initializer_list<std::string_view> allowed) {
    Fields fields;
    for (size_t i = 0; i < map.size(); ++i) {
      const yaml::Node key = map.key(i);
      if (!key.IsScalar()) {
        error(key.Mark(), path, "field names must be plain strings, got " + describe(key));
        continue;
      }
      const std::string& name = key.Scalar();
      std::string fieldPath = joinPath(path, name);
      if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
        std::string msg = "unknown field '" + name + "'";
        for (auto a : allowed) {
          if (editDistance(name, a) <= 2) {
            msg += " (did you mean '" + std::string(a) + "'?)";
            break;
          }
        }
        error(key.Mark(), fieldPath, msg);
        continue;
      }
      if (auto prev = fields.find(name); prev != fields.end()) {
        // YAML keeps both copies; silently taking one would hide an edit.
        error(key.Mark(), fieldPath,
              "duplicate field '" + name + "' (first at line " + std::to_string(prev->second.key.Mark().line + 1) +
                  ")");
        continue;
      }
      fields.emplace(name, Field{key, map.value(i)});
    }
    return fields;
  }

  std::optional<std::string> readStringNode(const yaml::Node& v, const std::string& path) {
    if (!v.IsScalar()) {
      error(v.Mark(), path, "must be a string, got " + describe(v));
      return std::nullopt;
    }
    return v.Scalar();
  }

  std::optional<std::string> readString(const Field& f, const std::string& path) {
    if (!f.value.IsScalar()) {
      error(markOf(f), path, "must be a string, got " + describe(f.value));
      return std::nullopt;
    }
    return f.value.Scalar();
  }

  std::optional<long long> readInt(const Field& f, const std::string& path, long long min, long long max) {
    const yaml::Node& v = f.value;
    if (!v.IsScalar() || v.Tag() == "!") {
      error(markOf(f), path, notIntegerMessage(min, max, describe(v)));
      return std::nullopt;
    }
    const std::string& s = v.Scalar();
    size_t start = (!s.empty() && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
    bool digits = s.size() > start && std::all_of(s.begin() + start, s.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (!digits) {
      error(markOf(f), path, notIntegerMessage(min, max, describe(v)));
      return std::nullopt;
    }
    long long n = 0;
    bool huge = s.size() - start > kMaxIntDigits;
    if (!huge) {
      n = std::stoll(s.substr(start));
      if (s[0] == '-') n = -n;
    }
    if (huge || n < min || n > max) {
      error(markOf(f), path, outOfRangeMessage(min, max, s));
      return std::nullopt;
    }
    return n;
  }

  std::optional<double> readNumber(const Field& f, const std::string& path, double min, double max) {
    const yaml::Node& v = f.value;
    std::string range = fmt::format("{:g}..{:g}", min, max);
    double x = 0;
    bool ok = v.IsScalar() && v.Tag() != "!";
    if (ok) {
      const std::string& s = v.Scalar();
      char* end = nullptr;
      x = std::strtod(s.c_str(), &end);
      ok = !s.empty() && end == s.c_str() + s.size() && std::isfinite(x);
    }
    if (!ok) {
      error(markOf(f), path, "must be a number " + range + ", got " + describe(v));
      return std::nullopt;
    }
    if (x < min || x > max) {
      error(markOf(f), path, "must be " + range + ", got " + v.Scalar());
      return std::nullopt;
    }
    return x;
  }

  std::optional<IpAddr> readAddr(const yaml::Node& v, const yaml::Mark& mark, const std::string& path) {
    if (!v.IsScalar()) {
      error(mark, path, "must be an IPv4 or IPv6 address, got " + describe(v));
      return std::nullopt;
    }
    auto a = IpAddr::parse(v.Scalar());
    if (!a) error(mark, path, "must be an IPv4 or IPv6 address, got '" + v.Scalar() + "'");
    return a;
  }

  // True if the field holds a list; reports the wrong type otherwise.
  bool expectList(const Field& f, const std::string& path) {
    if (f.value.IsSequence()) return true;
    error(markOf(f), path, "must be a list, got " + describe(f.value));
    return false;
  }

  bool expectMap(const yaml::Node& n, const std::string& path, const char* example) {
    if (n.IsMap()) return true;
    error(n.Mark(), path, std::string("must be a map like ") + example + ", got " + describe(n));
    return false;
  }

  void parseRoot(const yaml::Node& root, Snapshot& snap) {
    if (!root.IsMap()) {
      error(root.Mark(), "", "the top level must be a map with a 'services' key, got " + describe(root));
      return;
    }
    Fields fields = collect(root, "", {"services"});
    const Field* services = find(fields, "services");
    if (services == nullptr) {
      error(root.Mark(), "services", "required field is missing (use 'services: []' for none)");
      return;
    }
    if (!expectList(*services, "services")) return;

    std::vector<ServiceInfo> infos;
    infos.reserve(services->value.size());
    snap.services.reserve(services->value.size());
    std::vector<size_t> infoOf;  // snap.services[k]'s entry in infos
    for (size_t i = 0; i < services->value.size(); ++i) {
      ServiceInfo info;
      info.path = indexPath("services", i);
      Service svc;
      if (parseService(services->value[i], svc, info)) {
        snap.services.push_back(std::move(svc));
        infoOf.push_back(i);
      }
      // Cross checks also run on services that had errors of their own, so
      // one run reports as much as possible.
      infos.push_back(std::move(info));
    }
    checkAcrossServices(infos);
    checkSplits(snap.services, infoOf, infos);
  }

  // Returns false if the service could not be read at all.
  bool parseService(const yaml::Node& node, Service& svc, ServiceInfo& info) {
    const std::string& path = info.path;
    if (!expectMap(node, path, "{name: ..., vips: [...], ports: [...]}")) return false;
    Fields fields = collect(node, path,
                            {"name", "namespace", "model", "vips", "ports", "algorithm", "hash_table_size",
                             "hash_balance_factor", "model_metrics", "policy", "connections", "telemetry", "endpoints",
                             "failure_mode", "split", "canary_guard"});
    parseIdentity(node, fields, svc, info);
    for (auto [key, parse] : {std::pair{"vips", &StateParser::parseVips}, std::pair{"ports", &StateParser::parsePorts}}) {
      if (const Field* f = find(fields, key)) (this->*parse)(*f, joinPath(path, key), svc, info);
      else error(node.Mark(), joinPath(path, key), "required field is missing");
    }
    parseHashing(fields, path, svc);
    if (const Field* f = present(fields, "failure_mode")) parseFailureMode(*f, joinPath(path, "failure_mode"), svc);
    if (const Field* f = present(fields, "model_metrics")) parseModelMetrics(*f, joinPath(path, "model_metrics"), svc);
    if (const Field* f = present(fields, "policy")) parsePolicy(*f, joinPath(path, "policy"), svc);
    if (const Field* f = present(fields, "connections")) parseConnections(*f, joinPath(path, "connections"), svc);
    if (const Field* f = present(fields, "telemetry")) parseTelemetry(*f, joinPath(path, "telemetry"), svc);
    // Absent or null endpoints: a service with no backends, which is valid.
    if (const Field* f = present(fields, "endpoints")) parseEndpoints(*f, joinPath(path, "endpoints"), svc);
    if (const Field* f = present(fields, "split")) parseSplit(*f, joinPath(path, "split"), fields, svc, info);
    if (const Field* f = present(fields, "canary_guard")) {
      std::string p = joinPath(path, "canary_guard");
      parseCanaryGuard(*f, p, svc);
      if (!svc.split.empty())
        if (auto bad = checkCanaryGuard(svc)) error(markOf(*f), p, *bad);
      if (!present(fields, "split")) error(markOf(*f), p, "only a split has a canary guard");
    }
    return true;
  }

  // A field that is there and not null.
  static const Field* present(const Fields& fields, const char* key) {
    const Field* f = find(fields, key);
    return f != nullptr && !f->value.IsNull() ? f : nullptr;
  }

  // A string that must be a DNS label (a name or namespace).
  std::optional<std::string> readDnsLabel(const Field& f, const std::string& p) {
    auto s = readString(f, p);
    if (!s) return std::nullopt;
    if (auto bad = checkDnsLabel(*s)) {
      error(markOf(f), p, *bad);
      return std::nullopt;
    }
    return s;
  }

  // name (required), namespace and model.
  void parseIdentity(const yaml::Node& node, const Fields& fields, Service& svc, ServiceInfo& info) {
    const std::string& path = info.path;
    bool nameOk = false;
    if (const Field* f = find(fields, "name")) {
      if (auto s = readDnsLabel(*f, joinPath(path, "name"))) {
        svc.name = *s;
        nameOk = true;
        info.nameMark = markOf(*f);
      }
    } else {
      error(node.Mark(), joinPath(path, "name"), "required field is missing");
    }
    bool nsOk = true;
    if (const Field* f = present(fields, "namespace")) {
      auto s = readDnsLabel(*f, joinPath(path, "namespace"));
      nsOk = s.has_value();
      if (s) svc.nameSpace = *s;
    }
    if (nameOk && nsOk) info.key = svc.key();
    if (const Field* f = present(fields, "model"))
      if (auto s = readString(*f, joinPath(path, "model"))) svc.model = *s;
  }

  // algorithm, hash_table_size and hash_balance_factor.
  void parseHashing(const Fields& fields, const std::string& path, Service& svc) {
    if (const Field* f = present(fields, "algorithm")) {
      std::string p = joinPath(path, "algorithm");
      if (auto s = readString(*f, p)) {
        if (auto a = parseAlgorithmText(*s)) svc.algorithm = *a;
        else error(markOf(*f), p, a.error().message());
      }
    }
    if (const Field* f = present(fields, "hash_table_size")) {
      std::string p = joinPath(path, "hash_table_size");
      if (auto n = readInt(*f, p, kMinHashTableSize, kMaxHashTableSize)) {
        if (auto bad = checkHashTableSize(*n, f->value.Scalar())) error(markOf(*f), p, *bad);
        else svc.hashTableSize = static_cast<uint32_t>(*n);
      }
    }
    if (const Field* f = present(fields, "hash_balance_factor")) {
      if (auto x = readNumber(*f, joinPath(path, "hash_balance_factor"), kMinHashBalanceFactor, kMaxHashBalanceFactor))
        svc.balancePct = static_cast<uint16_t>(*x * 100 + 0.5);
    }
  }

  // failure_mode: what a connection gets when every endpoint the kernel
  // tries is in its failure back-off.
  void parseFailureMode(const Field& f, const std::string& p, Service& svc) {
    auto s = readString(f, p);
    if (!s) return;
    if (*s == "fail_open") svc.failClose = false;
    else if (*s == "fail_close") svc.failClose = true;
    else error(markOf(f), p, "must be fail_open or fail_close, got '" + *s + "'");
  }

  void parseModelMetrics(const Field& f, const std::string& p, Service& svc) {
    if (!expectMap(f.value, p, "{port: 8000, path: /metrics}")) return;
    Fields mf = collect(f.value, p, {"port", "path"});
    ModelMetricsSpec spec;
    bool ok = true;
    if (const Field* port = find(mf, "port")) {
      if (auto n = readInt(*port, joinPath(p, "port"), kMinPort, kMaxPort)) spec.port = static_cast<uint16_t>(*n);
      else ok = false;
    } else {
      error(f.value.Mark(), joinPath(p, "port"), "required field is missing");
      ok = false;
    }
    if (const Field* mp = present(mf, "path")) {
      auto s = readString(*mp, joinPath(p, "path"));
      auto bad = s ? checkMetricsPath(*s) : std::nullopt;
      if (bad) error(markOf(*mp), joinPath(p, "path"), *bad);
      if (s && !bad) spec.path = *s;
      else ok = false;
    }
    if (ok) svc.modelMetrics = spec;
  }

  void parsePolicy(const Field& f, const std::string& p, Service& svc) {
    if (!expectMap(f.value, p, "{allow_cgroups: [/sys/fs/cgroup/...]}")) return;
    Fields pf = collect(f.value, p, {"allow_cgroups"});
    PolicySpec spec;
    bool ok = true;
    if (const Field* ac = present(pf, "allow_cgroups")) {
      std::string ap = joinPath(p, "allow_cgroups");
      if (!expectList(*ac, ap)) return;
      for (size_t i = 0; i < ac->value.size(); ++i) {
        yaml::Node v = ac->value[i];
        std::string ip = indexPath(ap, i);
        auto cg = readStringNode(v, ip);
        if (!cg) {
          ok = false;
        } else if (auto bad = checkCgroupPath(*cg)) {
          error(v.Mark(), ip, *bad);
          ok = false;
        } else if (std::find(spec.allowCgroups.begin(), spec.allowCgroups.end(), *cg) != spec.allowCgroups.end()) {
          error(v.Mark(), ip, "duplicate cgroup " + *cg);
          ok = false;
        } else {
          spec.allowCgroups.push_back(*cg);
        }
      }
    }
    // An empty allow list is valid: nobody may connect.
    if (ok) svc.policy = std::move(spec);
  }

  // The values' rules are model/connection_rules.h, shared with the
  // Kubernetes annotations; here only the YAML types are checked. Durations
  // may be quoted ("10m" is a string either way); numbers, integers and
  // booleans may not, as everywhere in the file.
  // telemetry: {sample: 0.1}
  void parseTelemetry(const Field& f, const std::string& path, Service& svc) {
    if (!expectMap(f.value, path, "{sample: 0.1}")) return;
    Fields tf = collect(f.value, path, {"sample"});
    const Field* sample = present(tf, "sample");
    if (sample == nullptr) return;
    std::string p = joinPath(path, "sample");
    if (auto x = readNumber(*sample, p, 0, kMaxTelemetrySample)) {
      if (auto bad = checkTelemetrySample(*x, sample->value.Scalar())) error(markOf(*sample), p, *bad);
      else svc.telemetrySample = *x;
    }
  }

  void parseConnections(const Field& f, const std::string& path, Service& svc) {
    if (!expectMap(f.value, path, "{rebalance: true, max_age: 10m}")) return;
    Fields cf = collect(f.value, path, {"rebalance", "rebalance_rate", "max_age", "max_requests", "drain_timeout"});
    ConnectionPolicy& cp = svc.connections;
    auto given = [&](const char* name) -> const Field* {
      const Field* v = find(cf, name);
      return v != nullptr && !v->value.IsNull() ? v : nullptr;
    };
    auto plain = [](const Field& v) { return v.value.IsScalar() && v.value.Tag() != "!"; };

    if (const Field* v = given("rebalance")) {
      std::string p = joinPath(path, "rebalance");
      if (!plain(*v)) {
        error(markOf(*v), p, "must be true or false, got " + describe(v->value));
      } else if (auto b = parseBoolText(v->value.Scalar())) {
        cp.rebalance = *b;
      } else {
        error(markOf(*v), p, b.error().message());
      }
    }
    if (const Field* v = given("rebalance_rate")) {
      std::string p = joinPath(path, "rebalance_rate");
      if (!plain(*v)) {
        error(markOf(*v), p,
              fmt::format("must be a number > 0 and <= {:g}, got ", kMaxRebalanceRate) + describe(v->value));
      } else if (auto x = parseRebalanceRate(v->value.Scalar())) {
        cp.rebalanceRate = *x;
      } else {
        error(markOf(*v), p, x.error().message());
      }
    }
    if (const Field* v = given("max_requests")) {
      std::string p = joinPath(path, "max_requests");
      if (!plain(*v)) {
        error(markOf(*v), p,
              "must be an integer 0.." + std::to_string(kMaxMaxRequests) + ", got " + describe(v->value));
      } else if (auto n = parseMaxRequests(v->value.Scalar())) {
        cp.maxRequests = *n;
      } else {
        error(markOf(*v), p, n.error().message());
      }
    }
    auto duration = [&](const char* name, uint64_t& out) {
      const Field* v = given(name);
      if (v == nullptr) return;
      std::string p = joinPath(path, name);
      if (!v->value.IsScalar()) {
        error(markOf(*v), p, "must be a duration like 90, 30s or 10m, got " + describe(v->value));
      } else if (auto ms = parseDurationMs(v->value.Scalar())) {
        out = *ms;
      } else {
        error(markOf(*v), p, ms.error().message());
      }
    };
    duration("max_age", cp.maxAgeMs);
    duration("drain_timeout", cp.drainTimeoutMs);
  }

  void parseVips(const Field& f, const std::string& path, Service& svc, ServiceInfo& info) {
    if (!expectList(f, path)) return;
    if (f.value.size() == 0) {
      error(markOf(f), path, "must list at least one address");
      return;
    }
    for (size_t i = 0; i < f.value.size(); ++i) {
      yaml::Node v = f.value[i];
      std::string p = indexPath(path, i);
      auto a = readAddr(v, v.Mark(), p);
      if (!a) continue;
      auto dup = std::find_if(info.vips.begin(), info.vips.end(), [&](const Vip& x) { return x.addr == *a; });
      if (dup != info.vips.end()) {
        error(v.Mark(), p, "duplicate vip " + a->toString() + " (also " + indexPath(path, dup->index) + ")");
        continue;
      }
      info.vips.push_back(Vip{*a, v.Mark(), i});
      svc.vips.push_back(*a);
    }
  }

  void parsePorts(const Field& f, const std::string& path, Service& svc, ServiceInfo& info) {
    if (!expectList(f, path)) return;
    if (f.value.size() == 0) {
      error(markOf(f), path, "must list at least one port");
      return;
    }
    for (size_t i = 0; i < f.value.size(); ++i) {
      yaml::Node item = f.value[i];
      std::string p = indexPath(path, i);
      if (!expectMap(item, p, "{port: 8000, protocol: TCP}")) continue;
      Fields pf = collect(item, p, {"port", "protocol"});
      PortSpec spec;
      bool ok = true;
      if (const Field* port = find(pf, "port")) {
        if (auto n = readInt(*port, joinPath(p, "port"), kMinPort, kMaxPort)) {
          spec.port = static_cast<uint16_t>(*n);
        } else {
          ok = false;
        }
      } else {
        error(item.Mark(), joinPath(p, "port"), "required field is missing");
        ok = false;
      }
      if (const Field* proto = find(pf, "protocol"); proto != nullptr && !proto->value.IsNull()) {
        std::string pp = joinPath(p, "protocol");
        if (auto s = readString(*proto, pp)) {
          if (auto pr = parseProtocol(*s)) {
            spec.protocol = *pr;
          } else {
            error(markOf(*proto), pp, "must be TCP or UDP, got '" + *s + "'");
            ok = false;
          }
        } else {
          ok = false;
        }
      }
      if (!ok) continue;
      if (std::find(info.ports.begin(), info.ports.end(), spec) != info.ports.end()) {
        error(item.Mark(), p,
              "duplicate port " + std::to_string(spec.port) + "/" + toString(spec.protocol));
        continue;
      }
      info.ports.push_back(spec);
      svc.ports.push_back(spec);
    }
  }

  void parseEndpoints(const Field& f, const std::string& path, Service& svc) {
    if (!expectList(f, path)) return;
    std::map<std::pair<IpAddr, uint16_t>, size_t> seen;
    for (size_t i = 0; i < f.value.size(); ++i) {
      yaml::Node item = f.value[i];
      std::string p = indexPath(path, i);
      if (!expectMap(item, p, "{address: 10.0.1.5, port: 8000}")) continue;
      Fields ef = collect(item, p, {"address", "port", "weight", "state", "pod"});
      Endpoint ep;
      bool ok = true;
      if (const Field* a = find(ef, "address")) {
        if (auto addr = readAddr(a->value, markOf(*a), joinPath(p, "address"))) {
          ep.address = *addr;
        } else {
          ok = false;
        }
      } else {
        error(item.Mark(), joinPath(p, "address"), "required field is missing");
        ok = false;
      }
      if (const Field* port = find(ef, "port"); port != nullptr && !port->value.IsNull()) {
        if (auto n = readInt(*port, joinPath(p, "port"), kMinPort, kMaxPort)) {
          ep.port = static_cast<uint16_t>(*n);
        } else {
          ok = false;
        }
      }
      if (const Field* w = find(ef, "weight"); w != nullptr && !w->value.IsNull()) {
        if (auto n = readInt(*w, joinPath(p, "weight"), 0, kMaxWeight)) {
          ep.weight = static_cast<uint16_t>(*n);
        } else {
          ok = false;
        }
      }
      if (const Field* st = find(ef, "state"); st != nullptr && !st->value.IsNull()) {
        std::string sp = joinPath(p, "state");
        if (auto s = readString(*st, sp)) {
          if (auto state = parseEndpointState(*s)) {
            ep.state = *state;
          } else {
            error(markOf(*st), sp, "must be one of active, draining, terminating, got '" + *s + "'");
            ok = false;
          }
        } else {
          ok = false;
        }
      }
      if (const Field* pod = find(ef, "pod"); pod != nullptr && !pod->value.IsNull()) {
        if (auto s = readString(*pod, joinPath(p, "pod"))) {
          ep.pod = *s;
        } else {
          ok = false;
        }
      }
      if (!ok) continue;
      auto [it, inserted] = seen.emplace(std::make_pair(ep.address, ep.port), i);
      if (!inserted) {
        std::string what =
            ep.port == 0 ? ep.address.toString() + " (frontend port)" : formatHostPort(ep.address, ep.port);
        error(item.Mark(), p, "duplicate endpoint " + what + " (also " + indexPath(path, it->second) + ")");
        continue;
      }
      svc.endpoints.push_back(ep);
    }
  }

  // split: the backend services, and nothing a split does not have (its
  // backend services' own endpoints and settings apply).
  void parseSplit(const Field& f, const std::string& path, const Fields& fields, Service& svc, ServiceInfo& info) {
    for (const char* own : {"endpoints", "algorithm", "hash_table_size", "hash_balance_factor", "model_metrics",
                            "connections", "telemetry", "failure_mode"})
      if (const Field* o = present(fields, own))
        error(o->key.Mark(), joinPath(info.path, own),
              std::string("a split has no '") + own + "': its backend services' own apply");
    if (!expectList(f, path)) return;
    if (f.value.size() == 0 || f.value.size() > kMaxSplitBackends) {
      error(markOf(f), path, fmt::format("must list 1..{} backend services, got {}", kMaxSplitBackends, f.value.size()));
      return;
    }
    std::map<std::tuple<std::string, std::string, uint16_t>, size_t> seen;
    for (size_t i = 0; i < f.value.size(); ++i) {
      yaml::Node item = f.value[i];
      std::string p = indexPath(path, i);
      if (!expectMap(item, p, "{service: llama-v2, weight: 10}")) continue;
      Fields bf = collect(item, p, {"service", "namespace", "port", "weight"});
      SplitBackend b;
      bool ok = true;
      if (const Field* s = find(bf, "service")) {
        auto name = readDnsLabel(*s, joinPath(p, "service"));
        ok = name.has_value();
        if (name) b.service = *name;
      } else {
        error(item.Mark(), joinPath(p, "service"), "required field is missing");
        ok = false;
      }
      if (const Field* ns = present(bf, "namespace")) {
        auto name = readDnsLabel(*ns, joinPath(p, "namespace"));
        ok = ok && name.has_value();
        if (name && *name != svc.nameSpace) b.nameSpace = *name;
      }
      if (const Field* port = present(bf, "port")) {
        auto n = readInt(*port, joinPath(p, "port"), kMinPort, kMaxPort);
        ok = ok && n.has_value();
        if (n) b.port = static_cast<uint16_t>(*n);
      }
      if (const Field* w = present(bf, "weight")) {
        auto n = readInt(*w, joinPath(p, "weight"), 0, kMaxSplitWeight);
        ok = ok && n.has_value();
        if (n) b.weight = static_cast<uint32_t>(*n);
      }
      if (!ok) continue;
      auto [it, inserted] = seen.emplace(std::tuple{b.nameSpace, b.service, b.port}, i);
      if (!inserted) {
        error(item.Mark(), p, "backend service " + b.service + " named twice (also " + indexPath(path, it->second) + ")");
        continue;
      }
      info.split.push_back(SplitRef{item.Mark(), p});
      svc.split.push_back(std::move(b));
    }
  }

  // canary_guard: the bound, the window and what a tripped canary gets.
  void parseCanaryGuard(const Field& f, const std::string& path, Service& svc) {
    if (!expectMap(f.value, path, "{metric: ttft_p99, max_ratio: 1.5, min_samples: 200, window: 60s}")) return;
    Fields gf = collect(f.value, path,
                        {"primary", "metric", "max_ratio", "min_samples", "window", "max_failure_rate", "cooldown",
                         "probe_percent"});
    CanaryGuardSpec g;
    size_t before = errors_.size();
    if (const Field* v = present(gf, "primary"))
      if (auto s = readDnsLabel(*v, joinPath(path, "primary"))) g.primary = *s;
    if (const Field* v = present(gf, "metric")) {
      std::string p = joinPath(path, "metric");
      if (auto s = readString(*v, p)) {
        if (*s == "ttft_p99") g.metric = GuardMetric::kTtftP99;
        else if (*s == "ttft_p50") g.metric = GuardMetric::kTtftP50;
        else error(markOf(*v), p, "must be ttft_p99 or ttft_p50, got '" + *s + "'");
      }
    }
    if (const Field* v = present(gf, "max_ratio"))
      if (auto x = readNumber(*v, joinPath(path, "max_ratio"), kMinGuardRatio, kMaxGuardRatio)) g.maxRatio = *x;
    if (const Field* v = present(gf, "min_samples"))
      if (auto n = readInt(*v, joinPath(path, "min_samples"), 1, kMaxGuardSamples)) g.minSamples = static_cast<uint32_t>(*n);
    if (const Field* v = present(gf, "max_failure_rate"))
      if (auto x = readNumber(*v, joinPath(path, "max_failure_rate"), 0, 1)) g.maxFailureRate = *x;
    if (const Field* v = present(gf, "probe_percent")) {
      std::string p = joinPath(path, "probe_percent");
      if (auto x = readNumber(*v, p, 0, kMaxGuardProbePercent)) {
        if (*x > 0) g.probePercent = *x;
        else error(markOf(*v), p, "must be > 0, got " + v->value.Scalar());
      }
    }
    auto duration = [&](const char* name, uint64_t min, uint64_t max, uint64_t& out) {
      const Field* v = present(gf, name);
      if (v == nullptr) return;
      std::string p = joinPath(path, name);
      auto ms = v->value.IsScalar() ? parseDurationMs(v->value.Scalar()) : Result<uint64_t>(Error::msg("not a scalar"));
      if (!ms) error(markOf(*v), p, "must be a duration like 30s or 5m, got " + describe(v->value));
      else if (*ms < min || *ms > max)
        error(markOf(*v), p, "must be " + formatDurationMs(min) + ".." + formatDurationMs(max) + ", got " + v->value.Scalar());
      else out = *ms;
    };
    duration("window", kMinGuardWindowMs, kMaxGuardWindowMs, g.windowMs);
    duration("cooldown", 0, kMaxDurationMs, g.cooldownMs);
    if (errors_.size() == before) svc.canaryGuard = g;
  }

  // Every split's backend services exist, are not splits, and have its ports.
  void checkSplits(const SharedServices& services, const std::vector<size_t>& infoOf,
                   const std::vector<ServiceInfo>& infos) {
    std::map<std::string, const Service*> byKey;
    for (const Service& s : services) byKey.emplace(s.key(), &s);
    for (size_t k = 0; k < services.size(); ++k) {
      const Service& split = services[k];
      const ServiceInfo& info = infos[infoOf[k]];
      for (size_t i = 0; i < split.split.size() && i < info.split.size(); ++i) {
        const SplitBackend& b = split.split[i];
        auto it = byKey.find((b.nameSpace.empty() ? split.nameSpace : b.nameSpace) + "/" + b.service);
        if (auto bad = checkSplitBackend(split, b, it == byKey.end() ? nullptr : it->second))
          error(info.split[i].mark, info.split[i].path, *bad);
      }
    }
  }

  // Duplicate services, and frontends (vip, port, protocol) claimed twice.
  void checkAcrossServices(const std::vector<ServiceInfo>& infos) {
    std::map<std::string, size_t> byKey;
    using Frontend = std::tuple<IpAddr, uint16_t, Protocol>;
    std::map<Frontend, size_t> owners;
    for (size_t i = 0; i < infos.size(); ++i) {
      const ServiceInfo& info = infos[i];
      if (!info.key.empty()) {
        auto [it, inserted] = byKey.emplace(info.key, i);
        if (!inserted) {
          error(info.nameMark, joinPath(info.path, "name"),
                "duplicate service " + info.key + " (also " + infos[it->second].path + ")");
        }
      }
      for (const Vip& vip : info.vips) {
        for (const PortSpec& port : info.ports) {
          auto [it, inserted] = owners.emplace(Frontend{vip.addr, port.port, port.protocol}, i);
          if (inserted || it->second == i) continue;
          const ServiceInfo& other = infos[it->second];
          std::string owner = other.key.empty() ? other.path : other.key + " (" + other.path + ")";
          error(vip.mark, indexPath(joinPath(info.path, "vips"), vip.index),
                formatFrontend(vip.addr, port.port, port.protocol) + " is already used by service " + owner);
        }
      }
    }
  }

  std::string fileName_;
  std::vector<ParseError> errors_;
};

}  // namespace

struct StateFileCacheAccess {
  static auto& items(StateFileCache& c) { return c.items_; }
  static void setReused(StateFileCache& c, size_t n) { c.reused_ = n; }
  static uint64_t nextRead(StateFileCache& c) { return ++c.reads_; }
  // Two independent 64-bit hashes of the item's text (FNV-1a and the
  // standard library's): a wrong reuse needs both to collide.
  static StateFileCache::Hash hash(std::string_view item) {
    uint64_t h = 14695981039346656037ULL;
    for (unsigned char c : item) h = (h ^ c) * 1099511628211ULL;
    return {h, static_cast<uint64_t>(std::hash<std::string_view>{}(item))};
  }
};

namespace {

// A line's end-of-line content is safe to cut at (see splitStateItems()).
bool simpleLine(std::string_view line) {
  int dq = 0, sq = 0, sqb = 0, cub = 0;
  for (char c : line) {
    switch (c) {
      case '\t': case '\r': case '&': case '*': case '!': case '|': case '>': case '%': case '@': case '`':
        return false;
      case '"': ++dq; break;
      case '\'': ++sq; break;
      case '[': ++sqb; break;
      case ']': --sqb; break;
      case '{': ++cub; break;
      case '}': --cub; break;
      default: break;
    }
  }
  return dq % 2 == 0 && sq % 2 == 0 && sqb == 0 && cub == 0;
}

}  // namespace

std::optional<std::vector<std::string_view>> splitStateItems(std::string_view text) {
  std::vector<std::string_view> items;
  enum { kTop, kFirstItem, kItems } state = kTop;
  size_t indent = 0, itemStart = 0;
  for (size_t at = 0; at < text.size();) {
    size_t end = text.find('\n', at);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(at, end - at);
    size_t lineStart = at;
    at = end + 1;
    size_t n = line.find_first_not_of(' ');
    if (n == std::string_view::npos) continue;  // blank
    std::string_view rest = line.substr(n);
    if (rest[0] == '#') {
      if (line.find_first_of("\t\r") != std::string_view::npos) return std::nullopt;
      continue;  // a comment line
    }
    if (state == kTop) {
      if (n != 0 || rest.substr(0, 9) != "services:" || rest.find_first_not_of(' ', 9) != std::string_view::npos)
        return std::nullopt;
      state = kFirstItem;
      continue;
    }
    if (n == 0 || !simpleLine(line)) return std::nullopt;
    bool itemLine = rest == "-" || rest.substr(0, 2) == "- ";
    if (rest[0] == '?' && (rest.size() == 1 || rest[1] == ' ')) return std::nullopt;  // a complex key
    if (state == kFirstItem) {
      if (!itemLine) return std::nullopt;
      state = kItems;
      indent = n;
      itemStart = lineStart;
      continue;
    }
    if (n < indent || (n == indent && !itemLine)) return std::nullopt;
    if (n == indent) {
      items.push_back(text.substr(itemStart, lineStart - itemStart));
      itemStart = lineStart;
    }
  }
  if (state != kItems) return std::nullopt;
  items.push_back(text.substr(itemStart));
  return items;
}

namespace {
// No two services with one key and no frontend (address, port, protocol)
// claimed twice, in services sorted by key. A finding is not described here:
// the full parse then reports it, with its position.
bool distinctKeysAndFrontends(const SharedServices& sorted) {
  using Frontend = std::tuple<IpAddr, uint16_t, Protocol>;
  std::vector<Frontend> frontends;
  frontends.reserve(sorted.size());
  for (size_t i = 0; i < sorted.size(); ++i) {
    if (i > 0 && compareKeys(sorted[i - 1], sorted[i]) == 0) return false;
    for (const IpAddr& vip : sorted[i].vips)
      for (const PortSpec& p : sorted[i].ports) frontends.emplace_back(vip, p.port, p.protocol);
  }
  std::sort(frontends.begin(), frontends.end());
  return std::adjacent_find(frontends.begin(), frontends.end()) == frontends.end();
}

// Every split's backends pass checkSplitBackend(), in services sorted by key.
bool splitsResolve(const SharedServices& sorted) {
  for (const Service& split : sorted)
    for (const SplitBackend& b : split.split)
      if (checkSplitBackend(split, b, sorted.find(b.nameSpace.empty() ? split.nameSpace : b.nameSpace, b.service, true)))
        return false;
  return true;
}
}  // namespace

std::optional<ParseResult> StateParser::runItems(const std::vector<std::string_view>& items, StateFileCache& cache) {
  auto& known = StateFileCacheAccess::items(cache);
  const uint64_t read = StateFileCacheAccess::nextRead(cache);
  std::vector<std::pair<StateFileCache::Hash, SharedServices::Ptr>> parsed;  // not in the cache yet
  SharedServices services;
  services.reserve(items.size());
  size_t reused = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    StateFileCache::Hash h = StateFileCacheAccess::hash(items[i]);
    if (auto it = known.find(h); it != known.end()) {
      it->second.seen = read;
      services.push_back(it->second.service);
      ++reused;
      continue;
    }
    std::optional<Service> svc = parseItem(items[i], i);
    if (!svc) return std::nullopt;
    parsed.emplace_back(h, SharedServices::make(std::move(*svc)));
    services.push_back(parsed.back().second);
  }
  services.sortByKey();
  if (!distinctKeysAndFrontends(services) || !splitsResolve(services)) return std::nullopt;
  // Now the cache holds exactly this file's items.
  for (auto& [h, p] : parsed) known.insert_or_assign(h, StateFileCache::Entry{std::move(p), read});
  std::erase_if(known, [&](const auto& e) { return e.second.seen != read; });
  StateFileCacheAccess::setReused(cache, reused);
  ParseResult result;
  result.snapshot.emplace();
  result.snapshot->services = std::move(services);
  return result;
}

ParseResult parseStateText(const std::string& text, const std::string& fileName, StateFileCache* cache) {
  if (!cache) return StateParser(fileName).run(text);
  StateFileCacheAccess::setReused(*cache, 0);
  std::optional<std::vector<std::string_view>> items = splitStateItems(text);
  if (items && cache->size() > 0)
    if (auto r = StateParser(fileName).runItems(*items, *cache)) return std::move(*r);
  SharedServices fileOrder;
  ParseResult r = StateParser(fileName).run(text, &fileOrder);
  auto& known = StateFileCacheAccess::items(*cache);
  known.clear();
  if (r.ok() && items && items->size() == fileOrder.size()) {
    const uint64_t read = StateFileCacheAccess::nextRead(*cache);
    known.reserve(items->size());
    for (size_t i = 0; i < items->size(); ++i)
      known.emplace(StateFileCacheAccess::hash((*items)[i]), StateFileCache::Entry{fileOrder.ptr(i), read});
  }
  return r;
}

ParseResult parseStateFile(const std::string& path, StateFileCache* cache) {
  auto readError = [&](const std::string& msg) {
    ParseResult r;
    r.errors.push_back(ParseError{path, 0, 0, "", msg});
    return r;
  };
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return readError(std::string("cannot open state file: ") + std::strerror(errno));
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};

  struct stat st {};
  if (::fstat(fd, &st) != 0) return readError(std::string("cannot stat state file: ") + std::strerror(errno));
  if (S_ISDIR(st.st_mode)) return readError("cannot read state file: is a directory");
  if (st.st_size > kMaxFileSize) {
    return readError("state file is too large (" + std::to_string(st.st_size) + " bytes, limit " +
                     std::to_string(kMaxFileSize) + ")");
  }

  std::string text;
  text.reserve(static_cast<size_t>(st.st_size));
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return readError(std::string("cannot read state file: ") + std::strerror(errno));
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (static_cast<off_t>(text.size()) > kMaxFileSize) {
      return readError("state file is too large (limit " + std::to_string(kMaxFileSize) + " bytes)");
    }
  }
  return parseStateText(text, path, cache);
}

}  // namespace aimesh
