// Go's filepath.Match and the wildcard helpers BuildKit's COPY uses around it (fsutil copy's
// containsWildcards / splitWildcards), for source paths like "sub/*/dir2/foo".
#pragma once

#include <string>
#include <string_view>

namespace kbuild {

// filepath.Match on Unix: '*' and '?' never match '/', "[...]" classes with '^' and ranges, '\\'
// escapes. A malformed pattern is reported through `bad_pattern` (Go's ErrBadPattern) and never
// matches; BuildKit ignores that error when resolving sources, so callers mostly pass nullptr.
bool go_match(std::string_view pattern, std::string_view name, bool* bad_pattern = nullptr);

// Whether a path has an unescaped '*', '?' or '[' ('\\' escapes the next byte).
bool contains_wildcards(std::string_view path);

// Splits a cleaned absolute path before its first component with a wildcard:
// "/sub/*/dir2/foo" -> {"/sub", "*/dir2/foo"}; {path, ""} without wildcards.
struct WildcardSplit {
  std::string prefix;
  std::string pattern;
};
WildcardSplit split_wildcards(std::string_view path);

}  // namespace kbuild
