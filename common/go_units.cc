#include "common/go_units.h"

#include <cstdio>
#include <iterator>

namespace kbuild {

std::string go_human_size(double bytes, int precision) {
  static const char* const units[] = {"B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"};
  std::size_t unit = 0;
  while (bytes >= 1000 && unit + 1 < std::size(units)) {
    bytes /= 1000;
    ++unit;
  }
  char text[64];
  std::snprintf(text, sizeof text, "%.*g%s", precision, bytes, units[unit]);
  return text;
}

}  // namespace kbuild
