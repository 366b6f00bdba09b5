#include "source/state_file.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "model/connection_rules.h"

namespace aimesh {
namespace {

constexpr const char* kFile = "test.yaml";

ParseResult parse(const std::string& text) { return parseStateText(text, kFile); }

IpAddr ip(const std::string& s) {
  auto a = IpAddr::parse(s);
  EXPECT_TRUE(a.has_value()) << s;
  return a.value_or(IpAddr{});
}

std::string dump(const ParseResult& r) {
  std::string out;
  for (const auto& e : r.errors) out += "  " + e.toString() + "\n";
  return out;
}

// Asserts that parsing failed with exactly one error and checks every part.
void expectOneError(const std::string& text, int line, int column, const std::string& field,
                    const std::string& messagePart) {
  SCOPED_TRACE(text);
  ParseResult r = parse(text);
  EXPECT_FALSE(r.snapshot.has_value());
  ASSERT_EQ(r.errors.size(), 1u) << dump(r);
  const ParseError& e = r.errors[0];
  EXPECT_EQ(e.file, kFile);
  EXPECT_EQ(e.line, line) << e.toString();
  EXPECT_EQ(e.column, column) << e.toString();
  EXPECT_EQ(e.field, field) << e.toString();
  EXPECT_NE(e.message.find(messagePart), std::string::npos) << "want '" << messagePart << "' in: " << e.toString();
}

// ---- valid files ------------------------------------------------------------

TEST(StateFileTest, MinimalServiceGetsDefaults) {
  ParseResult r = parse(R"(services:
  - name: chat
    vips: [10.96.0.1]
    ports: [{port: 8000}]
)");
  ASSERT_TRUE(r.snapshot.has_value()) << dump(r);
  EXPECT_TRUE(r.errors.empty());
  ASSERT_EQ(r.snapshot->services.size(), 1u);
  const Service& s = r.snapshot->services[0];
  EXPECT_EQ(s.name, "chat");
  EXPECT_EQ(s.nameSpace, "default");
  EXPECT_EQ(s.key(), "default/chat");
  EXPECT_EQ(s.model, "");
  EXPECT_EQ(s.vips, std::vector<IpAddr>{ip("10.96.0.1")});
  ASSERT_EQ(s.ports.size(), 1u);
  EXPECT_EQ(s.ports[0].port, 8000);
  EXPECT_EQ(s.ports[0].protocol, Protocol::kTcp);
  EXPECT_EQ(s.algorithm, Algorithm::kRandom);
  EXPECT_TRUE(s.endpoints.empty());
}

TEST(StateFileTest, FullServiceAllFields) {
  ParseResult r = parse(R"(services:
  - name: llama-chat
    namespace: ml
    model: llama-3-8b-instruct
    vips: [10.96.0.20, "fd00::20"]
    ports:
      - {port: 8000, protocol: TCP}
      - port: 8443
        protocol: tcp
    algorithm: bounded_hash
    endpoints:
      - {address: 10.0.1.5, port: 8000, weight: 1, state: active}
      - {address: 10.0.2.7, port: 9000, weight: 0, state: draining}
      - address: 10.0.3.9
        weight: 65535
        state: terminating
)");
  ASSERT_TRUE(r.snapshot.has_value()) << dump(r);
  ASSERT_EQ(r.snapshot->services.size(), 1u);
  Service want;
  want.name = "llama-chat";
  want.nameSpace = "ml";
  want.model = "llama-3-8b-instruct";
  want.vips = {ip("10.96.0.20"), ip("fd00::20")};
  want.ports = {{8000, Protocol::kTcp}, {8443, Protocol::kTcp}};
  want.algorithm = Algorithm::kBoundedHash;
  want.endpoints = {
      {ip("10.0.1.5"), 8000, 1, EndpointState::kActive},
      {ip("10.0.2.7"), 9000, 0, EndpointState::kDraining},
      {ip("10.0.3.9"), 0, 65535, EndpointState::kTerminating},
  };
  EXPECT_EQ(r.snapshot->services[0], want);
}

TEST(StateFileTest, Ipv6VipsAndEndpoints) {
  ParseResult r = parse(R"(services:
  - name: v6
    vips: ["fd00:96::20", "2001:db8::1"]
    ports: [{port: 443}]
    endpoints:
      - {address: "fd00:77::2", port: 8443}
      - {address: "::ffff:10.0.0.1"}
)");
  ASSERT_TRUE(r.snapshot.has_value()) << dump(r);
  const Service& s = r.snapshot->services[0];
  ASSERT_EQ(s.vips.size(), 2u);
  EXPECT_FALSE(s.vips[0].isV4());
  EXPECT_EQ(s.vips[0].toString(), "fd00:96::20");
  EXPECT_EQ(s.vips[1].toString(), "2001:db8::1");
  ASSERT_EQ(s.endpoints.size(), 2u);
  EXPECT_EQ(s.endpoints[0].address.toString(), "fd00:77::2");
  EXPECT_EQ(s.endpoints[0].port, 8443);
  // An IPv4-mapped IPv6 address is the IPv4 address (one representation).
  EXPECT_TRUE(s.endpoints[1].address.isV4());
  EXPECT_EQ(s.endpoints[1].address, ip("10.0.0.1"));
}

TEST(StateFileTest, UdpPortsCaseInsensitive) {
  ParseResult r = parse(R"(services:
  - name: dns
    vips: [10.96.0.10]
    ports: [{port: 53, protocol: udp}, {port: 53, protocol: TCP}, {port: 5353, protocol: Udp}]
)");
  ASSERT_TRUE(r.snapshot.has_value()) << dump(r);
  const Service& s = r.snapshot->services[0];
  std::vector<PortSpec> want = {{53, Protocol::kUdp}, {53, Protocol::kTcp}, {5353, Protocol::kUdp}};
  EXPECT_EQ(s.ports, want);
}

TEST(StateFileTest, EndpointDefaultsApplied) {
  ParseResult r = parse(R"(services:
  - name: a
    vips: [10.96.0.1]
    ports: [{port: 80}]
    endpoints:
      - address: 10.0.0.1
      - {address: 10.0.0.2, port: , weight: , state: }
)");
  ASSERT_TRUE(r.snapshot.has_value()) << dump(r);
  const auto& eps = r.snapshot->services[0].endpoints;
  ASSERT_EQ(eps.size(), 2u);
  for (const Endpoint& e : eps) {
    EXPECT_EQ(e.port, 0) << "0 = the frontend port";
    EXPECT_EQ(e.weight, 1);
    EXPECT_EQ(e.state, EndpointState::kActive);
  }
  EXPECT_EQ(eps[0].address, ip("10.0.0.1"));
  EXPECT_EQ(eps[1].address, ip("10.0.0.2"));
}

TEST(StateFileTest, EndpointPodIsKeptAndMustBeAString) {
  ParseResult r = parse(R"(services:
  - name: a
    vips: [10.96.0.1]
    ports: [{port: 80}]
    endpoints:
      - {address: 10.0.0.1, pod: vllm-0}
      - {address: 10.0.0.2}
)");
  ASSERT_TRUE(r.snapshot.has_value()) << dump(r);
  EXPECT_EQ(r.snapshot->services[0].endpoints[0].pod, "vllm-0");
  EXPECT_EQ(r.snapshot->services[0].endpoints[1].pod, "");
  ParseResult bad = parse(R"(services:
  - name: a
    vips: [10.96.0.1]
    ports: [{port: 80}]
    endpoints:
      - {address: 10.0.0.1, pod: [x]}
)");
  EXPECT_FALSE(bad.snapshot.has_value());
  EXPECT_NE(dump(bad).find("services[0].endpoints[0].pod"), std::string::npos) << dump(bad);
}

TEST(StateFileTest, ServiceWithoutBackendsIsValid) {
  for (const char* endpoints : {"    endpoints: []\n", "    endpoints:\n", ""}) {
    std::string text = std::string("services:\n  - name: a\n    vips: [10.96.0.1]\n    ports: [{port: 80}]\n") +
                       endpoints;
    ParseResult r = parse(text);
    ASSERT_TRUE(r.snapshot.has_value()) << text << dump(r);
    EXPECT_TRUE(r.snapshot->services[0].endpoints.empty());
  }
}

TEST(StateFileTest, EmptyServiceListIsValid) {
  ParseResult r = parse("services: []\n");
  ASSERT_TRUE(r.snapshot.has_value()) << dump(r);
  EXPECT_TRUE(r.snapshot->services.empty());
  EXPECT_EQ(*r.snapshot, Snapshot{});
}

TEST(StateFileTest, ServicesSortedByKeyEndpointsInFileOrder) {
  ParseResult r = parse(R"(services:
  - {name: zeta, vips: [10.96.0.1], ports: [{port: 80}]}
  - name: alpha
    namespace: ns-b
    vips: [10.96.0.2]
    ports: [{port: 80}]
    endpoints:
      - {address: 10.0.0.9}
      - {address: 10.0.0.1}
      - {address: 10.0.0.5}
  - {name: beta, namespace: ns-a, vips: [10.96.0.3], ports: [{port: 80}]}
)");
  ASSERT_TRUE(r.snapshot.has_value()) << dump(r);
  const auto& svcs = r.snapshot->services;
  ASSERT_EQ(svcs.size(), 3u);
  EXPECT_EQ(svcs[0].key(), "default/zeta");
  EXPECT_EQ(svcs[1].key(), "ns-a/beta");
  EXPECT_EQ(svcs[2].key(), "ns-b/alpha");
  ASSERT_EQ(svcs[2].endpoints.size(), 3u);
  EXPECT_EQ(svcs[2].endpoints[0].address, ip("10.0.0.9"));
  EXPECT_EQ(svcs[2].endpoints[1].address, ip("10.0.0.1"));
  EXPECT_EQ(svcs[2].endpoints[2].address, ip("10.0.0.5"));
}

TEST(StateFileTest, SharingAllowedWhereKeysDiffer) {
  // Same vip on another port or protocol, the same backend in two services,
  // the same address on two ports, the same name in two namespaces: all fine.
  ParseResult r = parse(R"(services:
  - name: a
    vips: [10.96.0.1]
    ports: [{port: 80}]
    endpoints: [{address: 10.0.0.1, port: 80}, {address: 10.0.0.1, port: 81}]
  - name: a
    namespace: other
    vips: [10.96.0.1]
    ports: [{port: 81}, {port: 80, protocol: UDP}]
    endpoints: [{address: 10.0.0.1, port: 80}]
)");
  ASSERT_TRUE(r.snapshot.has_value()) << dump(r);
  EXPECT_EQ(r.snapshot->services.size(), 2u);
}

TEST(StateFileTest, AllAlgorithms) {
  std::vector<std::pair<std::string, Algorithm>> cases = {{"random", Algorithm::kRandom},
                                                          {"maglev", Algorithm::kMaglev},
                                                          {"least_conn", Algorithm::kLeastConn},
                                                          {"latency", Algorithm::kLatency},
                                                          {"bounded_hash", Algorithm::kBoundedHash}};
  for (const auto& [name, algo] : cases) {
    ParseResult r = parse("services: [{name: a, vips: [10.0.0.1], ports: [{port: 1}], algorithm: " + name + "}]");
    ASSERT_TRUE(r.snapshot.has_value()) << name << dump(r);
    EXPECT_EQ(r.snapshot->services[0].algorithm, algo) << name;
  }
}

TEST(StateFileTest, ExampleFileParses) {
  ParseResult r = parseStateFile(AIMESH_SOURCE_DIR "/examples/state.yaml");
  ASSERT_TRUE(r.snapshot.has_value()) << dump(r);
  const auto& svcs = r.snapshot->services;
  ASSERT_EQ(svcs.size(), 2u);

  const Service& embed = svcs[0];  // sorted: ml/embed-llm < ml/llama-chat
  EXPECT_EQ(embed.key(), "ml/embed-llm");
  EXPECT_EQ(embed.model, "bge-large");
  EXPECT_EQ(embed.vips, std::vector<IpAddr>{ip("10.96.0.21")});
  EXPECT_EQ(embed.ports, (std::vector<PortSpec>{{8001, Protocol::kTcp}}));
  EXPECT_EQ(embed.algorithm, Algorithm::kRandom);
  std::vector<Endpoint> embedEps = {{ip("10.77.0.2"), 8001, 1, EndpointState::kActive},
                                    {ip("10.77.0.3"), 8001, 1, EndpointState::kActive}};
  EXPECT_EQ(embed.endpoints, embedEps);

  const Service& chat = svcs[1];
  EXPECT_EQ(chat.key(), "ml/llama-chat");
  EXPECT_EQ(chat.model, "llama-3-8b-instruct");
  EXPECT_EQ(chat.vips, (std::vector<IpAddr>{ip("10.96.0.20"), ip("fd00:96::20")}));
  EXPECT_EQ(chat.ports, (std::vector<PortSpec>{{8000, Protocol::kTcp}}));
  EXPECT_EQ(chat.algorithm, Algorithm::kLeastConn);
  std::vector<Endpoint> chatEps = {{ip("10.77.0.2"), 8000, 1, EndpointState::kActive},
                                   {ip("10.77.0.3"), 8000, 2, EndpointState::kActive},
                                   {ip("10.77.0.4"), 8000, 1, EndpointState::kDraining}};
  EXPECT_EQ(chat.endpoints, chatEps);
  ConnectionPolicy chatConns;
  chatConns.rebalance = true;
  chatConns.rebalanceRate = 4;
  chatConns.maxAgeMs = 600'000;
  chatConns.drainTimeoutMs = 300'000;
  EXPECT_EQ(chat.connections, chatConns);
  EXPECT_EQ(embed.connections, ConnectionPolicy{});
}

TEST(StateFileTest, ParseStateFileReadsFromDisk) {
  char tmpl[] = "/tmp/aimesh-state-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::filesystem::path dir(tmpl);
  std::string path = (dir / "state.yaml").string();
  {
    std::ofstream out(path);
    out << "services:\n  - {name: a, vips: [10.0.0.1], ports: [{port: 80, protocol: tcpx}]}\n";
  }
  ParseResult bad = parseStateFile(path);
  ASSERT_EQ(bad.errors.size(), 1u) << dump(bad);
  EXPECT_EQ(bad.errors[0].file, path) << "errors name the path they were read from";
  EXPECT_EQ(bad.errors[0].line, 2);
  {
    std::ofstream out(path);
    out << "services:\n  - {name: a, vips: [10.0.0.1], ports: [{port: 80}]}\n";
  }
  ParseResult good = parseStateFile(path);
  EXPECT_TRUE(good.snapshot.has_value()) << dump(good);
  std::filesystem::remove_all(dir);
}

// ---- read errors --------------------------------------------------------------

TEST(StateFileTest, MissingFileIsOneErrorAtLineZero) {
  std::string path = "/nonexistent-aimesh-dir/state.yaml";
  ParseResult r = parseStateFile(path);
  EXPECT_FALSE(r.snapshot.has_value());
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].file, path);
  EXPECT_EQ(r.errors[0].line, 0);
  EXPECT_EQ(r.errors[0].column, 0);
  EXPECT_EQ(r.errors[0].field, "");
  EXPECT_NE(r.errors[0].message.find("No such file or directory"), std::string::npos) << r.errors[0].message;
  EXPECT_EQ(r.errors[0].toString(), path + ": " + r.errors[0].message);
}

