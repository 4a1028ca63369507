// JSON bytes exactly as Go's encoding/json writes them (json.Marshal and json.MarshalIndent),
// so that configs, manifests and indexes hash to the digests BuildKit would give them.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace kbuild::image {

// Like json.Marshal: compact, keys in the object's order, "<", ">", "&", U+2028 and U+2029
// escaped as \u003c ..., invalid UTF-8 replaced by \ufffd.
std::string go_marshal(const nlohmann::ordered_json& value);

// Like json.MarshalIndent(value, "", indent): one member per line, "key": value, empty
// objects and arrays as {} and [].
std::string go_marshal_indent(const nlohmann::ordered_json& value, const std::string& indent = "  ");


}  // namespace kbuild::image
