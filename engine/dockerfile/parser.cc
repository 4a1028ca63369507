// A re-implementation of BuildKit's Dockerfile parser (frontend/dockerfile/parser: parser.go,
// line_parsers.go, directives.go, split_command.go). Its quirks are kept on purpose: a Dockerfile
// must parse into the same tree here as in `docker build`.
#include "engine/dockerfile/parser.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <utility>

#include "common/go_text.h"

namespace kbuild::dockerfile {
namespace {

// ---------------------------------------------------------------------------------------------
// Characters, with Go's semantics (the decoding and spaces themselves are in common/go_text.h).

constexpr int32_t kEof = -1;  // text/scanner's EOF

std::string rune_string(int32_t r) {
  std::string out;
  append_utf8(out, r < 0 ? kRuneError : static_cast<char32_t>(r));
  return out;
}

// The class [\t\v\f\r ] of BuildKit's reWhitespace.
bool is_separator(char c) { return c == '\t' || c == '\v' || c == '\f' || c == '\r' || c == ' '; }

// RE2's \s: [\t\n\f\r ].
bool is_re_space(char c) { return c == '\t' || c == '\n' || c == '\f' || c == '\r' || c == ' '; }

// unicode.IsSpace applied to a single byte converted to a rune, as extractBuilderFlags and
// parseHealthConfig do: the UTF-8 continuation bytes 0x85 and 0xA0 count as spaces there.
bool is_byte_space(char c) {
  unsigned char b = static_cast<unsigned char>(c);
  return is_go_space(b);
}

bool is_ascii_digit(int32_t r) { return r >= '0' && r <= '9'; }

// unicode.IsLetter, exact for ASCII and Latin-1; other non-space characters count as letters
// unless they sit in the common punctuation and symbol blocks.
bool is_letter(int32_t r) {
  if (r < 0x80) return (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z');
  if (r < 0x100) return r == 0xAA || r == 0xB5 || r == 0xBA || (r >= 0xC0 && r != 0xD7 && r != 0xF7);
  char32_t c = static_cast<char32_t>(r);
  if (is_go_space(c)) return false;
  if (c >= 0x2000 && c <= 0x2BFF) return false;
  if ((c >= 0x3001 && c <= 0x3004) || (c >= 0x3008 && c <= 0x3020)) return false;
  if ((c >= 0xFE30 && c <= 0xFE4F) || (c >= 0xFF01 && c <= 0xFF20)) return false;
  if (c >= 0x1F000 && c <= 0x1FAFF) return false;
  return true;
}

std::string ascii_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// unicode.ToLower for the Latin, Greek and Cyrillic letters and the few characters that lower to
// ASCII (KELVIN SIGN to "k", I WITH DOT ABOVE to "i"); other characters are left as they are.
char32_t to_lower_rune(char32_t r) {
  if (r < 0x80) return r >= 'A' && r <= 'Z' ? r + 0x20 : r;
  if (r >= 0xC0 && r <= 0xDE && r != 0xD7) return r + 0x20;
  if (r == 0x130) return 'i';
  if (r == 0x178) return 0xFF;
  if ((r >= 0x100 && r <= 0x12F) || (r >= 0x132 && r <= 0x137) || (r >= 0x14A && r <= 0x177)) {
    return r % 2 == 0 ? r + 1 : r;
  }
  if ((r >= 0x139 && r <= 0x148) || (r >= 0x179 && r <= 0x17E)) return r % 2 == 1 ? r + 1 : r;
  if (r == 0x386) return 0x3AC;
  if (r >= 0x388 && r <= 0x38A) return r + 37;
  if (r == 0x38C) return 0x3CC;
  if (r == 0x38E || r == 0x38F) return r + 63;
  if (r >= 0x391 && r <= 0x3AB && r != 0x3A2) return r + 0x20;
  if (r >= 0x400 && r <= 0x40F) return r + 0x50;
  if (r >= 0x410 && r <= 0x42F) return r + 0x20;
  if (r == 0x212A) return 'k';
  if (r == 0x212B) return 0xE5;
  if (r >= 0xFF21 && r <= 0xFF3A) return r + 0x20;
  return r;
}

// strings.ToLower: beyond ASCII it maps rune by rune, and invalid bytes become U+FFFD.
std::string go_lower(std::string_view s) {
  bool ascii = true;
  for (char c : s) ascii = ascii && static_cast<unsigned char>(c) < 0x80;
  if (ascii) return ascii_lower(s);
  std::string out;
  for (size_t pos = 0; pos < s.size();) {
    DecodedRune r = decode_rune(s, pos);
    append_utf8(out, to_lower_rune(r.value));
    pos += r.width;
  }
  return out;
}

// A fault inside one instruction; the caller attaches the lines.
[[noreturn]] void fail(const std::string& message) { throw Error(ErrorKind::user, message); }

// ---------------------------------------------------------------------------------------------
// JSON arrays, accepted and decoded as Go's encoding/json does when unmarshalling into []any.

enum class JsonOutcome {
  invalid,     // not valid JSON (or a number out of range): the shell form
  non_string,  // a valid array holding something else than strings: an error
  strings,
};

class JsonArrayReader {
 public:
  explicit JsonArrayReader(std::string_view text) : s_(text) {}

  JsonOutcome read(std::vector<std::string>& items) {
    bool all_strings = true;
    skip_ws();
    if (!consume('[')) return JsonOutcome::invalid;
    skip_ws();
    if (!consume(']')) {
      while (true) {
        skip_ws();
        if (peek() == '"') {
          std::string item;
          if (!read_string(&item)) return JsonOutcome::invalid;
          items.push_back(std::move(item));
        } else {
          all_strings = false;
          if (!skip_value()) return JsonOutcome::invalid;
        }
        skip_ws();
        if (consume(']')) break;
        if (!consume(',')) return JsonOutcome::invalid;
      }
    }
    skip_ws();
    if (pos_ != s_.size()) return JsonOutcome::invalid;
    if (range_error_) return JsonOutcome::invalid;
    return all_strings ? JsonOutcome::strings : JsonOutcome::non_string;
  }

 private:
  // encoding/json's scanner refuses nesting deeper than this.
  static constexpr size_t kMaxDepth = 10000;

  int peek() const { return pos_ < s_.size() ? static_cast<unsigned char>(s_[pos_]) : -1; }
  bool consume(char c) {
    if (peek() != static_cast<unsigned char>(c)) return false;
    ++pos_;
    return true;
  }
  void skip_ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) ++pos_;
  }