TEST(StateFileTest, DirectoryIsAReadError) {
  char tmpl[] = "/tmp/aimesh-state-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  ParseResult r = parseStateFile(tmpl);
  EXPECT_FALSE(r.snapshot.has_value());
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].line, 0);
  EXPECT_NE(r.errors[0].message.find("directory"), std::string::npos) << r.errors[0].message;
  rmdir(tmpl);
}

TEST(StateFileTest, UnreadableFileIsAReadError) {
  if (geteuid() == 0) GTEST_SKIP() << "root reads files regardless of mode";
  char tmpl[] = "/tmp/aimesh-state-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string path = std::string(tmpl) + "/state.yaml";
  { std::ofstream(path) << "services: []\n"; }
  std::filesystem::permissions(path, std::filesystem::perms::none);
  ParseResult r = parseStateFile(path);
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].line, 0);
  EXPECT_NE(r.errors[0].message.find("Permission denied"), std::string::npos) << r.errors[0].message;
  std::filesystem::remove_all(tmpl);
}

// ---- error reporting ------------------------------------------------------------

TEST(StateFileTest, ErrorToStringFormat) {
  ParseError e{"state.yaml", 12, 22, "services[0].endpoints[1].port", "must be 1..65535, got 70000"};
  EXPECT_EQ(e.toString(), "state.yaml:12:22: services[0].endpoints[1].port: must be 1..65535, got 70000");
  ParseError noField{"state.yaml", 3, 1, "", "end of map flow not found"};
  EXPECT_EQ(noField.toString(), "state.yaml:3:1: end of map flow not found");
}

