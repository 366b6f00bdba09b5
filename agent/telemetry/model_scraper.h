// Optional scraper of model-server load signals: parseModelMetrics() reads a
// Prometheus text exposition (vLLM, SGLang, TGI names) into ModelSignals, and
// ModelScraper polls a set of backends' /metrics on its own thread (optionally
// inside another network namespace) through libcurl's multi interface and
// hands each result to a sink, which the agent uses to write queue depth into
// a BPF map for the load balancer.
//
// Not here: the BPF map, its layout or the writer (the sink's job), service
// discovery of which backends to scrape (the caller's setTargets()), and the
// agent's own /metrics rendering (it reads scrapesOk()/scrapesFailed()).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"

namespace aimesh {

// Load signals of one model server. Each value is the sum over the metric's
// label sets (e.g. vLLM's per-engine series), except kvCacheUsage, which is
// the mean over label sets so it stays a 0..1 fraction. NaN samples carry no
// reading and are skipped; +Inf is passed through (callers clamp).
struct ModelSignals {
  double waiting = 0;       // vllm:num_requests_waiting | sglang:num_queue_reqs | tgi_queue_size
  double running = 0;       // vllm:num_requests_running | sglang:num_running_reqs | tgi_batch_current_size
  double kvCacheUsage = 0;  // vllm:kv_cache_usage_perc | vllm:gpu_cache_usage_perc | sglang:token_usage
  bool hasWaiting = false, hasRunning = false, hasKvCache = false;
};

// Parses Prometheus text format 0.0.4. When a server exposes more than one
// name for a signal (vLLM 0.9+ prints both kv_cache_ and the deprecated
// gpu_cache_usage_perc), the first name in the lists above wins, so nothing
// is counted twice. Errors: a malformed line ("line N: ..."), or a body with
// none of the known metrics.
Result<ModelSignals> parseModelMetrics(std::string_view text);

// host is an IP literal ("10.0.0.7", "fd00::7" or "[fd00::7]"); names are
// refused so a scrape can never block on DNS beyond its timeout.
struct ScrapeTarget {
  uint32_t backendId = 0;
  std::string host;
  uint16_t port = 0;
  std::string path = "/metrics";
};

// Scrapes every target once per interval, all targets in parallel (up to 32
// at a time) on the scraper's one thread, each bounded by Options.timeout,
// so a slow or dead backend delays no one else. Connections are kept alive
// from one tick to the next. Results go to the sink from the scraper's thread,
// one call at a time, never under an internal lock (the sink may call
// setTargets()). A result is dropped if its backend left the target set while
// it was in flight.
class ModelScraper {
 public:
  // Called after every scrape of a target, from the scraper's thread.
  using Sink = std::function<void(uint32_t backendId, const Result<ModelSignals>&)>;
  struct Options {
    std::chrono::milliseconds interval{500};
    std::chrono::milliseconds timeout{300};  // whole scrape: connect + request + body
    // "" = the agent's own network namespace; else a name under
    // /var/run/netns, joined by the scraper thread with setns(CLONE_NEWNET)
    // before it opens any socket (it opens them all). If that fails, every
    // scrape reports why.
    std::string netns;
  };

  ModelScraper(Options opts, Sink sink);
  // Stops and joins the thread: in-flight requests are dropped at once
  // (curl_multi_wakeup() ends the thread's wait) and reported to no one.
  ~ModelScraper();
  ModelScraper(const ModelScraper&) = delete;
  ModelScraper& operator=(const ModelScraper&) = delete;

  // Thread-safe; replaces the whole set. Takes effect at the next tick, or at
  // once if the scraper had no targets.
  void setTargets(std::vector<ScrapeTarget> targets);

  // Counters for the agent's /metrics.
  uint64_t scrapesOk() const;
  uint64_t scrapesFailed() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace aimesh
