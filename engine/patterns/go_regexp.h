// The part of Go's regexp (RE2 syntax, Perl flags) that BuildKit's patternmatcher produces when
// it turns a glob into a regular expression, compiled to a program matched without
// backtracking. The .dockerignore matcher uses it for patterns that are not a plain path,
// prefix or suffix.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kbuild::patterns {

struct RuneSet {
  std::vector<std::pair<char32_t, char32_t>> ranges;  // sorted, disjoint, inclusive

  bool contains(char32_t r) const {
    for (const auto& [lo, hi] : ranges) {
      if (r < lo) return false;
      if (r <= hi) return true;
    }
    return false;
  }
};

enum class Op : std::uint8_t {
  one,                // one rune from the set
  optional,           // one rune from the set, or nothing
  star,               // any number of runes from the set
  any_dirs,           // "(.*/)?": nothing, or anything but '\n' up to and including a '/'
  begin_text,         // "^", "\A"
  end_text,           // "$", "\z"
  word_boundary,      // "\b"
  not_word_boundary,  // "\B"
};

struct Step {
  Op op;
  std::uint32_t set = 0;
};

// Go's MatchString looks for a match anywhere in the text; the "^" and "$" the translation puts
// around the pattern are what anchor it. patternmatcher leaves '|' unescaped (its escape table
// only holds characters below 64), so a pattern can have alternatives, each searched alone.
struct Program {
  std::vector<std::vector<Step>> alternatives;
  std::vector<RuneSet> sets;
  // For the usual single "^...$" alternative: the literal text it must start and end with
  // ("docs/" and ".md" for "docs/*.md"), checked before running it.
  std::string required_prefix;
  std::string required_suffix;
};

// Go's regexp.Compile would reject the text: patternmatcher reports ErrBadPattern on use.
struct BadRegexp {};
// Valid Go syntax we do not implement (Unicode tables).
struct UnsupportedRegexp {
  std::string feature;
};

// Reads regexp text as Go's regexp.Compile would, throwing BadRegexp where Go refuses it and
// UnsupportedRegexp for what this reader leaves out.
Program compile_regexp(std::string_view text);

// Go's MatchString: whether the program matches somewhere in `text`.
bool regexp_matches(const Program& program, std::string_view text);

}  // namespace kbuild::patterns
