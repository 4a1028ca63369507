// Mirrors github.com/moby/patternmatcher (New, Pattern.compile, MatchesUsingParentResults),
// patternmatcher/ignorefile.ReadAll and the exclude handling of tonistiigi/fsutil's filterFS.
//
// patternmatcher turns each glob into a Go regular expression by text substitution, and that
// substitution does not know about bracket expressions, so "[*]" or "a\d" mean whatever the
// resulting regexp means. To get those corners right we build the same regexp text and then
// read it with a small parser for the part of Go's RE2 syntax the translation can produce,
// into a program matched without backtracking.
#include "engine/patterns/dockerignore.h"

#include "common/go_path.h"
#include "common/go_text.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <optional>
#include <utility>

#include "common/error.h"

namespace kbuild::patterns {
namespace {

constexpr char32_t kMaxRune = 0x10FFFF;


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
// The compiled form of a regexp pattern: a sequence of steps over runes.

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

using Ranges = std::vector<std::pair<char32_t, char32_t>>;

Ranges normalized(Ranges ranges) {
  std::sort(ranges.begin(), ranges.end());
  Ranges out;
  for (const auto& range : ranges) {
    if (!out.empty() && range.first <= out.back().second + 1) {
      out.back().second = std::max(out.back().second, range.second);
    } else {
      out.push_back(range);
    }
  }
  return out;
}

Ranges complement(const Ranges& sorted) {
  Ranges out;
  char32_t next = 0;
  for (const auto& [lo, hi] : sorted) {
    if (lo > next) out.emplace_back(next, lo - 1);
    next = hi + 1;
  }
  if (next <= kMaxRune) out.emplace_back(next, kMaxRune);
  return out;
}

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

bool is_assertion(Op op) {
  return op == Op::begin_text || op == Op::end_text || op == Op::word_boundary ||
         op == Op::not_word_boundary;
}

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

struct NamedGroup {
  std::string_view name;
  Ranges ranges;
};

const std::vector<NamedGroup>& posix_groups() {
  static const std::vector<NamedGroup> groups = {
      {"alnum", {{'0', '9'}, {'A', 'Z'}, {'a', 'z'}}},
      {"alpha", {{'A', 'Z'}, {'a', 'z'}}},
      {"ascii", {{0, 0x7F}}},
      {"blank", {{'\t', '\t'}, {' ', ' '}}},
      {"cntrl", {{0, 0x1F}, {0x7F, 0x7F}}},
      {"digit", {{'0', '9'}}},
      {"graph", {{'!', '~'}}},
      {"lower", {{'a', 'z'}}},
      {"print", {{' ', '~'}}},
      {"punct", {{'!', '/'}, {':', '@'}, {'[', '`'}, {'{', '~'}}},
      {"space", {{'\t', '\r'}, {' ', ' '}}},
      {"upper", {{'A', 'Z'}}},
      {"word", {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}}},
      {"xdigit", {{'0', '9'}, {'A', 'F'}, {'a', 'f'}}},
  };
  return groups;
}

// "\d", "\s", "\w" and their negations, as Go defines them (ASCII only).
std::optional<Ranges> perl_group(char c) {
  Ranges ranges;
  switch (c) {
    case 'd': case 'D': ranges = {{'0', '9'}}; break;
    case 's': case 'S': ranges = {{'\t', '\n'}, {'\f', '\r'}, {' ', ' '}}; break;
    case 'w': case 'W': ranges = {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}}; break;
    default: return std::nullopt;
  }
  if (c >= 'A' && c <= 'Z') ranges = complement(ranges);
  return ranges;
}

int hex_value(char32_t c) {
  if (c >= '0' && c <= '9') return static_cast<int>(c - '0');
  if (c >= 'a' && c <= 'f') return static_cast<int>(c - 'a' + 10);
  if (c >= 'A' && c <= 'F') return static_cast<int>(c - 'A' + 10);
  return -1;
}

