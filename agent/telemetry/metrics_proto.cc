#include "telemetry/metrics_proto.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <io/prometheus/client/metrics.pb.h>

#include <cmath>
#include <cstdlib>
#include <string_view>

#include <spdlog/spdlog.h>

#include "telemetry/views.h"

namespace aimesh {

namespace pb = io::prometheus::client;

NativeHistogram toNative(const Histogram& h) {
  NativeHistogram n;
  n.zeroThreshold = std::exp2(AIMESH_HIST_MIN_INDEX / 8.0);
  n.zeroCount = h.buckets[0];
  n.count = h.buckets[0];
  n.sumSeconds = static_cast<double>(h.sumNs) / 1e9;
  int previousIndex = 0;  // index of the last bucket written
  int64_t previousCount = 0;
  bool any = false;
  for (uint32_t b = 1; b < AIMESH_HIST_BUCKETS; ++b) {
    uint64_t c = h.buckets[b];
    if (c == 0) continue;
    // The overflow bucket is the native bucket after the last one.
    int index = b == AIMESH_HIST_BUCKETS - 1 ? AIMESH_HIST_MAX_INDEX + 1 : histNativeIndex(b);
    if (!any) {
      n.spans.push_back({index, 1});
    } else if (index == previousIndex + 1) {
      n.spans.back().second++;
    } else {
      n.spans.push_back({index - previousIndex - 1, 1});
    }
    n.deltas.push_back(static_cast<int64_t>(c) - previousCount);
    previousCount = static_cast<int64_t>(c);
    previousIndex = index;
    any = true;
    n.count += c;
  }
  return n;
}

namespace {

// The text format's escapes: \\, \" (label values) and \n.
std::string unescape(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      char c = s[++i];
      out += c == 'n' ? '\n' : c;
    } else {
      out += s[i];
    }
  }
  return out;
}

// `name{k="v",...} value` or `name value`.
Result<TextSample> parseSample(std::string_view line) {
  TextSample s;
  size_t i = line.find_first_of("{ ");
  if (i == std::string_view::npos) return Error::msg("no value");
  s.name = std::string(line.substr(0, i));
  if (line[i] == '{') {
    ++i;
    while (i < line.size() && line[i] != '}') {
      size_t eq = line.find("=\"", i);
      if (eq == std::string_view::npos) return Error::msg("a label without =\"");
      std::string key(line.substr(i, eq - i));
      size_t j = eq + 2;
      std::string raw;
      while (j < line.size() && line[j] != '"') {
        if (line[j] == '\\' && j + 1 < line.size()) raw += line[j++];
        raw += line[j++];
      }
      if (j >= line.size()) return Error::msg("an unterminated label value");
      s.labels.emplace_back(std::move(key), unescape(raw));
      i = j + 1;
      if (i < line.size() && line[i] == ',') ++i;
    }
    if (i >= line.size()) return Error::msg("no closing }");
    ++i;
  }
  std::string value(line.substr(i));
  char* end = nullptr;
  s.value = std::strtod(value.c_str(), &end);
  if (end == value.c_str()) return Error::msg("no number after the labels");
  while (*end == ' ') ++end;
  if (*end) return Error::msg("text after the value");
  return s;
}

pb::MetricType typeOf(const std::string& t) {
  if (t == "counter") return pb::COUNTER;
  if (t == "gauge") return pb::GAUGE;
  if (t == "histogram") return pb::HISTOGRAM;
  if (t == "summary") return pb::SUMMARY;
  return pb::UNTYPED;
}

void setLabels(pb::Metric* m, const std::vector<std::pair<std::string, std::string>>& labels) {
  for (auto& [k, v] : labels) {
    pb::LabelPair* l = m->add_label();
    l->set_name(k);
    l->set_value(v);
  }
}

void setNative(pb::Histogram* out, const NativeHistogram& n) {
  out->set_sample_count(n.count);
  out->set_sample_sum(n.sumSeconds);
  out->set_schema(n.schema);
  out->set_zero_threshold(n.zeroThreshold);
  out->set_zero_count(n.zeroCount);
  for (auto& [offset, length] : n.spans) {
    pb::BucketSpan* s = out->add_positive_span();
    s->set_offset(offset);
    s->set_length(length);
  }
  for (int64_t d : n.deltas) out->add_positive_delta(d);
}