  static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  // Four hex digits at pos, or -1.
  int32_t hex4(size_t pos) const {
    if (pos + 4 > s_.size()) return -1;
    int32_t v = 0;
    for (size_t i = pos; i < pos + 4; ++i) {
      int h = hex_value(s_[i]);
      if (h < 0) return -1;
      v = v * 16 + h;
    }
    return v;
  }

  // A string at pos_ ('"'), decoded into out when out is not null.
  bool read_string(std::string* out) {
    ++pos_;
    while (pos_ < s_.size()) {
      unsigned char c = static_cast<unsigned char>(s_[pos_]);
      if (c == '"') {
        ++pos_;
        return true;
      }
      if (c < 0x20) return false;
      if (c == '\\') {
        if (pos_ + 1 >= s_.size()) return false;
        char e = s_[pos_ + 1];
        pos_ += 2;
        char simple = 0;
        switch (e) {
          case '"': simple = '"'; break;
          case '\\': simple = '\\'; break;
          case '/': simple = '/'; break;
          case 'b': simple = '\b'; break;
          case 'f': simple = '\f'; break;
          case 'n': simple = '\n'; break;
          case 'r': simple = '\r'; break;
          case 't': simple = '\t'; break;
          case 'u': break;
          default: return false;
        }
        if (simple != 0) {
          if (out) *out += simple;
          continue;
        }
        int32_t r = hex4(pos_);
        if (r < 0) return false;
        pos_ += 4;
        if (r >= 0xD800 && r < 0xE000) {
          // A surrogate pair makes one character; a lone surrogate becomes U+FFFD.
          int32_t r2 = pos_ + 1 < s_.size() && s_[pos_] == '\\' && s_[pos_ + 1] == 'u' ? hex4(pos_ + 2) : -1;
          if (r < 0xDC00 && r2 >= 0xDC00 && r2 < 0xE000) {
            r = 0x10000 + ((r - 0xD800) << 10) + (r2 - 0xDC00);
            pos_ += 6;
          } else {
            r = kRuneError;
          }
        }
        if (out) append_utf8(*out, static_cast<char32_t>(r));
        continue;
      }
      if (c < 0x80) {
        if (out) *out += static_cast<char>(c);
        ++pos_;
        continue;
      }
      DecodedRune r = decode_rune(s_, pos_);
      if (out) {
        if (r.value == kRuneError && r.width == 1) {
          append_utf8(*out, kRuneError);
        } else {
          out->append(s_.substr(pos_, r.width));
        }
      }
      pos_ += r.width;
    }
    return false;
  }

  bool read_literal(std::string_view word) {
    if (s_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }

  bool read_number() {
    size_t start = pos_;
    consume('-');
    if (consume('0')) {
    } else if (peek() >= '1' && peek() <= '9') {
      while (peek() >= '0' && peek() <= '9') ++pos_;
    } else {
      return false;
    }
    if (consume('.')) {
      if (!(peek() >= '0' && peek() <= '9')) return false;
      while (peek() >= '0' && peek() <= '9') ++pos_;
    }
    if (peek() == 'e' || peek() == 'E') {
      ++pos_;
      if (peek() == '+' || peek() == '-') ++pos_;
      if (!(peek() >= '0' && peek() <= '9')) return false;
      while (peek() >= '0' && peek() <= '9') ++pos_;
    }
    // Decoding into any yields a float64; one that overflows is an error, not a syntax error.
    std::string text(s_.substr(start, pos_ - start));
    if (std::isinf(std::strtod(text.c_str(), nullptr))) range_error_ = true;
    return true;
  }

  // Any value, nested ones included, without recursion.
  bool skip_value() {
    std::vector<char> open;  // '[' or '{' of the containers we are in
    while (true) {
      skip_ws();
      // One value starts here.
      int c = peek();
      if (c == '[' || c == '{') {
        ++pos_;
        open.push_back(static_cast<char>(c));
        if (open.size() + 1 > kMaxDepth) return false;  // the outer array is one level
        skip_ws();
        if (consume(c == '[' ? ']' : '}')) {
          open.pop_back();
        } else {
          if (c == '{' && !read_member_key()) return false;
          continue;
        }
      } else if (c == '"') {
        if (!read_string(nullptr)) return false;
      } else if (c == 't') {
        if (!read_literal("true")) return false;
      } else if (c == 'f') {
        if (!read_literal("false")) return false;
      } else if (c == 'n') {
        if (!read_literal("null")) return false;
      } else if (c == '-' || (c >= '0' && c <= '9')) {
        if (!read_number()) return false;
      } else {
        return false;
      }
      // After a value: close containers or move to the next element.
      while (true) {
        if (open.empty()) return true;
        skip_ws();
        if (consume(',')) {
          if (open.back() == '{' && !read_member_key()) return false;
          break;
        }
        if (!consume(open.back() == '[' ? ']' : '}')) return false;
        open.pop_back();
      }
    }
  }

  bool read_member_key() {
    skip_ws();
    if (peek() != '"' || !read_string(nullptr)) return false;
    skip_ws();
    return consume(':');
  }

  std::string_view s_;
  size_t pos_ = 0;
  bool range_error_ = false;
};

// ---------------------------------------------------------------------------------------------
// Shell words, only as far as heredoc detection needs them: BuildKit's shell.Lex with escape '\',
// SkipUnsetEnv and an empty environment, so "$x" and "${x...}" stay as written (mostly).

class HeredocWordLexer {
 public:
  HeredocWordLexer(bool raw_quotes, bool raw_escapes) : raw_quotes_(raw_quotes), raw_escapes_(raw_escapes) {}

