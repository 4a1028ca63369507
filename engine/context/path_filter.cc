#include "engine/context/path_filter.h"

#include "common/error.h"
#include "common/go_path.h"
#include "common/go_text.h"

namespace kbuild::context {
namespace {

// fsutil's patternWithoutTrailingGlob.
std::string_view without_trailing_glob(std::string_view p) {
  if (p.ends_with("/**")) p.remove_suffix(3);
  if (p.ends_with("/*")) p.remove_suffix(2);
  return p;
}

// patternmatcher.New: trimmed, cleaned, "!" marks an exclusion.
std::vector<patterns::IgnorePattern> include_patterns_of(const std::vector<std::string>& patterns) {
  std::vector<patterns::IgnorePattern> out;
  for (const std::string& raw : patterns) {
    const std::string_view trimmed = go_trim_space(raw);
    if (trimmed.empty()) continue;
    std::string p = go_clean_path(trimmed);
    patterns::IgnorePattern pattern;
    if (p[0] == '!') {
      if (p.size() == 1) throw Error(ErrorKind::user, "invalid includepatterns: illegal exclusion pattern: \"!\"");
      pattern.exclusion = true;
      p.erase(0, 1);
    }
    pattern.pattern = std::move(p);
    out.push_back(std::move(pattern));
  }
  return out;
}

}  // namespace


PathFilter::PathFilter(const std::vector<std::string>& include_patterns, const patterns::IgnoreMatcher* ignore) {
  std::vector<patterns::IgnorePattern> includes = include_patterns_of(include_patterns);
  if (!includes.empty()) {
    for (const patterns::IgnorePattern& p : includes) {
      if (p.exclusion) continue;
      const std::string_view plain = without_trailing_glob(p.pattern);
      if (plain.find_first_of("*[]?^\\") != std::string_view::npos) only_prefix_includes_ = false;
      include_prefixes_.push_back(std::string(plain) + "/");
    }
    include_.emplace(std::move(includes));
  }
  if (ignore && !ignore->patterns().empty()) ignore_.emplace(*ignore);
}

PathFilter::Decision PathFilter::decide(std::string_view path, bool is_dir) const {
  bool skip = false;
  if (include_ && !include_->ignored(path)) {
    if (is_dir && only_prefix_includes_) {
      // fsutil: nothing below can match when no include pattern is under this directory.
      const std::string dir_slash = std::string(path) + "/";
      bool below = false;
      for (const std::string& prefix : include_prefixes_) {
        if (prefix.starts_with(dir_slash)) {
          below = true;
          break;
        }
      }
      if (!below) return Decision::skip_subtree;
    }
    skip = true;
  }
  if (ignore_ && ignore_->ignored(path)) {
    if (is_dir && !ignore_->may_reinclude_below(path)) return Decision::skip_subtree;
    skip = true;
  }
  return skip ? Decision::skip : Decision::keep;
}

std::vector<bool> select_entries(std::span<const Entry> entries, const PathFilter& filter, bool with_parents) {
  std::vector<bool> kept(entries.size(), false);
  std::string skipped;  // "dir/" of a subtree left out, while walking inside it
  std::vector<std::size_t> dirs;  // the directories above the current entry, outermost first
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const Entry& e = entries[i];
    if (!skipped.empty()) {
      if (e.path.starts_with(skipped)) continue;
      skipped.clear();
    }
    while (!dirs.empty()) {
      const std::string& dir = entries[dirs.back()].path;
      if (e.path.size() > dir.size() && e.path.starts_with(dir) && e.path[dir.size()] == '/') break;
      dirs.pop_back();
    }
    const bool is_dir = e.type == EntryType::directory;
    const PathFilter::Decision decision = filter.decide(e.path, is_dir);
    if (decision == PathFilter::Decision::skip_subtree) {
      if (is_dir) skipped = e.path + "/";
      continue;
    }
    if (decision == PathFilter::Decision::keep) {
      kept[i] = true;
      if (with_parents) {
        for (auto it = dirs.rbegin(); it != dirs.rend() && !kept[*it]; ++it) kept[*it] = true;
      }
    }
    if (is_dir) dirs.push_back(i);
  }
  return kept;
}

}  // namespace kbuild::context
