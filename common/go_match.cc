// A line-by-line port of Go's path/filepath match.go (Match, scanChunk, matchChunk, getEsc) for
// Unix, so corner cases ("[]a]", "\\*", invalid UTF-8) behave as BuildKit's do.
#include "common/go_match.h"

#include <cstdint>
#include <vector>

#include "common/go_path.h"
#include "common/go_text.h"

namespace kbuild {
namespace {

struct Chunk {
  bool star = false;
  std::string_view chunk;
  std::string_view rest;
};

Chunk scan_chunk(std::string_view pattern) {
  Chunk out;
  while (!pattern.empty() && pattern[0] == '*') {
    pattern.remove_prefix(1);
    out.star = true;
  }
  bool in_range = false;
  std::size_t i = 0;
  for (; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\') {
      if (i + 1 < pattern.size()) ++i;  // a trailing '\\' is reported by match_chunk
    } else if (c == '[') {
      in_range = true;
    } else if (c == ']') {
      in_range = false;
    } else if (c == '*' && !in_range) {
      break;
    }
  }
  out.chunk = pattern.substr(0, i);
  out.rest = pattern.substr(i);
  return out;
}

// getEsc: one possibly escaped rune of a character class; false for ErrBadPattern.
bool get_esc(std::string_view& chunk, char32_t& r) {
  if (chunk.empty() || chunk[0] == '-' || chunk[0] == ']') return false;
  if (chunk[0] == '\\') {
    chunk.remove_prefix(1);
    if (chunk.empty()) return false;
  }
  const DecodedRune rune = decode_rune(chunk);
  r = rune.value;
  chunk.remove_prefix(rune.width);
  if (rune.invalid()) return false;
  return !chunk.empty();
}

enum class ChunkResult { match, no_match, bad_pattern };

// matchChunk: on a match, `s` is left at what the chunk did not consume.
ChunkResult match_chunk(std::string_view chunk, std::string_view& s) {
  // After the match fails, the loop goes on through the chunk only to check its syntax.
  bool failed = false;
  while (!chunk.empty()) {
    if (!failed && s.empty()) failed = true;
    switch (chunk[0]) {
      case '[': {
        char32_t r = 0;
        if (!failed) {
          const DecodedRune rune = decode_rune(s);
          r = rune.value;
          s.remove_prefix(rune.width);
        }
        chunk.remove_prefix(1);
        bool negated = false;
        if (!chunk.empty() && chunk[0] == '^') {
          negated = true;
          chunk.remove_prefix(1);
        }
        bool matched = false;
        for (int ranges = 0;; ++ranges) {
          if (!chunk.empty() && chunk[0] == ']' && ranges > 0) {
            chunk.remove_prefix(1);
            break;
          }
          char32_t lo = 0;
          if (!get_esc(chunk, lo)) return ChunkResult::bad_pattern;
          char32_t hi = lo;
          if (chunk[0] == '-') {
            chunk.remove_prefix(1);
            if (!get_esc(chunk, hi)) return ChunkResult::bad_pattern;
          }
          if (lo <= r && r <= hi) matched = true;
        }
        if (matched == negated) failed = true;
        break;
      }
      case '?':
        if (!failed) {
          if (s[0] == '/') failed = true;
          s.remove_prefix(decode_rune(s).width);
        }
        chunk.remove_prefix(1);
        break;
      case '\\':
        chunk.remove_prefix(1);
        if (chunk.empty()) return ChunkResult::bad_pattern;
        [[fallthrough]];
      default:
        if (!failed) {
          if (chunk[0] != s[0]) failed = true;
          s.remove_prefix(1);
        }
        chunk.remove_prefix(1);
        break;
    }
  }
  return failed ? ChunkResult::no_match : ChunkResult::match;
}

bool match(std::string_view pattern, std::string_view name, bool& bad) {
  while (!pattern.empty()) {
    const Chunk chunk = scan_chunk(pattern);
    pattern = chunk.rest;
    if (chunk.star && chunk.chunk.empty()) {
      // A trailing '*' matches the rest of the name unless it has a '/'.
      return name.find('/') == std::string_view::npos;
    }
    std::string_view t = name;
    const ChunkResult here = match_chunk(chunk.chunk, t);
    // The last chunk must consume the whole name, or the star may still match more.
    if (here == ChunkResult::match && (t.empty() || !pattern.empty())) {
      name = t;
      continue;
    }
    if (here == ChunkResult::bad_pattern) {
      bad = true;
      return false;
    }
    bool advanced = false;
    if (chunk.star) {
      // Look for a match skipping i+1 bytes; a star cannot skip a '/'.
      for (std::size_t i = 0; i < name.size() && name[i] != '/'; ++i) {
        std::string_view rest = name.substr(i + 1);
        const ChunkResult skipped = match_chunk(chunk.chunk, rest);
        if (skipped == ChunkResult::match) {
          if (pattern.empty() && !rest.empty()) continue;
          name = rest;
          advanced = true;
          break;
        }
        if (skipped == ChunkResult::bad_pattern) {
          bad = true;
          return false;
        }
      }
    }
    if (advanced) continue;
    // Before failing, check that the rest of the pattern is well formed.
    while (!pattern.empty()) {
      const Chunk next = scan_chunk(pattern);
      pattern = next.rest;
      std::string_view empty;
      if (match_chunk(next.chunk, empty) == ChunkResult::bad_pattern) {
        bad = true;
        return false;
      }
    }
    return false;
  }
  return name.empty();
}

}  // namespace

bool go_match(std::string_view pattern, std::string_view name, bool* bad_pattern) {
  bool bad = false;
  const bool result = match(pattern, name, bad);
  if (bad_pattern) *bad_pattern = bad;
  return result && !bad;
}

bool contains_wildcards(std::string_view path) {
  for (std::size_t i = 0; i < path.size(); ++i) {
    const char c = path[i];
    if (c == '\\') {
      ++i;
    } else if (c == '*' || c == '?' || c == '[') {
      return true;
    }
  }
  return false;
}

WildcardSplit split_wildcards(std::string_view path) {
  const std::string cleaned = path.empty() ? std::string() : go_clean_path(path);
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  for (;;) {
    const std::size_t slash = cleaned.find('/', start);
    parts.push_back(std::string_view(cleaned).substr(start, slash == std::string::npos ? std::string::npos : slash - start));
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  std::string prefix, pattern;
  bool found = false;
  for (std::string_view part : parts) {
    if (!found && contains_wildcards(part)) found = true;
    if (part.empty()) part = "/";
    std::string& target = found ? pattern : prefix;
    if (!target.empty()) target += '/';
    target += part;
  }
  // filepath.Join of the pieces: cleaned, "" stays "".
  return {prefix.empty() ? std::string() : go_clean_path(prefix),
          pattern.empty() ? std::string() : go_clean_path(pattern)};
}

}  // namespace kbuild
