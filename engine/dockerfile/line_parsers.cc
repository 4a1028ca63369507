#include "engine/dockerfile/line_parsers.h"

#include <optional>
#include <utility>

#include "common/error.h"
#include "common/go_text.h"
#include "engine/dockerfile/json_array.h"
#include "engine/dockerfile/parser_text.h"

namespace kbuild::dockerfile::parsing {
namespace {

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
  switch (read_json_array(rest, out.args)) {
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

}  // namespace

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

}  // namespace kbuild::dockerfile::parsing
