// Text the way Go handles it, for the places where kbuild must print or read exactly what
// BuildKit does: UTF-8 decoding (utf8.DecodeRuneInString), unicode.IsSpace, strings.TrimSpace,
// strconv.Quote and encoding/json's string literals. Each exists once, here.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace kbuild {

inline constexpr char32_t kRuneError = 0xFFFD;

struct DecodedRune {
  char32_t value;
  std::size_t width;
  // Go's test for a byte that starts no valid sequence (a literal U+FFFD has width 3).
  bool invalid() const { return value == kRuneError && width == 1; }
};

// utf8.DecodeRuneInString(s[pos:]): an invalid or truncated sequence decodes as (U+FFFD, 1);
// pos at the end gives (U+FFFD, 0).
DecodedRune decode_rune(std::string_view s, std::size_t pos = 0);
// utf8.DecodeLastRuneInString.
DecodedRune decode_last_rune(std::string_view s);

// strings.Builder.WriteRune: surrogates and values beyond U+10FFFF become U+FFFD, so the
// output stays valid UTF-8.
void append_utf8(std::string& out, char32_t rune);

// unicode.IsSpace (the White_Space property).
bool is_go_space(char32_t rune);
// strings.TrimLeftFunc / TrimRightFunc / TrimSpace with unicode.IsSpace.
std::string_view go_trim_left_space(std::string_view s);
std::string_view go_trim_right_space(std::string_view s);
std::string_view go_trim_space(std::string_view s);

// strconv.IsPrint: exact below U+0100; above it the format, separator, private-use and
// noncharacter code points are unprintable and everything else counts as assigned.
bool go_is_print(char32_t rune);
// strconv.Quote, which BuildKit's "%q" messages use.
std::string go_quote(std::string_view s);

// Appends `text` as encoding/json writes a string: quoted, "<", ">", "&", U+2028 and U+2029
// escaped, invalid UTF-8 as \ufffd.
void append_go_json_string(std::string& out, std::string_view text);
std::string go_json_quote(std::string_view text);

}  // namespace kbuild
