#include "engine/store/random_id.h"

#include <openssl/rand.h>

#include <string_view>
#include <vector>

#include "common/error.h"

namespace kbuild::store {

std::string random_hex(size_t bytes) {
  std::vector<unsigned char> raw(bytes);
  if (RAND_bytes(raw.data(), static_cast<int>(raw.size())) != 1) {
    throw Error(ErrorKind::internal, "random id: OpenSSL RAND_bytes failed");
  }
  static constexpr char hex[] = "0123456789abcdef";
  std::string text;
  text.reserve(2 * bytes);
  for (unsigned char byte : raw) {
    text += hex[byte >> 4];
    text += hex[byte & 0xf];
  }
  return text;
}

bool is_hex_id(std::string_view text, size_t bytes) {
  if (text.size() != 2 * bytes) return false;
  for (char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace kbuild::store
