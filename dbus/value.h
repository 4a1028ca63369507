// The values an a{sv} dictionary of the Builder1 API carries, as plain C++ types.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "common/unique_fd.h"

namespace kbuild::dbus {

using StringMap = std::map<std::string, std::string>;  // a{ss}
using Bytes = std::vector<std::uint8_t>;               // ay

// One file descriptor (h). Copies of an Options dict share it; the last copy closes it.
class Fd {
 public:
  Fd() = default;
  explicit Fd(UniqueFd fd) : fd_(std::make_shared<UniqueFd>(std::move(fd))) {}

  int get() const { return fd_ ? fd_->get() : -1; }
  // Equal when both refer to the same file (device and inode), as an fd sent and the duplicate
  // that arrives do; two empty Fds are equal.
  bool operator==(const Fd& other) const;

 private:
  std::shared_ptr<UniqueFd> fd_;
};

// One value of an a{sv} dict, limited to the D-Bus types the API uses:
// s, b, x, t, as, a{ss}, aa{ss}, ay, h.
class Value {
 public:
  using Variant = std::variant<std::string, bool, std::int64_t, std::uint64_t,
                               std::vector<std::string>, StringMap, std::vector<StringMap>, Bytes, Fd>;

  Value() = default;
  Value(std::string v) : value_(std::move(v)) {}
  // Without it a string literal would pick the bool constructor.
  Value(const char* v) : value_(std::string(v)) {}
  Value(bool v) : value_(v) {}
  Value(std::int64_t v) : value_(v) {}
  Value(std::uint64_t v) : value_(v) {}
  Value(std::vector<std::string> v) : value_(std::move(v)) {}
  Value(StringMap v) : value_(std::move(v)) {}
  Value(std::vector<StringMap> v) : value_(std::move(v)) {}
  Value(Bytes v) : value_(std::move(v)) {}
  Value(Fd v) : value_(std::move(v)) {}

  // The D-Bus signature of the value: "s", "b", "x", "t", "as", "a{ss}", "aa{ss}", "ay" or "h".
  const char* signature() const;

  template <typename T>
  bool holds() const { return std::holds_alternative<T>(value_); }
  template <typename T>
  const T* get_if() const { return std::get_if<T>(&value_); }
  const Variant& variant() const { return value_; }

  bool operator==(const Value&) const = default;

 private:
  Variant value_;
};

// An a{sv} dict: Build's options and result, ListImages' entries, DiskUsage, Info.
using Options = std::map<std::string, Value>;

// The D-Bus signature of the alternative T of Value, e.g. "as" for std::vector<std::string>.
template <typename T>
constexpr const char* signature_of() {
  if constexpr (std::is_same_v<T, std::string>) return "s";
  else if constexpr (std::is_same_v<T, bool>) return "b";
  else if constexpr (std::is_same_v<T, std::int64_t>) return "x";
  else if constexpr (std::is_same_v<T, std::uint64_t>) return "t";
  else if constexpr (std::is_same_v<T, std::vector<std::string>>) return "as";
  else if constexpr (std::is_same_v<T, StringMap>) return "a{ss}";
  else if constexpr (std::is_same_v<T, std::vector<StringMap>>) return "aa{ss}";
  else if constexpr (std::is_same_v<T, Bytes>) return "ay";
  else if constexpr (std::is_same_v<T, Fd>) return "h";
  else static_assert(sizeof(T) == 0, "not a type of Value");
}

// Throws the user error "option KEY is s, expected b" for a value of the wrong type.
[[noreturn]] void throw_option_type(std::string_view key, const Value& value, const char* expected);

// The value of `key` if it is there, else nullptr; throws throw_option_type's error when it is
// there with another type.
template <typename T>
const T* find_option(const Options& options, std::string_view key) {
  auto it = options.find(std::string(key));
  if (it == options.end()) return nullptr;
  if (const T* value = it->second.get_if<T>()) return value;
  throw_option_type(key, it->second, signature_of<T>());
}

// The value of `key`, or `fallback` when it is missing; throws as find_option for another type.
template <typename T>
T option_or(const Options& options, std::string_view key, T fallback) {
  const T* value = find_option<T>(options, key);
  return value ? *value : fallback;
}

}  // namespace kbuild::dbus
