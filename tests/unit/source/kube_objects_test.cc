#include "source/kube_objects.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <random>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace aimesh::kube {
namespace {

using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

json loadFixture(const std::string& name) {
  std::ifstream in(AIMESH_SOURCE_DIR "/tests/fixtures/kube/" + name);
  EXPECT_TRUE(in.good()) << name;
  return json::parse(in, nullptr, /*allow_exceptions=*/false);
}

IpAddr ip(const std::string& s) {
  auto a = IpAddr::parse(s);
  EXPECT_TRUE(a.has_value()) << s;
  return a.value_or(IpAddr{});
}

std::map<std::string, ServiceObj> fixtureServices() {
  std::map<std::string, ServiceObj> out;
  json list = loadFixture("services.json");
  for (const json& item : list["items"]) {
    auto s = decodeService(item);
    EXPECT_TRUE(s.ok()) << s.error().message();
    if (s.ok()) out.emplace(s->meta.key(), *s);
  }
  return out;
}

std::map<std::string, EndpointSliceObj> fixtureSlices() {
  std::map<std::string, EndpointSliceObj> out;
  json list = loadFixture("endpointslices.json");
  for (const json& item : list["items"]) {
    auto s = decodeEndpointSlice(item);
    EXPECT_TRUE(s.ok()) << s.error().message();
    if (s.ok()) out.emplace(s->meta.key(), *s);
  }
  return out;
}

// Builders for the mapping tests.

ServicePort port(const std::string& name, uint16_t number, Protocol proto = Protocol::kTcp) {
  return ServicePort{name, number, proto, true};
}

ServicePort sctpPort(const std::string& name, uint16_t number) {
  return ServicePort{name, number, Protocol::kTcp, false};
}

ServiceObj service(const std::string& ns, const std::string& name, std::vector<std::string> ips,
                   std::vector<ServicePort> ports) {
  ServiceObj s;
  s.meta.name = name;
  s.meta.nameSpace = ns;
  s.clusterIPs = std::move(ips);
  s.ports = std::move(ports);
  return s;
}

SliceEndpoint endpoint(std::vector<std::string> addrs, std::optional<bool> ready = std::nullopt,
                       std::optional<bool> serving = std::nullopt, std::optional<bool> terminating = std::nullopt) {
  SliceEndpoint e;
  e.addresses = std::move(addrs);
  e.ready = ready;
  e.serving = serving;
  e.terminating = terminating;
  return e;
}

EndpointSliceObj slice(const std::string& ns, const std::string& name, const std::string& svc,
                       const std::string& addressType, std::vector<SlicePort> ports,
                       std::vector<SliceEndpoint> endpoints) {
  EndpointSliceObj s;
  s.meta.name = name;
  s.meta.nameSpace = ns;
  if (!svc.empty()) s.meta.labels[kServiceNameLabel] = svc;
  s.serviceName = svc;
  s.addressType = addressType;
  s.ports = std::move(ports);
  s.endpoints = std::move(endpoints);
  return s;
}

Endpoint active(const std::string& addr, uint16_t p, const std::string& pod = "") {
  return Endpoint{ip(addr), p, 1, EndpointState::kActive, pod};
}
Endpoint draining(const std::string& addr, uint16_t p, const std::string& pod = "") {
  return Endpoint{ip(addr), p, 1, EndpointState::kDraining, pod};
}

BuildResult build(const std::vector<ServiceObj>& services, const std::vector<EndpointSliceObj>& slices) {
  std::map<std::string, ServiceObj> sm;
  for (const auto& s : services) sm.emplace(s.meta.key(), s);
  std::map<std::string, EndpointSliceObj> em;
  for (const auto& s : slices) em.emplace(s.meta.key(), s);
  return buildSnapshot(sm, em);
}

const Service* findService(const Snapshot& snap, const std::string& key) {
  for (const Service& s : snap.services) {
    if (s.key() == key) return &s;
  }
  return nullptr;
}

std::vector<std::string> keysOf(const Snapshot& snap) {
  std::vector<std::string> out;
  for (const Service& s : snap.services) out.push_back(s.key());
  return out;
}

// ---- decoding the fixtures ---------------------------------------------------

TEST(KubeDecodeTest, FixtureServices) {
  auto services = fixtureServices();
  ASSERT_EQ(services.size(), 5u);

  const ServiceObj& llama = services.at("ml/llama-chat");
  EXPECT_EQ(llama.meta.name, "llama-chat");
  EXPECT_EQ(llama.meta.nameSpace, "ml");
  EXPECT_EQ(llama.meta.uid, "6f1d2a4e-93c1-4b7e-9f0e-2d5c8a71b3f4");
  EXPECT_EQ(llama.meta.resourceVersion, "1841102");
  EXPECT_EQ(llama.meta.labels.at("app.kubernetes.io/name"), "llama-chat");
  EXPECT_EQ(llama.meta.annotations.at("aimesh.io/lb-algorithm"), "bounded_hash");
  EXPECT_EQ(llama.meta.annotations.size(), 5u);
  EXPECT_FALSE(llama.meta.deleting);
  EXPECT_EQ(llama.type, "ClusterIP");
  EXPECT_THAT(llama.clusterIPs, ElementsAre("10.96.120.15", "fd00:10:96::7b2a"));
  EXPECT_FALSE(llama.headless());
  EXPECT_THAT(llama.ports, ElementsAre(port("http", 8000), port("grpc", 9000)));

  const ServiceObj& pods = services.at("ml/llama-chat-pods");
  EXPECT_THAT(pods.clusterIPs, ElementsAre("None"));
  EXPECT_TRUE(pods.headless());

  const ServiceObj& ext = services.at("ml/openai-proxy");
  EXPECT_EQ(ext.type, "ExternalName");
  EXPECT_TRUE(ext.clusterIPs.empty());
  EXPECT_TRUE(ext.ports.empty());
  EXPECT_TRUE(ext.meta.labels.empty());

  const ServiceObj& remote = services.at("ml/remote-llm");
  EXPECT_THAT(remote.ports, ElementsAre(port("", 443)));

  const ServiceObj& dns = services.at("kube-system/kube-dns");
  EXPECT_THAT(dns.ports, ElementsAre(port("dns", 53, Protocol::kUdp), port("dns-tcp", 53), port("metrics", 9153)));
}

TEST(KubeDecodeTest, FixtureEndpointSlices) {
  auto slices = fixtureSlices();
  ASSERT_EQ(slices.size(), 6u);

  const EndpointSliceObj& v4 = slices.at("ml/llama-chat-7x2kq");
  EXPECT_EQ(v4.meta.uid, "3d8e0b6a-2f4c-4a71-9e5d-b7c1f0a29d84");
  EXPECT_EQ(v4.meta.resourceVersion, "1843250");
  EXPECT_EQ(v4.serviceName, "llama-chat");
  EXPECT_EQ(v4.addressType, "IPv4");
  EXPECT_THAT(v4.ports, ElementsAre(SlicePort{"http", 8080, Protocol::kTcp}, SlicePort{"grpc", 9000, Protocol::kTcp}));
  ASSERT_EQ(v4.endpoints.size(), 5u);
  SliceEndpoint first = endpoint({"10.244.1.17"}, true, true, false);
  first.nodeName = "gpu-node-1";
  first.pod = "llama-chat-6d9f7c5b8-x7kq2";  // targetRef
  EXPECT_EQ(v4.endpoints[0], first);
  EXPECT_EQ(v4.endpoints[2].addresses, std::vector<std::string>{"10.244.3.9"});
  EXPECT_EQ(v4.endpoints[2].ready, false);
  EXPECT_EQ(v4.endpoints[2].serving, true);
  EXPECT_EQ(v4.endpoints[2].terminating, true);
  EXPECT_EQ(v4.endpoints[3].serving, false);
  EXPECT_EQ(v4.endpoints[4].terminating, false);

  EXPECT_EQ(slices.at("ml/llama-chat-m4w9p").addressType, "IPv6");
  EXPECT_EQ(slices.at("ml/llama-chat-pods-b8k2n").serviceName, "llama-chat-pods");

  const EndpointSliceObj& fqdn = slices.at("ml/remote-llm-fqdn");
  EXPECT_EQ(fqdn.addressType, "FQDN");
  EXPECT_THAT(fqdn.ports, ElementsAre(SlicePort{"", 443, Protocol::kTcp}));
  EXPECT_EQ(fqdn.endpoints.at(0).addresses, std::vector<std::string>{"llm.example.com"});
  EXPECT_EQ(fqdn.endpoints.at(0).ready, true);
  EXPECT_EQ(fqdn.endpoints.at(0).serving, std::nullopt);

  // No conditions at all: every condition unknown.
  const EndpointSliceObj& manual = slices.at("ml/remote-llm-ipv4");
  ASSERT_EQ(manual.endpoints.size(), 1u);
  EXPECT_THAT(manual.endpoints[0].addresses, ElementsAre("203.0.113.10", "203.0.113.11"));
  EXPECT_EQ(manual.endpoints[0].ready, std::nullopt);
  EXPECT_EQ(manual.endpoints[0].terminating, std::nullopt);
  EXPECT_EQ(manual.endpoints[0].nodeName, "");

  EXPECT_THAT(slices.at("kube-system/kube-dns-5hq8r").ports,
              ElementsAre(SlicePort{"dns-tcp", 53, Protocol::kTcp}, SlicePort{"dns", 53, Protocol::kUdp},
                          SlicePort{"metrics", 9153, Protocol::kTcp}));
}

// ---- decoding details ---------------------------------------------------------

json minimalService() {
  return json::parse(R"({
    "kind": "Service", "apiVersion": "v1",
    "metadata": {"name": "llama", "namespace": "ml", "uid": "u-1", "resourceVersion": "7"},
    "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.5"],
             "ports": [{"name": "http", "port": 8000, "protocol": "TCP", "targetPort": "http"},
                       {"name": "grpc", "port": 9000, "protocol": "TCP", "targetPort": 9000}]}
  })");
}

json minimalSlice() {
  return json::parse(R"({
    "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
    "metadata": {"name": "llama-abc", "namespace": "ml", "labels": {"kubernetes.io/service-name": "llama"}},
    "addressType": "IPv4",
    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    "endpoints": [{"addresses": ["10.244.0.7"], "conditions": {"ready": true}, "nodeName": "n1"}]
  })");
}

TEST(KubeDecodeTest, MinimalObjectsDecode) {
  auto s = decodeService(minimalService());
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_EQ(s->meta.key(), "ml/llama");
  auto e = decodeEndpointSlice(minimalSlice());
  ASSERT_TRUE(e.ok()) << e.error().message();
  EXPECT_EQ(e->serviceName, "llama");
  EXPECT_EQ(e->endpoints.at(0).nodeName, "n1");
}

TEST(KubeDecodeTest, ClusterIPFallsBackToSingularField) {
  json j = minimalService();
  j["spec"].erase("clusterIPs");
  j["spec"]["clusterIP"] = "10.96.0.9";
  auto s = decodeService(j);
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_THAT(s->clusterIPs, ElementsAre("10.96.0.9"));
  EXPECT_FALSE(s->headless());

  j["spec"]["clusterIP"] = "None";
  s = decodeService(j);
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(s->headless());

  j["spec"].erase("clusterIP");
  s = decodeService(j);
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(s->clusterIPs.empty());
  EXPECT_TRUE(s->headless());
}

