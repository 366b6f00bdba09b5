#include "source/state_source.h"

#include <spdlog/spdlog.h>

#include <thread>

#include "source/state_file.h"

namespace aimesh {

StateFileSource::StateFileSource(std::string path) : path_(std::move(path)) {
  auto w = FileWatcher::create(path_);
  if (w) watcher_.emplace(std::move(w.value()));
  else spdlog::error("cannot watch {}: {}", path_, w.error().message());
}

std::optional<StateUpdate> StateFileSource::current() {
  auto t0 = std::chrono::steady_clock::now();
  ParseResult pr = parseStateFile(path_, &cache_);
  spdlog::debug("read {} in {:.1f} ms ({} of its services unchanged since the last read)", path_,
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count(),
                cache_.reused());
  StateUpdate u;
  u.snapshot = std::move(pr.snapshot);
  for (auto& e : pr.errors) u.errors.push_back(e.toString());
  return u;
}

std::optional<StateUpdate> StateFileSource::next(std::chrono::milliseconds timeout) {
  if (!watcher_) {
    std::this_thread::sleep_for(timeout);
    return std::nullopt;
  }
  if (!watcher_->waitForChange(timeout)) return std::nullopt;
  spdlog::info("{} changed", path_);
  return current();
}

}  // namespace aimesh
