// model-server: a stand-in for an OpenAI-compatible LLM inference server
// (vLLM-like) used by aimesh benchmarks and end-to-end tests.
//
// It generates fake tokens ("tok0 tok1 ...") with a configurable time to first
// token and time per output token, admits at most --max-concurrent requests at
// once (the rest queue FIFO), and exports vLLM-style Prometheus gauges on
// /metrics. See docs/model-server.md.
#include <httplib.h>
#include <pthread.h>
#include <signal.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>

#include "model_server_lib.h"

namespace aimesh {
namespace {

using json = nlohmann::json;
using SteadyClock = std::chrono::steady_clock;

constexpr int kMaxTokens = 4096;

struct ServerOptions {
  std::string listen = "127.0.0.1";
  int port = 0;
  std::string name = "model-server";
  int ttftMs = 50;
  int tpotMs = 10;
  int tokens = 16;
  int maxConcurrent = 4;
  int threads = 64;
  // uvicorn (vLLM's server) closes an idle keep-alive connection after 5 s
  // and has no per-connection request limit; httplib's defaults (5 requests,
  // 5 s) would cut a client's pooled connections every fifth request.
  int keepAliveMax = 0;  // 0: unlimited
  int keepAliveTimeoutS = 5;
  std::string portFile;
  std::string model = "stand-in";
};

enum class ApiKind { Completion, Chat };

// What one request asks for, after validation.
struct GenerationRequest {
  ApiKind kind = ApiKind::Completion;
  std::string model;
  int tokens = 0;
  bool hitLimit = false;  // max_tokens was given: finish_reason "length"
  bool stream = false;
  bool includeUsage = false;  // stream_options.include_usage
  int promptTokens = 0;
};

struct ServerStats {
  std::atomic<std::uint64_t> successStop{0};
  std::atomic<std::uint64_t> successLength{0};
  std::atomic<std::uint64_t> aborted{0};
  std::atomic<std::uint64_t> badRequests{0};
  std::atomic<std::uint64_t> promptTokens{0};
  std::atomic<std::uint64_t> generationTokens{0};
  std::atomic<std::uint64_t> nextId{0};
};

int countWords(const std::string& text) {
  std::istringstream in(text);
  std::string word;
  int n = 0;
  while (in >> word) ++n;
  return n;
}

// Rough prompt size in "tokens" (whitespace-separated words, or the length
// of a pre-tokenized prompt).
int countPromptTokens(const json& value) {
  if (value.is_string()) return countWords(value.get<std::string>());
  if (value.is_array()) {
    int n = 0;
    for (const auto& item : value) n += item.is_number_integer() ? 1 : countPromptTokens(item);
    return n;
  }
  if (value.is_object() && value.contains("text")) return countPromptTokens(value["text"]);
  return 0;
}

json errorBody(const std::string& message, const std::string& param) {
  return json{{"error",
               {{"message", message},
                {"type", "invalid_request_error"},
                {"param", param.empty() ? json(nullptr) : json(param)},
                {"code", nullptr}}}};
}

void sendError(httplib::Response& res, int status, const std::string& message, const std::string& param = "") {
  res.status = status;
  res.set_content(errorBody(message, param).dump(), "application/json");
}

// Parses and validates an OpenAI-style body; on failure fills `error`/`param`.
std::optional<GenerationRequest> parseRequest(ApiKind kind, const std::string& body, const ServerOptions& opts,
                                              std::string& error, std::string& param) {
  json doc = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    error = "request body is not valid JSON";
    return std::nullopt;
  }
  if (!doc.is_object()) {
    error = "request body must be a JSON object";
    return std::nullopt;
  }
  GenerationRequest req;
  req.kind = kind;
  req.tokens = opts.tokens;
  req.model = opts.model;
  if (auto it = doc.find("model"); it != doc.end() && !it->is_null()) {
    if (!it->is_string()) {
      error = "'model' must be a string";
      param = "model";
      return std::nullopt;
    }
    req.model = it->get<std::string>();
  }
  if (kind == ApiKind::Completion) {
    auto it = doc.find("prompt");
    if (it == doc.end() || !(it->is_string() || it->is_array())) {
      error = "'prompt' is required and must be a string or an array";
      param = "prompt";
      return std::nullopt;
    }
    req.promptTokens = countPromptTokens(*it);
  } else {
    auto it = doc.find("messages");
    if (it == doc.end() || !it->is_array() || it->empty()) {
      error = "'messages' is required and must be a non-empty array";
      param = "messages";
      return std::nullopt;
    }
    for (const auto& msg : *it) {
      if (!msg.is_object()) {
        error = "each message must be an object";
        param = "messages";
        return std::nullopt;
      }
      if (auto c = msg.find("content"); c != msg.end()) req.promptTokens += countPromptTokens(*c);
    }
  }
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    auto it = doc.find(key);
    if (it == doc.end() || it->is_null()) continue;
    if (!it->is_number_integer() || it->get<std::int64_t>() < 1) {
      error = std::string("'") + key + "' must be a positive integer";
      param = key;
      return std::nullopt;
    }
    req.tokens = static_cast<int>(std::min<std::int64_t>(it->get<std::int64_t>(), kMaxTokens));
    req.hitLimit = true;
  }
  if (auto it = doc.find("stream"); it != doc.end() && !it->is_null()) {
    if (!it->is_boolean()) {
      error = "'stream' must be a boolean";
      param = "stream";
      return std::nullopt;
    }
    req.stream = it->get<bool>();
  }
  if (auto it = doc.find("stream_options"); it != doc.end() && it->is_object()) {
    req.includeUsage = it->value("include_usage", false);
  }
  return req;
}

