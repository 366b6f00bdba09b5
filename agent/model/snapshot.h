// Cluster state as plain value types: what the sources (state file,
// Kubernetes) produce and what the reconciler consumes. No kernel ids here;
// id assignment lives in agent/reconcile/.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "util/compact_string.h"

namespace aimesh {

// An IP address in IPv4-mapped IPv6 form (::ffff:a.b.c.d for IPv4), the same
// representation the BPF maps use.
struct IpAddr {
  std::array<uint8_t, 16> bytes{};
  bool isV4() const;
  std::string toString() const;  // dotted quad for IPv4, RFC 5952 for IPv6
  static std::optional<IpAddr> parse(const std::string& text);
  auto operator<=>(const IpAddr&) const = default;
};

enum class Protocol : uint8_t { kTcp = 6, kUdp = 17 };
enum class Algorithm : uint8_t { kRandom = 0, kMaglev = 1, kLeastConn = 2, kLatency = 3, kBoundedHash = 4 };
enum class EndpointState : uint8_t { kActive = 0, kDraining = 1, kTerminating = 2 };

// Every algorithm, in enum order (what parseAlgorithm() accepts).
inline constexpr Algorithm kAlgorithms[] = {Algorithm::kRandom, Algorithm::kMaglev, Algorithm::kLeastConn,
                                            Algorithm::kLatency, Algorithm::kBoundedHash};

const char* toString(Protocol p);         // "TCP" / "UDP"
const char* toString(Algorithm a);        // "random", "maglev", ...
const char* toString(EndpointState s);    // "active", "draining", "terminating"
std::optional<Protocol> parseProtocol(const std::string& s);        // case-insensitive TCP/UDP
std::optional<Algorithm> parseAlgorithm(const std::string& s);      // as in toString
std::optional<EndpointState> parseEndpointState(const std::string& s);

// "10.0.0.1:8000", or "[fd00::1]:8000" for IPv6: how logs, errors, the API
// and /metrics name an endpoint. An IPv4-mapped address (::ffff:10.0.0.1,
// the form IpAddr holds IPv4 in) is written as IPv4.
std::string formatHostPort(const IpAddr& a, uint16_t port);
// A frontend (vip, port, protocol): "10.0.0.1:80/TCP", "[fd00::1]:80/UDP".
std::string formatFrontend(const IpAddr& a, uint16_t port, Protocol p);

struct PortSpec {
  uint16_t port = 0;
  Protocol protocol = Protocol::kTcp;
  auto operator<=>(const PortSpec&) const = default;
};

struct Endpoint {
  IpAddr address;
  uint16_t port = 0;    // 0 = the same port as the frontend

