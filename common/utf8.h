// UTF-8 encoding as Go's strings.Builder.WriteRune does it: surrogates and values beyond
// U+10FFFF become U+FFFD, so every caller's output stays valid UTF-8.
#pragma once

#include <string>

namespace kbuild {

void append_utf8(std::string& out, char32_t rune);

}  // namespace kbuild
