// ApiServer: the agent's local JSON API on a Unix stream socket (meshctl talks
// to it). One request per connection: the client writes one JSON object and a
// newline, the server answers with one JSON object and a newline, then closes.
// Protocol details are in docs/cli.md.
//
// This file owns the socket, the framing, the limits (64 KiB requests, 5 s per
// client, 16 clients at once, the oldest waiting one closed for a new one;
// docs/security.md) and the serving thread (one poll loop for all clients). What the methods return is not here: the
// agent passes a Handler that maps a request object to a response object.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "util/result.h"

namespace aimesh {

// Limits of the API socket. The defaults are what the agent runs with; tests
// shorten the timeout.
struct ApiServerOptions {
  static constexpr std::size_t kMaxRequestBytes = 64 * 1024;
  static constexpr std::chrono::milliseconds kClientTimeout{5000};
  static constexpr std::size_t kMaxClients = 16;

  // Requests longer than this (without the newline) get an error response
  // and are never buffered beyond it.
  std::size_t maxRequestBytes = kMaxRequestBytes;
  // A client must send its whole request within this of connecting, and
  // take the whole response within this of it being ready; else it is
  // dropped. Trickling bytes does not extend it.
  std::chrono::milliseconds clientTimeout = kClientTimeout;
  // Connections served at once. One more takes the place of the oldest
  // that has not sent a whole request (closed); only when every one is being
  // answered is it answered {"error": "busy..."} and closed at once.
  std::size_t maxClients = kMaxClients;
};

class ApiServer {
 public:
  // Called on the server thread, one request at a time (never concurrently
  // with itself). May throw: the client then gets {"error": what()}.
  using Handler = std::function<nlohmann::json(const nlohmann::json& request)>;

  static constexpr std::size_t kMaxRequestBytes = ApiServerOptions::kMaxRequestBytes;
  static constexpr std::chrono::milliseconds kClientTimeout = ApiServerOptions::kClientTimeout;
  static constexpr std::size_t kMaxClients = ApiServerOptions::kMaxClients;

  // Creates the parent directory if missing (mode 0700), removes a stale
  // socket file (refuses if another process still answers on it, or if the
  // path is not a socket), binds with mode 0600 (the file is never more open:
  // the mode is set on the socket before bind) owned by the agent's user,
  // checks both, listens and starts serving on a thread of its own.
  static Result<ApiServer> create(const std::string& path, Handler handler, ApiServerOptions options = {});

  ApiServer(ApiServer&&) noexcept;
  ApiServer& operator=(ApiServer&&) noexcept;
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;
  ~ApiServer();  // stop()

  // Ends the serving thread promptly (open client connections are closed
  // without a response), closes the socket and unlinks the socket file if it
  // is still the one this server created. Idempotent.
  void stop();

  const std::string& path() const;

 private:
  struct Impl;
  explicit ApiServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace aimesh
