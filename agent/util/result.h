// Result<T>: the value of an operation that talks to the OS or libbpf, or an
// Error carrying errno and what was being done. g++ 12 has no std::expected
// (C++23), so this is a small stand-in with the same shape.
#pragma once

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <variant>

namespace aimesh {

struct Error {
  int code = 0;         // errno value (positive), 0 if not an OS error
  std::string context;  // what was being done, e.g. "open /sys/fs/bpf/aimesh"

  std::string message() const {
    if (code == 0) return context;
    return context + ": " + std::strerror(code);
  }
  static Error fromErrno(std::string ctx) { return Error{errno, std::move(ctx)}; }
  static Error fromCode(int code, std::string ctx) {
    return Error{code < 0 ? -code : code, std::move(ctx)};
  }
  static Error msg(std::string ctx) { return Error{0, std::move(ctx)}; }
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Error err) : v_(std::move(err)) {}  // NOLINT

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  const T& value() const& { return std::get<0>(v_); }
  T* operator->() { return &value(); }
  T& operator*() { return value(); }
  const T* operator->() const { return &value(); }
  const T& operator*() const { return value(); }
  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error err) : err_(std::move(err)), ok_(false) {}  // NOLINT
  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { return err_; }

 private:
  Error err_;
  bool ok_ = true;
};

using Status = Result<void>;

}  // namespace aimesh
