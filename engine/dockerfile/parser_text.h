// Characters and faults as the parser's pieces (parser, line_parsers, heredoc) share them, with
// Go's semantics where BuildKit's parser relies on them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace kbuild::dockerfile::parsing {

inline constexpr int32_t kEof = -1;  // text/scanner's EOF

// The rune as UTF-8; U+FFFD for kEof and other negative values.
std::string rune_string(int32_t r);
// The class [\t\v\f\r ] of BuildKit's reWhitespace.
bool is_separator(char c);
// RE2's \s: [\t\n\f\r ].
bool is_re_space(char c);
// unicode.IsSpace applied to a single byte converted to a rune, as extractBuilderFlags and
// parseHealthConfig do: the UTF-8 continuation bytes 0x85 and 0xA0 count as spaces there.
bool is_byte_space(char c);
bool is_ascii_digit(int32_t r);
// unicode.IsLetter, exact for ASCII and Latin-1; other non-space characters count as letters
// unless they sit in the common punctuation and symbol blocks.
bool is_letter(int32_t r);
std::string ascii_lower(std::string_view s);
// strings.ToLower: beyond ASCII it maps rune by rune, and invalid bytes become U+FFFD.
std::string go_lower(std::string_view s);
// A fault inside one instruction; the caller attaches the lines.
[[noreturn]] void fail(const std::string& message);

}  // namespace kbuild::dockerfile::parsing
