// UTF-8 encoding as Go's strings.Builder.WriteRune does it: surrogates and values beyond
// U+10FFFF become U+FFFD, so every caller's output stays valid UTF-8.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

namespace kbuild {

void append_utf8(std::string& out, char32_t rune);

// Decodes one UTF-8 sequence at s[i] as Go's utf8.DecodeRuneInString does: (rune, size), or
// (-1, 1) for anything invalid (bad lead or continuation, overlong, surrogate, > U+10FFFF).
std::pair<int32_t, size_t> decode_utf8(std::string_view s, size_t i);

}  // namespace kbuild
