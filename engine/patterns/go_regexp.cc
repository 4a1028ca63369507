#include "engine/patterns/go_regexp.h"

#include <algorithm>
#include <optional>

#include "common/go_text.h"
#include "engine/patterns/scratch.h"

namespace kbuild::patterns {
namespace {

constexpr char32_t kMaxRune = 0x10FFFF;

// ---------------------------------------------------------------------------------------------
// The compiled form of a regexp pattern: a sequence of steps over runes.

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

bool is_assertion(Op op) {
  return op == Op::begin_text || op == Op::end_text || op == Op::word_boundary ||
         op == Op::not_word_boundary;
}

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

}  // namespace

Program compile_regexp(std::string_view text) {
  Program program = RegexpReader(text).read();
  find_required_text(program);
  return program;
}

bool regexp_matches(const Program& program, std::string_view text) { return run(program, text); }

}  // namespace kbuild::patterns
