// ApiServer: the agent's local JSON API on a Unix stream socket (meshctl talks
// to it). One request per connection: the client writes one JSON object and a
// newline, the server answers with one JSON object and a newline, then closes.
// Protocol details are in docs/cli.md.
//
// This file owns the socket, the framing, the limits (64 KiB requests, 5 s per
// client) and the serving thread. What the methods return is not here: the
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

class ApiServer {
 public:
  // Called on the server thread, one request at a time (never concurrently
  // with itself). May throw: the client then gets {"error": what()}.
  using Handler = std::function<nlohmann::json(const nlohmann::json& request)>;

  // Requests longer than this (without the newline) get an error response.
  static constexpr std::size_t kMaxRequestBytes = 64 * 1024;
  // A client that has not sent a full request (or taken its response) within
  // this time is dropped.
  static constexpr std::chrono::milliseconds kClientTimeout{5000};
  // Connections served at once; more wait in the listen backlog.
  static constexpr std::size_t kMaxClients = 16;

  // Creates the parent directory if missing (mode 0700), removes a stale
  // socket file (refuses if another process still answers on it, or if the
  // path is not a socket), binds with mode 0600, listens and starts serving
  // on a thread of its own.
  static Result<ApiServer> create(const std::string& path, Handler handler);

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
