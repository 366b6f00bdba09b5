// Talking to the Kubernetes API server: where it is and how to authenticate
// (in-cluster service account or a kubeconfig file), and HTTPS GETs through
// libcurl — plain requests for lists and line-by-line streams for watches.
// What to ask for and what to do with the answers lives in kube_source.h;
// decoding the objects in kube_objects.h.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <string_view>

#include "util/result.h"

namespace aimesh {

struct KubeConfig {
  std::string server;  // "https://10.96.0.1:443"
  // Trust: a CA file, or PEM bytes (kubeconfig certificate-authority-data).
  std::string caFile, caData;
  bool insecureSkipVerify = false;
  // Authentication: a bearer token, or a token file read again before every
  // request (projected service-account tokens are rotated by the kubelet),
  // and/or a client certificate (file or PEM bytes).
  std::string token, tokenFile;
  std::string clientCertFile, clientKeyFile, clientCertData, clientKeyData;
  std::string source;  // where this came from, for logs: "in-cluster", "kubeconfig FILE (context C)"
};

// In-cluster: KUBERNETES_SERVICE_HOST / KUBERNETES_SERVICE_PORT and the
// service account's token and ca.crt under `saDir`.
inline constexpr const char* kServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount";
Result<KubeConfig> inClusterConfig(const std::string& saDir = kServiceAccountDir);

// A kubeconfig file (as kubectl reads it): the named context, or the file's
// current-context when `context` is empty. Relative paths in the file are
// relative to its directory. Errors name the file and the missing field.
Result<KubeConfig> loadKubeconfig(const std::string& path, const std::string& context = "");

// RFC 4648 base64 (kubeconfig *-data fields); nullopt-like error on bad input.
Result<std::string> base64Decode(std::string_view in);

class KubeClient {
 public:
  struct Options {
    std::chrono::milliseconds connectTimeout{5000};
    std::chrono::milliseconds requestTimeout{30000};  // whole list request
    // A watch with no byte for this long is dead (bookmarks and the server's
    // own timeout keep a live one talking).
    std::chrono::milliseconds idleTimeout{90000};
  };
  struct Response {
    long status = 0;
    std::string body;
  };

  KubeClient(KubeConfig cfg, Options opts);

  // GET path (with query). Transport failures are errors; any HTTP status is
  // a Response. `stop`, when it becomes true, aborts the request.
  Result<Response> get(const std::string& path, const std::atomic<bool>* stop = nullptr) const;

  // GET path as a stream: `onLine` gets every complete line (without the
  // newline) as it arrives; returning false ends the stream. A line cut off
  // by a dropped connection is never passed on. Returns the HTTP status when
  // the stream ended (cleanly, by onLine, or by `stop`); a non-2xx answer's
  // body goes to `errorBody`. Transport failures (refused, reset, idle
  // timeout, TLS) are errors.
  Result<long> stream(const std::string& path, const std::function<bool(std::string_view)>& onLine,
                      std::string* errorBody, const std::atomic<bool>* stop = nullptr) const;

  const KubeConfig& config() const { return cfg_; }

 private:
  KubeConfig cfg_;
  Options opts_;
};

}  // namespace aimesh
