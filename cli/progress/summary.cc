#include "cli/progress/summary.h"

namespace kbuild::progress {

std::string warnings_summary(const std::vector<VertexWarning>& warnings, bool debug,
                             const WarningSourcePrinter& print_source) {
  if (warnings.empty()) return "";
  std::string head = warnings.size() == 1 ? "1 warning found" : std::to_string(warnings.size()) + " warnings found";
  if (!debug) head += " (use docker --debug to expand)";
  head += ":\n";
  std::string out = "\n \x1b[33m" + head + "\x1b[0m";
  for (const VertexWarning& w : warnings) {
    out += " - " + w.short_text + "\n";
    if (!debug) continue;
    for (const std::string& d : w.detail) out += d + "\n";
    if (!w.url.empty()) out += "More info: " + w.url + "\n";
    if (w.source_info && !w.range.empty() && print_source) out += print_source(*w.source_info, w.range);
    out += "\n";
  }
  return out;
}

std::string build_error_line(std::string_view solve_error) {
  return "ERROR: failed to build: failed to solve: " + std::string(solve_error) + "\n";
}

}  // namespace kbuild::progress
