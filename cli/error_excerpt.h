// The Dockerfile excerpt BuildKit prints above an error: the failing lines marked ">>>" with a
// few lines of context around them.
#pragma once

#include <string>
#include <string_view>

#include "common/error.h"

namespace kbuild::cli {

// "Dockerfile:3\n--------------------\n   1 |     FROM a\n ...   3 | >>> RNU x\n--------------------\n",
// or "" when the range lies outside the text.
std::string dockerfile_excerpt(std::string_view filename, std::string_view text, SourceRange range);

}  // namespace kbuild::cli