TEST(KubeDecodeTest, NullMeansAbsent) {
  json j = minimalService();
  j["metadata"]["labels"] = nullptr;
  j["metadata"]["annotations"] = nullptr;
  j["spec"]["type"] = nullptr;
  j["spec"]["ports"][0]["protocol"] = nullptr;
  j["spec"]["ports"][0]["name"] = nullptr;
  auto s = decodeService(j);
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_EQ(s->type, "ClusterIP");
  EXPECT_EQ(s->ports[0], port("", 8000));

  // A slice with no endpoints is written "endpoints": null (a nil Go slice).
  json e = minimalSlice();
  e["endpoints"] = nullptr;
  e["ports"] = nullptr;
  auto sl = decodeEndpointSlice(e);
  ASSERT_TRUE(sl.ok()) << sl.error().message();
  EXPECT_TRUE(sl->endpoints.empty());
  EXPECT_TRUE(sl->ports.empty());
}

TEST(KubeDecodeTest, DeletionTimestampMarksDeleting) {
  json j = minimalService();
  j["metadata"]["deletionTimestamp"] = "2024-05-06T14:02:17Z";
  auto s = decodeService(j);
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(s->meta.deleting);
}

TEST(KubeDecodeTest, SctpPortsAreMarkedOrDropped) {
  json j = minimalService();
  j["spec"]["ports"][1]["protocol"] = "SCTP";
  j["spec"]["ports"][0]["protocol"] = "udp";
  auto s = decodeService(j);
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_EQ(s->ports[0], port("http", 8000, Protocol::kUdp));
  EXPECT_FALSE(s->ports[1].supported);
  EXPECT_EQ(s->ports[1].port, 9000);

  json e = minimalSlice();
  e["ports"].push_back(json{{"name", "sig"}, {"port", 3868}, {"protocol", "SCTP"}});
  auto sl = decodeEndpointSlice(e);
  ASSERT_TRUE(sl.ok()) << sl.error().message();
  EXPECT_THAT(sl->ports, ElementsAre(SlicePort{"http", 8080, Protocol::kTcp}));
}

TEST(KubeDecodeTest, SlicePortWithoutNumberMeansAllPorts) {
  json e = minimalSlice();
  e["ports"] = json::parse(R"([{"name": ""}])");
  auto sl = decodeEndpointSlice(e);
  ASSERT_TRUE(sl.ok()) << sl.error().message();
  EXPECT_THAT(sl->ports, ElementsAre(SlicePort{"", 0, Protocol::kTcp}));
}

TEST(KubeDecodeTest, MetaOfClusterScopedObject) {
  auto m = decodeMeta(json::parse(R"({"metadata": {"name": "gpu-node-1", "uid": "x", "labels": {"a": "b"}}})"));
  ASSERT_TRUE(m.ok()) << m.error().message();
  EXPECT_EQ(m->name, "gpu-node-1");
  EXPECT_EQ(m->nameSpace, "");
  EXPECT_EQ(m->labels.at("a"), "b");

  auto bad = decodeMeta(json::parse(R"({"metadata": {"name": ""}})"));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message(), "metadata.name: must not be empty");
  bad = decodeMeta(json::parse("[1]"));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message(), "must be a JSON object, got a list");
  bad = decodeMeta(json::parse(R"({"metadata": {"name": "x", "annotations": {"a": null}}})"));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message(), "metadata.annotations[a]: must be a string, got null");
}

struct BadField {
  std::string pointer;  // JSON pointer to change
  json value;           // new value; discarded = remove the field
  std::string message;  // the whole error message
};

json removed() { return json(json::value_t::discarded); }

json patched(json j, const BadField& c) {
  json::json_pointer ptr(c.pointer);
  if (c.value.is_discarded()) {
    j.at(ptr.parent_pointer()).erase(ptr.back());
  } else if (c.pointer.empty()) {
    j = c.value;
  } else {
    j[ptr] = c.value;
  }
  return j;
}

TEST(KubeDecodeTest, WrongServiceFieldsAreNamed) {
  const std::vector<BadField> cases = {
      {"/spec/ports/1/port", 0, "Service ml/llama: spec.ports[1].port: must be 1..65535, got 0"},
      {"/spec/ports/0/port", 70000, "Service ml/llama: spec.ports[0].port: must be 1..65535, got 70000"},
      {"/spec/ports/0/port", -1, "Service ml/llama: spec.ports[0].port: must be 1..65535, got -1"},
      {"/spec/ports/0/port", json(18446744073709551615ULL),
       "Service ml/llama: spec.ports[0].port: must be 1..65535, got 18446744073709551615"},
      {"/spec/ports/0/port", "8000",
       "Service ml/llama: spec.ports[0].port: must be an integer 1..65535, got string \"8000\""},
      {"/spec/ports/0/port", 80.5, "Service ml/llama: spec.ports[0].port: must be an integer 1..65535, got 80.5"},
      {"/spec/ports/0/port", removed(), "Service ml/llama: spec.ports[0].port: required field is missing"},
      {"/spec/ports/0/protocol", "ICMP",
       "Service ml/llama: spec.ports[0].protocol: must be TCP, UDP or SCTP, got 'ICMP'"},
      {"/spec/ports/0/protocol", 6, "Service ml/llama: spec.ports[0].protocol: must be a string, got 6"},
      {"/spec/ports/1/name", true, "Service ml/llama: spec.ports[1].name: must be a string, got true"},
      {"/spec/ports/0", "http", "Service ml/llama: spec.ports[0]: must be an object, got string \"http\""},
      {"/spec/ports", json::object(), "Service ml/llama: spec.ports: must be a list, got an object"},
      {"/spec/clusterIPs", "10.96.0.5", "Service ml/llama: spec.clusterIPs: must be a list, got string \"10.96.0.5\""},
      {"/spec/clusterIPs/0", 167772165, "Service ml/llama: spec.clusterIPs[0]: must be a string, got 167772165"},
      {"/spec/clusterIP", false, "Service ml/llama: spec.clusterIP: must be a string, got false"},
      {"/spec/type", 1, "Service ml/llama: spec.type: must be a string, got 1"},
      {"/spec", json::array(), "Service ml/llama: spec: must be an object, got a list"},
      {"/spec", removed(), "Service ml/llama: spec: required field is missing"},
      {"/metadata/labels", json::array(), "Service ml/llama: metadata.labels: must be an object, got a list"},
      {"/metadata/labels/app", 1, "Service ml/llama: metadata.labels[app]: must be a string, got 1"},
      {"/metadata/annotations/aimesh.io~1model", json::object(),
       "Service ml/llama: metadata.annotations[aimesh.io/model]: must be a string, got an object"},
      {"/metadata/deletionTimestamp", true, "Service ml/llama: metadata.deletionTimestamp: must be a string, got true"},
      {"/metadata/uid", 5, "Service ml/llama: metadata.uid: must be a string, got 5"},
      {"/metadata/resourceVersion", 7, "Service ml/llama: metadata.resourceVersion: must be a string, got 7"},
      {"/metadata/namespace", removed(), "Service llama: metadata.namespace: required field is missing"},
      {"/metadata/name", 7, "Service: metadata.name: must be a string, got 7"},
      {"/metadata/name", removed(), "Service: metadata.name: required field is missing"},
      {"/metadata", nullptr, "Service: metadata: required field is missing"},
      {"/metadata", "x", "Service: metadata: must be an object, got string \"x\""},
      {"/kind", "Pod", "Service ml/llama: kind: must be Service, got 'Pod'"},
      {"", json::array(), "Service: must be a JSON object, got a list"},
      {"", 42, "Service: must be a JSON object, got 42"},
  };
  for (const BadField& c : cases) {
    SCOPED_TRACE(c.pointer + " = " + c.value.dump());
    Result<ServiceObj> r = Error::msg("not run");
    ASSERT_NO_THROW(r = decodeService(patched(minimalService(), c)));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().message(), c.message);
  }
}

TEST(KubeDecodeTest, WrongEndpointSliceFieldsAreNamed) {
  const std::vector<BadField> cases = {
      {"/addressType", removed(), "EndpointSlice ml/llama-abc: addressType: required field is missing"},
      {"/addressType", 4, "EndpointSlice ml/llama-abc: addressType: must be a string, got 4"},
      {"/ports/0/port", 0, "EndpointSlice ml/llama-abc: ports[0].port: must be 1..65535, got 0"},
      {"/ports/0/port", "http",
       "EndpointSlice ml/llama-abc: ports[0].port: must be an integer 1..65535, got string \"http\""},
      {"/ports/0/protocol", "QUIC",
       "EndpointSlice ml/llama-abc: ports[0].protocol: must be TCP, UDP or SCTP, got 'QUIC'"},
      {"/ports/0/name", 1, "EndpointSlice ml/llama-abc: ports[0].name: must be a string, got 1"},
      {"/ports/0", 8080, "EndpointSlice ml/llama-abc: ports[0]: must be an object, got 8080"},
      {"/ports", "http", "EndpointSlice ml/llama-abc: ports: must be a list, got string \"http\""},
      {"/endpoints", json::object(), "EndpointSlice ml/llama-abc: endpoints: must be a list, got an object"},
      {"/endpoints/0", json::array(), "EndpointSlice ml/llama-abc: endpoints[0]: must be an object, got a list"},
      {"/endpoints/0/addresses", removed(),
       "EndpointSlice ml/llama-abc: endpoints[0].addresses: required field is missing"},
      {"/endpoints/0/addresses", "10.244.0.7",
       "EndpointSlice ml/llama-abc: endpoints[0].addresses: must be a list, got string \"10.244.0.7\""},
      {"/endpoints/0/addresses/0", 10,
       "EndpointSlice ml/llama-abc: endpoints[0].addresses[0]: must be a string, got 10"},
      {"/endpoints/0/conditions", true,
       "EndpointSlice ml/llama-abc: endpoints[0].conditions: must be an object, got true"},
      {"/endpoints/0/conditions/ready", "true",
       "EndpointSlice ml/llama-abc: endpoints[0].conditions.ready: must be true or false, got string \"true\""},
      {"/endpoints/0/conditions/serving", 1,
       "EndpointSlice ml/llama-abc: endpoints[0].conditions.serving: must be true or false, got 1"},
      {"/endpoints/0/conditions/terminating", json::array(),
       "EndpointSlice ml/llama-abc: endpoints[0].conditions.terminating: must be true or false, got a list"},
      {"/endpoints/0/nodeName", 1, "EndpointSlice ml/llama-abc: endpoints[0].nodeName: must be a string, got 1"},
      {"/metadata/labels/kubernetes.io~1service-name", 5,
       "EndpointSlice ml/llama-abc: metadata.labels[kubernetes.io/service-name]: must be a string, got 5"},
      {"/metadata/namespace", removed(), "EndpointSlice llama-abc: metadata.namespace: required field is missing"},
      {"/kind", "Endpoints", "EndpointSlice ml/llama-abc: kind: must be EndpointSlice, got 'Endpoints'"},
      {"", "null", "EndpointSlice: must be a JSON object, got string \"null\""},
  };
  for (const BadField& c : cases) {
    SCOPED_TRACE(c.pointer + " = " + c.value.dump());
    Result<EndpointSliceObj> r = Error::msg("not run");
    ASSERT_NO_THROW(r = decodeEndpointSlice(patched(minimalSlice(), c)));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().message(), c.message);
  }
}

