#include "cli/error_excerpt.h"

#include <cstdio>
#include <vector>

namespace kbuild::cli {

std::string dockerfile_excerpt(std::string_view filename, std::string_view text, SourceRange range) {
  std::vector<std::string_view> lines;
  size_t begin = 0;
  while (true) {
    size_t nl = text.find('\n', begin);
    lines.push_back(text.substr(begin, nl == std::string_view::npos ? std::string_view::npos : nl - begin));
    if (nl == std::string_view::npos) break;
    begin = nl + 1;
  }
  const int count = static_cast<int>(lines.size());
  int start = range.start_line;
  int end = std::max(range.end_line, range.start_line);
  if (start < 1 || start > count) return "";
  if (end > count) end = count;
  const int first_marked = start;
  const int last_marked = end;

  // BuildKit's padding walk: up to four lines of context for one line, two for a range,
  // shared between above and below as the file allows.
  const int pad = end == start ? 4 : 2;
  for (int p = 0; p < pad;) {
    if (start > 1) {
      --start;
      ++p;
    }
    if (end != count) {
      ++end;
      ++p;
    }
    ++p;
  }

  std::string out = std::string(filename) + ":" + std::to_string(first_marked) + "\n--------------------\n";
  for (int i = start; i <= end; ++i) {
    char number[16];
    std::snprintf(number, sizeof number, " %3d | ", i);
    out += number;
    out += (i >= first_marked && i <= last_marked) ? ">>> " : "    ";
    out += lines[i - 1];
    out += "\n";
  }
  return out + "--------------------\n";
}

}  // namespace kbuild::cli