  // ProcessWords. Throws kbuild::Error with shell.Lex's message on bad syntax.
  std::vector<std::string> words(std::string_view input) {
    src_ = input;
    pos_ = 0;
    try {
      return process_stop_on(kEof, raw_escapes_).words;
    } catch (const Error& e) {
      fail("failed to process " + go_quote(input) + ": " + e.what());
    }
  }

 private:
  static constexpr int32_t kEscape = '\\';
  static constexpr int kMaxNesting = 1000;

  struct Processed {
    std::string word;
    std::vector<std::string> words;
  };

  // The word list of one processStopOn call. BuildKit shares one buffer between nested calls
  // (a "${x:-y}" resets the word being built), so the buffer lives in the lexer.
  struct WordList {
    std::string& buf;
    std::vector<std::string> words;
    bool in_word = false;

    void add_char(int32_t ch) {
      bool space = is_go_space(static_cast<char32_t>(ch));
      if (space && in_word) {
        if (!buf.empty()) {
          words.push_back(buf);
          buf.clear();
          in_word = false;
        }
      } else if (!space) {
        add_raw_char(ch);
      }
    }
    void add_raw_char(int32_t ch) {
      append_utf8(buf, static_cast<char32_t>(ch));
      in_word = true;
    }
    void add_string(std::string_view s) {
      for (size_t pos = 0; pos < s.size();) {
        DecodedRune r = decode_rune(s, pos);
        add_char(static_cast<int32_t>(r.value));
        pos += r.width;
      }
    }
    void add_raw_string(std::string_view s) {
      buf += s;
      in_word = true;
    }
    std::vector<std::string> take() {
      if (!buf.empty()) {
        words.push_back(buf);
        buf.clear();
        in_word = false;
      }
      return std::move(words);
    }
  };

  int32_t peek() const {
    if (pos_ >= src_.size()) return kEof;
    return static_cast<int32_t>(decode_rune(src_, pos_).value);
  }
  int32_t next() {
    if (pos_ >= src_.size()) return kEof;
    DecodedRune r = decode_rune(src_, pos_);
    pos_ += r.width;
    return static_cast<int32_t>(r.value);
  }

  Processed process_stop_on(int32_t stop, bool raw_escapes) {
    struct Restore {
      bool& flag;
      bool saved;
      int& depth;
      ~Restore() {
        flag = saved;
        --depth;
      }
    } restore{raw_escapes_, raw_escapes_, depth_};
    raw_escapes_ = raw_escapes;
    // Go's stacks grow; ours do not, so "${a:-${a:-${a:-...}}}" is cut off (BuildKit has no limit).
    if (++depth_ > kMaxNesting) fail("substitutions nested too deeply");

    std::string result;
    words_buffer_.clear();
    WordList words{words_buffer_, {}};
    while (peek() != kEof) {
      int32_t ch = peek();
      if (stop != kEof && ch == stop) {
        next();
        return {std::move(result), words.take()};
      }
      if (ch == '$' || ch == '<' || ch == '\'' || ch == '"') {
        std::string tmp = ch == '$'    ? process_dollar()
                          : ch == '<'  ? process_possible_heredoc()
                          : ch == '\'' ? process_single_quote()
                                       : process_double_quote();
        result += tmp;
        if (ch == '$') {
          words.add_string(tmp);
        } else {
          words.add_raw_string(tmp);
        }
        continue;
      }
      ch = next();
      if (ch == kEscape) {
        if (raw_escapes_) {
          words.add_raw_char(ch);
          append_utf8(result, static_cast<char32_t>(ch));
        }
        ch = next();
        if (ch == kEof) break;
        words.add_raw_char(ch);
      } else {
        words.add_char(ch);
      }
      append_utf8(result, static_cast<char32_t>(ch));
    }
    if (stop != kEof) fail("unexpected end of statement while looking for matching " + rune_string(stop));
    return {std::move(result), words.take()};
  }

  std::string process_single_quote() {
    std::string result;
    int32_t ch = next();
    if (raw_quotes_) append_utf8(result, static_cast<char32_t>(ch));
    while (true) {
      ch = next();
      if (ch == kEof) fail("unexpected end of statement while looking for matching single-quote");
      if (ch == '\'') {
        if (raw_quotes_) append_utf8(result, static_cast<char32_t>(ch));
        return result;
      }
      append_utf8(result, static_cast<char32_t>(ch));
    }
  }