TEST(KubeDecodeTest, OddInputNeverThrows) {
  const std::vector<json> inputs = {
      json(),
      json(0),
      json("x"),
      json::array(),
      json::object(),
      json::parse(R"({"metadata": null, "spec": null})"),
      json::parse(R"({"metadata": {"name": "a", "namespace": "b"}, "spec": {"ports": [null, 1, [], {}]}})"),
      json::parse(R"({"metadata": {"name": "a", "namespace": "b"}, "endpoints": [null], "addressType": "IPv4"})"),
      json::parse(R"({"metadata": {"name": "a", "namespace": "b", "labels": {"x": [1]}}})"),
  };
  for (const json& j : inputs) {
    SCOPED_TRACE(j.dump());
    EXPECT_NO_THROW((void)decodeMeta(j));
    EXPECT_NO_THROW(EXPECT_FALSE(decodeService(j).ok()));
    EXPECT_NO_THROW(EXPECT_FALSE(decodeEndpointSlice(j).ok()));
  }
}

// ---- label selectors ----------------------------------------------------------

using Op = Requirement::Op;

TEST(KubeSelectorTest, Parses) {
  struct Case {
    std::string text;
    std::vector<Requirement> want;
  };
  const std::vector<Case> cases = {
      {"", {}},
      {"   ", {}},
      {"app=llama", {{"app", Op::kEquals, {"llama"}}}},
      {"app==llama", {{"app", Op::kEquals, {"llama"}}}},
      {"app != llama", {{"app", Op::kNotEquals, {"llama"}}}},
      {"app=", {{"app", Op::kEquals, {""}}}},
      {"app", {{"app", Op::kExists, {}}}},
      {"!app", {{"app", Op::kDoesNotExist, {}}}},
      {"tier in (gpu, cpu,gpu)", {{"tier", Op::kIn, {"cpu", "gpu"}}}},
      {"tier notin(spot)", {{"tier", Op::kNotIn, {"spot"}}}},
      {"tier in (a,,b)", {{"tier", Op::kIn, {"", "a", "b"}}}},
      {"app.kubernetes.io/name=llama-chat", {{"app.kubernetes.io/name", Op::kEquals, {"llama-chat"}}}},
      {"a=b, c!=d ,!e, f in (x,y), g",
       {{"a", Op::kEquals, {"b"}},
        {"c", Op::kNotEquals, {"d"}},
        {"e", Op::kDoesNotExist, {}},
        {"f", Op::kIn, {"x", "y"}},
        {"g", Op::kExists, {}}}},
      {"Version=V1.2_rc-3", {{"Version", Op::kEquals, {"V1.2_rc-3"}}}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    auto s = parseSelector(c.text);
    ASSERT_TRUE(s.ok()) << s.error().message();
    EXPECT_EQ(s->requirements, c.want);
    EXPECT_EQ(s->empty(), c.want.empty());
  }
}

TEST(KubeSelectorTest, ReportsBadSyntax) {
  struct Case {
    std::string text;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"a=b,", "expected a label key, got end of input (column 5)"},
      {",a", "expected a label key, got ',' (column 1)"},
      {"!", "expected a label key, got end of input (column 2)"},
      {"!a=b", "expected ',' or end of input, got '=' (column 3)"},
      {"a b", "expected an operator (=, ==, !=, in, notin), ',' or end of input after key 'a', got 'b' (column 3)"},
      {"a (x)", "expected an operator (=, ==, !=, in, notin), ',' or end of input after key 'a', got '(' (column 3)"},
      {"a in x", "expected '(' after 'in', got 'x' (column 6)"},
      {"a notin", "expected '(' after 'notin', got end of input (column 8)"},
      {"a in (x", "expected ',' or ')' after 'x', got end of input (column 8)"},
      {"a in (x y)", "expected ',' or ')' after 'x', got 'y' (column 9)"},
      {"a in ()", "'in' needs at least one value (column 7)"},
      {"a=(x)", "expected a value after '=', got '(' (column 3)"},
      {"a=b=c", "expected ',' or end of input, got '=' (column 4)"},
      {"a=b c", "expected ',' or end of input, got 'c' (column 5)"},
      {"a>1", "operator '>' is not supported; use =, ==, !=, in, notin, a bare key or !key (column 2)"},
      {"a=-x", "'-x' is not a valid label value"},
      {"a in (ok, bad value)", "expected ',' or ')' after 'bad', got 'value'"},
      {"a in (ok,-bad)", "'-bad' is not a valid label value"},
      {"-a=b", "'-a' is not a valid label key"},
      {"Example.com/a=b", "'Example.com/a' is not a valid label key"},
      {"example.com/=b", "'example.com/' is not a valid label key"},
      {"a/b/c=d", "'a/b/c' is not a valid label key"},
      {std::string(64, 'k') + "=v", "is not a valid label key"},
      {"k=" + std::string(64, 'v'), "is not a valid label value"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    auto s = parseSelector(c.text);
    ASSERT_FALSE(s.ok());
    EXPECT_THAT(s.error().message(), HasSubstr(c.message));
    EXPECT_THAT(s.error().message(), HasSubstr("label selector \"" + c.text + "\": "));
  }
  // The whole message, once.
  EXPECT_EQ(parseSelector("app in (a").error().message(),
            "label selector \"app in (a\": expected ',' or ')' after 'a', got end of input (column 10)");
}

TEST(KubeSelectorTest, Matches) {
  const std::map<std::string, std::string> labels = {
      {"app", "llama"}, {"tier", "gpu"}, {"app.kubernetes.io/part-of", "inference"}, {"empty", ""}};
  struct Case {
    std::string selector;
    bool want;
  };
  const std::vector<Case> cases = {
      {"", true},
      {"app=llama", true},
      {"app==llama", true},
      {"app=mistral", false},
      {"missing=x", false},
      {"app!=mistral", true},
      {"app!=llama", false},
      {"missing!=x", true},  // != also holds when the label is not set
      {"app", true},
      {"missing", false},
      {"!missing", true},
      {"!app", false},
      {"tier in (cpu, gpu)", true},
      {"tier in (cpu)", false},
      {"missing in (x)", false},
      {"tier notin (cpu)", true},
      {"tier notin (cpu,gpu)", false},
      {"missing notin (x)", true},
      {"empty=", true},
      {"empty", true},
      {"missing=", false},
      {"app.kubernetes.io/part-of=inference", true},
      {"app=llama,tier=gpu", true},
      {"app=llama,tier=cpu", false},
      {"app=llama, !missing, tier in (gpu), app.kubernetes.io/part-of", true},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.selector);
    auto s = parseSelector(c.selector);
    ASSERT_TRUE(s.ok()) << s.error().message();
    EXPECT_EQ(matches(*s, labels), c.want);
  }
  auto any = parseSelector("missing!=x");
  ASSERT_TRUE(any.ok());
  EXPECT_TRUE(matches(*any, {}));
}

// ---- mapping to a snapshot ----------------------------------------------------

TEST(KubeSnapshotTest, FixturesMapToGoldenSnapshot) {
  BuildResult r = buildSnapshot(fixtureServices(), fixtureSlices());

  Snapshot want;
  auto dns = [&](const std::string& suffix, uint16_t p, Protocol proto) {
    Service s;
    s.name = "kube-dns:" + suffix;
    s.nameSpace = "kube-system";
    s.vips = {ip("10.96.0.10")};
    s.ports = {PortSpec{p, proto}};
    s.endpoints = {active("10.244.0.2", p, "coredns-5d78c9869d-8t4xq"), active("10.244.0.3", p, "coredns-5d78c9869d-lw2f6")};
    return s;
  };
  want.services.push_back(dns("dns", 53, Protocol::kUdp));
  want.services.push_back(dns("dns-tcp", 53, Protocol::kTcp));
  want.services.push_back(dns("metrics", 9153, Protocol::kTcp));
  auto llama = [&](const std::string& suffix, uint16_t p, uint16_t target) {
    Service s;
    s.name = "llama-chat:" + suffix;
    s.nameSpace = "ml";
    s.model = "llama-3-8b-instruct";
    s.vips = {ip("10.96.120.15"), ip("fd00:10:96::7b2a")};
    s.ports = {PortSpec{p, Protocol::kTcp}};
    s.algorithm = Algorithm::kBoundedHash;
    s.hashTableSize = 32749;
    s.modelMetrics = ModelMetricsSpec{8000, "/metrics"};
    // Sorted by address: IPv4-mapped (::ffff:…) before fd00::/8. The
    // endpoint that has not started (10.244.1.30) is left out.
    // Each endpoint carries its targetRef pod.
    const std::string x7 = "llama-chat-6d9f7c5b8-x7kq2", p4 = "llama-chat-6d9f7c5b8-p4m8w",
                      r2 = "llama-chat-6d9f7c5b8-r2n5t", z9 = "llama-chat-6d9f7c5b8-z9h3c";
    s.endpoints = {active("10.244.1.17", target, x7),       active("10.244.2.23", target, p4),
                   draining("10.244.3.9", target, r2),      draining("10.244.3.12", target, z9),
                   active("fd00:10:244:1::11", target, x7), active("fd00:10:244:2::17", target, p4),
                   draining("fd00:10:244:3::9", target, r2)};
    return s;
  };
  want.services.push_back(llama("grpc", 9000, 9000));
  want.services.push_back(llama("http", 8000, 8080));
  Service remote;
  remote.name = "remote-llm";
  remote.nameSpace = "ml";
  remote.vips = {ip("10.96.33.201")};
  remote.ports = {PortSpec{443, Protocol::kTcp}};
  remote.endpoints = {active("203.0.113.10", 443), active("203.0.113.11", 443)};
  want.services.push_back(remote);

  EXPECT_EQ(keysOf(r.snapshot), keysOf(want));
  for (size_t i = 0; i < std::min(r.snapshot.services.size(), want.services.size()); ++i) {
    SCOPED_TRACE(want.services[i].key());
    EXPECT_EQ(r.snapshot.services[i].endpoints, want.services[i].endpoints);
    EXPECT_EQ(r.snapshot.services[i], want.services[i]);
  }
  EXPECT_EQ(r.snapshot, want);
  EXPECT_THAT(r.warnings,
              ElementsAre("Service ml/remote-llm: annotation aimesh.io/lb-algorithm: must be one of random, maglev, "
                          "least_conn, latency, bounded_hash, got 'round_robin'; using random",
                          "EndpointSlice ml/remote-llm-fqdn: addressType FQDN is not supported (only IPv4 and IPv6); "
                          "skipped"));
}

TEST(KubeSnapshotTest, SkipsHeadlessExternalNameAndDeletingSilently) {
  ServiceObj none = service("ml", "headless", {"None"}, {port("http", 8000)});
  ServiceObj noIps = service("ml", "no-ips", {}, {port("http", 8000)});
  ServiceObj ext = service("ml", "ext", {}, {});
  ext.type = "ExternalName";
  ServiceObj extWithIp = service("ml", "ext-ip", {"10.96.0.7"}, {port("http", 8000)});
  extWithIp.type = "ExternalName";
  ServiceObj deleting = service("ml", "going", {"10.96.0.8"}, {port("http", 8000)});
  deleting.meta.deleting = true;
  ServiceObj kept = service("ml", "kept", {"10.96.0.9"}, {port("http", 8000)});
  EndpointSliceObj sl =
      slice("ml", "headless-x", "headless", "IPv4", {{"http", 8000, Protocol::kTcp}}, {endpoint({"10.244.0.1"})});

  BuildResult r = build({none, noIps, ext, extWithIp, deleting, kept}, {sl});
  EXPECT_THAT(keysOf(r.snapshot), ElementsAre("ml/kept"));
  EXPECT_TRUE(r.warnings.empty()) << r.warnings.front();
}

