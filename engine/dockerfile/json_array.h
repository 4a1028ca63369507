// JSON arrays, accepted and decoded as Go's encoding/json does when unmarshalling into []any:
// how the exec form of RUN, CMD, COPY and the others is told from the shell form.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kbuild::dockerfile::parsing {

enum class JsonOutcome {
  invalid,     // not valid JSON (or a number out of range): the shell form
  non_string,  // a valid array holding something else than strings: an error
  strings,
};

// Reads `text` as one JSON array; on `strings`, `items` holds its elements.
JsonOutcome read_json_array(std::string_view text, std::vector<std::string>& items);

}  // namespace kbuild::dockerfile::parsing
