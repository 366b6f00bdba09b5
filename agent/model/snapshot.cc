#include "model/snapshot.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <cstring>

#include "util/host_port.h"

namespace aimesh {
namespace {
constexpr std::array<uint8_t, 12> kV4MappedPrefix{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}
}  // namespace

bool IpAddr::isV4() const { return std::equal(kV4MappedPrefix.begin(), kV4MappedPrefix.end(), bytes.begin()); }

std::string IpAddr::toString() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (isV4()) {
    inet_ntop(AF_INET, bytes.data() + 12, buf, sizeof(buf));
  } else {
    inet_ntop(AF_INET6, bytes.data(), buf, sizeof(buf));
  }
  return buf;
}

std::optional<IpAddr> IpAddr::parse(const std::string& text) {
  IpAddr a;
  in_addr v4{};
  if (inet_pton(AF_INET, text.c_str(), &v4) == 1) {
    std::copy(kV4MappedPrefix.begin(), kV4MappedPrefix.end(), a.bytes.begin());
    std::memcpy(a.bytes.data() + 12, &v4, 4);
    return a;
  }
  if (inet_pton(AF_INET6, text.c_str(), a.bytes.data()) == 1) return a;
  return std::nullopt;
}

const char* toString(Protocol p) { return p == Protocol::kUdp ? "UDP" : "TCP"; }

const char* toString(Algorithm a) {
  switch (a) {
    case Algorithm::kRandom: return "random";
    case Algorithm::kMaglev: return "maglev";
    case Algorithm::kLeastConn: return "least_conn";
    case Algorithm::kLatency: return "latency";
    case Algorithm::kBoundedHash: return "bounded_hash";
  }
  return "random";
}

const char* toString(GuardMetric m) { return m == GuardMetric::kTtftP50 ? "ttft_p50" : "ttft_p99"; }

const char* toString(EndpointState s) {
  switch (s) {
    case EndpointState::kActive: return "active";
    case EndpointState::kDraining: return "draining";
    case EndpointState::kTerminating: return "terminating";
  }
  return "active";
}

std::optional<Protocol> parseProtocol(const std::string& s) {
  auto l = lower(s);
  if (l == "tcp") return Protocol::kTcp;
  if (l == "udp") return Protocol::kUdp;
  return std::nullopt;
}

std::optional<Algorithm> parseAlgorithm(const std::string& s) {
  for (auto a : kAlgorithms) {
    if (s == toString(a)) return a;
  }
  return std::nullopt;
}

std::optional<EndpointState> parseEndpointState(const std::string& s) {
  for (auto st : {EndpointState::kActive, EndpointState::kDraining, EndpointState::kTerminating}) {
    if (s == toString(st)) return st;
  }
  return std::nullopt;
}

std::string formatHostPort(const IpAddr& a, uint16_t port) {
  // toString() has a ':' for IPv6 only, so the string form brackets exactly those.
  return formatHostPort(a.toString(), port);
}

std::string formatFrontend(const IpAddr& a, uint16_t port, Protocol p) {
  std::string out = formatHostPort(a, port);
  out += '/';
  out += toString(p);
  return out;
}

int compareKeys(const Service& a, const Service& b) {
  const std::string &x = a.nameSpace, &y = b.nameSpace;
  if (x == y) {
    int c = a.name.compare(b.name);
    return c < 0 ? -1 : c > 0;
  }
  // The first difference of the namespaces decides, the end of the shorter
  // one reading as the '/' that follows it in the key.
  size_t i = 0, n = std::min(x.size(), y.size());
  while (i < n && x[i] == y[i]) ++i;
  auto cx = static_cast<unsigned char>(i < x.size() ? x[i] : '/');
  auto cy = static_cast<unsigned char>(i < y.size() ? y[i] : '/');
  if (cx != cy) return cx < cy ? -1 : 1;
  int c = a.key().compare(b.key());  // a namespace with a '/' in it: compare the keys themselves
  return c < 0 ? -1 : c > 0;
}

SharedServices::SharedServices(std::initializer_list<Service> services) {
  items_.reserve(services.size());
  for (const Service& s : services) push_back(s);
}

void SharedServices::resize(size_t n) {
  if (n <= items_.size()) {
    items_.resize(n);
    return;
  }
  while (items_.size() < n) push_back(Service{});
}

Service& SharedServices::emplace_back(Service s) {
  auto p = std::make_shared<Service>(std::move(s));
  Service& out = *p;
  items_.push_back(std::move(p));
  return out;
}

void SharedServices::erase(const_iterator first, const_iterator last) {
  items_.erase(items_.begin() + (first - begin()), items_.begin() + (last - begin()));
}

Service& SharedServices::mut(size_t i) {
  // Held by this list alone: change it in place (make() made it a non-const
  // Service, so the cast is sound); else copy it first.
  if (items_[i].use_count() != 1) items_[i] = make(*items_[i]);
  return const_cast<Service&>(*items_[i]);
}

void SharedServices::sortByKey() {
  std::stable_sort(items_.begin(), items_.end(), [](const Ptr& a, const Ptr& b) { return keyLess(*a, *b); });
}

bool SharedServices::sortedByKey() const {
  for (size_t i = 1; i < items_.size(); ++i)
    if (compareKeys(*items_[i - 1], *items_[i]) >= 0) return false;
  return true;
}

const Service* SharedServices::find(const std::string& nameSpace, const std::string& name, bool sorted) const {
  Service probe;
  probe.nameSpace = nameSpace;
  probe.name = name;
  if (sorted) {
    auto it = std::lower_bound(items_.begin(), items_.end(), probe,
                               [](const Ptr& a, const Service& b) { return compareKeys(*a, b) < 0; });
    return it != items_.end() && compareKeys(**it, probe) == 0 ? it->get() : nullptr;
  }
  for (const Ptr& s : items_)
    if (compareKeys(*s, probe) == 0) return s.get();
  return nullptr;
}

bool SharedServices::operator==(const SharedServices& o) const {
  if (items_.size() != o.items_.size()) return false;
  for (size_t i = 0; i < items_.size(); ++i)
    if (items_[i] != o.items_[i] && !(*items_[i] == *o.items_[i])) return false;
  return true;
}

const char* toString(RouteNote::State s) {
  switch (s) {
    case RouteNote::State::kApplied: return "applied";
    case RouteNote::State::kPartial: return "partial";
    case RouteNote::State::kNotApplied: return "not_applied";
  }
  return "?";
}

}  // namespace aimesh
