#include "engine/store/digest.h"

#include <openssl/evp.h>

#include "common/error.h"

namespace kbuild::store {

Digest Digest::parse(std::string_view text) {
  auto bad = [&] { return Error(ErrorKind::user, "invalid digest \"" + std::string(text) + "\""); };
  if (text.size() != 7 + 64 || text.substr(0, 7) != "sha256:") throw bad();
  for (char c : text.substr(7)) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) throw bad();
  }
  return Digest(std::string(text));
}

Digest Digest::of(std::string_view bytes) {
  Sha256 hasher;
  hasher.update(bytes);
  return hasher.finish();
}

struct Sha256::State {
  EVP_MD_CTX* ctx = nullptr;
  ~State() { EVP_MD_CTX_free(ctx); }
};

Sha256::Sha256() : state_(std::make_unique<State>()) {
  state_->ctx = EVP_MD_CTX_new();
  if (!state_->ctx || EVP_DigestInit_ex(state_->ctx, EVP_sha256(), nullptr) != 1) {
    throw Error(ErrorKind::internal, "sha256: cannot initialise OpenSSL digest");
  }
}

Sha256::~Sha256() = default;
Sha256::Sha256(Sha256&&) noexcept = default;
Sha256& Sha256::operator=(Sha256&&) noexcept = default;

Sha256 Sha256::copy() const {
  Sha256 twin;
  if (EVP_MD_CTX_copy_ex(twin.state_->ctx, state_->ctx) != 1) throw Error(ErrorKind::internal, "sha256: copy failed");
  return twin;
}

void Sha256::update(const void* data, size_t size) {
  if (EVP_DigestUpdate(state_->ctx, data, size) != 1) throw Error(ErrorKind::internal, "sha256: update failed");
}

Digest Sha256::finish() {
  unsigned char raw[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_DigestFinal_ex(state_->ctx, raw, &length) != 1) throw Error(ErrorKind::internal, "sha256: final failed");
  static const char* hex = "0123456789abcdef";
  std::string text = "sha256:";
  for (unsigned int i = 0; i < length; ++i) {
    text += hex[raw[i] >> 4];
    text += hex[raw[i] & 0xf];
  }
  return Digest::parse(text);
}

}  // namespace kbuild::store
