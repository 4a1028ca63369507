// "(did you mean X?)" hints for misspelt names, as BuildKit's suggest package gives them.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kbuild::dockerfile {

// The option closest to `value` by edit distance, if one is closer than 3 edits and none is
// equal. Without case sensitivity the answer takes `value`'s case (all lower or all upper).
std::optional<std::string> suggest_name(std::string_view value, const std::vector<std::string>& options,
                                        bool case_sensitive);

// `message` with " (did you mean X?)" appended when a suggestion exists.
std::string with_suggestion(std::string message, std::string_view value,
                            const std::vector<std::string>& options, bool case_sensitive);

}  // namespace kbuild::dockerfile
