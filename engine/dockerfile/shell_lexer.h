// Shell-word expansion of instruction arguments, with BuildKit's rules: quoting, the active
// escape character, $v, ${v}, ${v:-w}, ${v-w}, ${v:+w}, ${v+w}, ${v:?m}, ${v?m}, ${v#p},
// ${v##p}, ${v%p}, ${v%%p}, ${v/p/r}, ${v//p/r}. It never runs anything.
#pragma once

#include <functional>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace kbuild::dockerfile {

// Looks a variable up; nullopt when it is not set (set and empty is "").
using VariableLookup = std::function<std::optional<std::string>(std::string_view name)>;

struct Expansion {
  std::vector<std::string> words;  // one word for expand_word, the split words for expand_words
  std::set<std::string> used;      // variables that were referenced and set
  std::set<std::string> unset;     // variables that were referenced but not set
};

class ShellLexer {
 public:
  explicit ShellLexer(char escape_token = '\\') : escape_(escape_token) {}

  // Keep quote characters in the result (BuildKit's RawQuotes), as for heredoc bodies.
  void set_raw_quotes(bool on) { raw_quotes_ = on; }
  // Keep escape characters that do not escape anything (BuildKit's RawEscapes).
  void set_raw_escapes(bool on) { raw_escapes_ = on; }
  // Treat quote characters as ordinary text (BuildKit's SkipProcessQuotes), as for the body of
  // a COPY heredoc, which expands like a shell here-document.
  void set_skip_process_quotes(bool on) { skip_process_quotes_ = on; }
  // Leave references to unset variables as written, "$v" or "${v:-w}" (BuildKit's SkipUnsetEnv),
  // as the parser does when it looks for heredoc words.
  void set_skip_unset(bool on) { skip_unset_ = on; }

  // Expands one word without splitting it. Throws kbuild::Error (kind user) on bad syntax,
  // such as an unterminated quote or "${v:?message}" with v unset.
  std::string expand_word(std::string_view word, const VariableLookup& lookup) const;

  // Expands and splits on unquoted whitespace, as COPY, EXPOSE and VOLUME's shell form do.
  std::vector<std::string> expand_words(std::string_view word, const VariableLookup& lookup) const;

  // Like expand_word / expand_words, also telling which variables were referenced.
  Expansion expand(std::string_view word, const VariableLookup& lookup, bool split) const;

 private:
  char escape_;
  bool raw_quotes_ = false;
  bool raw_escapes_ = false;
  bool skip_process_quotes_ = false;
  bool skip_unset_ = false;
};

}  // namespace kbuild::dockerfile
