// Dockerfile syntax: parser directives, comments, line continuations, heredocs and the
// per-instruction argument rules, producing the same tree as BuildKit's parser.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace kbuild::dockerfile {

// A heredoc body attached to a RUN, COPY or ADD line.
struct Heredoc {
  std::string name;     // the delimiter word, without quotes
  std::string content;  // the body, each line ending in '\n' (leading tabs removed with <<-)
  bool expand = true;   // false when the delimiter was quoted: no variable expansion
  bool chomp = false;   // written as <<-
  bool operator==(const Heredoc&) const = default;
};

// One instruction as written ("Node" in BuildKit's parser).
struct Node {
  std::string keyword;             // lower-case instruction name: "from", "run", ...
  std::vector<std::string> flags;  // "--name=value" as written, in order
  std::vector<std::string> args;   // arguments, split by the instruction's rule
  bool json_form = false;          // the arguments came from a JSON array
  // Bodies of the heredocs the line opens, in order. For ONBUILD RUN/COPY/ADD they sit on the
  // ONBUILD node (where BuildKit puts them) and on its inner node.
  std::vector<Heredoc> heredocs;
  std::vector<Node> inner;         // ONBUILD: the one instruction it carries
  std::string original;            // the whole instruction, continuation lines joined
  // Comment lines since the previous instruction, trimmed, without the "#" (an indented comment
  // keeps it, as in BuildKit); an empty "#" line clears them, blank lines do not.
  std::vector<std::string> comments_before;
  SourceRange lines;
};

// A parser directive ("# syntax=...", "# escape=...", "# check=...").
struct Directive {
  std::string name;   // lower-case
  std::string value;
  int line = 0;
};

// Something legal but suspicious, reported like BuildKit's parser warnings.
struct ParseWarning {
  std::string message;
  SourceRange lines;
};

struct ParsedDockerfile {
  std::vector<Node> nodes;
  std::vector<Directive> directives;
  char escape_token = '\\';
  std::vector<ParseWarning> warnings;

  // The value of a directive, if it was given.
  std::optional<std::string> directive(std::string_view name) const;
};

// Parses a whole Dockerfile. Throws kbuild::Error (kind user) with where() set to the lines of
// the fault and BuildKit's parser message, e.g. "file with no instructions" or "ENV must have two
// arguments". BuildKit reports these bare, with the location beside them (`docker build` shows the
// lines and "ERROR: failed to solve: ENV must have two arguments"); only the instruction layer
// prefixes its own errors with "dockerfile parse error on line N: ".
ParsedDockerfile parse_dockerfile(std::string_view text);

// The heredoc a word such as "<<EOF", "<<-'EOF'" or "3<<EOF" opens, or nullopt when it opens none
// or is malformed (BuildKit's MustParseHeredoc, which COPY/ADD sources and RUN use to find
// their heredocs). The content is left empty.
std::optional<Heredoc> parse_heredoc_word(std::string_view word);

// The text with the leading tabs of every line removed, as <<- asks (ChompHeredocContent).
// parse_dockerfile already applies it to the bodies of <<- heredocs; applying it again is harmless.
std::string chomp_heredoc_content(std::string_view content);

// The node as BuildKit's Node.Dump() writes it: copy ["--from=x"] "a" "b", onbuild (run "echo hi").
// Heredoc bodies are not shown. BuildKit's parser test results hold one "(" + dump + ")" a line.
std::string dump_node(const Node& node);

}  // namespace kbuild::dockerfile