TEST(StateFileTest, EndpointPortOutOfRangeFullText) {
  ParseResult r = parse(R"(services:
  - name: a
    vips: [10.96.0.1]
    ports: [{port: 80}]
    endpoints:
      - {address: 10.0.0.1, port: 8000}
      - {address: 10.0.0.2, port: 70000}
)");
  EXPECT_FALSE(r.snapshot.has_value());
  ASSERT_EQ(r.errors.size(), 1u) << dump(r);
  EXPECT_EQ(r.errors[0].toString(), "test.yaml:7:35: services[0].endpoints[1].port: must be 1..65535, got 70000");
}

// ---- syntax and document shape ----------------------------------------------------

TEST(StateFileTest, YamlSyntaxErrorReportsYamlCppPosition) {
  ParseResult r = parse("services: [\n  {name: x\n");
  EXPECT_FALSE(r.snapshot.has_value());
  ASSERT_EQ(r.errors.size(), 1u) << dump(r);
  EXPECT_EQ(r.errors[0].file, kFile);
  EXPECT_EQ(r.errors[0].line, 3);
  EXPECT_EQ(r.errors[0].column, 1);
  EXPECT_EQ(r.errors[0].field, "");
  EXPECT_NE(r.errors[0].message.find("flow"), std::string::npos) << r.errors[0].message;
}

TEST(StateFileTest, YamlSyntaxErrorBadIndentation) {
  ParseResult r = parse("services:\n  - name: a\n   vips: [1.2.3.4]\n");
  EXPECT_FALSE(r.snapshot.has_value());
  ASSERT_EQ(r.errors.size(), 1u) << dump(r);
  EXPECT_EQ(r.errors[0].line, 3);
  EXPECT_EQ(r.errors[0].field, "");
  EXPECT_FALSE(r.errors[0].message.empty());
}

TEST(StateFileTest, EmptyDocumentRejected) {
  for (const char* text : {"", "# only a comment\n", "---\n", "\n\n"}) {
    expectOneError(text, 1, 1, "services", "empty");
  }
}

TEST(StateFileTest, MissingServicesKeyRejected) {
  ParseResult r = parse("service:\n  - name: a\n");
  EXPECT_FALSE(r.snapshot.has_value());
  ASSERT_EQ(r.errors.size(), 2u) << dump(r);
  EXPECT_EQ(r.errors[0].field, "service");
  EXPECT_EQ(r.errors[0].message, "unknown field 'service' (did you mean 'services'?)");
  EXPECT_EQ(r.errors[1].field, "services");
  EXPECT_EQ(r.errors[1].line, 1);
  EXPECT_NE(r.errors[1].message.find("required field is missing"), std::string::npos);
}