TEST(KubeSnapshotTest, NodePortAndLoadBalancerUseTheirClusterIPs) {
  ServiceObj np = service("ml", "np", {"10.96.0.11"}, {port("http", 8000)});
  np.type = "NodePort";
  ServiceObj lb = service("ml", "lb", {"10.96.0.12"}, {port("http", 8000)});
  lb.type = "LoadBalancer";
  BuildResult r = build({np, lb}, {});
  EXPECT_THAT(keysOf(r.snapshot), ElementsAre("ml/lb", "ml/np"));
  EXPECT_EQ(findService(r.snapshot, "ml/np")->vips, std::vector<IpAddr>{ip("10.96.0.11")});
}

TEST(KubeSnapshotTest, BadClusterIPIsSkippedWithWarning) {
  BuildResult r = build({service("ml", "dual", {"10.96.0.5", "not-an-ip", "fd00::5"}, {port("", 80)})}, {});
  ASSERT_EQ(r.snapshot.services.size(), 1u);
  EXPECT_EQ(r.snapshot.services[0].vips, (std::vector<IpAddr>{ip("10.96.0.5"), ip("fd00::5")}));
  EXPECT_THAT(r.warnings,
              ElementsAre("Service ml/dual: spec.clusterIPs[1]: 'not-an-ip' is not an IP address; skipped"));

  r = build({service("ml", "broken", {"10.96.0.300"}, {port("", 80)})}, {});
  EXPECT_TRUE(r.snapshot.services.empty());
  EXPECT_THAT(r.warnings,
              ElementsAre("Service ml/broken: spec.clusterIPs[0]: '10.96.0.300' is not an IP address; skipped",
                          "Service ml/broken: no usable cluster IP; skipped"));
}

TEST(KubeSnapshotTest, ServiceWithoutPortsIsWarned) {
  BuildResult r = build({service("ml", "portless", {"10.96.0.5"}, {})}, {});
  EXPECT_TRUE(r.snapshot.services.empty());
  EXPECT_THAT(r.warnings, ElementsAre("Service ml/portless: has no ports; skipped"));
}

TEST(KubeSnapshotTest, OneSnapshotServicePerPortNamedByPort) {
  ServiceObj single = service("ml", "single", {"10.96.0.1"}, {port("http", 8000)});
  ServiceObj multi =
      service("ml", "multi", {"10.96.0.2"}, {port("http", 8000), port("", 9000), port("dns", 53, Protocol::kUdp)});
  ServiceObj withSctp = service("ml", "sig", {"10.96.0.3"}, {port("http", 8000), sctpPort("diameter", 3868)});
  BuildResult r = build({single, multi, withSctp}, {});
  EXPECT_THAT(keysOf(r.snapshot),
              ElementsAre("ml/multi:9000", "ml/multi:dns", "ml/multi:http", "ml/sig:http", "ml/single"));
  const Service* dns = findService(r.snapshot, "ml/multi:dns");
  ASSERT_NE(dns, nullptr);
  EXPECT_EQ(dns->nameSpace, "ml");
  EXPECT_EQ(dns->ports, (std::vector<PortSpec>{{53, Protocol::kUdp}}));
  EXPECT_EQ(findService(r.snapshot, "ml/single")->ports, (std::vector<PortSpec>{{8000, Protocol::kTcp}}));
  EXPECT_THAT(r.warnings,
              ElementsAre("Service ml/sig: spec.ports[1] ('diameter', 3868/SCTP): SCTP is not supported; skipped"));
}

TEST(KubeSnapshotTest, SameNameTwiceKeepsTheFirst) {
  // Unnamed ports are invalid on a multi-port Service; if they come anyway
  // (53/TCP and 53/UDP), both would be called "dns:53".
  ServiceObj s =
      service("kube-system", "dns", {"10.96.0.10"}, {port("", 53, Protocol::kTcp), port("", 53, Protocol::kUdp)});
  BuildResult r = build({s}, {});
  ASSERT_EQ(r.snapshot.services.size(), 1u);
  EXPECT_EQ(r.snapshot.services[0].ports, (std::vector<PortSpec>{{53, Protocol::kTcp}}));
  EXPECT_THAT(r.warnings,
              ElementsAre("Service kube-system/dns:53: UDP port 53 has the same name as another port; skipped"));
}

TEST(KubeSnapshotTest, FrontendClaimedTwiceGoesToTheFirstByKey) {
  ServiceObj a = service("ml", "a", {"10.96.0.5", "fd00::5"}, {port("http", 8000)});
  ServiceObj b = service("ml", "b", {"10.96.0.5"}, {port("http", 8000)});
  ServiceObj c = service("ml", "c", {"fd00::5", "10.96.0.6"}, {port("http", 8000)});
  ServiceObj d = service("ml", "d", {"10.96.0.5"}, {port("http", 8000, Protocol::kUdp)});  // other protocol: fine
  BuildResult r = build({c, b, a, d}, {});
  EXPECT_THAT(keysOf(r.snapshot), ElementsAre("ml/a", "ml/c", "ml/d"));
  EXPECT_EQ(findService(r.snapshot, "ml/c")->vips, std::vector<IpAddr>{ip("10.96.0.6")});
  EXPECT_THAT(r.warnings, ElementsAre("Service ml/b: 10.96.0.5:8000/TCP is already used by Service ml/a; skipped",
                                      "Service ml/c: [fd00::5]:8000/TCP is already used by Service ml/a; skipped"));
}

TEST(KubeSnapshotTest, EndpointsComeFromSlicesOfTheSameServiceAndNamespace) {
  ServiceObj s = service("ml", "llama", {"10.96.0.5"}, {port("http", 8000)});
  std::vector<SlicePort> ports = {{"http", 8080, Protocol::kTcp}};
  BuildResult r = build({s}, {
                                 slice("ml", "llama-1", "llama", "IPv4", ports, {endpoint({"10.244.0.1"})}),
                                 slice("ml", "llama-2", "llama", "IPv4", ports, {endpoint({"10.244.0.2"})}),
                                 slice("other", "llama-3", "llama", "IPv4", ports, {endpoint({"10.244.0.3"})}),
                                 slice("ml", "mistral-1", "mistral", "IPv4", ports, {endpoint({"10.244.0.4"})}),
                                 slice("ml", "unlabelled", "", "IPv4", ports, {endpoint({"10.244.0.5"})}),
                             });
  ASSERT_EQ(r.snapshot.services.size(), 1u);
  EXPECT_THAT(r.snapshot.services[0].endpoints, ElementsAre(active("10.244.0.1", 8080), active("10.244.0.2", 8080)));
  EXPECT_TRUE(r.warnings.empty());
}

TEST(KubeSnapshotTest, SlicePortMatchedByNameAndProtocol) {
  ServiceObj s =
      service("ml", "llama", {"10.96.0.5"},
              {port("http", 8000), port("metrics", 9100), port("dns", 53, Protocol::kUdp), port("grpc", 9000)});
  BuildResult r = build(
      {s}, {
               slice("ml", "llama-a", "llama", "IPv4",
                     {{"http", 8080, Protocol::kTcp}, {"dns", 5353, Protocol::kTcp}, {"grpc", 0, Protocol::kTcp}},
                     {endpoint({"10.244.0.1"})}),
               // No "http" port in this slice: contributes to metrics only.
               slice("ml", "llama-b", "llama", "IPv4", {{"metrics", 9101, Protocol::kTcp}}, {endpoint({"10.244.0.2"})}),
           });
  EXPECT_THAT(findService(r.snapshot, "ml/llama:http")->endpoints, ElementsAre(active("10.244.0.1", 8080)));
  EXPECT_THAT(findService(r.snapshot, "ml/llama:metrics")->endpoints, ElementsAre(active("10.244.0.2", 9101)));
  // dns is UDP in the Service, TCP in the slice: no match.
  EXPECT_TRUE(findService(r.snapshot, "ml/llama:dns")->endpoints.empty());
  // A slice port without a number ("all ports") sends to the frontend port.
  EXPECT_THAT(findService(r.snapshot, "ml/llama:grpc")->endpoints, ElementsAre(active("10.244.0.1", 0)));

  // Unnamed on both sides.
  ServiceObj u = service("ml", "plain", {"10.96.0.6"}, {port("", 80)});
  r = build({u},
            {slice("ml", "plain-a", "plain", "IPv4", {{"", 8080, Protocol::kTcp}}, {endpoint({"10.244.0.9"})}),
             slice("ml", "plain-b", "plain", "IPv4", {{"web", 8081, Protocol::kTcp}}, {endpoint({"10.244.0.8"})})});
  EXPECT_THAT(r.snapshot.services.at(0).endpoints, ElementsAre(active("10.244.0.9", 8080)));
}

TEST(KubeSnapshotTest, ConditionsGiveStates) {
  struct Case {
    std::optional<bool> ready, serving, terminating;
    std::optional<EndpointState> want;  // nullopt: left out
  };
  const std::vector<Case> cases = {
      {std::nullopt, std::nullopt, std::nullopt, EndpointState::kActive},  // unknown = ready
      {true, true, false, EndpointState::kActive},
      {true, std::nullopt, std::nullopt, EndpointState::kActive},
      {std::nullopt, std::nullopt, true, EndpointState::kActive},  // ready wins; the API never sends this
      {false, true, true, EndpointState::kDraining},               // terminating, still serving
      {false, false, true, EndpointState::kDraining},              // terminating, not serving
      {false, std::nullopt, true, EndpointState::kDraining},
      {false, false, false, std::nullopt},  // not started yet
      {false, true, false, std::nullopt},
      {false, std::nullopt, std::nullopt, std::nullopt},
  };
  ServiceObj s = service("ml", "llama", {"10.96.0.5"}, {port("", 8000)});
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::Message() << "ready=" << (c.ready ? std::to_string(*c.ready) : "nil")
                                    << " serving=" << (c.serving ? std::to_string(*c.serving) : "nil")
                                    << " terminating=" << (c.terminating ? std::to_string(*c.terminating) : "nil"));
    BuildResult r = build({s}, {slice("ml", "llama-a", "llama", "IPv4", {{"", 8000, Protocol::kTcp}},
                                      {endpoint({"10.244.0.1"}, c.ready, c.serving, c.terminating)})});
    const auto& eps = r.snapshot.services.at(0).endpoints;
    if (c.want) {
      ASSERT_EQ(eps.size(), 1u);
      EXPECT_EQ(eps[0].state, *c.want);
      EXPECT_EQ(eps[0].weight, 1);
    } else {
      EXPECT_TRUE(eps.empty());
    }
  }
}

