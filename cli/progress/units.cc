#include "cli/progress/units.h"

#include "common/go_text.h"

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

size_t rune_count(std::string_view text) {
  size_t n = 0;
  for (size_t i = 0; i < text.size(); i += decode_rune(text, i).width) ++n;
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