TEST(StateFileTest, TopLevelMustBeMap) {
  expectOneError("- name: a\n", 1, 1, "", "must be a map");
}

TEST(StateFileTest, NullServicesRejected) {
  // "services:" with nothing is more likely a mistake than "remove everything".
  expectOneError("services:\n", 1, 1, "services", "must be a list, got null");
}

TEST(StateFileTest, MultipleDocumentsRejected) {
  ParseResult r = parse("services: []\n---\nservices: []\n");
  EXPECT_FALSE(r.snapshot.has_value());
  ASSERT_EQ(r.errors.size(), 1u) << dump(r);
  EXPECT_EQ(r.errors[0].line, 3);
  EXPECT_NE(r.errors[0].message.find("one YAML document"), std::string::npos);
}

// ---- unknown and duplicate keys ---------------------------------------------------

TEST(StateFileTest, UnknownServiceFieldNamed) {
  expectOneError(R"(services:
  - name: a
    vips: [10.96.0.1]
    ports: [{port: 80}]
    endpionts: []
)",
                 5, 5, "services[0].endpionts", "unknown field 'endpionts'");
}

TEST(StateFileTest, UnknownFieldsAtEveryLevel) {
  ParseResult r = parse(R"(services:
  - name: a
    vips: [10.96.0.1]
    ports: [{port: 80, proto: UDP}]
    endpoints: [{address: 10.0.0.1, wieght: 3}]
version: 2
)");
  EXPECT_FALSE(r.snapshot.has_value());
  ASSERT_EQ(r.errors.size(), 3u) << dump(r);
  EXPECT_EQ(r.errors[0].field, "services[0].ports[0].proto");
  EXPECT_EQ(r.errors[0].line, 4);
  EXPECT_EQ(r.errors[0].column, 24);
  EXPECT_NE(r.errors[0].message.find("unknown field 'proto'"), std::string::npos);
  EXPECT_EQ(r.errors[1].field, "services[0].endpoints[0].wieght");
  EXPECT_EQ(r.errors[1].line, 5);
  EXPECT_EQ(r.errors[1].column, 37);
  EXPECT_NE(r.errors[1].message.find("did you mean 'weight'"), std::string::npos) << r.errors[1].message;
  EXPECT_EQ(r.errors[2].field, "version");
  EXPECT_EQ(r.errors[2].line, 6);
  EXPECT_EQ(r.errors[2].column, 1);
}

TEST(StateFileTest, DuplicateKeyRejected) {
  expectOneError(R"(services:
  - name: a
    vips: [10.96.0.1]
    ports: [{port: 80}]
    vips: [10.96.0.2]
)",
                 5, 5, "services[0].vips", "duplicate field 'vips' (first at line 3)");
}

// ---- wrong types ---------------------------------------------------------------

TEST(StateFileTest, ServicesAsMapRejected) {
  expectOneError("services:\n  name: a\n", 2, 3, "services", "must be a list, got a map");
}

TEST(StateFileTest, ServiceEntryNotAMap) {
  expectOneError("services:\n  - llama\n", 2, 5, "services[0]", "must be a map");
}

TEST(StateFileTest, VipsAsScalarRejected) {
  expectOneError("services:\n  - {name: a, vips: 10.96.0.1, ports: [{port: 80}]}\n", 2, 21, "services[0].vips",
                 "must be a list, got '10.96.0.1'");
}

TEST(StateFileTest, PortsAsMapRejected) {
  expectOneError("services:\n  - {name: a, vips: [10.96.0.1], ports: {port: 80}}\n", 2, 41, "services[0].ports",
                 "must be a list, got a map");
}

TEST(StateFileTest, NonIntegerPortRejected) {
  expectOneError("services:\n  - {name: a, vips: [10.96.0.1], ports: [{port: http}]}\n", 2, 49,
                 "services[0].ports[0].port", "must be an integer 1..65535, got 'http'");
  expectOneError("services:\n  - {name: a, vips: [10.96.0.1], ports: [{port: 80.5}]}\n", 2, 49,
                 "services[0].ports[0].port", "must be an integer");
  expectOneError("services:\n  - {name: a, vips: [10.96.0.1], ports: [{port: \"80\"}]}\n", 2, 49,
                 "services[0].ports[0].port", "got string \"80\"");
  expectOneError("services:\n  - {name: a, vips: [10.96.0.1], ports: [{port: [80]}]}\n", 2, 49,
                 "services[0].ports[0].port", "got a list");
}

TEST(StateFileTest, NameMustBeString) {
  expectOneError("services:\n  - {name: [a], vips: [10.96.0.1], ports: [{port: 80}]}\n", 2, 12, "services[0].name",
                 "must be a string, got a list");
}

TEST(StateFileTest, EndpointsAsMapRejected) {
  expectOneError(R"(services:
  - name: a
    vips: [10.96.0.1]
    ports: [{port: 80}]
    endpoints:
      address: 10.0.0.1
)",
                 6, 7, "services[0].endpoints", "must be a list, got a map");
}

// ---- values out of range or malformed ---------------------------------------------

TEST(StateFileTest, PortRange) {
  expectOneError("services:\n  - {name: a, vips: [10.96.0.1], ports: [{port: 0}]}\n", 2, 49,
                 "services[0].ports[0].port", "must be 1..65535, got 0");
  expectOneError("services:\n  - {name: a, vips: [10.96.0.1], ports: [{port: 65536}]}\n", 2, 49,
                 "services[0].ports[0].port", "must be 1..65535, got 65536");
  expectOneError("services:\n  - {name: a, vips: [10.96.0.1], ports: [{port: 123456789012345678901234}]}\n", 2, 49,
                 "services[0].ports[0].port", "must be 1..65535, got 123456789012345678901234");
}

TEST(StateFileTest, WeightRange) {
  const std::string head = "services:\n  - name: a\n    vips: [10.96.0.1]\n    ports: [{port: 80}]\n    endpoints:\n";
  expectOneError(head + "      - {address: 10.0.0.1, weight: 65536}\n", 6, 37, "services[0].endpoints[0].weight",
                 "must be 0..65535, got 65536");
  expectOneError(head + "      - {address: 10.0.0.1, weight: -1}\n", 6, 37, "services[0].endpoints[0].weight",
                 "must be 0..65535, got -1");
}