  std::string process_double_quote() {
    std::string result;
    int32_t ch = next();
    if (raw_quotes_) append_utf8(result, static_cast<char32_t>(ch));
    while (true) {
      int32_t c = peek();
      if (c == kEof) fail("unexpected end of statement while looking for matching double-quote");
      if (c == '"') {
        next();
        if (raw_quotes_) append_utf8(result, '"');
        return result;
      }
      if (c == '$') {
        result += process_dollar();
        continue;
      }
      ch = next();
      if (ch == kEscape) {
        if (raw_escapes_) append_utf8(result, static_cast<char32_t>(ch));
        int32_t after = peek();
        if (after == kEof) continue;  // the loop then reports the missing quote
        if (after == '"' || after == '$' || after == kEscape) ch = next();
      }
      append_utf8(result, static_cast<char32_t>(ch));
    }
  }

  std::string process_name() {
    std::string name;
    while (peek() != kEof) {
      int32_t ch = peek();
      if (name.empty() && is_ascii_digit(ch)) {
        while (peek() != kEof && is_ascii_digit(peek())) append_utf8(name, static_cast<char32_t>(next()));
        return name;
      }
      if (name.empty() && (ch == '@' || ch == '*' || ch == '#' || ch == '?' || ch == '-' || ch == '$' ||
                           ch == '!' || ch == '0')) {
        next();
        return rune_string(ch);
      }
      if (!is_letter(ch) && !is_ascii_digit(ch) && ch != '_') break;
      append_utf8(name, static_cast<char32_t>(next()));
    }
    return name;
  }

  // Every variable is unset, and unset ones are kept as written.
  std::string process_dollar() {
    next();
    if (peek() != '{') return "$" + process_name();
    next();
    int32_t c = peek();
    if (c == kEof) fail("syntax error: missing '}'");
    if (c == '{' || c == '}' || c == ':') fail("syntax error: bad substitution");
    std::string name = process_name();
    int32_t ch = next();
    std::string modifier = rune_string(ch);
    bool null_is_unset = false;
    switch (ch) {
      case '}':
        return "${" + name + "}";
      case ':':
        null_is_unset = true;
        ch = next();
        modifier += rune_string(ch);
        [[fallthrough]];
      case '+':
      case '-':
      case '?':
      case '#':
      case '%': {
        bool raw = ch == '#' || ch == '%';
        if (null_is_unset && raw) fail("unsupported modifier (" + modifier + ") in substitution");
        std::string word = stop_on_or(static_cast<int32_t>('}'), raw, "syntax error: missing '}'");
        return "${" + name + modifier + word + "}";
      }
      case '/': {
        if (peek() == '/') next();  // ${x//p/r}: the second slash is not kept for unset x
        std::string pattern = stop_on_or('/', true, "syntax error: missing '/' in ${}");
        std::string replacement = stop_on_or('}', true, "syntax error: missing '}'");
        return "${" + name + "/" + pattern + "/" + replacement + "}";
      }
      default:
        fail("unsupported modifier (" + modifier + ") in substitution");
    }
  }

  // processStopOn inside ${...}: running out of input gets the given message instead.
  std::string stop_on_or(int32_t stop, bool raw_escapes, const std::string& at_eof) {
    try {
      return process_stop_on(stop, raw_escapes).word;
    } catch (const Error&) {
      if (peek() == kEof) fail(at_eof);
      throw;
    }
  }

  std::string process_possible_heredoc() {
    next();
    if (peek() != '<') return "<";
    next();
    std::string result = "<<";
    while (peek() == '\t' || peek() == '\r' || peek() == ' ') result += static_cast<char>(next());
    return result;
  }