// One message, length-delimited (a varint of its size, then its bytes).
void appendDelimited(std::string& out, const pb::MetricFamily& f) {
  google::protobuf::io::StringOutputStream stream(&out);
  google::protobuf::io::CodedOutputStream coded(&stream);
  coded.WriteVarint32(static_cast<uint32_t>(f.ByteSizeLong()));
  f.SerializeWithCachedSizes(&coded);
}

}  // namespace

Result<std::vector<TextFamily>> parseTextExposition(const std::string& text) {
  std::vector<TextFamily> out;
  std::string pendingHelp, pendingName;
  size_t lineNo = 0;
  for (size_t start = 0; start < text.size();) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + start, end - start);
    start = end + 1;
    ++lineNo;
    if (line.empty()) continue;
    if (line.starts_with("# HELP ")) {
      std::string_view rest = line.substr(7);
      size_t sp = rest.find(' ');
      pendingName = std::string(rest.substr(0, sp));
      pendingHelp = sp == std::string_view::npos ? "" : unescape(rest.substr(sp + 1));
    } else if (line.starts_with("# TYPE ")) {
      std::string_view rest = line.substr(7);
      size_t sp = rest.find(' ');
      if (sp == std::string_view::npos) return Error::msg("line " + std::to_string(lineNo) + ": TYPE without a type");
      TextFamily f{.name = std::string(rest.substr(0, sp)), .help = "", .type = std::string(rest.substr(sp + 1))};
      if (f.name == pendingName) f.help = pendingHelp;
      out.push_back(std::move(f));
    } else if (line.starts_with("#")) {
      continue;
    } else {
      auto s = parseSample(line);
      if (!s) return Error::msg("line " + std::to_string(lineNo) + ": " + s.error().message());
      if (out.empty()) return Error::msg("line " + std::to_string(lineNo) + ": a sample before any TYPE");
      out.back().samples.push_back(std::move(s.value()));
    }
  }
  return out;
}

std::string renderMetricsProtobuf(const MetricsInput& in) {
  MetricsInput text = in;
  text.openMetrics = false;
  text.histograms = false;
  std::string out;
  auto families = parseTextExposition(renderMetrics(text));
  // Our own text: a failure here is a bug in renderMetrics (a unit test
  // reads back every family); say so and serve the histograms.
  if (!families) spdlog::error("/metrics protobuf: cannot read back the text exposition: {}", families.error().message());
  if (families) {
    for (const TextFamily& tf : *families) {
      pb::MetricFamily f;
      f.set_name(tf.name);
      f.set_help(tf.help);
      f.set_type(typeOf(tf.type));
      for (const TextSample& s : tf.samples) {
        pb::Metric* m = f.add_metric();
        setLabels(m, s.labels);
        if (f.type() == pb::COUNTER) m->mutable_counter()->set_value(s.value);
        else if (f.type() == pb::GAUGE) m->mutable_gauge()->set_value(s.value);
        else m->mutable_untyped()->set_value(s.value);
      }
      appendDelimited(out, f);
    }
  }
  if (!in.telemetry) return out;
  std::vector<EndpointRow> rows = endpointRows(*in.index, {}, in.stats, in.telemetry);
  for (const HistogramFamily& h : histogramFamilies()) {
    pb::MetricFamily f;
    f.set_name(h.name);
    f.set_help(h.help);
    f.set_type(pb::HISTOGRAM);
    for (const EndpointRow& r : rows) {
      if (!r.telemetry || r.telemetry->hist[h.metric].empty()) continue;  // as the text format
      pb::Metric* m = f.add_metric();
      setLabels(m, endpointLabelPairs(r));
      setNative(m->mutable_histogram(), toNative(r.telemetry->hist[h.metric]));
    }
    appendDelimited(out, f);
  }
  return out;
}

}  // namespace aimesh
