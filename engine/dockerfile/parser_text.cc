#include "engine/dockerfile/parser_text.h"

#include "common/error.h"
#include "common/go_text.h"

namespace kbuild::dockerfile::parsing {
namespace {

// unicode.ToLower for the Latin, Greek and Cyrillic letters and the few characters that lower to
// ASCII (KELVIN SIGN to "k", I WITH DOT ABOVE to "i"); other characters are left as they are.
char32_t to_lower_rune(char32_t r) {
  if (r < 0x80) return r >= 'A' && r <= 'Z' ? r + 0x20 : r;
  if (r >= 0xC0 && r <= 0xDE && r != 0xD7) return r + 0x20;
  if (r == 0x130) return 'i';
  if (r == 0x178) return 0xFF;
  if ((r >= 0x100 && r <= 0x12F) || (r >= 0x132 && r <= 0x137) || (r >= 0x14A && r <= 0x177)) {
    return r % 2 == 0 ? r + 1 : r;
  }
  if ((r >= 0x139 && r <= 0x148) || (r >= 0x179 && r <= 0x17E)) return r % 2 == 1 ? r + 1 : r;
  if (r == 0x386) return 0x3AC;
  if (r >= 0x388 && r <= 0x38A) return r + 37;
  if (r == 0x38C) return 0x3CC;
  if (r == 0x38E || r == 0x38F) return r + 63;
  if (r >= 0x391 && r <= 0x3AB && r != 0x3A2) return r + 0x20;
  if (r >= 0x400 && r <= 0x40F) return r + 0x50;
  if (r >= 0x410 && r <= 0x42F) return r + 0x20;
  if (r == 0x212A) return 'k';
  if (r == 0x212B) return 0xE5;
  if (r >= 0xFF21 && r <= 0xFF3A) return r + 0x20;
  return r;
}

}  // namespace

std::string rune_string(int32_t r) {
  std::string out;
  append_utf8(out, r < 0 ? kRuneError : static_cast<char32_t>(r));
  return out;
}

bool is_separator(char c) { return c == '\t' || c == '\v' || c == '\f' || c == '\r' || c == ' '; }

bool is_re_space(char c) { return c == '\t' || c == '\n' || c == '\f' || c == '\r' || c == ' '; }

bool is_byte_space(char c) {
  unsigned char b = static_cast<unsigned char>(c);
  return is_go_space(b);
}

bool is_ascii_digit(int32_t r) { return r >= '0' && r <= '9'; }

bool is_letter(int32_t r) {
  if (r < 0x80) return (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z');
  if (r < 0x100) return r == 0xAA || r == 0xB5 || r == 0xBA || (r >= 0xC0 && r != 0xD7 && r != 0xF7);
  char32_t c = static_cast<char32_t>(r);
  if (is_go_space(c)) return false;
  if (c >= 0x2000 && c <= 0x2BFF) return false;
  if ((c >= 0x3001 && c <= 0x3004) || (c >= 0x3008 && c <= 0x3020)) return false;
  if ((c >= 0xFE30 && c <= 0xFE4F) || (c >= 0xFF01 && c <= 0xFF20)) return false;
  if (c >= 0x1F000 && c <= 0x1FAFF) return false;
  return true;
}

std::string ascii_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string go_lower(std::string_view s) {
  bool ascii = true;
  for (char c : s) ascii = ascii && static_cast<unsigned char>(c) < 0x80;
  if (ascii) return ascii_lower(s);
  std::string out;
  for (size_t pos = 0; pos < s.size();) {
    DecodedRune r = decode_rune(s, pos);
    append_utf8(out, to_lower_rune(r.value));
    pos += r.width;
  }
  return out;
}

[[noreturn]] void fail(const std::string& message) { throw Error(ErrorKind::user, message); }

}  // namespace kbuild::dockerfile::parsing