std::string tokenText(int i) { return "tok" + std::to_string(i); }

std::string generatedText(int tokens) {
  std::string text;
  for (int i = 0; i < tokens; ++i) {
    if (i > 0) text += ' ';
    text += tokenText(i);
  }
  return text;
}

std::int64_t unixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

json usageJson(const GenerationRequest& req) {
  return json{{"prompt_tokens", req.promptTokens},
              {"completion_tokens", req.tokens},
              {"total_tokens", req.promptTokens + req.tokens}};
}

// Prometheus label value escaping.
std::string escapeLabel(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

const char* finishReason(const GenerationRequest& req) { return req.hitLimit ? "length" : "stop"; }

class ModelServer {
 public:
  explicit ModelServer(ServerOptions opts) : opts_(std::move(opts)), scheduler_(opts_.maxConcurrent) {
    const int threads = opts_.threads;
    server_.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
    server_.set_tcp_nodelay(true);
    // httplib counts down from this and asserts it is > 0: "unlimited" is the
    // largest count.
    server_.set_keep_alive_max_count(opts_.keepAliveMax > 0 ? static_cast<size_t>(opts_.keepAliveMax)
                                                            : std::numeric_limits<size_t>::max());
    server_.set_keep_alive_timeout(opts_.keepAliveTimeoutS);
    server_.set_default_headers({{"X-Aimesh-Backend", opts_.name}});
    registerRoutes();
  }

  // Binds, writes the port file, serves until stop(). Returns false on error.
  bool run(const std::atomic<bool>& stopRequested) {
    std::string host = opts_.listen;
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    int port = opts_.port;
    if (port == 0) {
      port = server_.bind_to_any_port(host);
      if (port <= 0) {
        spdlog::error("cannot bind {} (any port)", host);
        return false;
      }
    } else if (!server_.bind_to_port(host, port)) {
      spdlog::error("cannot bind {} port {}", host, port);
      return false;
    }
    if (!opts_.portFile.empty() && !writePortFile(port)) return false;
    spdlog::info("model-server '{}' (model {}) listening on {}:{} ttft={}ms tpot={}ms tokens={} max-concurrent={} "
                 "keep-alive-max={} keep-alive-timeout={}s",
                 opts_.name, opts_.model, host, port, opts_.ttftMs, opts_.tpotMs, opts_.tokens, opts_.maxConcurrent,
                 opts_.keepAliveMax, opts_.keepAliveTimeoutS);
    if (stopRequested) return true;
    return server_.listen_after_bind();
  }

  // Called from the signal-watching thread, never from a signal handler.
  void stop(const std::atomic<bool>& listenReturned) {
    scheduler_.shutdown();  // wake queued requests, cut sleeps short
    // Server::stop() is a no-op until the accept loop is running, so wait for
    // it (or for listen to have returned on its own).
    while (!listenReturned && !server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (server_.is_running()) server_.stop();
  }

 private:
  bool writePortFile(int port) {
    const std::string tmp = opts_.portFile + ".tmp";
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << port << '\n';
      if (!out) {
        spdlog::error("cannot write port file {}", tmp);
        return false;
      }
    }
    std::error_code ec;
    std::filesystem::rename(tmp, opts_.portFile, ec);
    if (ec) {
      spdlog::error("cannot rename {} to {}: {}", tmp, opts_.portFile, ec.message());
      return false;
    }
    return true;
  }

  void registerRoutes() {
    server_.Post("/v1/completions", [this](const httplib::Request& rq, httplib::Response& rs) {
      handleGenerate(ApiKind::Completion, rq, rs);
    });
    server_.Post("/v1/chat/completions", [this](const httplib::Request& rq, httplib::Response& rs) {
      handleGenerate(ApiKind::Chat, rq, rs);
    });
    server_.Get("/metrics", [this](const httplib::Request&, httplib::Response& rs) {
      rs.set_content(renderMetrics(), "text/plain; version=0.0.4; charset=utf-8");
    });
    server_.Get("/health", [](const httplib::Request&, httplib::Response& rs) { rs.set_content("ok", "text/plain"); });
    server_.Get("/whoami", [this](const httplib::Request&, httplib::Response& rs) {
      rs.set_content(opts_.name, "text/plain");
    });
    server_.Get("/v1/models", [this](const httplib::Request&, httplib::Response& rs) {
      json body{{"object", "list"},
                {"data", json::array({json{{"id", opts_.model},
                                           {"object", "model"},
                                           {"created", unixNow()},
                                           {"owned_by", opts_.name}}})}};
      rs.set_content(body.dump(), "application/json");
    });
  }

  void handleGenerate(ApiKind kind, const httplib::Request& rq, httplib::Response& rs) {
    std::string error;
    std::string param;
    auto parsed = parseRequest(kind, rq.body, opts_, error, param);
    if (!parsed) {
      stats_.badRequests.fetch_add(1);
      sendError(rs, 400, error, param);
      return;
    }
    const GenerationRequest req = *parsed;
    const std::string id = std::string(kind == ApiKind::Chat ? "chatcmpl-" : "cmpl-") + opts_.name + "-" +
                           std::to_string(stats_.nextId.fetch_add(1));
    if (req.stream) {
      // Headers go out now (like vLLM); queueing and TTFT delay the first event.
      rs.set_header("Cache-Control", "no-cache");
      rs.set_chunked_content_provider("text/event-stream", [this, req, id](size_t, httplib::DataSink& sink) {
        return streamTokens(req, id, sink);
      });
      return;
    }
    auto slot = scheduler_.acquire();
    if (!slot) {
      stats_.aborted.fetch_add(1);
      sendError(rs, 503, "server is shutting down");
      return;
    }
    const auto start = SteadyClock::now();
    const auto done = start + std::chrono::milliseconds(opts_.ttftMs) +
                      std::chrono::milliseconds(static_cast<std::int64_t>(opts_.tpotMs) * (req.tokens - 1));
    if (!scheduler_.sleepUntil(done)) {
      stats_.aborted.fetch_add(1);
      sendError(rs, 503, "server is shutting down");
      return;
    }
    slot.reset();
    json choice{{"index", 0}, {"finish_reason", finishReason(req)}};
    if (kind == ApiKind::Chat) {
      choice["message"] = json{{"role", "assistant"}, {"content", generatedText(req.tokens)}};
    } else {
      choice["text"] = generatedText(req.tokens);
      choice["logprobs"] = nullptr;
    }
    json body{{"id", id},
              {"object", kind == ApiKind::Chat ? "chat.completion" : "text_completion"},
              {"created", unixNow()},
              {"model", req.model},
              {"backend", opts_.name},
              {"choices", json::array({choice})},
              {"usage", usageJson(req)}};
    recordSuccess(req);
    rs.set_content(body.dump(), "application/json");
  }

  // Runs the whole generation inside one provider call: one sink.write (one
  // HTTP chunk, one SSE event) per token.
  bool streamTokens(const GenerationRequest& req, const std::string& id, httplib::DataSink& sink) {
    auto slot = scheduler_.acquire();
    if (!slot) {
      stats_.aborted.fetch_add(1);
      return false;
    }
    const auto start = SteadyClock::now();
    const std::int64_t created = unixNow();
    const char* object = req.kind == ApiKind::Chat ? "chat.completion.chunk" : "text_completion";
    auto writeEvent = [&](const std::string& payload) {
      const std::string event = "data: " + payload + "\n\n";
      return sink.is_writable() && sink.write(event.data(), event.size());
    };
    for (int i = 0; i < req.tokens; ++i) {
      const auto due = start + std::chrono::milliseconds(opts_.ttftMs) +
                       std::chrono::milliseconds(static_cast<std::int64_t>(opts_.tpotMs) * i);
      if (!scheduler_.sleepUntil(due)) {
        stats_.aborted.fetch_add(1);
        return false;
      }
      const bool last = i + 1 == req.tokens;
      const std::string piece = (i > 0 ? " " : "") + tokenText(i);
      json choice{{"index", 0}, {"finish_reason", last ? json(finishReason(req)) : json(nullptr)}};
      if (req.kind == ApiKind::Chat) {
        json delta{{"content", piece}};
        if (i == 0) delta["role"] = "assistant";
        choice["delta"] = std::move(delta);
      } else {
        choice["text"] = piece;
        choice["logprobs"] = nullptr;
      }
      json chunk{{"id", id},
                 {"object", object},
                 {"created", created},
                 {"model", req.model},
                 {"backend", opts_.name},
                 {"choices", json::array({choice})}};
      if (!writeEvent(chunk.dump())) {
        stats_.aborted.fetch_add(1);
        return false;  // client went away
      }
    }
    slot.reset();
    if (req.includeUsage) {
      json chunk{{"id", id},          {"object", object},       {"created", created},
                 {"model", req.model}, {"backend", opts_.name}, {"choices", json::array()},
                 {"usage", usageJson(req)}};
      if (!writeEvent(chunk.dump())) return false;
    }
    if (!writeEvent("[DONE]")) return false;
    recordSuccess(req);
    sink.done();
    return true;
  }

  void recordSuccess(const GenerationRequest& req) {
    (req.hitLimit ? stats_.successLength : stats_.successStop).fetch_add(1);
    stats_.promptTokens.fetch_add(static_cast<std::uint64_t>(req.promptTokens));
    stats_.generationTokens.fetch_add(static_cast<std::uint64_t>(req.tokens));
  }

  std::string renderMetrics() const {
    const auto g = scheduler_.gauges();
    const std::string label = "model_name=\"" + escapeLabel(opts_.model) + "\"";
    const double kvUsage = static_cast<double>(g.running) / static_cast<double>(g.maxConcurrent);
    std::string out;
    auto metric = [&](const char* name, const char* type, const char* help, const std::string& labels,
                      const std::string& value) {
      out += std::string("# HELP ") + name + " " + help + "\n";
      out += std::string("# TYPE ") + name + " " + type + "\n";
      out += std::string(name) + "{" + labels + "} " + value + "\n";
    };
    metric("vllm:num_requests_running", "gauge", "Number of requests currently running.", label,
           std::to_string(g.running));
    metric("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.", label,
           std::to_string(g.waiting));
    metric("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage; 1 means 100 percent (stand-in: running/max).",
           label, fmt::format("{:.6g}", kvUsage));
    out += "# HELP vllm:request_success_total Count of successfully processed requests.\n";
    out += "# TYPE vllm:request_success_total counter\n";
    out += "vllm:request_success_total{finished_reason=\"stop\"," + label + "} " +
           std::to_string(stats_.successStop.load()) + "\n";
    out += "vllm:request_success_total{finished_reason=\"length\"," + label + "} " +
           std::to_string(stats_.successLength.load()) + "\n";
    metric("vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.", label,
           std::to_string(stats_.promptTokens.load()));
    metric("vllm:generation_tokens_total", "counter", "Number of generation tokens processed.", label,
           std::to_string(stats_.generationTokens.load()));
    metric("aimesh_model_server_aborted_requests_total", "counter",
           "Requests cut short by client disconnect or shutdown.", label, std::to_string(stats_.aborted.load()));
    metric("aimesh_model_server_bad_requests_total", "counter", "Requests rejected with 400.", label,
           std::to_string(stats_.badRequests.load()));
    metric("aimesh_model_server_max_concurrent", "gauge", "Configured --max-concurrent.", label,
           std::to_string(g.maxConcurrent));
    return out;
  }

  ServerOptions opts_;
  RequestScheduler scheduler_;
  ServerStats stats_;
  httplib::Server server_;
};

int runMain(int argc, char** argv) {
  ServerOptions opts;
  CLI::App app{"model-server: OpenAI/vLLM-compatible inference server stand-in"};
  app.add_option("--listen", opts.listen, "address to listen on (IPv4 or IPv6 literal)")->capture_default_str();
  app.add_option("--port", opts.port, "TCP port; 0 picks a free one")->check(CLI::Range(0, 65535))->capture_default_str();
  app.add_option("--name", opts.name, "backend name (responses, X-Aimesh-Backend, /whoami)")->capture_default_str();
  app.add_option("--ttft-ms", opts.ttftMs, "time to first token, ms")->check(CLI::Range(0, 600000))->capture_default_str();
  app.add_option("--tpot-ms", opts.tpotMs, "time per output token, ms")->check(CLI::Range(0, 600000))->capture_default_str();
  app.add_option("--tokens", opts.tokens, "tokens per response unless the request sets max_tokens")
      ->check(CLI::Range(1, kMaxTokens))
      ->capture_default_str();
  app.add_option("--max-concurrent", opts.maxConcurrent, "requests generated at once; the rest queue FIFO")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  app.add_option("--threads", opts.threads, "HTTP worker threads")->check(CLI::Range(1, 4096))->capture_default_str();
  app.add_option("--keep-alive-max", opts.keepAliveMax,
                 "requests per keep-alive connection before the server closes it; 0: unlimited")
      ->check(CLI::Range(0, 1 << 30))
      ->capture_default_str();
  app.add_option("--keep-alive-timeout", opts.keepAliveTimeoutS,
                 "idle seconds before the server closes a keep-alive connection")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  app.add_option("--port-file", opts.portFile, "write the bound port to this file once listening");
  app.add_option("--model", opts.model, "served model name (model_name label)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  // Block the stop signals in every thread; one thread takes them with sigwait.
  sigset_t stopSignals;
  sigemptyset(&stopSignals);
  sigaddset(&stopSignals, SIGINT);
  sigaddset(&stopSignals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stopSignals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  ModelServer server(opts);
  std::atomic<bool> stopRequested{false};
  std::atomic<bool> listenReturned{false};
  std::thread watcher([&] {
    int sig = 0;
    sigwait(&stopSignals, &sig);
    if (listenReturned) return;  // woken by main after the server ended on its own
    spdlog::info("model-server '{}': signal {}, stopping", opts.name, sig);
    stopRequested = true;
    server.stop(listenReturned);
  });

  const bool ok = server.run(stopRequested);
  listenReturned = true;
  if (!stopRequested) pthread_kill(watcher.native_handle(), SIGTERM);  // wake sigwait
  watcher.join();
  if (stopRequested) {
    spdlog::info("model-server '{}': stopped", opts.name);
    return 0;
  }
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace aimesh

int main(int argc, char** argv) { return aimesh::runMain(argc, argv); }
