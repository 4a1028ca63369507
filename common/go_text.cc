#include "common/go_text.h"

#include <utility>

namespace kbuild {
namespace {

constexpr char kHex[] = "0123456789abcdef";

void append_hex(std::string& out, char32_t value, int digits) {
  for (int shift = (digits - 1) * 4; shift >= 0; shift -= 4) out += kHex[(value >> shift) & 0xF];
}

}  // namespace

DecodedRune decode_rune(std::string_view s, std::size_t pos) {
  if (pos >= s.size()) return {kRuneError, 0};
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(s[pos + i]); };
  const unsigned char b0 = byte(0);
  if (b0 < 0x80) return {b0, 1};
  std::size_t width = 0;
  unsigned char lo = 0x80, hi = 0xBF;
  char32_t value = 0;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    width = 2;
    value = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    width = 3;
    value = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;  // no overlong forms
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    width = 4;
    value = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return {kRuneError, 1};
  }
  if (pos + width > s.size()) return {kRuneError, 1};
  for (std::size_t i = 1; i < width; ++i) {
    const unsigned char b = byte(i);
    if (b < (i == 1 ? lo : 0x80) || b > (i == 1 ? hi : 0xBF)) return {kRuneError, 1};
    value = (value << 6) | (b & 0x3F);
  }
  return {value, width};
}

DecodedRune decode_last_rune(std::string_view s) {
  if (s.empty()) return {kRuneError, 0};
  const std::size_t end = s.size();
  std::size_t start = end - 1;
  if (static_cast<unsigned char>(s[start]) < 0x80) return {static_cast<unsigned char>(s[start]), 1};
  const std::size_t lim = end >= 4 ? end - 4 : 0;
  while (start > lim && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  const DecodedRune r = decode_rune(s, start);
  if (start + r.width != end) return {kRuneError, 1};
  return r;
}

void append_utf8(std::string& out, char32_t r) {
  if ((r >= 0xD800 && r <= 0xDFFF) || r > 0x10FFFF) r = kRuneError;
  if (r < 0x80) {
    out += static_cast<char>(r);
  } else if (r < 0x800) {
    out += static_cast<char>(0xC0 | (r >> 6));
    out += static_cast<char>(0x80 | (r & 0x3F));
  } else if (r < 0x10000) {
    out += static_cast<char>(0xE0 | (r >> 12));
    out += static_cast<char>(0x80 | ((r >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (r & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (r >> 18));
    out += static_cast<char>(0x80 | ((r >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((r >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (r & 0x3F));
  }
}

bool is_go_space(char32_t r) {
  switch (r) {
    case '\t': case '\n': case '\v': case '\f': case '\r': case ' ':
    case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F:
    case 0x3000:
      return true;
    default:
      return r >= 0x2000 && r <= 0x200A;
  }
}

// An invalid byte is U+FFFD, which is no space: trimming stops there, as in Go.
std::string_view go_trim_left_space(std::string_view s) {
  std::size_t pos = 0;
  while (pos < s.size()) {
    const DecodedRune r = decode_rune(s, pos);
    if (!is_go_space(r.value)) break;
    pos += r.width;
  }
  return s.substr(pos);
}

std::string_view go_trim_right_space(std::string_view s) {
  while (!s.empty()) {
    const DecodedRune r = decode_last_rune(s);
    if (!is_go_space(r.value)) break;
    s.remove_suffix(r.width);
  }
  return s;
}

std::string_view go_trim_space(std::string_view s) { return go_trim_right_space(go_trim_left_space(s)); }

bool go_is_print(char32_t r) {
  if (r < 0x20) return false;
  if (r < 0x7F) return true;
  if (r < 0xA0) return false;
  if (r < 0x100) return r != 0xA0 && r != 0xAD;
  if (is_go_space(r)) return false;
  static constexpr std::pair<char32_t, char32_t> kUnprintable[] = {
      {0x0600, 0x0605}, {0x061C, 0x061C}, {0x06DD, 0x06DD}, {0x070F, 0x070F},
      {0x0890, 0x0891}, {0x08E2, 0x08E2}, {0x180E, 0x180E}, {0x200B, 0x200F},
      {0x202A, 0x202E}, {0x2060, 0x206F}, {0xD800, 0xF8FF}, {0xFDD0, 0xFDEF},
      {0xFEFF, 0xFEFF}, {0xFFF9, 0xFFFB}, {0x110BD, 0x110BD}, {0x110CD, 0x110CD},
      {0x13430, 0x1343F}, {0x1BCA0, 0x1BCA3}, {0x1D173, 0x1D17A}, {0x40000, 0xE00FF},
      {0xE01F0, 0x10FFFF},
  };
  for (auto [lo, hi] : kUnprintable) {
    if (r >= lo && r <= hi) return false;
  }
  return (r & 0xFFFE) != 0xFFFE;
}

std::string go_quote(std::string_view s) {
  std::string out = "\"";
  for (std::size_t pos = 0; pos < s.size();) {
    const DecodedRune r = decode_rune(s, pos);
    if (r.invalid()) {
      out += "\\x";
      append_hex(out, static_cast<unsigned char>(s[pos]), 2);
      ++pos;
      continue;
    }
    const char32_t c = r.value;
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (go_is_print(c)) {
      out.append(s.substr(pos, r.width));
    } else {
      switch (c) {
        case '\a': out += "\\a"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        case '\v': out += "\\v"; break;
        default: {
          const int digits = c < ' ' || c == 0x7F ? 2 : c < 0x10000 ? 4 : 8;
          out += digits == 2 ? "\\x" : digits == 4 ? "\\u" : "\\U";
          append_hex(out, c, digits);
        }
      }
    }
    pos += r.width;
  }
  out += '"';
  return out;
}

void append_go_json_string(std::string& out, std::string_view text) {
  out += '"';
  for (std::size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\b': out += "\\b"; break;  // Go 1.22 and later
        case '\f': out += "\\f"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
          // Control characters, and "<", ">", "&" for encoding/json's HTML-safe default.
          if (c < 0x20 || c == '<' || c == '>' || c == '&') {
            out += "\\u00";
            append_hex(out, c, 2);
          } else {
            out += static_cast<char>(c);
          }
      }
      ++i;
      continue;
    }
    const DecodedRune r = decode_rune(text, i);
    if (r.invalid()) {
      out += "\\ufffd";
    } else if (r.value == 0x2028 || r.value == 0x2029) {
      out += r.value == 0x2028 ? "\\u2028" : "\\u2029";
    } else {
      out.append(text.substr(i, r.width));
    }
    i += r.width;
  }
  out += '"';
}

std::string go_json_quote(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  append_go_json_string(out, text);
  return out;
}

}  // namespace kbuild