  uint16_t weight = 1;  // 0 = no new connections (like draining)
  EndpointState state = EndpointState::kActive;
  // The pod behind the address (namespace-less name; Kubernetes: the
  // EndpointSlice's targetRef, or the InferencePool member), "" if unknown.
  // Userspace only: the destination_pod metric label; never in a kernel map.
  CompactString pod;  // 8 bytes: most endpoints of a state file have none
  auto operator<=>(const Endpoint&) const = default;
};

// Where the agent scrapes an endpoint's model-server metrics (vLLM-style
// Prometheus text): http://<endpoint address>:<port><path>.
struct ModelMetricsSpec {
  uint16_t port = 0;
  std::string path = "/metrics";
  auto operator<=>(const ModelMetricsSpec&) const = default;
};

// Which clients may connect to a service (docs/policy.md). Set: only
// processes in the allowed cgroups (or their descendants) may connect; the
// others get EPERM. Unset: everyone may.
// A pod a policy allows (Kubernetes: chosen by the Service's
// aimesh.io/allow-pods selector among the pods of this node).
struct AllowedPod {
  std::string name;  // namespace/name
  std::string uid;   // metadata.uid: the kubelet names the pod's cgroup after it
  // Filled by the agent before planning: the pod's cgroup directory, "" if
  // it has none now.
  std::string cgroup;
  auto operator<=>(const AllowedPod&) const = default;
};

struct PolicySpec {
  std::vector<std::string> allowCgroups;  // absolute cgroup v2 directory paths, as written
  std::vector<AllowedPod> allowPods;      // sorted by name
  // How allowPods was chosen, for people: "app=client in ml,gw" ("" for a
  // state-file policy).
  std::string podSelector;
  // Filled by the agent before planning (policy_resolver.h): the ids of the
  // allowed cgroups and pods that exist now. Not part of the source's input.
  std::vector<uint64_t> allowCgroupIds;
  auto operator<=>(const PolicySpec&) const = default;
};

// How aimesh manages a service's open connections: the lifecycle iterators
// close idle keep-alive connections so that pooled clients reconnect and the
// balancer places them again (docs/load-balancing.md#connection-lifecycle).
inline constexpr double kDefaultRebalanceRate = 4;            // connections per second per service
inline constexpr uint64_t kDefaultDrainTimeoutMs = 300'000;   // long enough for a streamed completion
struct ConnectionPolicy {
  // Close idle connections to endpoints over their share. Unset: on for
  // least_conn and latency (they exist to balance load), off for random and
  // the affinity algorithms.
  std::optional<bool> rebalance;
  double rebalanceRate = kDefaultRebalanceRate;  // at most this many closed per second for the service (> 0)
  uint64_t maxAgeMs = 0;      // close a connection between requests once it is this old; 0: never
  uint32_t maxRequests = 0;   // ... once it has carried this many requests; 0: never
  uint64_t drainTimeoutMs = kDefaultDrainTimeoutMs;  // busy connections to a removed endpoint: closed after this
  bool rebalanceOn(Algorithm a) const {
    return rebalance.value_or(a == Algorithm::kLeastConn || a == Algorithm::kLatency);
  }
  // Whether the lifecycle needs every connection's requests followed (its
  // idle moments and request count): then every connection is measured,
  // whatever the service's telemetry sample says.
  bool followsRequests(Algorithm a) const { return rebalanceOn(a) || maxAgeMs != 0 || maxRequests != 0; }
  bool operator==(const ConnectionPolicy&) const = default;
};

// An optional value kept on the heap and shared by copies (it is never
// changed in place, only replaced): 16 bytes in the object that holds it
// however large T is, for fields that few services have (a Service is
// copied and kept per service and per port, at 10,000 services every byte
// of it counts ~20 KB twice). Compares by value, like std::optional.
template <class T>
class Boxed {
 public:
  Boxed() = default;
  Boxed(T v) : p_(std::make_shared<const T>(std::move(v))) {}  // NOLINT: converts like std::optional
  explicit operator bool() const { return p_ != nullptr; }
  const T& operator*() const { return *p_; }
  const T* operator->() const { return p_.get(); }
  void reset() { p_.reset(); }
  friend bool operator==(const Boxed& a, const Boxed& b) {
    return a.p_ == b.p_ || (a.p_ && b.p_ && *a.p_ == *b.p_);
  }
  friend bool operator==(const Boxed& a, const T& b) { return a.p_ && *a.p_ == b; }