  bool raw_quotes_;
  bool raw_escapes_;
  std::string_view src_;
  size_t pos_ = 0;
  int depth_ = 0;
  std::string words_buffer_;
};

size_t count_quotes(std::string_view s) {
  size_t n = 0;
  for (char c : s) n += c == '\'' || c == '"';
  return n;
}

// ParseHeredoc: the regexp ^(\d*)<<(-?)\s*([^<]*)$, then the word lexed with and without quotes
// to tell whether any part of it was quoted. Throws on words the lexer rejects.
std::optional<Heredoc> heredoc_from_word(std::string_view word) {
  size_t pos = 0;
  while (pos < word.size() && is_ascii_digit(static_cast<unsigned char>(word[pos]))) ++pos;
  if (word.substr(pos, 2) != "<<") return std::nullopt;
  pos += 2;
  bool chomp = pos < word.size() && word[pos] == '-';
  if (chomp) ++pos;
  while (pos < word.size() && is_re_space(word[pos])) ++pos;
  std::string_view rest = word.substr(pos);
  if (rest.find('<') != std::string_view::npos || rest.empty()) return std::nullopt;

  std::vector<std::string> words = HeredocWordLexer(false, false).words(rest);
  if (words.size() != 1) return std::nullopt;
  std::vector<std::string> raw_words = HeredocWordLexer(true, false).words(rest);
  if (raw_words.size() != words.size()) {
    fail("internal lexing of heredoc produced inconsistent results: " + std::string(rest));
  }
  Heredoc heredoc;
  heredoc.name = words[0];
  heredoc.expand = count_quotes(words[0]) == count_quotes(raw_words[0]);
  heredoc.chomp = chomp;
  return heredoc;
}

// heredocsFromLine: the whole line is split into shell words (a line the lexer rejects has
// none) and each word that opens a heredoc counts, in order.
std::vector<Heredoc> heredocs_from_line(std::string_view line) {
  std::vector<std::string> words;
  try {
    words = HeredocWordLexer(true, true).words(line);
  } catch (const Error&) {
  }
  std::vector<Heredoc> heredocs;
  for (const std::string& word : words) {
    if (auto heredoc = heredoc_from_word(word)) heredocs.push_back(std::move(*heredoc));
  }
  return heredocs;
}

// ---------------------------------------------------------------------------------------------
// Splitting an instruction line: split_command.go and line_parsers.go.

// reWhitespace.Split(s, -1) for an s without leading or trailing separators.
std::vector<std::string> split_whitespace(std::string_view s) {
  std::vector<std::string> parts;
  size_t pos = 0;
  while (true) {
    size_t end = pos;
    while (end < s.size() && !is_separator(s[end])) ++end;
    parts.emplace_back(s.substr(pos, end - pos));
    if (end == s.size()) break;
    pos = end;
    while (pos < s.size() && is_separator(s[pos])) ++pos;
    if (pos == s.size()) {
      parts.emplace_back();
      break;
    }
  }
  return parts;
}

// reWhitespace.Split(s, 2).
std::pair<std::string_view, std::optional<std::string_view>> split_first_word(std::string_view s) {
  size_t end = 0;
  while (end < s.size() && !is_separator(s[end])) ++end;
  if (end == s.size()) return {s, std::nullopt};
  size_t rest = end;
  while (rest < s.size() && is_separator(s[rest])) ++rest;
  return {s.substr(0, end), s.substr(rest)};
}

struct FlagSplit {
  std::string_view rest;
  std::vector<std::string> flags;
};

// extractBuilderFlags: leading "--name=value" words, with quotes and the escape token removed,
// up to the first other word or a "--" word. Like BuildKit it walks bytes, so a non-ASCII byte is
// written as the Latin-1 character of that value and 0x85 / 0xA0 bytes separate words.
FlagSplit extract_builder_flags(std::string_view line, char escape) {
  enum { in_spaces, in_word, in_quote } phase = in_spaces;
  FlagSplit out;
  std::string word;
  char quote = 0;
  bool blank_ok = false;
  for (size_t pos = 0; pos <= line.size(); ++pos) {
    char ch = pos < line.size() ? line[pos] : '\0';
    if (phase == in_spaces) {
      if (pos == line.size()) break;
      if (is_byte_space(ch)) continue;
      if (ch != '-' || pos + 1 == line.size() || line[pos + 1] != '-') {
        out.rest = line.substr(pos);
        return out;
      }
      phase = in_word;
    }
    if (pos == line.size()) {
      if (word != "--" && (blank_ok || !word.empty())) out.flags.push_back(word);
      break;
    }
    if (phase == in_word) {
      if (is_byte_space(ch)) {
        phase = in_spaces;
        if (word == "--") {
          out.rest = line.substr(pos);
          return out;
        }
        if (blank_ok || !word.empty()) out.flags.push_back(word);
        word.clear();
        blank_ok = false;
        continue;
      }
      if (ch == '\'' || ch == '"') {
        quote = ch;
        blank_ok = true;
        phase = in_quote;
        continue;
      }
      if (ch == escape) {
        if (pos + 1 == line.size()) continue;
        ch = line[++pos];
      }
      append_utf8(word, static_cast<unsigned char>(ch));
      continue;
    }
    // in_quote
    if (ch == quote) {
      phase = in_word;
      continue;
    }
    if (ch == escape) {
      if (pos + 1 == line.size()) {
        phase = in_word;
        continue;
      }
      ch = line[++pos];
    }
    append_utf8(word, static_cast<unsigned char>(ch));
  }
  out.rest = {};
  return out;
}

// parseWords: whitespace-separated words, quotes and escapes kept in the words.
std::vector<std::string> parse_words(std::string_view rest, char escape) {
  enum { in_spaces, in_word, in_quote } phase = in_spaces;
  std::vector<std::string> words;
  std::string word;
  char32_t quote = 0;
  bool blank_ok = false;
  char32_t ch = 0;
  size_t width = 0;
  for (size_t pos = 0; pos <= rest.size(); pos += width) {
    if (pos != rest.size()) {
      DecodedRune r = decode_rune(rest, pos);
      ch = r.value;
      width = r.width;
    }
    if (phase == in_spaces) {
      if (pos == rest.size()) break;
      if (is_go_space(ch)) continue;
      phase = in_word;
    }
    if (pos == rest.size()) {
      if (blank_ok || !word.empty()) words.push_back(word);
      break;
    }
    if (phase == in_word) {
      if (is_go_space(ch)) {
        phase = in_spaces;
        if (blank_ok || !word.empty()) words.push_back(word);
        word.clear();
        blank_ok = false;
        continue;
      }
      if (ch == '\'' || ch == '"') {
        quote = ch;
        blank_ok = true;
        phase = in_quote;
      }
      if (ch == static_cast<unsigned char>(escape)) {
        if (pos + width == rest.size()) continue;
        append_utf8(word, ch);
        pos += width;
        DecodedRune r = decode_rune(rest, pos);
        ch = r.value;
        width = r.width;
      }
      append_utf8(word, ch);
      continue;
    }
    // in_quote
    if (ch == quote) phase = in_word;
    if (ch == static_cast<unsigned char>(escape) && quote != '\'') {
      if (pos + width == rest.size()) {
        phase = in_word;
        continue;
      }
      pos += width;
      append_utf8(word, ch);
      DecodedRune r = decode_rune(rest, pos);
      ch = r.value;
      width = r.width;
    }
    append_utf8(word, ch);
  }
  return words;
}

// What a line parser makes of the arguments.
struct Arguments {
  std::vector<std::string> args;
  bool json = false;
};

std::optional<Arguments> parse_json(std::string_view rest) {
  rest = go_trim_left_space(rest);
  if (rest.empty() || rest[0] != '[') return std::nullopt;
  Arguments out;
  switch (JsonArrayReader(rest).read(out.args)) {
    case JsonOutcome::strings:
      out.json = true;
      return out;
    case JsonOutcome::non_string:
      fail("when using JSON array syntax, arrays must be comprised of strings only");
    case JsonOutcome::invalid:
      break;
  }
  return std::nullopt;
}

Arguments parse_strings_whitespace_delimited(std::string_view rest) {
  if (rest.empty()) return {};
  return {split_whitespace(rest), false};
}

Arguments parse_string(std::string_view rest) {
  if (rest.empty()) return {};
  return {{std::string(rest)}, false};
}

Arguments parse_maybe_json(std::string_view rest) {
  if (rest.empty()) return {};
  if (auto json = parse_json(rest)) return *json;
  return {{std::string(rest)}, false};
}

Arguments parse_maybe_json_to_list(std::string_view rest) {
  if (auto json = parse_json(rest)) return *json;
  return parse_strings_whitespace_delimited(rest);
}

// ENV and LABEL: "key value" (the legacy form, third element "") or key=value pairs (each
// followed by "=").
Arguments parse_name_val(std::string_view rest, std::string_view key, char escape) {
  std::vector<std::string> words = parse_words(rest, escape);
  if (words.empty()) return {};
  Arguments out;
  if (words[0].find('=') == std::string::npos) {
    auto [name, value] = split_first_word(rest);
    if (!value) fail(std::string(key) + " must have two arguments");
    out.args = {std::string(name), std::string(*value), ""};
    return out;
  }
  for (const std::string& word : words) {
    size_t eq = word.find('=');
    if (eq == std::string::npos) {
      fail("Syntax error - can't find = in " + go_quote(word) + ". Must be of the form: name=value");
    }
    out.args.push_back(word.substr(0, eq));
    out.args.push_back(word.substr(eq + 1));
    out.args.push_back("=");
  }
  return out;
}

Arguments parse_health_config(std::string_view rest) {
  size_t sep = 0;
  while (sep < rest.size() && !is_byte_space(rest[sep])) ++sep;
  size_t next = sep;
  while (next < rest.size() && is_byte_space(rest[next])) ++next;
  if (sep == 0) return {};
  Arguments cmd = parse_maybe_json(rest.substr(next));
  Arguments out{{std::string(rest.substr(0, sep))}, cmd.json};
  out.args.insert(out.args.end(), cmd.args.begin(), cmd.args.end());
  return out;
}

// newNodeFromLine. ONBUILD's instruction is parsed into node.inner; the loop stands in for
// BuildKit's recursion so that "ONBUILD ONBUILD ..." cannot exhaust the stack.
//
// BuildKit nests "ONBUILD ONBUILD ..." without bound and its instruction layer then rejects any
// chain ("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"). We stop at kMaxOnbuildDepth with
// that message, as the tree (and every copy, dump and destruction of it) recurses per level.
constexpr int kMaxOnbuildDepth = 64;

Node node_from_line(std::string_view line, char escape, std::vector<std::string> comments) {
  Node root;
  root.comments_before = std::move(comments);
  Node* node = &root;
  for (int depth = 0;; ++depth) {
    if (depth > kMaxOnbuildDepth) fail("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed");
    node->original = std::string(line);
    auto [command, after] = split_first_word(go_trim_space(line));
    std::string_view rest;
    if (after) {
      FlagSplit split = extract_builder_flags(*after, escape);
      node->flags = std::move(split.flags);
      rest = go_trim_space(split.rest);
    }
    node->keyword = go_lower(command);
    const std::string& k = node->keyword;
    Arguments parsed;
    if (k == "add" || k == "copy" || k == "volume") {
      parsed = parse_maybe_json_to_list(rest);
    } else if (k == "arg") {
      parsed.args = parse_words(rest, escape);
    } else if (k == "cmd" || k == "entrypoint" || k == "run" || k == "shell") {
      parsed = parse_maybe_json(rest);
    } else if (k == "env") {
      parsed = parse_name_val(rest, "ENV", escape);
    } else if (k == "label") {
      parsed = parse_name_val(rest, "LABEL", escape);
    } else if (k == "expose" || k == "from") {
      parsed = parse_strings_whitespace_delimited(rest);
    } else if (k == "healthcheck") {
      parsed = parse_health_config(rest);
    } else if (k == "maintainer" || k == "stopsignal" || k == "user" || k == "workdir") {
      parsed = parse_string(rest);
    } else if (k == "onbuild") {
      if (rest.empty()) return root;
      node->inner.emplace_back();
      node = &node->inner.back();
      line = rest;
      continue;
    } else {
      // parseIgnore: an unknown instruction keeps one empty argument.
      parsed.args = {""};
    }
    node->args = std::move(parsed.args);
    node->json_form = parsed.json;
    return root;
  }
}

// canContainHeredoc: RUN, COPY and ADD in shell form, also as the instruction of an ONBUILD.
bool can_contain_heredoc(const Node& node) {
  const Node* n = &node;
  if (n->keyword == "onbuild" && !n->inner.empty()) n = &n->inner[0];
  if (n->keyword != "run" && n->keyword != "copy" && n->keyword != "add") return false;
  return !n->json_form;
}

// ---------------------------------------------------------------------------------------------
// Lines, directives and the main loop: parser.go and directives.go.

// bufio.Scanner with BuildKit's scanLines: lines keep their "\n". A line longer than the
// scanner's 64 KiB buffer ends the input, and Parse reports it afterwards.
class LineReader {
 public:
  static constexpr size_t kMaxLine = 65535;