TEST(StateFileTest, EndpointPortZeroIsNotAllowedExplicitly) {
  expectOneError(
      "services:\n  - name: a\n    vips: [10.96.0.1]\n    ports: [{port: 80}]\n    endpoints:\n"
      "      - {address: 10.0.0.1, port: 0}\n",
      6, 35, "services[0].endpoints[0].port", "must be 1..65535, got 0");
}

TEST(StateFileTest, BadNames) {
  expectOneError("services:\n  - {name: Llama_Chat, vips: [10.96.0.1], ports: [{port: 80}]}\n", 2, 12,
                 "services[0].name", "must be a DNS label");
  expectOneError("services:\n  - {name: -a, vips: [10.96.0.1], ports: [{port: 80}]}\n", 2, 12, "services[0].name",
                 "got '-a'");
  expectOneError("services:\n  - {name: \"\", vips: [10.96.0.1], ports: [{port: 80}]}\n", 2, 12, "services[0].name",
                 "must not be empty");
  std::string longName(64, 'a');
  expectOneError("services:\n  - {name: " + longName + ", vips: [10.96.0.1], ports: [{port: 80}]}\n", 2, 12,
                 "services[0].name", "at most 63 characters, got 64");
  expectOneError("services:\n  - {name: a, namespace: ML, vips: [10.96.0.1], ports: [{port: 80}]}\n", 2, 26,
                 "services[0].namespace", "must be a DNS label");
}

TEST(StateFileTest, MaxLengthNameAccepted) {
  std::string name(63, 'a');
  ParseResult r = parse("services:\n  - {name: " + name + ", vips: [10.96.0.1], ports: [{port: 80}]}\n");
  ASSERT_TRUE(r.snapshot.has_value()) << dump(r);
  EXPECT_EQ(r.snapshot->services[0].name, name);
}

TEST(StateFileTest, BadAddresses) {
  expectOneError("services:\n  - {name: a, vips: [10.96.0.1, 10.96.0.256], ports: [{port: 80}]}\n", 2, 33,
                 "services[0].vips[1]", "must be an IPv4 or IPv6 address, got '10.96.0.256'");
  expectOneError(
      "services:\n  - name: a\n    vips: [10.96.0.1]\n    ports: [{port: 80}]\n    endpoints:\n"
      "      - {address: host.example}\n",
      6, 19, "services[0].endpoints[0].address", "got 'host.example'");
}

TEST(StateFileTest, EmptyListsRejected) {
  expectOneError("services:\n  - {name: a, vips: [], ports: [{port: 80}]}\n", 2, 21, "services[0].vips",
                 "at least one address");
  expectOneError("services:\n  - {name: a, vips: [10.96.0.1], ports: []}\n", 2, 41, "services[0].ports",
                 "at least one port");
}

TEST(StateFileTest, MissingRequiredFields) {
  ParseResult r = parse("services:\n  - model: m\n    endpoints:\n      - {port: 80}\n");
  EXPECT_FALSE(r.snapshot.has_value());
  ASSERT_EQ(r.errors.size(), 4u) << dump(r);
  // Missing fields are reported where their map starts.
  EXPECT_EQ(r.errors[0].field, "services[0].name");
  EXPECT_EQ(r.errors[1].field, "services[0].vips");
  EXPECT_EQ(r.errors[2].field, "services[0].ports");
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(r.errors[i].line, 2);
    EXPECT_EQ(r.errors[i].column, 5);
    EXPECT_EQ(r.errors[i].message, "required field is missing");
  }
  EXPECT_EQ(r.errors[3].field, "services[0].endpoints[0].address");
  EXPECT_EQ(r.errors[3].line, 4);
  EXPECT_EQ(r.errors[3].column, 9);
}

TEST(StateFileTest, BadEnumValues) {
  expectOneError("services:\n  - {name: a, vips: [10.96.0.1], ports: [{port: 80, protocol: SCTP}]}\n", 2, 63,
                 "services[0].ports[0].protocol", "must be TCP or UDP, got 'SCTP'");
  expectOneError("services:\n  - {name: a, vips: [10.96.0.1], ports: [{port: 80}], algorithm: round_robin}\n", 2,
                 66, "services[0].algorithm", "got 'round_robin'");
  expectOneError(
      "services:\n  - name: a\n    vips: [10.96.0.1]\n    ports: [{port: 80}]\n    endpoints:\n"
      "      - {address: 10.0.0.1, state: drained}\n",
      6, 36, "services[0].endpoints[0].state", "must be one of active, draining, terminating, got 'drained'");
}

// ---- duplicates and conflicts -------------------------------------------------------

TEST(StateFileTest, DuplicateServiceRejected) {
  expectOneError(R"(services:
  - {name: chat, namespace: default, vips: [10.96.0.1], ports: [{port: 80}]}
  - {name: chat, vips: [10.96.0.2], ports: [{port: 80}]}
)",
                 3, 12, "services[1].name", "duplicate service default/chat (also services[0])");
}

TEST(StateFileTest, FrontendUsedByTwoServicesRejected) {
  expectOneError(R"(services:
  - {name: a, vips: [10.96.0.1], ports: [{port: 80}]}
  - name: b
    vips: [10.96.0.2, "::ffff:10.96.0.1"]
    ports: [{port: 81}, {port: 80, protocol: tcp}]
)",
                 4, 23, "services[1].vips[1]", "10.96.0.1:80/TCP is already used by service default/a (services[0])");
}

TEST(StateFileTest, DuplicateVipAndPortWithinService) {
  ParseResult r = parse(R"(services:
  - name: a
    vips: [10.96.0.1, 10.96.0.1]
    ports: [{port: 80}, {port: 80, protocol: TCP}]
)");
  EXPECT_FALSE(r.snapshot.has_value());
  ASSERT_EQ(r.errors.size(), 2u) << dump(r);
  EXPECT_EQ(r.errors[0].field, "services[0].vips[1]");
  EXPECT_EQ(r.errors[0].line, 3);
  EXPECT_EQ(r.errors[0].column, 23);
  EXPECT_NE(r.errors[0].message.find("duplicate vip 10.96.0.1"), std::string::npos);
  EXPECT_EQ(r.errors[1].field, "services[0].ports[1]");
  EXPECT_EQ(r.errors[1].line, 4);
  EXPECT_EQ(r.errors[1].column, 25);
  EXPECT_NE(r.errors[1].message.find("duplicate port 80/TCP"), std::string::npos);
}

TEST(StateFileTest, DuplicateEndpointRejected) {
  expectOneError(R"(services:
  - name: a
    vips: [10.96.0.1]
    ports: [{port: 80}]
    endpoints:
      - {address: "fd00::5", port: 8000}
      - {address: 10.0.0.1, port: 8000}
      - {address: "fd00:0::5", port: 8000, weight: 3}
)",
                 8, 9, "services[0].endpoints[2]", "duplicate endpoint [fd00::5]:8000 (also services[0].endpoints[0])");
}