TEST(KubeSnapshotTest, EveryAddressIsAnEndpoint) {
  ServiceObj s = service("ml", "llama", {"10.96.0.5"}, {port("", 8000)});
  BuildResult r = build({s}, {slice("ml", "llama-a", "llama", "IPv4", {{"", 8000, Protocol::kTcp}},
                                    {endpoint({"10.244.0.3", "10.244.0.1"}), endpoint({"10.244.0.2"})})});
  EXPECT_THAT(r.snapshot.services.at(0).endpoints,
              ElementsAre(active("10.244.0.1", 8000), active("10.244.0.2", 8000), active("10.244.0.3", 8000)));
}

TEST(KubeSnapshotTest, DuplicateAcrossSlicesAppearsOnceActiveWins) {
  ServiceObj s = service("ml", "llama", {"10.96.0.5"}, {port("", 8000)});
  std::vector<SlicePort> ports = {{"", 8080, Protocol::kTcp}};
  SliceEndpoint term = endpoint({"10.244.0.1"}, false, true, true);
  SliceEndpoint ready = endpoint({"10.244.0.1"}, true, true, false);
  // Both orders of the slices: the active copy wins either way.
  for (bool activeFirst : {true, false}) {
    SCOPED_TRACE(activeFirst);
    BuildResult r = build({s}, {slice("ml", "llama-a", "llama", "IPv4", ports, {activeFirst ? ready : term}),
                                slice("ml", "llama-b", "llama", "IPv4", ports, {activeFirst ? term : ready})});
    EXPECT_THAT(r.snapshot.services.at(0).endpoints, ElementsAre(active("10.244.0.1", 8080)));
  }
  // Draining in both: one draining endpoint. Same address, other port: two.
  BuildResult r = build({s}, {slice("ml", "llama-a", "llama", "IPv4", ports, {term}),
                              slice("ml", "llama-b", "llama", "IPv4", ports, {term}),
                              slice("ml", "llama-c", "llama", "IPv4", {{"", 8081, Protocol::kTcp}}, {ready})});
  EXPECT_THAT(r.snapshot.services.at(0).endpoints,
              ElementsAre(draining("10.244.0.1", 8080), active("10.244.0.1", 8081)));
}

TEST(KubeSnapshotTest, UnusableSlicesAndAddressesAreWarnedOnce) {
  ServiceObj s = service("ml", "llama", {"10.96.0.5"}, {port("http", 8000), port("grpc", 9000)});
  std::vector<SlicePort> ports = {{"http", 8080, Protocol::kTcp}, {"grpc", 9090, Protocol::kTcp}};
  BuildResult r =
      build({s}, {
                     slice("ml", "llama-fqdn", "llama", "FQDN", ports, {endpoint({"llm.example.com"})}),
                     slice("ml", "llama-odd", "llama", "IPv5", ports, {endpoint({"10.244.0.9"})}),
                     slice("ml", "llama-v4", "llama", "IPv4", ports,
                           {endpoint({"10.244.0.1", "fd00::1"}), endpoint({"10.244.0.999"}), endpoint({"10.244.0.2"})}),
                     slice("ml", "llama-v6", "llama", "IPv6", ports, {endpoint({"10.244.0.3", "fd00::3"})}),
                 });
  EXPECT_THAT(findService(r.snapshot, "ml/llama:http")->endpoints,
              ElementsAre(active("10.244.0.1", 8080), active("10.244.0.2", 8080), active("fd00::3", 8080)));
  EXPECT_THAT(findService(r.snapshot, "ml/llama:grpc")->endpoints,
              ElementsAre(active("10.244.0.1", 9090), active("10.244.0.2", 9090), active("fd00::3", 9090)));
  // Once per slice, not once per port.
  EXPECT_THAT(
      r.warnings,
      ElementsAre("EndpointSlice ml/llama-fqdn: addressType FQDN is not supported (only IPv4 and IPv6); skipped",
                  "EndpointSlice ml/llama-odd: addressType IPv5 is not supported (only IPv4 and IPv6); skipped",
                  "EndpointSlice ml/llama-v4: endpoints[0].addresses[1]: 'fd00::1' is not an IPv4 address; skipped",
                  "EndpointSlice ml/llama-v4: endpoints[1].addresses[0]: '10.244.0.999' is not an IPv4 address; "
                  "skipped",
                  "EndpointSlice ml/llama-v6: endpoints[0].addresses[0]: '10.244.0.3' is not an IPv6 address; "
                  "skipped"));

  // Slices of Services that are not built are not looked at.
  ServiceObj headless = service("ml", "llama", {"None"}, {port("http", 8000)});
  r = build({headless}, {slice("ml", "llama-fqdn", "llama", "FQDN", ports, {endpoint({"llm.example.com"})})});
  EXPECT_TRUE(r.warnings.empty());
}

ServiceObj annotated(std::map<std::string, std::string> annotations) {
  ServiceObj s = service("ml", "llama", {"10.96.0.5"}, {port("", 8000)});
  s.meta.annotations = std::move(annotations);
  return s;
}

TEST(KubeSnapshotTest, AnnotationsSetServiceFields) {
  BuildResult r = build({annotated({{"aimesh.io/lb-algorithm", "maglev"},
                                    {"aimesh.io/model", "mistral-7b"},
                                    {"aimesh.io/model-metrics-port", "9400"},
                                    {"aimesh.io/model-metrics-path", "/v1/metrics"},
                                    {"aimesh.io/hash-table-size", "65521"},
                                    {"prometheus.io/scrape", "true"}})},
                        {});
  ASSERT_TRUE(r.warnings.empty()) << r.warnings.front();
  const Service& s = r.snapshot.services.at(0);
  EXPECT_EQ(s.algorithm, Algorithm::kMaglev);
  EXPECT_EQ(s.model, "mistral-7b");
  EXPECT_EQ(s.modelMetrics, (ModelMetricsSpec{9400, "/v1/metrics"}));
  EXPECT_EQ(s.hashTableSize, 65521u);
  EXPECT_EQ(s.balancePct, kDefaultBalancePct);

  for (const char* algo : {"random", "maglev", "least_conn", "latency", "bounded_hash"}) {
    r = build({annotated({{"aimesh.io/lb-algorithm", algo}})}, {});
    EXPECT_EQ(toString(r.snapshot.services.at(0).algorithm), std::string(algo));
  }

  r = build({annotated({{"aimesh.io/model-metrics-port", "8000"}})}, {});
  EXPECT_EQ(r.snapshot.services.at(0).modelMetrics, (ModelMetricsSpec{8000, "/metrics"}));
  EXPECT_TRUE(r.warnings.empty());

  r = build({annotated({})}, {});
  const Service& plain = r.snapshot.services.at(0);
  EXPECT_EQ(plain.algorithm, Algorithm::kRandom);
  EXPECT_EQ(plain.model, "");
  EXPECT_EQ(plain.modelMetrics, std::nullopt);
  EXPECT_EQ(plain.hashTableSize, kDefaultHashTableSize);
}

TEST(KubeSnapshotTest, BadAnnotationsWarnAndKeepDefaults) {
  struct Case {
    std::map<std::string, std::string> annotations;
    std::string warning;
  };
  const std::string who = "Service ml/llama: annotation ";
  const std::vector<Case> cases = {
      {{{"aimesh.io/lb-algorithm", "Maglev "}},
       who + "aimesh.io/lb-algorithm: must be one of random, maglev, least_conn, latency, bounded_hash, got 'Maglev '; "
             "using random"},
      {{{"aimesh.io/hash-table-size", "16384"}},
       who + "aimesh.io/hash-table-size: must be a prime (Maglev needs one), got 16384; e.g. 16381, 32749 or 65521; "
             "using 16381"},
      {{{"aimesh.io/hash-table-size", "3"}}, who + "aimesh.io/hash-table-size: must be 7..65521, got 3; using 16381"},
      {{{"aimesh.io/hash-table-size", "70001"}},
       who + "aimesh.io/hash-table-size: must be 7..65521, got 70001; using 16381"},
      {{{"aimesh.io/hash-table-size", "-5"}},
       who + "aimesh.io/hash-table-size: must be an integer 7..65521, got '-5'; using 16381"},
      {{{"aimesh.io/hash-table-size", "99999999999999999999"}},
       who + "aimesh.io/hash-table-size: must be an integer 7..65521, got '99999999999999999999'; using 16381"},
      {{{"aimesh.io/model-metrics-port", "http"}},
       who + "aimesh.io/model-metrics-port: must be an integer 1..65535, got 'http'; model metrics not scraped"},
      {{{"aimesh.io/model-metrics-port", "0"}},
       who + "aimesh.io/model-metrics-port: must be 1..65535, got 0; model metrics not scraped"},
      {{{"aimesh.io/model-metrics-port", "65536"}},
       who + "aimesh.io/model-metrics-port: must be 1..65535, got 65536; model metrics not scraped"},
      {{{"aimesh.io/model-metrics-path", "/metrics"}},
       who + "aimesh.io/model-metrics-path: is set without aimesh.io/model-metrics-port; model metrics not scraped"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.warning);
    BuildResult r = build({annotated(c.annotations)}, {});
    ASSERT_EQ(r.snapshot.services.size(), 1u);
    const Service& s = r.snapshot.services[0];
    EXPECT_EQ(s.algorithm, Algorithm::kRandom);
    EXPECT_EQ(s.hashTableSize, kDefaultHashTableSize);
    EXPECT_EQ(s.modelMetrics, std::nullopt);
    EXPECT_THAT(r.warnings, ElementsAre(c.warning));
  }

  // A bad path keeps scraping, at the default path.
  BuildResult r =
      build({annotated({{"aimesh.io/model-metrics-port", "8000"}, {"aimesh.io/model-metrics-path", "metrics"}})}, {});
  EXPECT_EQ(r.snapshot.services.at(0).modelMetrics, (ModelMetricsSpec{8000, "/metrics"}));
  EXPECT_THAT(r.warnings, ElementsAre(who + "aimesh.io/model-metrics-path: must start with '/' and hold no spaces, got "
                                            "'metrics'; using /metrics"));
}

TEST(KubeSnapshotTest, AnnotationWarningsComeOncePerServiceNotPerPort) {
  ServiceObj s = service("ml", "llama", {"10.96.0.5"}, {port("http", 8000), port("grpc", 9000)});
  s.meta.annotations = {{"aimesh.io/lb-algorithm", "fastest"}, {"aimesh.io/model", "llama-3"}};
  BuildResult r = build({s}, {});
  ASSERT_EQ(r.snapshot.services.size(), 2u);
  EXPECT_EQ(r.warnings.size(), 1u);
  for (const Service& out : r.snapshot.services) EXPECT_EQ(out.model, "llama-3");
}

