// RAII owners for libcurl's handles (easy, multi, header list, an easy
// handle's membership of a multi) and the one process-wide
// curl_global_init(). Used by the Kubernetes client (source/kube_client.cc)
// and the model-server scraper (telemetry/model_scraper.cc); which options a
// request gets and what its answer means stay with them.
#pragma once

#include <curl/curl.h>

#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "util/result.h"

namespace aimesh {

// curl_global_init() is not thread-safe in every libcurl build: call this
// before making the first handle (any thread, any number of times).
inline void curlGlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct CurlEasyDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct CurlMultiDeleter {
  void operator()(CURLM* m) const { curl_multi_cleanup(m); }
};
struct CurlSlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
using CurlEasy = std::unique_ptr<CURL, CurlEasyDeleter>;
using CurlMulti = std::unique_ptr<CURLM, CurlMultiDeleter>;
using CurlSlist = std::unique_ptr<curl_slist, CurlSlistDeleter>;

// An easy handle's place in a multi handle: curl_multi_remove_handle() on
// destruction, so neither handle is cleaned up while the other still refers
// to it. Both handles must outlive it.
class CurlMultiMember {
 public:
  static Result<CurlMultiMember> add(CURLM* multi, CURL* easy) {
    CURLMcode rc = curl_multi_add_handle(multi, easy);
    if (rc != CURLM_OK) return Error::msg(std::string("curl_multi_add_handle: ") + curl_multi_strerror(rc));
    return CurlMultiMember(multi, easy);
  }
  CurlMultiMember() = default;
  CurlMultiMember(CurlMultiMember&& o) noexcept
      : multi_(std::exchange(o.multi_, nullptr)), easy_(std::exchange(o.easy_, nullptr)) {}
  CurlMultiMember& operator=(CurlMultiMember&& o) noexcept {
    if (this != &o) {
      reset();
      multi_ = std::exchange(o.multi_, nullptr);
      easy_ = std::exchange(o.easy_, nullptr);
    }
    return *this;
  }
  CurlMultiMember(const CurlMultiMember&) = delete;
  CurlMultiMember& operator=(const CurlMultiMember&) = delete;
  ~CurlMultiMember() { reset(); }

  void reset() {
    if (easy_) curl_multi_remove_handle(multi_, easy_);
    multi_ = nullptr;
    easy_ = nullptr;
  }

 private:
  CurlMultiMember(CURLM* multi, CURL* easy) : multi_(multi), easy_(easy) {}
  CURLM* multi_ = nullptr;
  CURL* easy_ = nullptr;
};

}  // namespace aimesh