  explicit LineReader(std::string_view text) : text_(text) {}

  std::optional<std::string_view> next() {
    if (pos_ >= text_.size() || too_long_) return std::nullopt;
    size_t nl = text_.find('\n', pos_);
    size_t end = nl == std::string_view::npos ? text_.size() : nl + 1;
    size_t content = (nl == std::string_view::npos ? text_.size() : nl) - pos_;
    if (content > kMaxLine) {
      too_long_ = true;
      return std::nullopt;
    }
    std::string_view line = text_.substr(pos_, end - pos_);
    pos_ = end;
    return line;
  }

  bool too_long() const { return too_long_; }

 private:
  std::string_view text_;
  size_t pos_ = 0;
  bool too_long_ = false;
};

// DirectiveParser: "# name=value" lines at the very top; the first other line ends them.
class DirectiveScanner {
 public:
  // The directive on this line, if it is one. Throws when a directive is repeated.
  std::optional<Directive> parse_line(std::string_view line) {
    ++line_;
    if (done_) return std::nullopt;
    if (line.empty() || line[0] != '#') {
      done_ = true;
      return std::nullopt;
    }
    auto match = match_directive(go_trim_left_space(line.substr(1)));
    if (!match) {
      done_ = true;
      return std::nullopt;
    }
    std::string name = ascii_lower(match->first);
    if (name != "syntax" && name != "escape" && name != "check") {
      done_ = true;
      return std::nullopt;
    }
    if (!seen_.insert(name).second) fail("only one " + name + " parser directive can be used");
    return Directive{name, std::string(match->second), line_};
  }

