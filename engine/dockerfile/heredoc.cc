#include "engine/dockerfile/heredoc.h"

#include "common/error.h"
#include "common/go_text.h"
#include "engine/dockerfile/parser_text.h"

namespace kbuild::dockerfile {
namespace parsing {
namespace {

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

}  // namespace

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

}  // namespace parsing

std::optional<Heredoc> parse_heredoc_word(std::string_view word) {
  try {
    return parsing::heredoc_from_word(word);
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

}  // namespace kbuild::dockerfile
