// A re-implementation of BuildKit's Dockerfile parser (frontend/dockerfile/parser): here lines,
// directives and the main loop (parser.go, directives.go); an instruction line's arguments in
// line_parsers, heredocs in heredoc, JSON arrays in json_array. Its quirks are kept on purpose: a
// Dockerfile must parse into the same tree here as in `docker build`.
#include "engine/dockerfile/parser.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <utility>

#include "common/go_text.h"
#include "engine/dockerfile/heredoc.h"
#include "engine/dockerfile/line_parsers.h"
#include "engine/dockerfile/parser_text.h"

namespace kbuild::dockerfile {
namespace {

using namespace parsing;

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
  std::string key = parsing::ascii_lower(name);
  for (const Directive& d : directives) {
    if (d.name == key) return d.value;
  }
  return std::nullopt;
}

ParsedDockerfile parse_dockerfile(std::string_view text) { return Parser(text).run(); }

std::string dump_node(const Node& node) {
  std::string out;
  dump_into(out, node);
  return out;
}

}  // namespace kbuild::dockerfile
