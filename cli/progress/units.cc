#include "cli/progress/units.h"

#include <cmath>
#include <cstdio>

namespace kbuild::progress {

std::string format_fixed(double value, int precision) {
  char buf[512];
  std::snprintf(buf, sizeof buf, "%.*f", precision, value);
  return buf;
}

std::string format_bytes(int64_t bytes) {
  // tonistiigi/units: pick the largest decimal unit not above the value; none means whole bytes.
  static constexpr const char* units[] = {"B", "kB", "MB", "GB", "TB", "PB", "EB"};
  int unit = 0;
  int64_t base = bytes < 0 ? -1 : 1;
  while (unit < 6) {
    const int64_t next = base * 1000;
    if ((base > 0 && bytes >= next) || (base < 0 && bytes <= next)) {
      ++unit;
      base = next;
      continue;
    }
    break;
  }
  if (unit == 0) return std::to_string(bytes) + "B";
  return format_fixed(static_cast<double>(bytes) / std::fabs(static_cast<double>(base)), 2) + units[unit];
}

// Decodes one UTF-8 sequence at s[i] as Go's utf8.DecodeRuneInString does; size 1 and rune -1
// for anything invalid (bad lead, bad continuation, overlong, surrogate, beyond U+10FFFF).
std::pair<int32_t, size_t> decode_rune(std::string_view s, size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return {b0, 1};
  auto cont = [&](size_t k, unsigned char lo = 0x80, unsigned char hi = 0xBF) {
    if (i + k >= s.size()) return false;
    const auto b = static_cast<unsigned char>(s[i + k]);
    return b >= lo && b <= hi;
  };
  auto bits = [&](size_t k) { return static_cast<int32_t>(static_cast<unsigned char>(s[i + k]) & 0x3F); };
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    if (cont(1)) return {((b0 & 0x1F) << 6) | bits(1), 2};
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    const unsigned char lo = b0 == 0xE0 ? 0xA0 : 0x80;
    const unsigned char hi = b0 == 0xED ? 0x9F : 0xBF;
    if (cont(1, lo, hi) && cont(2)) return {((b0 & 0x0F) << 12) | (bits(1) << 6) | bits(2), 3};
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    const unsigned char lo = b0 == 0xF0 ? 0x90 : 0x80;
    const unsigned char hi = b0 == 0xF4 ? 0x8F : 0xBF;
    if (cont(1, lo, hi) && cont(2) && cont(3))
      return {((b0 & 0x07) << 18) | (bits(1) << 12) | (bits(2) << 6) | bits(3), 4};
  }
  return {-1, 1};
}

size_t rune_count(std::string_view text) {
  size_t n = 0;
  for (size_t i = 0; i < text.size(); i += decode_rune(text, i).second) ++n;
  return n;
}

std::string pad_right(std::string_view text, int width) {
  std::string out(text);
  const size_t w = static_cast<size_t>(width < 0 ? -width : width);
  const size_t n = rune_count(text);
  if (n < w) out.append(w - n, ' ');
  return out;
}

}  // namespace kbuild::progress
