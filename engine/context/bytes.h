// Little-endian fixed-width fields in byte strings: the encoding of the context stream between
// the reader process and the daemon, and of stored manifests.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "common/error.h"

namespace kbuild::context {

class ByteSink {
 public:
  explicit ByteSink(std::string& out) : out_(out) {}
  template <typename T>
  void put(T value) {
    static_assert(std::is_integral_v<T>);
    using U = std::make_unsigned_t<T>;
    U u = static_cast<U>(value);
    for (std::size_t i = 0; i < sizeof(T); ++i) out_.push_back(static_cast<char>((u >> (8 * i)) & 0xff));
  }
  // A u32 length, then the bytes.
  void put_string(std::string_view s) {
    put(static_cast<std::uint32_t>(s.size()));
    out_.append(s);
  }

 private:
  std::string& out_;
};

// Reads what ByteSink wrote; any overrun throws kbuild::Error with `what` in the message.
class ByteSource {
 public:
  ByteSource(std::string_view in, const char* what) : in_(in), what_(what) {}
  template <typename T>
  T get() {
    static_assert(std::is_integral_v<T>);
    need(sizeof(T));
    using U = std::make_unsigned_t<T>;
    U u = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i) u |= static_cast<U>(static_cast<unsigned char>(in_[i])) << (8 * i);
    in_.remove_prefix(sizeof(T));
    return static_cast<T>(u);
  }
  std::string_view get_bytes(std::size_t n) {
    need(n);
    std::string_view out = in_.substr(0, n);
    in_.remove_prefix(n);
    return out;
  }
  std::string_view get_string(std::size_t max) {
    const auto n = get<std::uint32_t>();
    if (n > max) throw Error(ErrorKind::internal, std::string(what_) + ": field too long");
    return get_bytes(n);
  }
  bool done() const { return in_.empty(); }
  void expect_done() const {
    if (!in_.empty()) throw Error(ErrorKind::internal, std::string(what_) + ": trailing bytes");
  }

 private:
  void need(std::size_t n) const {
    if (in_.size() < n) throw Error(ErrorKind::internal, std::string(what_) + ": truncated");
  }
  std::string_view in_;
  const char* what_;
};

}  // namespace kbuild::context