TEST(KubeConnectionsTest, AnnotationsSetTheConnectionPolicy) {
  BuildResult r = build({annotated({{"aimesh.io/lb-algorithm", "least_conn"},
                                    {"aimesh.io/rebalance", "false"},
                                    {"aimesh.io/rebalance-rate", "0.5"},
                                    {"aimesh.io/max-connection-age", "10m"},
                                    {"aimesh.io/max-requests-per-connection", "1000"},
                                    {"aimesh.io/drain-timeout", "90"}})},
                        {});
  ASSERT_TRUE(r.warnings.empty()) << r.warnings.front();
  ConnectionPolicy want;
  want.rebalance = false;
  want.rebalanceRate = 0.5;
  want.maxAgeMs = 600'000;
  want.maxRequests = 1000;
  want.drainTimeoutMs = 90'000;
  EXPECT_EQ(r.snapshot.services.at(0).connections, want);

  // Without annotations: the defaults, re-balancing left to the algorithm.
  r = build({annotated({})}, {});
  EXPECT_EQ(r.snapshot.services.at(0).connections, ConnectionPolicy{});
  EXPECT_EQ(r.snapshot.services.at(0).connections.rebalance, std::nullopt);

  r = build({annotated({{kRebalanceAnnotation, "true"}, {kMaxRequestsAnnotation, "4294967295"},
                        {kRebalanceRateAnnotation, "1000"}, {kDrainTimeoutAnnotation, "0"},
                        {kMaxConnectionAgeAnnotation, "720h"}})},
            {});
  ASSERT_TRUE(r.warnings.empty()) << r.warnings.front();
  const ConnectionPolicy& max = r.snapshot.services.at(0).connections;
  EXPECT_EQ(max.rebalance, std::optional<bool>(true));
  EXPECT_EQ(max.maxRequests, 4294967295u);
  EXPECT_EQ(max.rebalanceRate, 1000);
  EXPECT_EQ(max.drainTimeoutMs, 0u);
  EXPECT_EQ(max.maxAgeMs, 30ull * 24 * 3600 * 1000);
}

TEST(KubeConnectionsTest, TelemetrySampleAnnotation) {
  BuildResult r = build({annotated({{kTelemetrySampleAnnotation, "0.25"}})}, {});
  ASSERT_TRUE(r.warnings.empty()) << r.warnings.front();
  EXPECT_EQ(r.snapshot.services.at(0).telemetrySample, 0.25);
  r = build({annotated({{kTelemetrySampleAnnotation, "25%"}})}, {});
  EXPECT_EQ(r.snapshot.services.at(0).telemetrySample, 1.0);
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_EQ(r.warnings[0],
            "Service ml/llama: annotation aimesh.io/telemetry-sample: must be a number > 0 and <= 1, got '25%'; "
            "using 1");
}

TEST(KubeConnectionsTest, DurationAnnotationForms) {
  const std::vector<std::pair<std::string, uint64_t>> cases = {
      {"90", 90'000}, {"1.5", 1'500}, {"500ms", 500}, {"30s", 30'000}, {"10m", 600'000}, {"1h", 3'600'000},
      {"1.5h", 5'400'000}, {"0", 0}};
  for (const auto& [text, ms] : cases) {
    SCOPED_TRACE(text);
    BuildResult r = build({annotated({{kMaxConnectionAgeAnnotation, text}, {kDrainTimeoutAnnotation, text}})}, {});
    EXPECT_TRUE(r.warnings.empty());
    EXPECT_EQ(r.snapshot.services.at(0).connections.maxAgeMs, ms);
    EXPECT_EQ(r.snapshot.services.at(0).connections.drainTimeoutMs, ms);
  }
}

