// Unit tests of /metrics in Prometheus' protobuf format
// (telemetry/metrics_proto.h): the kernel histogram as native-histogram
// fields, the text exposition read back family by family, and the encoded
// bytes decoded twice — with the classes protoc generates from the published
// metrics.proto, and by `protoc --decode` itself, a decoder that is not ours.
#include "telemetry/metrics_proto.h"

#include <google/protobuf/io/coded_stream.h>
#include <gtest/gtest.h>
#include <io/prometheus/client/metrics.pb.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "fixtures/sandbox.h"

namespace aimesh {
namespace {

namespace pb = io::prometheus::client;

IpAddr ip(const char* s) { return *IpAddr::parse(s); }

// Splits the delimited stream into messages.
std::vector<pb::MetricFamily> decode(const std::string& bytes) {
  std::vector<pb::MetricFamily> out;
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()),
                                            static_cast<int>(bytes.size()));
  while (in.CurrentPosition() < static_cast<int>(bytes.size())) {
    uint32_t size = 0;
    if (!in.ReadVarint32(&size)) break;
    auto limit = in.PushLimit(static_cast<int>(size));
    pb::MetricFamily f;
    EXPECT_TRUE(f.ParseFromCodedStream(&in));
    in.PopLimit(limit);
    out.push_back(std::move(f));
  }
  EXPECT_EQ(in.CurrentPosition(), static_cast<int>(bytes.size())) << "trailing bytes";
  return out;
}

struct Fixture {
  IdIndex index;
  DatapathStats stats;
  std::map<uint32_t, BackendTelemetry> telemetry;
  MetricsInput in;
  Fixture() {
    ServiceInfo chat;
    chat.name = "chat";
    chat.nameSpace = "ml";
    chat.model = "we\"ird\\model\nx";
    chat.port = PortSpec{8000, Protocol::kTcp};
    chat.frontends = {FrontendKey{ip("10.96.0.20"), 8000, Protocol::kTcp}};
    chat.backendIds = {1, 2};
    index.services[1] = chat;
    index.backends[1] = BackendInfo{1, Endpoint{ip("10.0.0.1"), 0, 1, EndpointState::kActive}, 8000};
    index.backends[2] = BackendInfo{1, Endpoint{ip("fd00::2"), 0, 1, EndpointState::kActive}, 8000};
    stats.services[1] = ServiceCounters{5, 0, 2};
    stats.backends[1] = BackendCounters{4, 0};
    telemetry[1].counters.requests = 7;
    for (int i = 0; i < 3; ++i) telemetry[1].hist[AIMESH_M_TTFT].record(20'000'000);
    telemetry[1].hist[AIMESH_M_TTFT].record(400'000'000);
    in.index = &index;
    in.stats = &stats;
    in.telemetry = &telemetry;
    in.version = "0.1.0";
  }
};

TEST(NativeHistogramTest, EmptyHasAZeroBucketAndNoSpans) {
  NativeHistogram n = toNative(Histogram{});
  EXPECT_EQ(n.schema, 3);
  EXPECT_DOUBLE_EQ(n.zeroThreshold, std::exp2(-20));
  EXPECT_EQ(n.zeroCount, 0u);
  EXPECT_TRUE(n.spans.empty());
  EXPECT_TRUE(n.deltas.empty());
  EXPECT_EQ(n.count, 0u);
}

