// One instruction line into a Node: split_command.go and line_parsers.go, each instruction's
// rule for its arguments (JSON or shell form, key=value pairs, words, flags).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "engine/dockerfile/parser.h"

namespace kbuild::dockerfile::parsing {

// The node a whole instruction line (continuations joined) makes; throws kbuild::Error with
// BuildKit's message for bad arguments.
Node node_from_line(std::string_view line, char escape, std::vector<std::string> comments);
// Whether the instruction may open heredocs (RUN, COPY, ADD, and ONBUILD of those).
bool can_contain_heredoc(const Node& node);

}  // namespace kbuild::dockerfile::parsing