 private:
  // ^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$
  static std::optional<std::pair<std::string_view, std::string_view>> match_directive(std::string_view s) {
    auto is_alpha = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
    auto is_alnum = [&](char c) { return is_alpha(c) || (c >= '0' && c <= '9'); };
    if (s.empty() || !is_alpha(s[0])) return std::nullopt;
    size_t pos = 1;
    while (pos < s.size() && is_alnum(s[pos])) ++pos;
    std::string_view name = s.substr(0, pos);
    while (pos < s.size() && is_re_space(s[pos])) ++pos;
    if (pos == s.size() || s[pos] != '=') return std::nullopt;
    std::string_view after = s.substr(pos + 1);
    if (after.empty() || after.find('\n') != std::string_view::npos) return std::nullopt;
    size_t start = 0;
    while (start < after.size() && is_re_space(after[start])) ++start;
    // Only blanks after "=": the lazy group still takes one of them.
    if (start == after.size()) return std::pair{name, after.substr(after.size() - 1)};
    size_t end = after.size();
    while (end > start && is_re_space(after[end - 1])) --end;
    return std::pair{name, after.substr(start, end - start)};
  }

  int line_ = 0;
  bool done_ = false;
  std::set<std::string> seen_;
};

bool is_comment(std::string_view line) {
  line = go_trim_left_space(line);
  return !line.empty() && line[0] == '#';
}

std::string_view trim_newline(std::string_view line) {
  while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) line.remove_suffix(1);
  return line;
}

// lineContinuationRegex: ([^E])E[ \t]*$|^E[ \t]*$ for the escape token E, replaced by $1.
// Returns the line without the continuation, and whether the instruction ends here.
std::pair<std::string_view, bool> trim_continuation(std::string_view line, char escape) {
  size_t end = line.size();
  while (end > 0 && (line[end - 1] == ' ' || line[end - 1] == '\t')) --end;
  if (end == 0 || line[end - 1] != escape) return {line, true};
  if (end >= 2 && line[end - 2] == escape) return {line, true};
  return {line.substr(0, end - 1), false};
}

class Parser {
 public:
  explicit Parser(std::string_view text) : reader_(text) {}

  ParsedDockerfile run() {
    int line_index = 0;
    while (auto raw = reader_.next()) {
      std::string_view bytes = *raw;
      if (line_index == 0 && bytes.starts_with("\xEF\xBB\xBF")) bytes.remove_prefix(3);
      ++line_index;
      parse_instruction(bytes);
    }
    if (result_.nodes.empty()) {
      int line = std::max(current_line_, 1);
      throw Error(ErrorKind::user, "file with no instructions", SourceRange{line, line});
    }
    if (reader_.too_long()) {
      int line = current_line_ + 1;
      throw Error(ErrorKind::user,
                  "dockerfile line greater than max allowed size of " + std::to_string(LineReader::kMaxLine),
                  SourceRange{line, line});
    }
    return std::move(result_);
  }