bool is_ascii_alnum(char32_t c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

// Reads the subset of Go's RE2 syntax (Perl flags) that patternmatcher's translation emits.
class RegexpReader {
 public:
  explicit RegexpReader(std::string_view text) : t_(text) {}

  Program read() {
    program_.alternatives.emplace_back();
    while (!t_.empty()) {
      bool repeat = false;
      switch (t_[0]) {
        case '(':
          // Only ever "(.*/)?": every other '(' is escaped by the translation.
          if (!t_.starts_with("(.*/)?")) throw BadRegexp{};
          t_.remove_prefix(6);
          steps().push_back({Op::any_dirs});
          repeat = true;
          break;
        case '|': t_.remove_prefix(1); program_.alternatives.emplace_back(); break;
        case '^': t_.remove_prefix(1); steps().push_back({Op::begin_text}); break;
        case '$': t_.remove_prefix(1); steps().push_back({Op::end_text}); break;
        case '.': t_.remove_prefix(1); add_one(complement({{'\n', '\n'}})); break;
        case '[': add_one(read_class()); break;
        case '*': t_.remove_prefix(1); apply_repeat(0, -1); repeat = true; break;
        case '{': repeat = read_counted_repeat(); break;
        case '?': case '+': case ')': throw BadRegexp{};
        case '\\': read_escape_atom(); break;
        default: add_literal(next_rune()); break;
      }
      last_was_repeat_ = repeat;
    }
    return std::move(program_);
  }

 private:
  std::vector<Step>& steps() { return program_.alternatives.back(); }

  char32_t next_rune() {
    if (t_.empty()) throw BadRegexp{};
    const DecodedRune r = decode_rune(t_, 0);
    if (r.invalid()) throw BadRegexp{};
    t_.remove_prefix(r.width);
    return r.value;
  }

  void add_one(Ranges ranges) {
    program_.sets.push_back({normalized(std::move(ranges))});
    steps().push_back({Op::one, static_cast<std::uint32_t>(program_.sets.size() - 1)});
  }

  void add_literal(char32_t r) { add_one({{r, r}}); }

  // x{min,max} (max -1: unbounded) on the last atom, which Go requires to exist and not to be
  // a repetition itself.
  void apply_repeat(int min, int max) {
    if (last_was_repeat_ || steps().empty()) throw BadRegexp{};
    const Step last = steps().back();
    if (is_assertion(last.op)) {
      if (min == 0) steps().pop_back();  // an empty-width test that may be skipped is no test
      return;
    }
    if (last.op != Op::one) throw BadRegexp{};
    steps().pop_back();
    for (int i = 0; i < min; ++i) steps().push_back({Op::one, last.set});
    if (max < 0) {
      steps().push_back({Op::star, last.set});
    } else {
      for (int i = min; i < max; ++i) steps().push_back({Op::optional, last.set});
    }
  }

  // Go's parseInt: decimal without leading zeros; -1 when too large.
  static bool read_int(std::string_view& s, int& n) {
    if (s.empty() || s[0] < '0' || s[0] > '9') return false;
    if (s.size() >= 2 && s[0] == '0' && s[1] >= '0' && s[1] <= '9') return false;
    n = 0;
    for (; !s.empty() && s[0] >= '0' && s[0] <= '9'; s.remove_prefix(1)) {
      if (n >= 100000000) n = -1;
      if (n >= 0) n = n * 10 + (s[0] - '0');
    }
    return true;
  }

  // "{n}", "{n,}" or "{n,m}"; any other '{' is a literal, as in Go.
  bool read_counted_repeat() {
    std::string_view s = t_.substr(1);
    int min = 0;
    int max = 0;
    bool parsed = read_int(s, min) && !s.empty();
    if (parsed) {
      if (s[0] != ',') {
        max = min;
      } else {
        s.remove_prefix(1);
        if (s.empty()) {
          parsed = false;
        } else if (s[0] == '}') {
          max = -1;
        } else if (!read_int(s, max)) {
          parsed = false;
        } else if (max < 0) {
          min = -1;
        }
      }
    }
    if (!parsed || s.empty() || s[0] != '}') {
      t_.remove_prefix(1);
      add_literal('{');
      return false;
    }
    t_ = s.substr(1);
    if (min < 0 || min > 1000 || max > 1000 || (max >= 0 && min > max)) throw BadRegexp{};
    apply_repeat(min, max);
    return true;
  }

  void read_escape_atom() {
    if (t_.size() >= 2) {
      switch (t_[1]) {
        case 'A': t_.remove_prefix(2); steps().push_back({Op::begin_text}); return;
        case 'z': t_.remove_prefix(2); steps().push_back({Op::end_text}); return;
        case 'b': t_.remove_prefix(2); steps().push_back({Op::word_boundary}); return;
        case 'B': t_.remove_prefix(2); steps().push_back({Op::not_word_boundary}); return;
        case 'C': throw BadRegexp{};
        case 'Q': {
          t_.remove_prefix(2);
          const std::size_t end = t_.find("\\E");
          std::string_view literal = t_.substr(0, end);
          t_.remove_prefix(end == std::string_view::npos ? t_.size() : end + 2);
          while (!literal.empty()) {
            const DecodedRune r = decode_rune(literal, 0);
            if (r.invalid()) throw BadRegexp{};
            literal.remove_prefix(r.width);
            add_literal(r.value);
          }
          return;
        }
        case 'p': case 'P':
          throw UnsupportedRegexp{"Unicode classes (\\p, \\P)"};
        default:
          if (auto group = perl_group(t_[1])) {
            t_.remove_prefix(2);
            add_one(std::move(*group));
            return;
          }
      }
    }
    add_literal(read_escape());
  }

  // Go's parseEscape: t_ starts at the backslash.
  char32_t read_escape() {
    t_.remove_prefix(1);
    const char32_t c = next_rune();
    switch (c) {
      case '1': case '2': case '3': case '4': case '5': case '6': case '7':
        // A lone non-zero digit would be a backreference, which RE2 does not have.
        if (t_.empty() || t_[0] < '0' || t_[0] > '7') throw BadRegexp{};
        [[fallthrough]];
      case '0': {
        char32_t r = c - '0';
        for (int i = 1; i < 3 && !t_.empty() && t_[0] >= '0' && t_[0] <= '7'; ++i) {
          r = r * 8 + static_cast<char32_t>(t_[0] - '0');
          t_.remove_prefix(1);
        }
        return r;
      }
      case 'x': {
        char32_t d = next_rune();
        if (d == '{') {
          char32_t r = 0;
          int digits = 0;
          for (d = next_rune(); d != '}'; d = next_rune()) {
            const int v = hex_value(d);
            if (v < 0) throw BadRegexp{};
            r = r * 16 + static_cast<char32_t>(v);
            if (r > kMaxRune) throw BadRegexp{};
            ++digits;
          }
          if (digits == 0) throw BadRegexp{};
          return r;
        }
        const int x = hex_value(d);
        const int y = hex_value(next_rune());
        if (x < 0 || y < 0) throw BadRegexp{};
        return static_cast<char32_t>(x * 16 + y);
      }
      case 'a': return '\a';
      case 'f': return '\f';
      case 'n': return '\n';
      case 'r': return '\r';
      case 't': return '\t';
      case 'v': return '\v';
      default:
        if (c < 0x80 && !is_ascii_alnum(c)) return c;
        throw BadRegexp{};
    }
  }

  char32_t read_class_char() {
    if (t_.empty()) throw BadRegexp{};
    if (t_[0] == '\\') return read_escape();
    return next_rune();
  }

  // Go's parseClass: t_ starts at '['.
  Ranges read_class() {
    t_.remove_prefix(1);
    const bool negated = !t_.empty() && t_[0] == '^';
    if (negated) t_.remove_prefix(1);
    Ranges ranges;
    for (bool first = true; t_.empty() || t_[0] != ']' || first; first = false) {
      if (t_.size() > 2 && t_[0] == '[' && t_[1] == ':') {
        // Go looks for the closing ":]" anywhere further on, even past this class.
        const std::size_t close = t_.find(":]", 2);
        if (close != std::string_view::npos) {
          std::string_view name = t_.substr(2, close - 2);
          const bool negated_group = name.starts_with('^');
          if (negated_group) name.remove_prefix(1);
          const auto& groups = posix_groups();
          const auto it = std::find_if(groups.begin(), groups.end(),
                                       [&](const NamedGroup& g) { return g.name == name; });
          if (it == groups.end()) throw BadRegexp{};
          const Ranges group = negated_group ? complement(it->ranges) : it->ranges;
          ranges.insert(ranges.end(), group.begin(), group.end());
          t_.remove_prefix(close + 2);
          continue;
        }
      }
      if (t_.size() >= 2 && t_[0] == '\\') {
        if (t_[1] == 'p' || t_[1] == 'P') throw UnsupportedRegexp{"Unicode classes (\\p, \\P)"};
        if (auto group = perl_group(t_[1])) {
          t_.remove_prefix(2);
          ranges.insert(ranges.end(), group->begin(), group->end());
          continue;
        }
      }
      const char32_t lo = read_class_char();
      char32_t hi = lo;
      if (t_.size() >= 2 && t_[0] == '-' && t_[1] != ']') {
        t_.remove_prefix(1);
        hi = read_class_char();
        if (hi < lo) throw BadRegexp{};
      }
      ranges.emplace_back(lo, hi);
    }
    t_.remove_prefix(1);
    ranges = normalized(std::move(ranges));
    return negated ? complement(ranges) : ranges;
  }

  std::string_view t_;
  Program program_;
  bool last_was_repeat_ = false;
};

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

// ---------------------------------------------------------------------------------------------
// Scratch memory for one match: on the stack for ordinary rule sets, on the heap beyond.

template <std::size_t N>
class Scratch {
 public:
  explicit Scratch(std::size_t size) {
    if (size > N) heap_ = std::make_unique<unsigned char[]>(size);
    data_ = heap_ ? heap_.get() : inline_.data();
    std::memset(data_, 0, size);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;

  unsigned char* data() { return data_; }

 private:
  std::array<unsigned char, N> inline_;
  std::unique_ptr<unsigned char[]> heap_;
  unsigned char* data_;
};

bool is_word_byte(std::string_view s, std::size_t i) {
  const char c = s[i];
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

bool at_word_boundary(std::string_view s, std::size_t pos) {
  const bool before = pos > 0 && is_word_byte(s, pos - 1);
  const bool after = pos < s.size() && is_word_byte(s, pos);
  return before != after;
}

// Whether one alternative matches somewhere in the text, tracking every reachable step at once
// (no backtracking). State i <= m is "before step i"; m + 1 + i is "inside the '.*' of the
// any_dirs step i".
bool search(const std::vector<Step>& steps, const std::vector<RuneSet>& sets,
            std::string_view text) {
  const std::size_t m = steps.size();
  const std::size_t states = 2 * (m + 1);
  Scratch<512> scratch(2 * states);
  unsigned char* current = scratch.data();
  unsigned char* next = current + states;
  // A match may start anywhere, unless the alternative starts with "^" (nearly always).
  const bool anchored = m > 0 && steps[0].op == Op::begin_text;

  const auto close = [&](unsigned char* set, std::size_t pos) {
    for (std::size_t i = 0; i < m; ++i) {
      if (!set[i]) continue;
      switch (steps[i].op) {
        case Op::one: break;
        case Op::optional: case Op::star: set[i + 1] = 1; break;
        case Op::any_dirs: set[m + 1 + i] = 1; set[i + 1] = 1; break;
        case Op::begin_text: if (pos == 0) set[i + 1] = 1; break;
        case Op::end_text: if (pos == text.size()) set[i + 1] = 1; break;
        case Op::word_boundary: if (at_word_boundary(text, pos)) set[i + 1] = 1; break;
        case Op::not_word_boundary: if (!at_word_boundary(text, pos)) set[i + 1] = 1; break;
      }
    }
  };

  current[0] = 1;
  close(current, 0);
  if (current[m]) return true;
  for (std::size_t pos = 0; pos < text.size();) {
    const DecodedRune r = decode_rune(text, pos);
    std::memset(next, 0, states);
    bool alive = false;
    for (std::size_t i = 0; i < m; ++i) {
      const Step& step = steps[i];
      if (current[i] && step.op != Op::any_dirs && !is_assertion(step.op) &&
          sets[step.set].contains(r.value)) {
        next[step.op == Op::star ? i : i + 1] = 1;
        alive = true;
      }
      if (step.op == Op::any_dirs && current[m + 1 + i] && r.value != '\n') {
        next[m + 1 + i] = 1;
        if (r.value == '/') next[i + 1] = 1;
        alive = true;
      }
    }
    pos += r.width;
    if (!anchored) {
      next[0] = 1;
      alive = true;
    }
    if (!alive) return false;
    close(next, pos);
    if (next[m]) return true;
    std::swap(current, next);
  }
  return false;
}

// The exact-rune steps right after a leading "^" and right before a final "$", as UTF-8. Text
// that does not start and end with those bytes cannot match. U+FFFD stops them: it also stands
// for any invalid byte of the text.
void find_required_text(Program& program) {
  if (program.alternatives.size() != 1) return;
  const std::vector<Step>& steps = program.alternatives.front();
  const auto literal = [&](const Step& step) -> std::optional<char32_t> {
    if (step.op != Op::one) return std::nullopt;
    const auto& ranges = program.sets[step.set].ranges;
    if (ranges.size() != 1 || ranges[0].first != ranges[0].second) return std::nullopt;
    if (ranges[0].first == kRuneError) return std::nullopt;
    return ranges[0].first;
  };
  if (!steps.empty() && steps.front().op == Op::begin_text) {
    for (std::size_t i = 1; i < steps.size(); ++i) {
      const auto r = literal(steps[i]);
      if (!r) break;
      append_utf8(program.required_prefix, *r);
    }
  }
  if (!steps.empty() && steps.back().op == Op::end_text) {
    std::vector<char32_t> reversed;
    for (std::size_t i = steps.size() - 1; i-- > 0;) {
      const auto r = literal(steps[i]);
      if (!r) break;
      reversed.push_back(*r);
    }
    for (auto it = reversed.rbegin(); it != reversed.rend(); ++it) {
      append_utf8(program.required_suffix, *it);
    }
  }
}

bool run(const Program& program, std::string_view text) {
  if (!text.starts_with(program.required_prefix) || !text.ends_with(program.required_suffix)) {
    return false;
  }
  return std::any_of(program.alternatives.begin(), program.alternatives.end(),
                     [&](const std::vector<Step>& steps) {
                       return search(steps, program.sets, text);
                     });
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
          rule.program = RegexpReader(translation.regexp).read();
          find_required_text(rule.program);
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
    case Kind::regexp: return run(rule.program, path);
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
