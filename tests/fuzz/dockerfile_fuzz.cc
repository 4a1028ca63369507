// libFuzzer target: any bytes through the Dockerfile parser, the instruction layer, stage
// resolution (which drives the shell lexer over every expanded field), the lexer directly, and
// the .dockerignore reader. Only kbuild::Error may come out; anything else is a bug.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/error.h"
#include "engine/dockerfile/instructions.h"
#include "engine/dockerfile/parser.h"
#include "engine/dockerfile/resolve.h"
#include "engine/dockerfile/shell_lexer.h"
#include "engine/patterns/dockerignore.h"

namespace df = kbuild::dockerfile;

namespace {

void fuzz_dockerfile(std::string_view text) {
  try {
    df::ParsedDockerfile parsed = df::parse_dockerfile(text);
    for (const df::Node& node : parsed.nodes) (void)df::dump_node(node);
    df::Dockerfile dockerfile = df::parse_stages(parsed);
    df::ResolveOptions options;
    options.build_args = {{"FUZZ", "a b"}};
    (void)df::resolve_dockerfile(parsed, dockerfile, options);
  } catch (const kbuild::Error&) {
  }
}

void fuzz_lexer(std::string_view text) {
  df::VariableLookup lookup = [](std::string_view name) -> std::optional<std::string> {
    if (name == "A") return std::string("x y");
    if (name == "EMPTY") return std::string();
    return std::nullopt;
  };
  for (char escape : {'\\', '`'}) {
    df::ShellLexer lexer(escape);
    try {
      (void)lexer.expand_words(text, lookup);
    } catch (const kbuild::Error&) {
    }
    try {
      (void)lexer.expand_word(text, lookup);
    } catch (const kbuild::Error&) {
    }
  }
}

void fuzz_dockerignore(std::string_view text) {
  try {
    kbuild::patterns::IgnoreMatcher matcher(kbuild::patterns::parse_dockerignore(text));
    (void)matcher.ignored("a/b/c.txt");
    (void)matcher.may_reinclude_below("a");
  } catch (const kbuild::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  fuzz_dockerfile(text);
  if (size < 4096) {
    fuzz_lexer(text);
    fuzz_dockerignore(text);
  }
  return 0;
}
