// Heredocs in RUN, COPY and ADD lines, found as BuildKit's parser finds them: the words of a
// line lexed as the shell would, each "<<WORD" an opening.
#pragma once

#include <optional>
#include <string_view>
#include <vector>

#include "engine/dockerfile/parser.h"

namespace kbuild::dockerfile::parsing {

// ParseHeredoc: the heredoc a word opens, or nullopt; throws kbuild::Error on a malformed one.
std::optional<Heredoc> heredoc_from_word(std::string_view word);
// The heredocs a whole instruction line opens, in order (bodies still empty).
std::vector<Heredoc> heredocs_from_line(std::string_view line);

}  // namespace kbuild::dockerfile::parsing
