// Mirrors github.com/moby/patternmatcher (New, Pattern.compile, MatchesUsingParentResults),
// patternmatcher/ignorefile.ReadAll and the exclude handling of tonistiigi/fsutil's filterFS.
//
// patternmatcher turns each glob into a Go regular expression by text substitution, and that
// substitution does not know about bracket expressions, so "[*]" or "a\d" mean whatever the
// resulting regexp means. To get those corners right we build the same regexp text and then
// read it with a small parser for the part of Go's RE2 syntax the translation can produce,
// into a program matched without backtracking (go_regexp).
#include "engine/patterns/dockerignore.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <utility>

#include "common/error.h"
#include "common/go_path.h"
#include "common/go_text.h"
#include "engine/patterns/go_regexp.h"
#include "engine/patterns/scratch.h"

namespace kbuild::patterns {
namespace {



// ---------------------------------------------------------------------------------------------
// Errors, worded as BuildKit words them.

// fmt's "%s" of a []string.
std::string go_string_list(const std::vector<std::string>& items) {
  std::string out = "[";
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ' ';
    out += items[i];
  }
  out += ']';
  return out;
}

// fsutil.NewFilterFS wraps patternmatcher.New's error this way.
[[noreturn]] void throw_invalid_patterns(const std::vector<std::string>& all,
                                         std::string_view why) {
  throw Error(ErrorKind::user,
              "invalid excludepatterns: " + go_string_list(all) + ": " + std::string(why));
}

constexpr std::string_view kBadPattern = "syntax error in pattern";  // filepath.ErrBadPattern
constexpr std::string_view kIllegalExclusion = "illegal exclusion pattern: \"!\"";

// ---------------------------------------------------------------------------------------------
// The syntax check patternmatcher.New does with filepath.Match(pattern, "."): Match parses every
// chunk (a run between unbracketed stars) completely, whatever the name, so this is the grammar.

// filepath's getEsc: one possibly escaped character of a bracket expression.
bool take_class_char(std::string_view& chunk) {
  if (chunk.empty() || chunk[0] == '-' || chunk[0] == ']') return false;
  if (chunk[0] == '\\') {
    chunk.remove_prefix(1);
    if (chunk.empty()) return false;
  }
  const DecodedRune r = decode_rune(chunk, 0);
  if (r.invalid()) return false;
  chunk.remove_prefix(r.width);
  return !chunk.empty();
}

bool chunk_is_valid(std::string_view chunk) {
  while (!chunk.empty()) {
    switch (chunk[0]) {
      case '[': {
        chunk.remove_prefix(1);
        if (!chunk.empty() && chunk[0] == '^') chunk.remove_prefix(1);
        for (int ranges = 0;; ++ranges) {
          if (!chunk.empty() && chunk[0] == ']' && ranges > 0) {
            chunk.remove_prefix(1);
            break;
          }
          if (!take_class_char(chunk)) return false;
          if (chunk[0] == '-') {
            chunk.remove_prefix(1);
            if (!take_class_char(chunk)) return false;
          }
        }
        break;
      }
      case '\\':
        chunk.remove_prefix(1);
        if (chunk.empty()) return false;
        chunk.remove_prefix(1);
        break;
      default:
        chunk.remove_prefix(1);
        break;
    }
  }
  return true;
}

bool glob_is_valid(std::string_view pattern) {
  while (!pattern.empty()) {
    while (!pattern.empty() && pattern[0] == '*') pattern.remove_prefix(1);
    // filepath's scanChunk: up to the next star that is not inside brackets.
    bool in_range = false;
    std::size_t i = 0;
    for (; i < pattern.size(); ++i) {
      const char c = pattern[i];
      if (c == '\\') {
        if (i + 1 < pattern.size()) ++i;
      } else if (c == '[') {
        in_range = true;
      } else if (c == ']') {
        in_range = false;
      } else if (c == '*' && !in_range) {
        break;
      }
    }
    if (!chunk_is_valid(pattern.substr(0, i))) return false;
    pattern.remove_prefix(i);
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// patternmatcher's Pattern.compile: how a cleaned pattern is matched.

enum class Kind : std::uint8_t {
  exact,   // no wildcard: the whole path equals the pattern
  prefix,  // literal text then a final "**"
  suffix,  // starts with "**" and has no other wildcard
  regexp,
  broken,  // passes filepath.Match's check but not regexp.Compile
};

struct Translation {
  Kind kind = Kind::exact;
  std::string regexp;
};

// patternmatcher means to escape ".+()|{}$", but its bitmap (1 << (c / 8) in a byte) drops
// every character from 64 up, so '|', '{' and '}' reach the regexp unescaped.
bool is_escaped_for_regexp(char32_t c) {
  return c == '.' || c == '+' || c == '(' || c == ')' || c == '$';
}

Translation translate(std::string_view pattern) {
  Translation out;
  std::string& re = out.regexp;
  re = "^";
  std::size_t pos = 0;
  // text/scanner drops a byte order mark at the very start.
  if (pattern.size() >= 3 && decode_rune(pattern, 0).value == 0xFEFF) pos = 3;
  const auto peek = [&]() -> std::optional<char32_t> {
    if (pos >= pattern.size()) return std::nullopt;
    return decode_rune(pattern, pos).value;
  };
  const auto next = [&]() {
    const DecodedRune r = decode_rune(pattern, pos);
    pos += r.width;
    return r.value;
  };
  for (int i = 0; pos < pattern.size(); ++i) {
    const char32_t ch = next();
    if (ch == '*') {
      if (peek() == U'*') {
        next();
        if (peek() == U'/') next();  // "**/" is read as "**"
        if (!peek()) {
          if (out.kind == Kind::exact) {
            out.kind = Kind::prefix;
          } else {
            re += ".*";
            out.kind = Kind::regexp;
          }
        } else {
          re += "(.*/)?";
          out.kind = Kind::regexp;
        }
        if (i == 0) out.kind = Kind::suffix;
      } else {
        re += "[^/]*";
        out.kind = Kind::regexp;
      }
    } else if (ch == '?') {
      re += "[^/]";
      out.kind = Kind::regexp;
    } else if (is_escaped_for_regexp(ch)) {
      re += '\\';
      append_utf8(re, ch);
    } else if (ch == '\\') {
      if (peek()) {
        re += '\\';
        append_utf8(re, next());
        out.kind = Kind::regexp;
      } else {
        re += '\\';
      }
    } else if (ch == '[' || ch == ']') {
      append_utf8(re, ch);
      out.kind = Kind::regexp;
    } else {
      append_utf8(re, ch);
    }
  }
  re += '$';
  return out;
}

// fsutil's patternWithoutTrailingGlob.
std::string_view without_trailing_glob(std::string_view pattern) {
  if (pattern.ends_with("/**")) pattern.remove_suffix(3);
  if (pattern.ends_with("/*")) pattern.remove_suffix(2);
  return pattern;
}

std::string_view without_trailing_slashes(std::string_view path) {
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  return path;
}

// patternmatcher.New's treatment of one pattern; nullopt for a blank one.
std::optional<IgnorePattern> prepare_pattern(std::string_view raw,
                                             const std::vector<std::string>& all) {
  const std::string_view trimmed = go_trim_space(raw);
  if (trimmed.empty()) return std::nullopt;
  IgnorePattern out;
  out.pattern = go_clean_path(trimmed);
  if (out.pattern[0] == '!') {
    if (out.pattern.size() == 1) throw_invalid_patterns(all, kIllegalExclusion);
    out.exclusion = true;
    out.pattern.erase(0, 1);
  }
  if (!glob_is_valid(out.pattern)) throw_invalid_patterns(all, kBadPattern);
  return out;
}

// ignorefile.ReadAll: one pattern string per meaningful line, "!" kept in front.
std::vector<std::string> read_ignore_lines(std::string_view text, std::string_view file_name) {
  // bufio.Scanner's default token limit.
  constexpr std::size_t kMaxLine = 64 * 1024;
  std::vector<std::string> out;
  for (std::size_t line_number = 0; !text.empty(); ++line_number) {
    const std::size_t newline = text.find('\n');
    std::string_view line = text.substr(0, newline);
    text.remove_prefix(newline == std::string_view::npos ? text.size() : newline + 1);
    if (line.size() >= kMaxLine) {
      throw Error(ErrorKind::user, "failed parsing " + std::string(file_name) +
                                       ": bufio.Scanner: token too long");
    }
    if (line.ends_with('\r')) line.remove_suffix(1);
    if (line_number == 0 && line.starts_with("\xEF\xBB\xBF")) line.remove_prefix(3);
    if (line.starts_with('#')) continue;  // only in the first column: "  # x" is a pattern
    std::string_view pattern = go_trim_space(line);
    if (pattern.empty()) continue;
    const bool invert = pattern[0] == '!';
    if (invert) pattern = go_trim_space(pattern.substr(1));
    std::string cleaned;
    if (!pattern.empty()) {
      cleaned = go_clean_path(pattern);
      if (cleaned.size() > 1 && cleaned[0] == '/') cleaned.erase(0, 1);
    }
    out.push_back(invert ? "!" + cleaned : cleaned);
  }
  return out;
}

}  // namespace

struct IgnoreMatcher::Rule {
  Kind kind = Kind::exact;
  std::string text;  // exact: the pattern; prefix: without its "**"; suffix: without its "**"
  Program program;   // regexp
  std::string plain_path;  // the pattern without a trailing "/*" or "/**"
};

std::vector<IgnorePattern> parse_dockerignore(std::string_view text, std::string_view file_name) {
  const std::vector<std::string> lines = read_ignore_lines(text, file_name);
  std::vector<IgnorePattern> patterns;
  patterns.reserve(lines.size());
  for (const std::string& line : lines) {
    if (auto pattern = prepare_pattern(line, lines)) patterns.push_back(std::move(*pattern));
  }
  return patterns;
}

IgnoreMatcher::IgnoreMatcher(std::vector<IgnorePattern> patterns) : patterns_(std::move(patterns)) {
  std::vector<std::string> all;  // for error messages, as BuildKit lists them
  for (const IgnorePattern& p : patterns_) all.push_back((p.exclusion ? "!" : "") + p.pattern);

  auto rules = std::make_shared<std::vector<Rule>>();
  rules->reserve(patterns_.size());
  for (const IgnorePattern& p : patterns_) {
    if (p.exclusion && p.pattern.empty()) throw_invalid_patterns(all, kIllegalExclusion);
    if (!glob_is_valid(p.pattern)) throw_invalid_patterns(all, kBadPattern);

    Rule rule;
    rule.plain_path = without_trailing_glob(p.pattern);
    Translation translation = translate(p.pattern);
    rule.kind = translation.kind;
    switch (rule.kind) {
      case Kind::exact: rule.text = p.pattern; break;
      case Kind::prefix: rule.text = p.pattern.substr(0, p.pattern.size() - 2); break;
      case Kind::suffix: rule.text = p.pattern.substr(2); break;
      case Kind::regexp:
        try {
          rule.program = compile_regexp(translation.regexp);
        } catch (const BadRegexp&) {
          rule.kind = Kind::broken;
        } catch (const UnsupportedRegexp& e) {
          throw Error(ErrorKind::user, "dockerignore pattern \"" + p.pattern + "\": " + e.feature +
                                           " are not supported");
        }
        break;
      case Kind::broken: break;
    }
    if (p.exclusion) {
      has_exclusions_ = true;
      if (rule.plain_path.find_first_of("*[]?^\\") != std::string::npos) {
        exclusions_are_plain_paths_ = false;
      }
    }
    rules->push_back(std::move(rule));
  }
  rules_ = std::move(rules);
}

bool IgnoreMatcher::rule_matches(std::size_t index, std::string_view path) const {
  const Rule& rule = (*rules_)[index];
  switch (rule.kind) {
    case Kind::exact: return path == rule.text;
    case Kind::prefix: return path.starts_with(rule.text);
    case Kind::suffix:
      // "**/foo" also matches "foo" itself.
      return path.ends_with(rule.text) || (rule.text.starts_with('/') &&
                                            path == std::string_view(rule.text).substr(1));
    case Kind::regexp: return regexp_matches(rule.program, path);
    case Kind::broken: break;
  }
  throw Error(ErrorKind::user, "failed to match excludepatterns: " + std::string(kBadPattern));
}

bool IgnoreMatcher::ignored(std::string_view path) const {
  path = without_trailing_slashes(path);
  if (path.empty() || path == "." || patterns_.empty()) return false;

  // fsutil walks from the root and hands each entry its parent directory's per-pattern results
  // (MatchesUsingParentResults): a pattern that matched the parent counts as matching without
  // being consulted, and the others are tried on the entry's own path only. Replay that walk
  // down the path's directories.
  const std::size_t n = patterns_.size();
  Scratch<256> scratch(2 * n);
  unsigned char* parent = scratch.data();
  unsigned char* current = parent + n;
  bool have_parent = false;
  bool matched = false;
  for (std::size_t end = 0;; ++end) {
    end = path.find('/', end);
    const std::string_view prefix = path.substr(0, end);
    matched = false;
    for (std::size_t i = 0; i < n; ++i) {
      bool match = have_parent && parent[i];
      if (!match) {
        // An ignore rule cannot change an ignored path, nor an exclusion a kept one.
        if (patterns_[i].exclusion != matched) {
          current[i] = 0;
          continue;
        }
        match = rule_matches(i, prefix);
      }
      current[i] = match;
      if (match) matched = !patterns_[i].exclusion;
    }
    if (end == std::string_view::npos) break;
    std::swap(parent, current);
    have_parent = true;
  }
  return matched;
}

bool IgnoreMatcher::may_reinclude_below(std::string_view dir) const {
  if (!has_exclusions_) return false;
  if (!exclusions_are_plain_paths_) return true;
  dir = without_trailing_slashes(dir);
  // fsutil: descend when some exclusion, as "plain/path/", starts with "dir/".
  for (std::size_t i = 0; i < patterns_.size(); ++i) {
    if (!patterns_[i].exclusion) continue;
    const std::string_view plain = (*rules_)[i].plain_path;
    if (plain.starts_with(dir) && (plain.size() == dir.size() || plain[dir.size()] == '/')) {
      return true;
    }
  }
  return false;
}

std::string dockerignore_path_for(std::string_view dockerfile_path,
                                  const std::function<bool(std::string_view)>& exists) {
  std::string specific = std::string(dockerfile_path) + ".dockerignore";
  if (exists(specific)) return specific;
  return ".dockerignore";
}

}  // namespace kbuild::patterns