 private:
  std::shared_ptr<const T> p_;
};

// One backend service of a split: a Service in the cluster that takes
// `weight` parts of the split's new connections (docs/traffic-management.md).
inline constexpr uint32_t kMaxSplitBackends = 16;        // AIMESH_SPLIT_MAX
inline constexpr uint32_t kMaxSplitWeight = 1'000'000;   // AIMESH_SPLIT_MAX_WEIGHT (Gateway API's bound)
struct SplitBackend {
  std::string service;    // a Service's name
  std::string nameSpace;  // its namespace; "" = the split's own
  uint16_t port = 0;      // its port that takes the split's traffic; 0 = the split port's own number
  uint32_t weight = 1;    // 0..kMaxSplitWeight; 0 = none
  // Filled by the agent before planning (resolveSplits()): the backend
  // service's first VIP and its ports, when it exists and is not a split
  // itself (a connect then names its kernel service through that frontend).
  // Not part of the source's input.
  std::optional<IpAddr> vip;
  std::vector<PortSpec> ports;
  // Filled by the agent before planning: the weight this node's canary
  // guard gives it now (0 tripped, a probe's share, or none: `weight`).
  std::optional<uint32_t> guardWeight;
  uint32_t effectiveWeight() const { return guardWeight.value_or(weight); }
  auto operator<=>(const SplitBackend&) const = default;
};

// The canary guard of a split (docs/traffic-management.md): on this node,
// each backend service but the primary is compared with the primary over a
// sliding window of what the kernel measured; one worse than the bound
// gets no new connections here for `cooldownMs`, then a probe share, and
// its weight back once it is within the bound again.
enum class GuardMetric : uint8_t { kTtftP99 = 0, kTtftP50 = 1 };
const char* toString(GuardMetric m);  // "ttft_p99", "ttft_p50"
struct CanaryGuardSpec {
  std::string primary;            // a backend service's name; "" = the split's first
  GuardMetric metric = GuardMetric::kTtftP99;
  double maxRatio = 1.5;          // trips when canary's metric > maxRatio x primary's
  uint32_t minSamples = 200;      // requests timed on each side within the window, to judge at all
  uint64_t windowMs = 60'000;
  // Trips too when the canary's share of failed connects (refused, timed
  // out, reset) in the window is above this, with at least minSamples
  // connects. Unset: not judged.
  std::optional<double> maxFailureRate;
  uint64_t cooldownMs = 60'000;   // tripped this long before a probe
  double probePercent = 1;        // the split's share a probing canary gets (0 < x < 100)
  bool operator==(const CanaryGuardSpec&) const = default;
};

inline constexpr uint32_t kDefaultHashTableSize = 16381;  // AIMESH_DEFAULT_HASH_SIZE
inline constexpr uint16_t kDefaultBalancePct = 125;       // AIMESH_DEFAULT_BALANCE_PCT

// One service may have several ports; the kernel gets one service record per
// (service, port), all sharing the endpoints.
struct Service {
  std::string name;
  std::string nameSpace = "default";  // "namespace" is a keyword
  std::string model;                  // optional model metadata for labels
  std::vector<IpAddr> vips;
  std::vector<PortSpec> ports;
  Algorithm algorithm = Algorithm::kRandom;
  uint32_t hashTableSize = kDefaultHashTableSize;  // maglev / bounded_hash: a prime
  uint16_t balancePct = kDefaultBalancePct;        // bounded_hash: bound in % of the average load
  std::optional<ModelMetricsSpec> modelMetrics;    // scrape the endpoints' model-server metrics
  std::optional<PolicySpec> policy;                // who may connect; unset: everyone
  ConnectionPolicy connections;                    // closing idle connections (re-balancing, limits, removal)
  // The share of connections, decided at connect, whose requests are timed
  // (histograms, request counters, the latency EWMA); connection counts and
  // load are exact for all. 0 < x <= 1. See effectiveTelemetrySample().
  double telemetrySample = 1;
  std::vector<Endpoint> endpoints;
  // When every endpoint the kernel tries is in its failure back-off: false
  // (fail open, the default) uses one of them anyway; true (fail close)
  // refuses the connection (ECONNREFUSED). State file `failure_mode`;
  // InferencePool endpointPickerRef.failureMode (docs/traffic-management.md).
  bool failClose = false;
  // A split: each new connection goes to one of these services, by weight
  // (then to an endpoint of it, by its own algorithm). A split has no
  // endpoints of its own, and its backends are not splits.
  std::vector<SplitBackend> split;
  Boxed<CanaryGuardSpec> canaryGuard;  // splits only

  std::string key() const { return nameSpace + "/" + name; }
  bool operator==(const Service&) const = default;
};

// Orders services as their key() strings ("namespace/name") order, without
// building them: <0, 0 or >0. keyLess() is the sort order of a Snapshot.
int compareKeys(const Service& a, const Service& b);
inline bool keyLess(const Service& a, const Service& b) { return compareKeys(a, b) < 0; }

// The services of a Snapshot, each held through a shared pointer to an
// immutable Service: snapshots that differ in a few services share the
// others (a source that rebuilds one Service of 10,000 hands out 9,999
// pointers it already had; the reconciler tells an unchanged service by its
// pointer before comparing values). Reads look like a std::vector<Service>
// of const elements; writes go through mut(i), which first copies a service
// that another snapshot also holds.
class SharedServices {
 public:
  using Ptr = std::shared_ptr<const Service>;
  using value_type = Service;
  using size_type = size_t;