// ---- many errors at once ------------------------------------------------------------

TEST(StateFileTest, AllErrorsCollectedInFileOrder) {
  ParseResult r = parse(R"(services:
  - name: Bad_Name
    vips: [10.96.0.1, not-an-ip]
    ports: [{port: 80}, {port: 70000}, {port: 81, protocol: icmp}]
    algorithm: fastest
    endpoints:
      - {address: 10.0.0.1, weight: 1.5}
      - {address: 10.0.0.2, state: gone}
  - {name: b, vips: [10.96.0.1], ports: [{port: 80}], extra: 1}
  - {name: b, vips: [10.96.0.9], ports: [{port: 80}]}
)");
  EXPECT_FALSE(r.snapshot.has_value());
  std::vector<std::string> want = {
      "test.yaml:2:11: services[0].name: must be a DNS label",
      "test.yaml:3:23: services[0].vips[1]: must be an IPv4 or IPv6 address, got 'not-an-ip'",
      "test.yaml:4:32: services[0].ports[1].port: must be 1..65535, got 70000",
      "test.yaml:4:61: services[0].ports[2].protocol: must be TCP or UDP, got 'icmp'",
      "test.yaml:5:16: services[0].algorithm: must be one of",
      "test.yaml:7:37: services[0].endpoints[0].weight: must be an integer 0..65535, got '1.5'",
      "test.yaml:8:36: services[0].endpoints[1].state: must be one of active, draining, terminating, got 'gone'",
      "test.yaml:9:22: services[1].vips[0]: 10.96.0.1:80/TCP is already used by service services[0]",
      "test.yaml:9:55: services[1].extra: unknown field 'extra'",
      "test.yaml:10:12: services[2].name: duplicate service default/b (also services[1])",
  };
  ASSERT_EQ(r.errors.size(), want.size()) << dump(r);
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(r.errors[i].toString().rfind(want[i], 0), 0u) << "want prefix: " << want[i] << "\n got: "
                                                             << r.errors[i].toString();
  }
}

}  // namespace
}  // namespace aimesh

namespace aimesh {
namespace {

const char* kHashService =
    "services:\n"
    "  - name: a\n"
    "    vips: [10.96.0.1]\n"
    "    ports: [{port: 80}]\n"
    "    algorithm: bounded_hash\n";

TEST(StateFileBalancing, HashAndModelMetricsFieldsParsed) {
  ParseResult r = parseStateText(std::string(kHashService) +
                                     "    hash_table_size: 65521\n"
                                     "    hash_balance_factor: 1.5\n"
                                     "    model_metrics: {port: 9000, path: /stats}\n",
                                 "state.yaml");
  ASSERT_TRUE(r.snapshot) << (r.errors.empty() ? "" : r.errors[0].toString());
  const Service& s = r.snapshot->services[0];
  EXPECT_EQ(s.hashTableSize, 65521u);
  EXPECT_EQ(s.balancePct, 150);
  ASSERT_TRUE(s.modelMetrics);
  EXPECT_EQ(s.modelMetrics->port, 9000);
  EXPECT_EQ(s.modelMetrics->path, "/stats");
}

TEST(StateFileBalancing, Defaults) {
  ParseResult r = parseStateText(std::string(kHashService) + "    model_metrics: {port: 8000}\n", "state.yaml");
  ASSERT_TRUE(r.snapshot);
  const Service& s = r.snapshot->services[0];
  EXPECT_EQ(s.hashTableSize, 16381u);
  EXPECT_EQ(s.balancePct, 125);
  ASSERT_TRUE(s.modelMetrics);
  EXPECT_EQ(s.modelMetrics->path, "/metrics");
}

TEST(StateFileBalancing, TelemetrySampleParsedAndBounded) {
  ParseResult r = parseStateText(std::string(kHashService) + "    telemetry: {sample: 0.1}\n", "state.yaml");
  ASSERT_TRUE(r.snapshot) << (r.errors.empty() ? "" : r.errors[0].toString());
  EXPECT_EQ(r.snapshot->services[0].telemetrySample, 0.1);
  r = parseStateText(std::string(kHashService) + "    telemetry: {}\n", "state.yaml");
  ASSERT_TRUE(r.snapshot);
  EXPECT_EQ(r.snapshot->services[0].telemetrySample, 1.0);  // the default: every connection
}

TEST(StateFileBalancing, FailureModeParsedDefaultFailOpen) {
  ParseResult r = parseStateText(kHashService, "state.yaml");
  ASSERT_TRUE(r.snapshot) << dump(r);
  EXPECT_FALSE(r.snapshot->services[0].failClose) << "the default: fail open";
  r = parseStateText(std::string(kHashService) + "    failure_mode: fail_close\n", "state.yaml");
  ASSERT_TRUE(r.snapshot) << dump(r);
  EXPECT_TRUE(r.snapshot->services[0].failClose);
  r = parseStateText(std::string(kHashService) + "    failure_mode: fail_open\n", "state.yaml");
  ASSERT_TRUE(r.snapshot) << dump(r);
  EXPECT_FALSE(r.snapshot->services[0].failClose);
  r = parseStateText(std::string(kHashService) + "    failure_mode:\n", "state.yaml");
  ASSERT_TRUE(r.snapshot) << dump(r);
  EXPECT_FALSE(r.snapshot->services[0].failClose) << "null: the default, as for every optional field";
}

TEST(StateFileBalancing, BadFailureModeFullText) {
  ParseResult r = parseStateText(std::string(kHashService) + "    failure_mode: fail_closed\n", "state.yaml");
  EXPECT_FALSE(r.snapshot);
  ASSERT_EQ(r.errors.size(), 1u) << dump(r);
  EXPECT_EQ(r.errors[0].toString(),
            "state.yaml:6:19: services[0].failure_mode: must be fail_open or fail_close, got 'fail_closed'");
  r = parseStateText(std::string(kHashService) + "    failure_mode: [fail_close]\n", "state.yaml");
  EXPECT_FALSE(r.snapshot);
  ASSERT_EQ(r.errors.size(), 1u) << dump(r);
  EXPECT_EQ(r.errors[0].field, "services[0].failure_mode");
  EXPECT_EQ(r.errors[0].line, 6);
  EXPECT_NE(r.errors[0].message.find("must be a string"), std::string::npos) << r.errors[0].toString();
  r = parseStateText(std::string(kHashService) + "    failuremode: fail_close\n", "state.yaml");
  ASSERT_EQ(r.errors.size(), 1u) << dump(r);
  EXPECT_EQ(r.errors[0].message, "unknown field 'failuremode' (did you mean 'failure_mode'?)");
}

TEST(StateFileBalancing, BadValuesNamed) {
  struct Case {
    std::string line, field, message;
  } cases[] = {
      {"    hash_table_size: 16384\n", "services[0].hash_table_size", "must be a prime"},
      {"    hash_table_size: 3\n", "services[0].hash_table_size", "must be 7..65521"},
      {"    hash_table_size: 70001\n", "services[0].hash_table_size", "must be 7..65521"},
      {"    hash_balance_factor: 0.9\n", "services[0].hash_balance_factor", "must be 1..10"},
      {"    hash_balance_factor: lots\n", "services[0].hash_balance_factor", "must be a number"},
      {"    model_metrics: {path: /metrics}\n", "services[0].model_metrics.port", "required field is missing"},
      {"    model_metrics: {port: 8000, path: metrics}\n", "services[0].model_metrics.path", "must start with '/'"},
      {"    model_metrics: {port: 8000, scheme: https}\n", "services[0].model_metrics.scheme", "unknown field"},
      {"    model_metrics: 8000\n", "services[0].model_metrics", ""},
      {"    telemetry: {sample: 0}\n", "services[0].telemetry.sample", "must be > 0 and <= 1, got 0"},
      {"    telemetry: {sample: 2}\n", "services[0].telemetry.sample", "must be 0..1, got 2"},
      {"    telemetry: {sample: most}\n", "services[0].telemetry.sample", "must be a number"},
      {"    telemetry: {rate: 0.1}\n", "services[0].telemetry.rate", "unknown field"},
      {"    telemetry: 0.1\n", "services[0].telemetry", "must be a map like {sample: 0.1}"},
  };
  for (auto& c : cases) {
    SCOPED_TRACE(c.line);
    ParseResult r = parseStateText(std::string(kHashService) + c.line, "state.yaml");
    EXPECT_FALSE(r.snapshot);
    ASSERT_EQ(r.errors.size(), 1u);
    EXPECT_EQ(r.errors[0].field, c.field) << r.errors[0].toString();
    EXPECT_EQ(r.errors[0].line, 6) << r.errors[0].toString();
    EXPECT_NE(r.errors[0].message.find(c.message), std::string::npos) << r.errors[0].toString();
  }
}

}  // namespace
}  // namespace aimesh

