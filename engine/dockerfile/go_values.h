// Value syntaxes that Dockerfiles inherit from Go and Docker: durations ("1m30s"), integers,
// booleans, sizes ("64m") and CSV fields, with the error texts users see (quoted by go_quote).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/go_text.h"

namespace kbuild::dockerfile {

// Go's time.ParseDuration, in nanoseconds. Throws "time: invalid duration \"x\"" and kin.
int64_t parse_go_duration(std::string_view s);

// Go's strconv.ParseInt(s, 10, bits). Throws "strconv.ParseInt: parsing \"x\": invalid syntax".
int64_t parse_go_int(std::string_view s, int bits);

// Go's strconv.ParseUint(s, base, bits); nullopt when it would fail.
std::optional<uint64_t> parse_go_uint(std::string_view s, int base, int bits);

// Go's strconv.ParseBool: 1 t T TRUE true True 0 f F FALSE false False; nullopt otherwise.
std::optional<bool> parse_go_bool(std::string_view s);

// docker/go-units RAMInBytes: "512", "64m", "1.5GiB" (binary multiples); nullopt when invalid.
std::optional<int64_t> parse_ram_in_bytes(std::string_view s);

// One CSV record (RFC 4180 quoting, as Go's encoding/csv reads it). Throws on a bad quote.
std::vector<std::string> parse_csv_fields(std::string_view line);

}  // namespace kbuild::dockerfile
