// Text from an untrusted source (a Dockerfile's step names, error messages) made safe to show
// in one line of something else: a unit's Description, a journal field, a line on stderr.
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <string_view>

namespace kbuild {

// `text` as one line of valid UTF-8 of at most `max_bytes` bytes: what strconv.IsPrint calls
// unprintable (control characters, line and paragraph separators, bidi overrides) is escaped
// (\n, \t, \r, \xNN, \uNNNN, \UNNNNNNNN), so is every byte of invalid UTF-8 (\xNN); a longer
// result is cut at a character, never inside an escape, and ends with "...".
std::string printable_text(std::string_view text, std::size_t max_bytes);

// `text` with each occurrence of a secret's value (the map's values; empty ones are none)
// replaced by "****": for text a build's own Dockerfile wrote, which may spell out a value it
// also passed as a --secret. Do it before printable_text(), so no part of a value is left at a cut.
std::string redact_secrets(std::string_view text, const std::map<std::string, std::string>& secrets);

}  // namespace kbuild
