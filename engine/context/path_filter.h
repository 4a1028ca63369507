// Which paths of a build context a transfer keeps, decided as fsutil's filterFS decides them for
// BuildKit: include patterns (what COPY/ADD sources select; empty means everything) first, then
// the .dockerignore rules, each with patternmatcher's parent-aware matching.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/context/manifest.h"
#include "engine/patterns/dockerignore.h"

namespace kbuild::context {

class PathFilter {
 public:
  // `include_patterns` as fsutil's IncludePatterns (patternmatcher syntax, "!" allowed); `ignore`
  // may be null. Throws kbuild::Error (user) for a pattern BuildKit rejects.
  PathFilter(const std::vector<std::string>& include_patterns, const patterns::IgnoreMatcher* ignore);

  enum class Decision {
    keep,          // sent
    skip,          // not sent; a directory is still walked, and sent if something below is
    skip_subtree,  // neither it nor anything below is sent (filepath.SkipDir)
  };
  // `path` is relative and clean. May throw kbuild::Error (user) for a pattern that fails to match.
  Decision decide(std::string_view path, bool is_dir) const;

  bool selects_everything() const { return !include_ && !ignore_; }

 private:
  std::optional<patterns::IgnoreMatcher> include_;
  std::vector<std::string> include_prefixes_;  // "plain/path/" of each include, when all are plain
  bool only_prefix_includes_ = true;
  std::optional<patterns::IgnoreMatcher> ignore_;
};

// Which of `entries` (sorted by path_less, parents before children) a walk through `filter`
// keeps. With `with_parents`, also the directories above a kept entry, as fsutil sends them.
std::vector<bool> select_entries(std::span<const Entry> entries, const PathFilter& filter, bool with_parents);

}  // namespace kbuild::context
