// .dockerignore rules, matched as BuildKit's patternmatcher and its context walker (fsutil) do.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace kbuild::patterns {

// One line of a .dockerignore file, cleaned as BuildKit does (leading "/" and "./" removed,
// path cleaned), with "!" turned into the exclusion flag.
struct IgnorePattern {
  std::string pattern;
  bool exclusion = false;  // written as "!pattern": re-includes what earlier lines ignored
  bool operator==(const IgnorePattern&) const = default;
};

// Reads the text of a .dockerignore file: BOM, comments, blank lines, "!" and path cleaning.
// Throws kbuild::Error (kind user) with BuildKit's message for a line it would reject: a lone
// "!", a glob syntax error ("invalid excludepatterns: [...]: syntax error in pattern"), or a
// line over 64 KiB. `file_name` only names the file in that last message.
std::vector<IgnorePattern> parse_dockerignore(std::string_view text,
                                              std::string_view file_name = ".dockerignore");

class IgnoreMatcher {
 public:
  // Throws kbuild::Error (kind user) for a pattern BuildKit rejects up front.
  explicit IgnoreMatcher(std::vector<IgnorePattern> patterns);

  // Whether a context path (relative, "/"-separated, no leading "./") is left out of the
  // context. Later rules win; a path inside an ignored directory is ignored unless an exclusion
  // re-includes it. Evaluated the way fsutil's walker does, directory by directory from the
  // root, so the result is what BuildKit sends. A pattern that passes BuildKit's syntax check
  // but is not a valid regular expression once translated (e.g. "[z-a]") fails here, when it is
  // first consulted, as in BuildKit: kbuild::Error "failed to match excludepatterns: ...".
  bool ignored(std::string_view path) const;

  // For a directory that ignored() reported as ignored: whether a walker must still descend
  // into it because an exclusion could re-include something below it. False means fsutil
  // skips the whole subtree (filepath.SkipDir).
  bool may_reinclude_below(std::string_view dir) const;

  bool has_exclusions() const { return has_exclusions_; }
  const std::vector<IgnorePattern>& patterns() const { return patterns_; }

 private:
  struct Rule;
  bool rule_matches(std::size_t index, std::string_view path) const;

  std::vector<IgnorePattern> patterns_;
  std::shared_ptr<const std::vector<Rule>> rules_;  // one per pattern, same order
  bool has_exclusions_ = false;
  // fsutil's onlyPrefixExcludeExceptions: every exclusion is a plain path once a trailing
  // "/*" or "/**" is dropped, so a directory can be skipped by comparing prefixes.
  bool exclusions_are_plain_paths_ = true;
};

// The ignore file that applies to a Dockerfile, as BuildKit's dockerfile frontend picks it:
// `dockerfile_path + ".dockerignore"` when `exists` says that is a regular file (even an empty
// one), else ".dockerignore" at the context root. Pass the Dockerfile name as requested
// ("Dockerfile" even when BuildKit falls back to reading "dockerfile").
std::string dockerignore_path_for(std::string_view dockerfile_path,
                                  const std::function<bool(std::string_view)>& exists);

}  // namespace kbuild::patterns