TEST(KubeConnectionsTest, BadAnnotationsWarnAndKeepDefaults) {
  struct Case {
    std::map<std::string, std::string> annotations;
    std::string warning;
  };
  const std::string who = "Service ml/llama: annotation ";
  const std::vector<Case> cases = {
      {{{"aimesh.io/rebalance", "yes"}},
       who + "aimesh.io/rebalance: must be true or false, got 'yes'; using the default for random (off)"},
      {{{"aimesh.io/rebalance", "1"}, {"aimesh.io/lb-algorithm", "latency"}},
       who + "aimesh.io/rebalance: must be true or false, got '1'; using the default for latency (on)"},
      {{{"aimesh.io/rebalance-rate", "0"}}, who + "aimesh.io/rebalance-rate: must be > 0 and <= 1000, got 0; using 4"},
      {{{"aimesh.io/rebalance-rate", "5000"}},
       who + "aimesh.io/rebalance-rate: must be > 0 and <= 1000, got 5000; using 4"},
      {{{"aimesh.io/rebalance-rate", "4/s"}},
       who + "aimesh.io/rebalance-rate: must be a number > 0 and <= 1000, got '4/s'; using 4"},
      {{{"aimesh.io/max-connection-age", "10 minutes"}},
       who + "aimesh.io/max-connection-age: must be a duration like 90, 1.5, 500ms, 30s, 10m or 1h, got "
             "'10 minutes'; using 0"},
      {{{"aimesh.io/max-connection-age", "-10m"}},
       who + "aimesh.io/max-connection-age: must not be negative, got '-10m'; using 0"},
      {{{"aimesh.io/max-connection-age", "NaN"}},
       who + "aimesh.io/max-connection-age: must be a duration like 90, 1.5, 500ms, 30s, 10m or 1h, got 'NaN'; "
             "using 0"},
      {{{"aimesh.io/max-connection-age", "1d"}},
       who + "aimesh.io/max-connection-age: unknown unit 'd' in '1d'; use ms, s, m or h; using 0"},
      {{{"aimesh.io/max-connection-age", "1000h"}},
       who + "aimesh.io/max-connection-age: must be at most 720h (30 days), got '1000h'; using 0"},
      {{{"aimesh.io/max-requests-per-connection", "-1"}},
       who + "aimesh.io/max-requests-per-connection: must be 0..4294967295, got -1; using 0"},
      {{{"aimesh.io/max-requests-per-connection", "4294967296"}},
       who + "aimesh.io/max-requests-per-connection: must be 0..4294967295, got 4294967296; using 0"},
      {{{"aimesh.io/max-requests-per-connection", "1k"}},
       who + "aimesh.io/max-requests-per-connection: must be an integer 0..4294967295, got '1k'; using 0"},
      {{{"aimesh.io/drain-timeout", "5 m"}},
       who + "aimesh.io/drain-timeout: must be a duration like 90, 1.5, 500ms, 30s, 10m or 1h, got '5 m'; using 5m"},
      {{{"aimesh.io/drain-timeout", "0.1ms"}},
       who + "aimesh.io/drain-timeout: must be 0 or at least 1ms, got '0.1ms'; using 5m"},
      {{{"aimesh.io/drain-timeout", ""}},
       who + "aimesh.io/drain-timeout: must be a duration like 90, 1.5, 500ms, 30s, 10m or 1h, got ''; using 5m"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.warning);
    BuildResult r = build({annotated(c.annotations)}, {});
    ASSERT_EQ(r.snapshot.services.size(), 1u);
    EXPECT_EQ(r.snapshot.services[0].connections, ConnectionPolicy{});
    EXPECT_THAT(r.warnings, ElementsAre(c.warning));
  }

  // One bad annotation does not throw away the good ones beside it.
  BuildResult r =
      build({annotated({{kMaxConnectionAgeAnnotation, "10m"}, {kDrainTimeoutAnnotation, "forever"}})}, {});
  EXPECT_EQ(r.snapshot.services.at(0).connections.maxAgeMs, 600'000u);
  EXPECT_EQ(r.snapshot.services.at(0).connections.drainTimeoutMs, kDefaultDrainTimeoutMs);
  EXPECT_EQ(r.warnings.size(), 1u);
}

TEST(KubeConnectionsTest, EveryPortGetsThePolicyWarnedOnce) {
  ServiceObj s = service("ml", "llama", {"10.96.0.5"}, {port("http", 8000), port("grpc", 9000)});
  s.meta.annotations = {{kMaxRequestsAnnotation, "100"}, {kRebalanceRateAnnotation, "fast"}};
  BuildResult r = build({s}, {});
  ASSERT_EQ(r.snapshot.services.size(), 2u);
  EXPECT_EQ(r.warnings.size(), 1u);
  for (const Service& out : r.snapshot.services) {
    EXPECT_EQ(out.connections.maxRequests, 100u);
    EXPECT_EQ(out.connections.rebalanceRate, kDefaultRebalanceRate);
  }
}

TEST(KubeSnapshotTest, OutputIsSortedAndIndependentOfInputOrder) {
  BuildResult a = buildSnapshot(fixtureServices(), fixtureSlices());
  ASSERT_FALSE(a.snapshot.services.empty());
  EXPECT_TRUE(std::is_sorted(a.snapshot.services.begin(), a.snapshot.services.end(),
                             [](const Service& x, const Service& y) { return x.key() < y.key(); }));
  for (const Service& s : a.snapshot.services) {
    EXPECT_TRUE(std::is_sorted(s.endpoints.begin(), s.endpoints.end(), [](const Endpoint& x, const Endpoint& y) {
      return std::tie(x.address, x.port) < std::tie(y.address, y.port);
    })) << s.key();
  }

  // The same objects with everything that has an order reversed: map
  // insertion order, slice names (so the slices' map order flips), the
  // endpoints within each slice and the addresses within each endpoint.
  auto services = fixtureServices();
  auto slices = fixtureSlices();
  std::map<std::string, ServiceObj> services2;
  for (auto it = services.rbegin(); it != services.rend(); ++it) services2.insert(*it);
  std::map<std::string, EndpointSliceObj> slices2;
  int n = 0;
  for (auto it = slices.rbegin(); it != slices.rend(); ++it) {
    EndpointSliceObj s = it->second;
    s.meta.name = "renamed-" + std::to_string(n++);
    std::reverse(s.endpoints.begin(), s.endpoints.end());
    for (auto& ep : s.endpoints) std::reverse(ep.addresses.begin(), ep.addresses.end());
    std::reverse(s.ports.begin(), s.ports.end());
    slices2.emplace(s.meta.key(), s);
  }
  BuildResult b = buildSnapshot(services2, slices2);
  EXPECT_EQ(a.snapshot, b.snapshot);

  // And the same input twice gives the same warnings too.
  BuildResult c = buildSnapshot(fixtureServices(), fixtureSlices());
  EXPECT_EQ(a.snapshot, c.snapshot);
  EXPECT_EQ(a.warnings, c.warnings);
}

TEST(KubeSnapshotTest, OddObjectsNeverThrow) {
  std::map<std::string, ServiceObj> services;
  services["a"] = ServiceObj{};                                   // nothing set at all
  services["b"] = service("", "", {"10.96.0.1"}, {port("", 0)});  // empty names, port 0
  std::map<std::string, EndpointSliceObj> slices;
  slices["c"] = EndpointSliceObj{};
  slices["d"] = slice("", "", "", "IPv4", {{"", 0, Protocol::kTcp}}, {endpoint({"", "::"})});
  EXPECT_NO_THROW((void)buildSnapshot(services, slices));
  EXPECT_NO_THROW((void)buildSnapshot({}, {}));
  EXPECT_TRUE(buildSnapshot({}, {}).snapshot.services.empty());
}

// ---- Pods and workload policies ---------------------------------------------

namespace policy {

json podJson(const std::string& ns, const std::string& name, const std::string& uid, json labels,
             const std::string& phase = "Running") {
  return json{{"kind", "Pod"},
              {"metadata",
               {{"name", name},
                {"namespace", ns},
                {"uid", uid},
                {"labels", labels},
                {"annotations", {{"kubectl.kubernetes.io/last-applied-configuration", std::string(4096, 'x')}}}}},
              {"spec", {{"nodeName", "node-1"}, {"containers", json::array()}}},
              {"status", {{"phase", phase}, {"qosClass", "BestEffort"}}}};
}

PodObj pod(const std::string& ns, const std::string& name, std::map<std::string, std::string> labels,
           const std::string& phase = "Running") {
  PodObj p;
  p.meta.name = name;
  p.meta.nameSpace = ns;
  p.meta.uid = "uid-" + ns + "-" + name;
  p.meta.labels = std::move(labels);
  p.nodeName = "node-1";
  p.phase = phase;
  return p;
}

BuildResult buildWith(std::vector<ServiceObj> services, const std::vector<PodObj>* pods) {
  std::map<std::string, ServiceObj> sm;
  for (auto& s : services) sm.emplace(s.meta.key(), s);
  std::map<std::string, PodObj> pm;
  if (pods)
    for (auto& p : *pods) pm.emplace(p.meta.key(), p);
  return buildSnapshot(sm, {}, pods ? &pm : nullptr);
}

ServiceObj guarded(std::map<std::string, std::string> annotations) {
  ServiceObj s = service("ml", "llama", {"10.96.0.20"}, {port("http", 8000), port("grpc", 9000)});
  s.meta.annotations = std::move(annotations);
  return s;
}

std::vector<std::string> podNames(const Service& s) {
  std::vector<std::string> out;
  for (auto& p : s.policy->allowPods) out.push_back(p.name + "=" + p.uid);
  return out;
}

TEST(KubeDecodeTest, PodKeepsWhoItIsWhereItRunsAndItsPhaseOnly) {
  auto p = decodePod(podJson("ml", "client-0", "5f1c7b3e-0000-4000-8000-000000000001", {{"app", "client"}}));
  ASSERT_TRUE(p.ok()) << p.error().message();
  EXPECT_EQ(p->meta.key(), "ml/client-0");
  EXPECT_EQ(p->meta.uid, "5f1c7b3e-0000-4000-8000-000000000001");
  EXPECT_EQ(p->meta.labels, (std::map<std::string, std::string>{{"app", "client"}}));
  EXPECT_TRUE(p->meta.annotations.empty());  // not kept: large and unused
  EXPECT_EQ(p->nodeName, "node-1");
  EXPECT_EQ(p->phase, "Running");
  EXPECT_FALSE(p->finished());
  for (const char* phase : {"Succeeded", "Failed"}) {
    auto done = decodePod(podJson("ml", "job", "u", json::object(), phase));
    ASSERT_TRUE(done.ok());
    EXPECT_TRUE(done->finished()) << phase;
  }
  // Not scheduled yet, no status: fine.
  auto bare = decodePod(json{{"metadata", {{"name", "x"}, {"namespace", "ml"}, {"uid", "u"}}}});
  ASSERT_TRUE(bare.ok()) << bare.error().message();
  EXPECT_EQ(bare->nodeName, "");
  EXPECT_EQ(bare->phase, "");
}

TEST(KubeDecodeTest, WrongPodFieldsAreNamed) {
  auto noUid = decodePod(json{{"metadata", {{"name", "x"}, {"namespace", "ml"}}}});
  ASSERT_FALSE(noUid.ok());
  EXPECT_EQ(noUid.error().message(), "Pod ml/x: metadata.uid: required field is missing");
  json badNode = podJson("ml", "x", "u", json::object());
  badNode["spec"]["nodeName"] = 7;
  ASSERT_FALSE(decodePod(badNode).ok());
  EXPECT_THAT(decodePod(badNode).error().message(), HasSubstr("spec.nodeName: must be a string, got 7"));
  json badPhase = podJson("ml", "x", "u", json::object());
  badPhase["status"] = "Running";
  EXPECT_THAT(decodePod(badPhase).error().message(), HasSubstr("status: must be an object"));
  json kind = podJson("ml", "x", "u", json::object());
  kind["kind"] = "Service";
  EXPECT_THAT(decodePod(kind).error().message(), HasSubstr("kind: must be Pod, got 'Service'"));
  json labels = podJson("ml", "x", "u", json::object());
  labels["metadata"]["labels"] = {{"app", 1}};
  EXPECT_THAT(decodePod(labels).error().message(), HasSubstr("metadata.labels[app]"));
}

TEST(KubePolicyTest, NoAnnotationNoPolicy) {
  std::vector<PodObj> pods{pod("ml", "client-0", {{"app", "client"}})};
  BuildResult r = buildWith({guarded({})}, &pods);
  ASSERT_EQ(r.snapshot.services.size(), 2u);
  for (auto& s : r.snapshot.services) EXPECT_FALSE(s.policy.has_value()) << s.key();
  EXPECT_TRUE(r.warnings.empty());
}

TEST(KubePolicyTest, SelectorPicksRunningPodsOfTheServicesNamespaceForEveryPort) {
  std::vector<PodObj> pods{pod("ml", "client-1", {{"app", "client"}, {"tier", "gold"}}),
                           pod("ml", "client-0", {{"app", "client"}}),
                           pod("ml", "other", {{"app", "web"}}),
                           pod("ml", "done", {{"app", "client"}}, "Succeeded"),
                           pod("ml", "failed", {{"app", "client"}}, "Failed"),
                           pod("ml", "pending", {{"app", "client"}}, "Pending"),
                           pod("other-ns", "client-9", {{"app", "client"}})};
  BuildResult r = buildWith({guarded({{kAllowPodsAnnotation, "app=client"}})}, &pods);
  EXPECT_TRUE(r.warnings.empty()) << r.warnings[0];
  ASSERT_EQ(r.snapshot.services.size(), 2u);
  for (auto& s : r.snapshot.services) {
    ASSERT_TRUE(s.policy.has_value()) << s.key();
    EXPECT_THAT(podNames(s), ElementsAre("ml/client-0=uid-ml-client-0", "ml/client-1=uid-ml-client-1",
                                         "ml/pending=uid-ml-pending"));
    EXPECT_EQ(s.policy->podSelector, "app=client in ml");
    EXPECT_TRUE(s.policy->allowCgroups.empty());
  }
  // Set-based selectors work too.
  BuildResult gold = buildWith({guarded({{kAllowPodsAnnotation, "app in (client), tier notin (silver)"}})}, &pods);
  EXPECT_THAT(podNames(gold.snapshot.services[0]), ElementsAre("ml/client-0=uid-ml-client-0",
                                                               "ml/client-1=uid-ml-client-1",
                                                               "ml/pending=uid-ml-pending"));
  BuildResult none = buildWith({guarded({{kAllowPodsAnnotation, "app=nobody"}})}, &pods);
  ASSERT_TRUE(none.snapshot.services[0].policy.has_value());
  EXPECT_TRUE(none.snapshot.services[0].policy->allowPods.empty());  // a policy that allows nobody
}

TEST(KubePolicyTest, NamespacesAnnotationWidensOrMovesWhereThePodsAre) {
  std::vector<PodObj> pods{pod("ml", "client-0", {{"app", "client"}}), pod("gw", "gateway", {{"app", "client"}}),
                           pod("gw", "web", {{"app", "web"}}), pod("batch", "job", {{"app", "client"}})};
  BuildResult two = buildWith({guarded({{kAllowPodsAnnotation, "app=client"},
                                        {kAllowNamespacesAnnotation, " gw , ml,gw"}})},
                              &pods);
  EXPECT_THAT(podNames(two.snapshot.services[0]), ElementsAre("gw/gateway=uid-gw-gateway", "ml/client-0=uid-ml-client-0"));
  EXPECT_EQ(two.snapshot.services[0].policy->podSelector, "app=client in gw,ml");
  // Namespaces alone: every pod there.
  BuildResult all = buildWith({guarded({{kAllowNamespacesAnnotation, "gw"}})}, &pods);
  EXPECT_THAT(podNames(all.snapshot.services[0]), ElementsAre("gw/gateway=uid-gw-gateway", "gw/web=uid-gw-web"));
  EXPECT_EQ(all.snapshot.services[0].policy->podSelector, "every pod in gw");
  // '*': every namespace.
  BuildResult any = buildWith({guarded({{kAllowPodsAnnotation, "app=client"}, {kAllowNamespacesAnnotation, "*"}})},
                              &pods);
  EXPECT_THAT(podNames(any.snapshot.services[0]),
              ElementsAre("batch/job=uid-batch-job", "gw/gateway=uid-gw-gateway", "ml/client-0=uid-ml-client-0"));
  EXPECT_EQ(any.snapshot.services[0].policy->podSelector, "app=client in every namespace");
}

TEST(KubePolicyTest, WhatCannotBeReadAllowsNobodyWithAWarning) {
  std::vector<PodObj> pods{pod("ml", "client-0", {{"app", "client"}})};
  struct Case {
    std::map<std::string, std::string> annotations;
    std::vector<PodObj>* pods;
    std::string warning;
  } cases[] = {
      {{{kAllowPodsAnnotation, "app in (client"}}, &pods,
       "Service ml/llama: annotation aimesh.io/allow-pods: label selector \"app in (client\""},
      {{{kAllowPodsAnnotation, "app=client"}, {kAllowNamespacesAnnotation, "ml,Bad_NS"}}, &pods,
       "Service ml/llama: annotation aimesh.io/allow-namespaces: 'Bad_NS' is not a namespace name (nor '*'); the "
       "policy allows nobody"},
      {{{kAllowNamespacesAnnotation, "ml,"}}, &pods, "annotation aimesh.io/allow-namespaces: '' is not a namespace"},
      {{{kAllowPodsAnnotation, "app=client"}}, nullptr,
       "Service ml/llama: has a workload policy, but the agent does not watch the pods of its node (no "
       "--node-name); the policy allows nobody"},
  };
  for (auto& c : cases) {
    BuildResult r = buildWith({guarded(c.annotations)}, c.pods);
    ASSERT_EQ(r.snapshot.services.size(), 2u);
    for (auto& s : r.snapshot.services) {
      ASSERT_TRUE(s.policy.has_value()) << c.warning;
      EXPECT_TRUE(s.policy->allowPods.empty()) << c.warning;
      EXPECT_THAT(s.policy->podSelector, HasSubstr("(not in force: allows nobody)"));
    }
    ASSERT_EQ(r.warnings.size(), 1u) << c.warning;  // once per Service, not per port
    EXPECT_THAT(r.warnings[0], HasSubstr(c.warning));
  }
}

}  // namespace policy


// ---- SnapshotCache: the incremental build against buildSnapshot ------------

namespace cache {

// A random cluster that changes one object at a time; every change is told
// to the cache the way KubeSource tells it (before the store changes).
class Churn {
 public:
  explicit Churn(uint32_t seed) : rng_(seed) {}

  void step() {
    switch (pick(9)) {
      case 0: case 1: upsertService(); break;
      case 2: eraseOne(services_, [&](auto& k, auto&) { cache_.serviceChanged(k); }); break;
      case 3: case 4: case 5: upsertSlice(); break;
      case 6: eraseOne(slices_, [&](auto& k, auto& v) { cache_.sliceChanged(k, &v, nullptr); }); break;
      case 7: upsertPod(); break;
      default:
        if (pick(4) == 0) {
          withPods_ = !withPods_;
        } else {
          cache_.reset();  // a relist
        }
        break;
    }
  }

  void expectSame(int round) {
    const std::map<std::string, PodObj>* pods = withPods_ ? &pods_ : nullptr;
    BuildResult want = buildSnapshot(services_, slices_, pods);
    BuildResult got = cache_.build(services_, slices_, pods);
    ASSERT_EQ(keysOf(got.snapshot), keysOf(want.snapshot)) << "round " << round;
    ASSERT_TRUE(got.snapshot == want.snapshot) << "round " << round;
    ASSERT_EQ(got.warnings, want.warnings) << "round " << round;
  }
  size_t patched() const { return cache_.patched(); }

 private:
  int pick(int n) { return std::uniform_int_distribution<>(0, n - 1)(rng_); }
  std::string ns() { return pick(2) ? "a" : "b"; }
  std::string svcName() { return "svc" + std::to_string(pick(8)); }

  void upsertService() {
    ServiceObj s = service(ns(), svcName(), {"10.96.0." + std::to_string(1 + pick(6))}, {port("http", 8000)});
    if (pick(3) == 0) s.ports.push_back(port(pick(4) ? "grpc" : "http", 9000));  // now and then a duplicate name
    if (pick(8) == 0) s.clusterIPs = {"None"};
    if (pick(4) == 0) s.meta.annotations[kAllowPodsAnnotation] = "app=c";
    std::string key = s.meta.key();
    auto it = services_.find(key);
    if (it != services_.end() && it->second == s) return;
    cache_.serviceChanged(key);
    services_[key] = std::move(s);
  }

  void upsertSlice() {
    std::string n = ns(), key = n + "/slice" + std::to_string(pick(12));
    std::vector<SliceEndpoint> eps;
    for (int i = pick(4); i > 0; --i)
      eps.push_back(endpoint({"10.1.0." + std::to_string(1 + pick(20))}, pick(3) ? std::optional(true) : std::nullopt,
                             std::nullopt, pick(5) == 0 ? std::optional(true) : std::nullopt));
    EndpointSliceObj sl = slice(n, key.substr(n.size() + 1), pick(10) ? svcName() : "", "IPv4",
                                {SlicePort{pick(2) ? "http" : "grpc", static_cast<uint16_t>(8000 + pick(2)),
                                           Protocol::kTcp}},
                                std::move(eps));
    auto it = slices_.find(key);
    if (it != slices_.end() && it->second == sl) return;
    cache_.sliceChanged(key, it == slices_.end() ? nullptr : &it->second, &sl);
    slices_[key] = std::move(sl);
  }

  void upsertPod() {
    std::string n = ns(), name = "p" + std::to_string(pick(4));
    PodObj p;
    p.meta.name = name;
    p.meta.nameSpace = n;
    p.meta.uid = "uid-" + n + "-" + name;
    p.meta.labels = {{"app", pick(2) ? "c" : "d"}};
    p.phase = pick(4) ? "Running" : "Succeeded";
    cache_.podsChanged();
    if (pick(5) == 0) pods_.erase(p.meta.key());
    else pods_[p.meta.key()] = std::move(p);
  }

  template <class Map, class Tell>
  void eraseOne(Map& m, Tell tell) {
    if (m.empty()) return;
    auto it = std::next(m.begin(), pick(static_cast<int>(m.size())));
    tell(it->first, it->second);
    m.erase(it);
  }

  std::mt19937 rng_;
  std::map<std::string, ServiceObj> services_;
  std::map<std::string, EndpointSliceObj> slices_;
  std::map<std::string, PodObj> pods_;
  bool withPods_ = true;
  SnapshotCache cache_;
};

TEST(KubeSnapshotCacheTest, BuildsWhatBuildSnapshotBuildsUnderRandomChurn) {
  for (uint32_t seed : {1u, 2u, 3u, 4u}) {
    Churn churn(seed);
    for (int round = 0; round < 1500; ++round) {
      churn.step();
      // Several changes between two builds, as a burst of events gives.
      if (round % 3 == 0) {
        ASSERT_NO_FATAL_FAILURE(churn.expectSame(round)) << "seed " << seed;
      }
    }
    // The short way (the last result patched) was taken now and then (this
    // churn makes conflicts on purpose), and gave the same.
    EXPECT_GE(churn.patched(), 3u) << "seed " << seed;
  }
}

}  // namespace cache

// ---- Service fields beyond ports, and the agent's mapping options -----------

namespace fields {

BuildResult buildOpts(const std::vector<ServiceObj>& services, const std::vector<EndpointSliceObj>& slices,
                      const MappingOptions& opts) {
  std::map<std::string, ServiceObj> sm;
  for (const auto& s : services) sm.emplace(s.meta.key(), s);
  std::map<std::string, EndpointSliceObj> em;
  for (const auto& s : slices) em.emplace(s.meta.key(), s);
  return buildSnapshot(sm, em, nullptr, opts);
}

SliceEndpoint on(const std::string& addr, const std::string& node) {
  SliceEndpoint e = endpoint({addr});
  e.nodeName = node;
  return e;
}

std::vector<EndpointSliceObj> twoNodes() {
  return {slice("ml", "llama-a", "llama", "IPv4", {{"", 8000, Protocol::kTcp}},
                {on("10.244.0.1", "n1"), on("10.244.1.1", "n2"), on("10.244.0.2", "n1")})};
}

TEST(KubeDecodeTest, TrafficPolicyAffinityAndTargetRefAreRead) {
  json svc = minimalService();
  auto plain = decodeService(svc);
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->internalTrafficPolicy, "Cluster");
  EXPECT_EQ(plain->sessionAffinity, "None");
  svc["spec"]["internalTrafficPolicy"] = "Local";
  svc["spec"]["sessionAffinity"] = "ClientIP";
  auto set = decodeService(svc);
  ASSERT_TRUE(set.ok());
  EXPECT_EQ(set->internalTrafficPolicy, "Local");
  EXPECT_EQ(set->sessionAffinity, "ClientIP");
  svc["spec"]["sessionAffinity"] = 3;
  auto bad = decodeService(svc);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.error().message(), HasSubstr("spec.sessionAffinity"));

  json sl = minimalSlice();
  sl["endpoints"][0]["targetRef"] = {{"kind", "Pod"}, {"name", "llama-7d9f-x2"}, {"namespace", "ml"}};
  sl["endpoints"].push_back({{"addresses", {"10.244.0.8"}}, {"targetRef", {{"kind", "Node"}, {"name", "n1"}}}});
  auto e = decodeEndpointSlice(sl);
  ASSERT_TRUE(e.ok()) << e.error().message();
  EXPECT_EQ(e->endpoints.at(0).pod, "llama-7d9f-x2");
  EXPECT_EQ(e->endpoints.at(1).pod, "");  // not a Pod
  sl["endpoints"][0]["targetRef"]["name"] = 7;
  auto badRef = decodeEndpointSlice(sl);
  ASSERT_FALSE(badRef.ok());
  EXPECT_THAT(badRef.error().message(), HasSubstr("endpoints[0].targetRef.name"));
}