  class const_iterator {
   public:
    using iterator_category = std::random_access_iterator_tag;
    using value_type = Service;
    using difference_type = std::ptrdiff_t;
    using pointer = const Service*;
    using reference = const Service&;
    const_iterator() = default;
    explicit const_iterator(std::vector<Ptr>::const_iterator it) : it_(it) {}
    reference operator*() const { return **it_; }
    pointer operator->() const { return it_->get(); }
    reference operator[](difference_type n) const { return *it_[n]; }
    const_iterator& operator++() { ++it_; return *this; }
    const_iterator operator++(int) { return const_iterator(it_++); }
    const_iterator& operator--() { --it_; return *this; }
    const_iterator operator--(int) { return const_iterator(it_--); }
    const_iterator& operator+=(difference_type n) { it_ += n; return *this; }
    const_iterator& operator-=(difference_type n) { it_ -= n; return *this; }
    friend const_iterator operator+(const_iterator a, difference_type n) { return a += n; }
    friend const_iterator operator+(difference_type n, const_iterator a) { return a += n; }
    friend const_iterator operator-(const_iterator a, difference_type n) { return a -= n; }
    friend difference_type operator-(const const_iterator& a, const const_iterator& b) { return a.it_ - b.it_; }
    friend bool operator==(const const_iterator& a, const const_iterator& b) { return a.it_ == b.it_; }
    friend auto operator<=>(const const_iterator& a, const const_iterator& b) { return a.it_ <=> b.it_; }
    const Ptr& ptr() const { return *it_; }

   private:
    std::vector<Ptr>::const_iterator it_;
  };
  using iterator = const_iterator;

  SharedServices() = default;
  SharedServices(std::initializer_list<Service> services);

  size_t size() const { return items_.size(); }
  bool empty() const { return items_.empty(); }
  void reserve(size_t n) { items_.reserve(n); }
  void clear() { items_.clear(); }
  void resize(size_t n);  // drops the tail, or appends default services
  const_iterator begin() const { return const_iterator(items_.begin()); }
  const_iterator end() const { return const_iterator(items_.end()); }
  const Service& operator[](size_t i) const { return *items_[i]; }
  const Service& at(size_t i) const { return *items_.at(i); }
  const Service& front() const { return *items_.front(); }
  const Service& back() const { return *items_.back(); }
  const Ptr& ptr(size_t i) const { return items_[i]; }

  // A service to share: every Ptr held here comes from make() (or another
  // list's ptr()), so that mut() may change one that only it holds.
  static Ptr make(Service s) { return std::make_shared<Service>(std::move(s)); }
  void push_back(Service s) { items_.push_back(make(std::move(s))); }
  void set(size_t i, Ptr p) { items_[i] = std::move(p); }
  void push_back(Ptr p) { items_.push_back(std::move(p)); }
  // Appends a service and returns it to be filled in (it is not shared yet).
  Service& emplace_back(Service s = {});
  void erase(const_iterator first, const_iterator last);
  void erase(const_iterator at) { erase(at, at + 1); }
  // Service i, to change: copied first if another snapshot holds it too.
  Service& mut(size_t i);
  void sortByKey();  // stable, by keyLess()
  bool sortedByKey() const;  // in strictly increasing key order
  // The service namespace/name, or null: a binary search when `sorted`
  // (sortedByKey()), else a walk.
  const Service* find(const std::string& nameSpace, const std::string& name, bool sorted) const;

  // Equal services in the same order (a shared pointer is equal to itself).
  bool operator==(const SharedServices& o) const;

 private:
  std::vector<Ptr> items_;
};

// A route of the cluster's (a Gateway API HTTPRoute, GRPCRoute or TCPRoute)
// and what the source made of it: for `meshctl routes` and the log; the
// data plane sees only the splits it made (docs/traffic-management.md).
struct RouteNote {
  enum class State : uint8_t { kApplied = 0, kPartial = 1, kNotApplied = 2 };
  std::string route;                // "HTTPRoute ml/llama-canary"
  std::vector<std::string> parents;  // its parent Services ("ml/llama"), sorted
  std::vector<std::string> splits;  // keys of the services it made splits, sorted
  std::string pool;                 // its InferencePool backend ("ml/llama-pool"), if any
  std::vector<std::string> pooled;  // keys of the services it gave the pool's members, sorted
  State state = State::kApplied;
  std::vector<std::string> notes;   // why it is not applied, or what of it is not
  bool operator==(const RouteNote&) const = default;
};
const char* toString(RouteNote::State s);  // "applied", "partial", "not_applied"

// The whole desired state. Services are kept sorted by key() so that two
// snapshots of the same state compare equal.
struct Snapshot {
  SharedServices services;
  Boxed<std::vector<RouteNote>> routes;  // from a source that reads routes; sorted by route
  bool operator==(const Snapshot&) const = default;
};

}  // namespace aimesh