 private:
  // processLine: the line without its newline (and, for a first line, leading blanks), empty
  // when it is a comment. Records a parser directive found on it.
  std::string_view process_line(std::string_view raw, bool strip_left, bool* was_directive) {
    std::string_view token = trim_newline(raw);
    if (strip_left) token = go_trim_left_space(token);
    int line = current_line_ + 1;
    try {
      if (auto directive = directives_.parse_line(token)) {
        if (directive->name == "escape") {
          if (directive->value != "`" && directive->value != "\\") {
            fail("invalid escape token '" + directive->value + "' does not match ` or \\");
          }
          result_.escape_token = directive->value[0];
        }
        result_.directives.push_back(std::move(*directive));
        if (was_directive) *was_directive = true;
      }
    } catch (const Error& e) {
      throw e.at({line, line});
    }
    return is_comment(token) ? std::string_view() : token;
  }

  void parse_instruction(std::string_view bytes) {
    if (is_comment(bytes)) {
      std::string_view comment = go_trim_space(bytes.substr(1));
      if (comment.empty()) {
        comments_.clear();
      } else {
        comments_.emplace_back(comment);
      }
    }
    bool was_directive = false;
    std::string_view first = process_line(bytes, true, &was_directive);
    if (was_directive) comments_.pop_back();
    ++current_line_;

    int start_line = current_line_;
    auto [text, end_of_line] = trim_continuation(first, result_.escape_token);
    if (end_of_line && text.empty()) return;
    std::string line(text);

    bool empty_continuation = false;
    while (!end_of_line) {
      auto raw = reader_.next();
      if (!raw) break;
      std::string_view next = process_line(*raw, false, nullptr);
      ++current_line_;
      if (is_comment(*raw)) continue;
      if (go_trim_left_space(trim_newline(next)).empty()) {
        empty_continuation = true;
        continue;
      }
      auto [piece, ends] = trim_continuation(next, result_.escape_token);
      line += piece;
      end_of_line = ends;
    }

    if (empty_continuation) {
      result_.warnings.push_back({"Empty continuation line found in: " + line, {current_line_, current_line_}});
    }

    Node node;
    try {
      node = node_from_line(line, result_.escape_token, std::move(comments_));
      if (can_contain_heredoc(node) && line.find("<<") != std::string::npos) {
        node.heredocs = heredocs_from_line(line);
      }
    } catch (const Error& e) {
      throw e.at({start_line, current_line_});
    }
    for (Heredoc& heredoc : node.heredocs) read_heredoc_body(heredoc, start_line);
    if (!node.heredocs.empty() && !node.inner.empty()) node.inner[0].heredocs = node.heredocs;

    node.lines = {start_line, current_line_};
    for (Node* inner = &node; !inner->inner.empty();) {
      inner = &inner->inner[0];
      inner->lines = node.lines;
    }
    result_.nodes.push_back(std::move(node));
    comments_.clear();
  }

  void read_heredoc_body(Heredoc& heredoc, int start_line) {
    std::string content;
    while (auto raw = reader_.next()) {
      ++current_line_;
      std::string_view candidate = trim_newline(*raw);
      if (heredoc.chomp) {
        while (!candidate.empty() && candidate.front() == '\t') candidate.remove_prefix(1);
      }
      if (candidate == heredoc.name) {
        heredoc.content = heredoc.chomp ? chomp_heredoc_content(content) : std::move(content);
        return;
      }
      content += *raw;
    }
    throw Error(ErrorKind::user, "unterminated heredoc", SourceRange{start_line, current_line_});
  }

  LineReader reader_;
  DirectiveScanner directives_;
  ParsedDockerfile result_;
  std::vector<std::string> comments_;
  int current_line_ = 0;
};

// Node.Dump, written straight into out so that nested ONBUILDs stay linear.
void dump_into(std::string& out, const Node& node) {
  size_t start = out.size();
  out += go_lower(node.keyword);
  if (!node.flags.empty()) {
    out += " [";
    for (size_t i = 0; i < node.flags.size(); ++i) {
      if (i > 0) out += ' ';
      out += go_quote(node.flags[i]);
    }
    out += ']';
  }
  for (const std::string& arg : node.args) {
    out += ' ';
    out += go_quote(arg);
  }
  for (const Node& inner : node.inner) {
    out += " (";
    dump_into(out, inner);
    out += ')';
  }
  // Each Dump is trimmed; that only bites when the keyword is empty or ends in a Unicode space.
  std::string_view own = std::string_view(out).substr(start);
  std::string_view trimmed = go_trim_space(own);
  if (trimmed.size() != own.size()) {
    std::string kept(trimmed);
    out.replace(start, std::string::npos, kept);
  }
}

}  // namespace

std::optional<std::string> ParsedDockerfile::directive(std::string_view name) const {
  std::string key = ascii_lower(name);
  for (const Directive& d : directives) {
    if (d.name == key) return d.value;
  }
  return std::nullopt;
}

ParsedDockerfile parse_dockerfile(std::string_view text) { return Parser(text).run(); }

std::optional<Heredoc> parse_heredoc_word(std::string_view word) {
  try {
    return heredoc_from_word(word);
  } catch (const Error&) {
    return std::nullopt;
  }
}

// The (?m)^\t+ of ChompHeredocContent: tabs at the start of the text and after each "\n".
std::string chomp_heredoc_content(std::string_view content) {
  std::string out;
  out.reserve(content.size());
  bool line_start = true;
  for (char c : content) {
    if (line_start && c == '\t') continue;
    line_start = c == '\n';
    out += c;
  }
  return out;
}

std::string dump_node(const Node& node) {
  std::string out;
  dump_into(out, node);
  return out;
}

}  // namespace kbuild::dockerfile
