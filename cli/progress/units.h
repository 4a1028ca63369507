// Number formatting as BuildKit's progress output does it with Go's fmt and tonistiigi/units.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

namespace kbuild::progress {

// units.Bytes formatted with "%.2f": "227B", "1.23kB", "3.40MB" (decimal units; values under
// 1kB as whole bytes).
std::string format_bytes(int64_t bytes);

// Go's fmt "%.<precision>f".
std::string format_fixed(double value, int precision);

// Go's fmt "%-*s": `text` padded with spaces to `width` runes (never cut).
std::string pad_right(std::string_view text, int width);


// Go's utf8.RuneCountInString.
size_t rune_count(std::string_view text);

}  // namespace kbuild::progress