TEST(KubeSnapshotTest, EndpointsCarryTheirPod) {
  SliceEndpoint a = endpoint({"10.244.0.1"}), b = endpoint({"10.244.0.2"});
  a.pod = "llama-0";
  BuildResult r = build({service("ml", "llama", {"10.96.0.5"}, {port("", 8000)})},
                        {slice("ml", "llama-a", "llama", "IPv4", {{"", 8000, Protocol::kTcp}}, {a, b})});
  const auto& eps = r.snapshot.services.at(0).endpoints;
  ASSERT_EQ(eps.size(), 2u);
  EXPECT_EQ(eps[0].pod, "llama-0");
  EXPECT_EQ(eps[1].pod, "");
}

TEST(KubeSnapshotTest, AlgorithmIsAnnotationThenClientIPThenTheDefault) {
  ServiceObj plain = service("ml", "a", {"10.96.0.5"}, {port("", 8000)});
  ServiceObj sticky = service("ml", "b", {"10.96.0.6"}, {port("", 8000)});
  sticky.sessionAffinity = "ClientIP";
  ServiceObj named = sticky;
  named.meta.name = "c";
  named.clusterIPs = {"10.96.0.7"};
  named.meta.annotations[kAlgorithmAnnotation] = "latency";
  MappingOptions opts{.defaultAlgorithm = Algorithm::kLeastConn};
  BuildResult r = buildOpts({plain, sticky, named}, {}, opts);
  EXPECT_EQ(findService(r.snapshot, "ml/a")->algorithm, Algorithm::kLeastConn);
  EXPECT_EQ(findService(r.snapshot, "ml/b")->algorithm, Algorithm::kMaglev);
  EXPECT_EQ(findService(r.snapshot, "ml/c")->algorithm, Algorithm::kLatency);
  // Without options: the agent's own default.
  EXPECT_EQ(findService(build({plain}, {}).snapshot, "ml/a")->algorithm, Algorithm::kRandom);
}

TEST(KubeSnapshotTest, InternalTrafficPolicyLocalKeepsThisNodesEndpoints) {
  ServiceObj s = service("ml", "llama", {"10.96.0.5"}, {port("", 8000)});
  s.internalTrafficPolicy = "Local";
  BuildResult n1 = buildOpts({s}, twoNodes(), {.nodeName = "n1"});
  EXPECT_THAT(n1.snapshot.services.at(0).endpoints, ElementsAre(active("10.244.0.1", 8000), active("10.244.0.2", 8000)));
  EXPECT_TRUE(n1.warnings.empty());
  // No endpoint on this node: none at all (connects are refused).
  BuildResult n3 = buildOpts({s}, twoNodes(), {.nodeName = "n3"});
  EXPECT_TRUE(n3.snapshot.services.at(0).endpoints.empty());
  // The node unknown: every endpoint, and a warning naming the Service.
  BuildResult unknown = buildOpts({s}, twoNodes(), {});
  EXPECT_EQ(unknown.snapshot.services.at(0).endpoints.size(), 3u);
  ASSERT_EQ(unknown.warnings.size(), 1u);
  EXPECT_THAT(unknown.warnings[0], HasSubstr("Service ml/llama: internalTrafficPolicy Local needs"));
  // Cluster (the default) ignores the node.
  s.internalTrafficPolicy = "Cluster";
  EXPECT_EQ(buildOpts({s}, twoNodes(), {.nodeName = "n1"}).snapshot.services.at(0).endpoints.size(), 3u);
}

TEST(KubeSnapshotCacheTest, NewOptionsRebuildEveryService) {
  ServiceObj s = service("ml", "llama", {"10.96.0.5"}, {port("", 8000)});
  s.internalTrafficPolicy = "Local";
  std::map<std::string, ServiceObj> sm{{s.meta.key(), s}};
  std::map<std::string, EndpointSliceObj> em;
  for (auto& sl : twoNodes()) em.emplace(sl.meta.key(), sl);
  SnapshotCache cache;
  cache.setOptions({.defaultAlgorithm = Algorithm::kLeastConn, .nodeName = "n2"});
  BuildResult first = cache.build(sm, em);
  EXPECT_EQ(first.snapshot.services.at(0).endpoints.size(), 1u);
  EXPECT_EQ(first.snapshot.services.at(0).algorithm, Algorithm::kLeastConn);
  EXPECT_EQ(first.snapshot, buildSnapshot(sm, em, nullptr, {.defaultAlgorithm = Algorithm::kLeastConn, .nodeName = "n2"}).snapshot);
  cache.setOptions({.defaultAlgorithm = Algorithm::kLatency, .nodeName = "n1"});
  BuildResult second = cache.build(sm, em);
  EXPECT_EQ(second.snapshot.services.at(0).endpoints.size(), 2u);
  EXPECT_EQ(second.snapshot.services.at(0).algorithm, Algorithm::kLatency);
}

}  // namespace fields

}  // namespace
}  // namespace aimesh::kube