TEST(NativeHistogramTest, BucketsKeepTheirSchema3IndexWithSpansAndDeltas) {
  Histogram h;
  h.record(100);  // below 954 ns: the zero bucket
  // 20 ms: 2^(-45/8) = 20.4 ms > 20 ms > 2^(-46/8) = 18.7 ms -> index -45.
  for (int i = 0; i < 3; ++i) h.record(20'000'000);
  h.record(21'000'000);         // index -44 (20.4 .. 22.3 ms): next to it
  h.record(400'000'000);        // 2^(-11/8) = 385 ms .. 2^(-10/8) = 420 ms -> -10
  h.record(uint64_t{200} * 1'000'000'000);  // overflow: index 57
  NativeHistogram n = toNative(h);
  EXPECT_EQ(n.zeroCount, 1u);
  EXPECT_EQ(n.count, 7u);
  ASSERT_EQ(n.spans.size(), 3u);
  EXPECT_EQ(n.spans[0], (std::pair<int32_t, uint32_t>{-45, 2}));
  EXPECT_EQ(n.spans[1], (std::pair<int32_t, uint32_t>{-10 - (-44) - 1, 1}));
  EXPECT_EQ(n.spans[2], (std::pair<int32_t, uint32_t>{57 - (-10) - 1, 1}));
  EXPECT_EQ(n.deltas, (std::vector<int64_t>{3, -2, 0, 0}));
  EXPECT_NEAR(n.sumSeconds, 200.4 + 0.081 + 1e-7, 1e-6);
}

TEST(TextExpositionTest, ReadsBackEveryFamilyAndSampleOfRenderMetrics) {
  Fixture f;
  std::string text = renderMetrics(f.in);
  auto families = parseTextExposition(text);
  ASSERT_TRUE(families) << families.error().message();
  size_t types = 0, samples = 0, parsed = 0;
  for (size_t start = 0; start < text.size();) {
    size_t end = text.find('\n', start);
    std::string line = text.substr(start, end - start);
    start = end + 1;
    types += line.starts_with("# TYPE ");
    samples += !line.empty() && line[0] != '#';
  }
  for (auto& fam : *families) parsed += fam.samples.size();
  EXPECT_EQ(families->size(), types);
  EXPECT_EQ(parsed, samples);
  // Escaped label values come back as they were.
  bool found = false;
  for (auto& fam : *families)
    for (auto& s : fam.samples)
      for (auto& [k, v] : s.labels) found |= k == "model" && v == "we\"ird\\model\nx";
  EXPECT_TRUE(found);
  EXPECT_FALSE(parseTextExposition("# TYPE x counter\nx{a=\"b} 1\n"));
  EXPECT_FALSE(parseTextExposition("x 1\n"));
  EXPECT_FALSE(parseTextExposition("# TYPE x counter\nx{} one\n"));
}

TEST(MetricsProtobufTest, EveryTextFamilyAndNativeHistogramsDecode) {
  Fixture f;
  std::vector<pb::MetricFamily> families = decode(renderMetricsProtobuf(f.in));
  auto text = parseTextExposition(renderMetrics(f.in));
  ASSERT_TRUE(text);
  std::map<std::string, const pb::MetricFamily*> byName;
  for (auto& fam : families) byName[fam.name()] = &fam;
  // Every text family is there with as many samples; histograms are native.
  for (auto& tf : *text) {
    ASSERT_TRUE(byName.count(tf.name)) << tf.name;
    const pb::MetricFamily& fam = *byName[tf.name];
    if (tf.type == "histogram") {
      EXPECT_EQ(fam.type(), pb::HISTOGRAM);
      continue;
    }
    EXPECT_EQ(fam.metric_size(), static_cast<int>(tf.samples.size())) << tf.name;
    EXPECT_EQ(fam.help(), tf.help) << tf.name;
  }
  const pb::MetricFamily& requests = *byName.at("aimesh_endpoint_requests_total");
  EXPECT_EQ(requests.type(), pb::COUNTER);
  EXPECT_EQ(requests.metric(0).counter().value(), 7);
  const pb::MetricFamily& ttft = *byName.at("aimesh_endpoint_ttft_seconds");
  ASSERT_EQ(ttft.metric_size(), 1);  // endpoint 2 has no sample: no series
  const pb::Histogram& h = ttft.metric(0).histogram();
  EXPECT_EQ(h.schema(), 3);
  EXPECT_EQ(h.sample_count(), 4u);
  EXPECT_NEAR(h.sample_sum(), 0.46, 1e-9);
  EXPECT_EQ(h.bucket_size(), 0) << "native only";
  ASSERT_EQ(h.positive_span_size(), 2);
  EXPECT_EQ(h.positive_span(0).offset(), -45);
  EXPECT_EQ(h.positive_delta_size(), 2);
  EXPECT_EQ(h.positive_delta(0), 3);
  EXPECT_EQ(h.positive_delta(1), -2);
  std::map<std::string, std::string> labels;
  for (auto& l : ttft.metric(0).label()) labels[l.name()] = l.value();
  EXPECT_EQ(labels["model"], "we\"ird\\model\nx");
  EXPECT_EQ(labels["destination_endpoint"], "10.0.0.1:8000");
}

// protoc --decode reads what the agent encodes against the published schema.
TEST(MetricsProtobufTest, ProtocDecodesTheTtftFamily) {
  Fixture f;
  std::string bytes = renderMetricsProtobuf(f.in);
  // The TTFT family alone, without its length prefix.
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()),
                                            static_cast<int>(bytes.size()));
  std::string message;
  while (in.CurrentPosition() < static_cast<int>(bytes.size())) {
    uint32_t size = 0;
    ASSERT_TRUE(in.ReadVarint32(&size));
    std::string body;
    ASSERT_TRUE(in.ReadString(&body, static_cast<int>(size)));
    if (body.find("aimesh_endpoint_ttft_seconds") != std::string::npos) message = body;
  }
  ASSERT_FALSE(message.empty());
  testing::ScratchDir dir;
  std::string file = dir.write("ttft.bin", message);
  int rc = testing::sh(std::string(AIMESH_PROTOC) + " --decode=io.prometheus.client.MetricFamily -I" +
                       AIMESH_METRICS_PROTO_ROOT + " -I/usr/include " + AIMESH_METRICS_PROTO + " < " + file + " > " +
                       dir.path() + "/decoded.txt 2>&1");
  std::string out = testing::readFile(dir.path() + "/decoded.txt");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("name: \"aimesh_endpoint_ttft_seconds\""), std::string::npos) << out;
  EXPECT_NE(out.find("type: HISTOGRAM"), std::string::npos) << out;
  EXPECT_NE(out.find("schema: 3"), std::string::npos) << out;
  EXPECT_NE(out.find("sample_count: 4"), std::string::npos) << out;
  EXPECT_NE(out.find("offset: -45"), std::string::npos) << out;
  EXPECT_NE(out.find("positive_delta: -2"), std::string::npos) << out;
}

}  // namespace
}  // namespace aimesh
