// Content digests ("sha256:<64 hex>") and streaming SHA-256, the identity of every blob,
// layer and image kbuild stores.
#pragma once

#include <memory>
#include <string>
#include <string_view>

namespace kbuild::store {

class Digest {
 public:
  Digest() = default;
  // Parses "sha256:<64 lower-case hex>"; throws kbuild::Error (user) on anything else.
  static Digest parse(std::string_view text);
  static Digest from_hex(std::string_view hex) { return parse("sha256:" + std::string(hex)); }
  // The digest of a whole string, for small documents (configs, manifests).
  static Digest of(std::string_view bytes);

  const std::string& str() const { return text_; }  // "sha256:abc..."
  std::string_view hex() const { return std::string_view(text_).substr(7); }
  bool empty() const { return text_.empty(); }
  auto operator<=>(const Digest&) const = default;

 private:
  explicit Digest(std::string text) : text_(std::move(text)) {}
  std::string text_;
};

// SHA-256 over data fed in pieces; OpenSSL does the work.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(Sha256&&) noexcept;
  Sha256& operator=(Sha256&&) noexcept;

  void update(const void* data, size_t size);
  void update(std::string_view data) { update(data.data(), data.size()); }
  // An independent copy of the state so far (SHA-256's midstate), to go on from later.
  Sha256 copy() const;
  // The digest of everything fed so far; the hasher must not be fed again afterwards.
  Digest finish();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace kbuild::store
