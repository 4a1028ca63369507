// Random identifiers for store objects (snapshot ids, temp file names).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace kbuild::store {

// `bytes` random bytes from OpenSSL's CSPRNG as lower-case hex (2 * bytes characters).
std::string random_hex(size_t bytes = 16);

// Whether `text` is exactly `bytes` bytes of lower-case hex, as random_hex makes them:
// such a name is safe as one path component.
bool is_hex_id(std::string_view text, size_t bytes = 16);

}  // namespace kbuild::store