// ---- connections: closing idle connections ------------------------------------------

namespace aimesh {
namespace {

const std::string kConnHead =
    "services:\n"
    "  - name: a\n"
    "    vips: [10.96.0.1]\n"
    "    ports: [{port: 80}]\n"
    "    algorithm: least_conn\n";

ConnectionPolicy connectionsOf(const std::string& block) {
  ParseResult r = parse(kConnHead + block);
  EXPECT_TRUE(r.snapshot.has_value()) << block << dump(r);
  if (!r.snapshot || r.snapshot->services.empty()) return ConnectionPolicy{};
  return r.snapshot->services[0].connections;
}

TEST(StateFileConnections, EveryFieldParsed) {
  ConnectionPolicy cp = connectionsOf(
      "    connections:\n"
      "      rebalance: false\n"
      "      rebalance_rate: 0.5\n"
      "      max_age: 10m\n"
      "      max_requests: 1000\n"
      "      drain_timeout: 90\n");
  ConnectionPolicy want;
  want.rebalance = false;
  want.rebalanceRate = 0.5;
  want.maxAgeMs = 600'000;
  want.maxRequests = 1000;
  want.drainTimeoutMs = 90'000;
  EXPECT_EQ(cp, want);
  EXPECT_FALSE(cp.rebalanceOn(Algorithm::kLeastConn));

  // Flow style, the largest values, and 0 where it is allowed.
  cp = connectionsOf(
      "    connections: {rebalance: true, rebalance_rate: 1000, max_age: 720h, max_requests: 4294967295, "
      "drain_timeout: 0}\n");
  EXPECT_EQ(cp.rebalance, std::optional<bool>(true));
  EXPECT_EQ(cp.rebalanceRate, 1000);
  EXPECT_EQ(cp.maxAgeMs, kMaxDurationMs);
  EXPECT_EQ(cp.maxRequests, 4294967295u);
  EXPECT_EQ(cp.drainTimeoutMs, 0u);
}

TEST(StateFileConnections, DefaultsWhenAbsent) {
  for (const std::string& block : {std::string(""), std::string("    connections:\n"),
                                  std::string("    connections: {}\n"),
                                  std::string("    connections:\n      rebalance:\n      rebalance_rate:\n"
                                              "      max_age:\n      max_requests:\n      drain_timeout:\n")}) {
    SCOPED_TRACE(block);
    ConnectionPolicy cp = connectionsOf(block);
    EXPECT_EQ(cp, ConnectionPolicy{});
    EXPECT_EQ(cp.rebalance, std::nullopt);
    EXPECT_EQ(cp.rebalanceRate, kDefaultRebalanceRate);
    EXPECT_EQ(cp.maxAgeMs, 0u);
    EXPECT_EQ(cp.maxRequests, 0u);
    EXPECT_EQ(cp.drainTimeoutMs, kDefaultDrainTimeoutMs);
    EXPECT_TRUE(cp.rebalanceOn(Algorithm::kLeastConn));  // the algorithm decides
  }
}

TEST(StateFileConnections, DurationForms) {
  const std::vector<std::pair<std::string, uint64_t>> cases = {
      {"90", 90'000},    {"1.5", 1'500},   {"500ms", 500},       {"30s", 30'000},          {"10m", 600'000},
      {"1h", 3'600'000}, {"1.5h", 5'400'000}, {"\"10m\"", 600'000}, {"'90'", 90'000}, {"0", 0}, {"0s", 0},
  };
  for (const auto& [text, ms] : cases) {
    SCOPED_TRACE(text);
    ConnectionPolicy cp =
        connectionsOf("    connections:\n      max_age: " + text + "\n      drain_timeout: " + text + "\n");
    EXPECT_EQ(cp.maxAgeMs, ms);
    EXPECT_EQ(cp.drainTimeoutMs, ms);
  }
}

TEST(StateFileConnections, BadValuesNamedWithLineAndColumn) {
  struct Case {
    std::string line;
    int column;
    std::string field, message;  // field under services[0].connections; the whole message
  } cases[] = {
      {"      rebalance: yes\n", 18, "rebalance", "must be true or false, got 'yes'"},
      {"      rebalance: \"true\"\n", 18, "rebalance", "must be true or false, got string \"true\""},
      {"      rebalance: [true]\n", 18, "rebalance", "must be true or false, got a list"},
      {"      rebalance_rate: 0\n", 23, "rebalance_rate", "must be > 0 and <= 1000, got 0"},
      {"      rebalance_rate: 1001\n", 23, "rebalance_rate", "must be > 0 and <= 1000, got 1001"},
      {"      rebalance_rate: -4\n", 23, "rebalance_rate", "must be a number > 0 and <= 1000, got '-4'"},
      {"      rebalance_rate: fast\n", 23, "rebalance_rate", "must be a number > 0 and <= 1000, got 'fast'"},
      {"      rebalance_rate: \"4\"\n", 23, "rebalance_rate", "must be a number > 0 and <= 1000, got string \"4\""},
      {"      max_requests: -1\n", 21, "max_requests", "must be 0..4294967295, got -1"},
      {"      max_requests: 4294967296\n", 21, "max_requests", "must be 0..4294967295, got 4294967296"},
      {"      max_requests: 1.5\n", 21, "max_requests", "must be an integer 0..4294967295, got '1.5'"},
      {"      max_requests: \"1000\"\n", 21, "max_requests",
       "must be an integer 0..4294967295, got string \"1000\""},
      {"      max_age: -5s\n", 16, "max_age", "must not be negative, got '-5s'"},
      {"      max_age: .nan\n", 16, "max_age", "must be a duration like 90, 1.5, 500ms, 30s, 10m or 1h, got '.nan'"},
      {"      max_age: 10 m\n", 16, "max_age", "must be a duration like 90, 1.5, 500ms, 30s, 10m or 1h, got '10 m'"},
      {"      max_age: 2d\n", 16, "max_age", "unknown unit 'd' in '2d'; use ms, s, m or h"},
      {"      max_age: 721h\n", 16, "max_age", "must be at most 720h (30 days), got '721h'"},
      {"      max_age: {minutes: 10}\n", 16, "max_age", "must be a duration like 90, 30s or 10m, got a map"},
      {"      drain_timeout: 0.1ms\n", 22, "drain_timeout", "must be 0 or at least 1ms, got '0.1ms'"},
      {"      drain_timeout: 2592001\n", 22, "drain_timeout", "must be at most 720h (30 days), got '2592001'"},
      {"      drain_timout: 5m\n", 7, "drain_timout", "unknown field 'drain_timout' (did you mean 'drain_timeout'?)"},
      {"      max-age: 10m\n", 7, "max-age", "unknown field 'max-age' (did you mean 'max_age'?)"},
      {"      idle_timeout: 10m\n", 7, "idle_timeout", "unknown field 'idle_timeout'"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.line);
    ParseResult r = parse(kConnHead + "    connections:\n" + c.line);
    EXPECT_FALSE(r.snapshot.has_value()) << "a bad file gives no snapshot: the last good state stays";
    ASSERT_EQ(r.errors.size(), 1u) << dump(r);
    const ParseError& e = r.errors[0];
    EXPECT_EQ(e.file, kFile);
    EXPECT_EQ(e.line, 7) << e.toString();
    EXPECT_EQ(e.column, c.column) << e.toString();
    EXPECT_EQ(e.field, "services[0].connections." + c.field) << e.toString();
    EXPECT_EQ(e.message, c.message) << e.toString();
  }
}

TEST(StateFileConnections, ErrorFullText) {
  ParseResult r = parse(kConnHead + "    connections:\n      max_age: 2d\n");
  ASSERT_EQ(r.errors.size(), 1u) << dump(r);
  EXPECT_EQ(r.errors[0].toString(),
            "test.yaml:7:16: services[0].connections.max_age: unknown unit 'd' in '2d'; use ms, s, m or h");
}

TEST(StateFileConnections, ShapeErrors) {
  expectOneError(kConnHead + "    connections: true\n", 6, 18, "services[0].connections",
                 "must be a map like {rebalance: true, max_age: 10m}, got 'true'");
  expectOneError(kConnHead + "    connections: [max_age: 10m]\n", 6, 18, "services[0].connections", "got a list");
  expectOneError(kConnHead + "    connections:\n      max_age: 1m\n      max_age: 2m\n", 8, 7,
                 "services[0].connections.max_age", "duplicate field 'max_age' (first at line 7)");
  expectOneError(kConnHead + "    connections: {}\n    connections: {}\n", 7, 5, "services[0].connections",
                 "duplicate field 'connections' (first at line 6)");
}

TEST(StateFileConnections, EveryErrorReportedInFileOrder) {
  ParseResult r = parse(kConnHead +
                        "    connections:\n"
                        "      drain_timeout: 1w\n"
                        "      max_requests: lots\n"
                        "      rebalance: maybe\n"
                        "      max_age: -1m\n"
                        "      rebalance_rate: 0\n"
                        "      rebalanse: true\n");
  EXPECT_FALSE(r.snapshot.has_value());
  std::vector<std::string> want = {
      "test.yaml:7:22: services[0].connections.drain_timeout: unknown unit 'w' in '1w'; use ms, s, m or h",
      "test.yaml:8:21: services[0].connections.max_requests: must be an integer 0..4294967295, got 'lots'",
      "test.yaml:9:18: services[0].connections.rebalance: must be true or false, got 'maybe'",
      "test.yaml:10:16: services[0].connections.max_age: must not be negative, got '-1m'",
      "test.yaml:11:23: services[0].connections.rebalance_rate: must be > 0 and <= 1000, got 0",
      "test.yaml:12:7: services[0].connections.rebalanse: unknown field 'rebalanse' (did you mean 'rebalance'?)",
  };
  ASSERT_EQ(r.errors.size(), want.size()) << dump(r);
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(r.errors[i].toString(), want[i]);
}

TEST(StateFileConnections, OtherServicesUnaffected) {
  ParseResult r = parse(kConnHead + "    connections: {max_age: 1h}\n" +
                        "  - {name: b, vips: [10.96.0.2], ports: [{port: 80}]}\n");
  ASSERT_TRUE(r.snapshot.has_value()) << dump(r);
  ASSERT_EQ(r.snapshot->services.size(), 2u);
  EXPECT_EQ(r.snapshot->services[0].connections.maxAgeMs, 3'600'000u);
  EXPECT_EQ(r.snapshot->services[1].connections, ConnectionPolicy{});
}

}  // namespace
}  // namespace aimesh
