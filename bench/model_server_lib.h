// Scheduling core of the model-server stand-in (bench/model_server.cc).
//
// RequestScheduler is a concurrency gate: at most maxConcurrent requests are
// "running" at once; the rest wait in strict FIFO order and count as
// "waiting". These two numbers are what a vLLM server exports as
// vllm:num_requests_running / vllm:num_requests_waiting, and they are what
// an inference-aware load balancer reads to pick a backend.
//
// shutdown() wakes every waiter (acquire() then returns false) and cuts every
// sleepUntil() short, so a server can stop promptly with requests in flight.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>

namespace aimesh {

class RequestScheduler {
 public:
  struct Gauges {
    int running = 0;
    int waiting = 0;
    int maxConcurrent = 1;
  };

  // Holds one running slot; releases it on destruction. Empty (false) when
  // acquire() gave up because of shutdown().
  class Slot {
   public:
    Slot() = default;
    explicit Slot(RequestScheduler* owner) : owner_(owner) {}
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;
    Slot(Slot&& other) noexcept : owner_(other.owner_) { other.owner_ = nullptr; }
    Slot& operator=(Slot&& other) noexcept {
      if (this != &other) {
        reset();
        owner_ = other.owner_;
        other.owner_ = nullptr;
      }
      return *this;
    }
    ~Slot() { reset(); }

    explicit operator bool() const { return owner_ != nullptr; }
    void reset() {
      if (owner_ != nullptr) {
        owner_->release();
        owner_ = nullptr;
      }
    }

   private:
    RequestScheduler* owner_ = nullptr;
  };

  explicit RequestScheduler(int maxConcurrent) : maxConcurrent_(maxConcurrent < 1 ? 1 : maxConcurrent) {}
  RequestScheduler(const RequestScheduler&) = delete;
  RequestScheduler& operator=(const RequestScheduler&) = delete;

  // Blocks until this request reaches the head of the FIFO queue and a slot
  // is free. Returns an empty Slot if shutdown() was called meanwhile.
  Slot acquire() {
    std::unique_lock lock(mu_);
    if (stopping_) return Slot{};
    const std::uint64_t ticket = nextTicket_++;
    ++waiting_;
    cv_.wait(lock, [&] { return stopping_ || (ticket == nowServing_ && running_ < maxConcurrent_); });
    --waiting_;
    if (stopping_) {
      cv_.notify_all();
      return Slot{};
    }
    ++nowServing_;
    ++running_;
    // The next ticket may also fit if more than one slot is free.
    cv_.notify_all();
    return Slot{this};
  }

  // Sleeps until the deadline; returns false early if shutdown() is called.
  template <class Clock, class Duration>
  bool sleepUntil(const std::chrono::time_point<Clock, Duration>& deadline) {
    std::unique_lock lock(mu_);
    return !cv_.wait_until(lock, deadline, [&] { return stopping_; });
  }

  void shutdown() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
  }

  bool stopping() const {
    std::lock_guard lock(mu_);
    return stopping_;
  }

  Gauges gauges() const {
    std::lock_guard lock(mu_);
    return Gauges{running_, waiting_, maxConcurrent_};
  }

 private:
  void release() {
    {
      std::lock_guard lock(mu_);
      --running_;
    }
    cv_.notify_all();
  }

  mutable std::mutex mu_;
  std::condition_variable cv_;
  const int maxConcurrent_;
  int running_ = 0;
  int waiting_ = 0;
  std::uint64_t nextTicket_ = 0;
  std::uint64_t nowServing_ = 0;
  bool stopping_ = false;
};

}  // namespace aimesh
