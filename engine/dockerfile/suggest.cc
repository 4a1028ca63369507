#include "engine/dockerfile/suggest.h"

#include <algorithm>
#include <cctype>

namespace kbuild::dockerfile {
namespace {

std::string to_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string to_upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

// Levenshtein distance; with `transpositions`, a swap of two neighbours counts as one edit
// (optimal string alignment).
size_t edit_distance(std::string_view a, std::string_view b, bool transpositions) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (transpositions && i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

}  // namespace

std::optional<std::string> suggest_name(std::string_view value, const std::vector<std::string>& options,
                                        bool case_sensitive) {
  std::string needle = case_sensitive ? std::string(value) : to_lower(value);
  // Sorted, so that a tie between equally close options is decided the same way every time.
  std::vector<std::string> sorted = options;
  std::sort(sorted.begin(), sorted.end());
  // BuildKit keeps the first option under 3 edits in Go's random map order, so ties come out
  // at random there; here a swap of two letters breaks the tie ("RNU" is RUN, not ENV).
  std::optional<std::string> best;
  std::pair<size_t, size_t> best_distance{3, 0};
  for (const std::string& option : sorted) {
    std::string candidate = case_sensitive ? option : to_lower(option);
    if (candidate == needle) return std::nullopt;  // the value is valid: the error is about something else
    std::pair<size_t, size_t> distance{edit_distance(needle, candidate, false), edit_distance(needle, candidate, true)};
    if (distance.first < 3 && (!best || distance < best_distance)) {
      best_distance = distance;
      best = candidate;
    }
  }
  if (best && !case_sensitive) {
    if (value == to_lower(value)) {
      best = to_lower(*best);
    } else if (value == to_upper(value)) {
      best = to_upper(*best);
    }  // mixed case in the input: BuildKit answers with the lower-cased option
  }
  return best;
}

std::string with_suggestion(std::string message, std::string_view value,
                            const std::vector<std::string>& options, bool case_sensitive) {
  if (auto match = suggest_name(value, options, case_sensitive)) {
    message += " (did you mean " + *match + "?)";
  }
  return message;
}

}  // namespace kbuild::dockerfile
