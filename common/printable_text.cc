#include "common/printable_text.h"

#include <cstdio>

#include "common/go_text.h"

namespace kbuild {
namespace {

constexpr std::string_view kEllipsis = "...";

// The rune (or the invalid byte) as it appears in printable text.
std::string shown(std::string_view text, std::size_t pos, DecodedRune rune) {
  if (rune.invalid()) {
    char escaped[5];
    std::snprintf(escaped, sizeof escaped, "\\x%02x", static_cast<unsigned char>(text[pos]));
    return escaped;
  }
  if (go_is_print(rune.value)) return std::string(text.substr(pos, rune.width));
  switch (rune.value) {
    case '\n': return "\\n";
    case '\t': return "\\t";
    case '\r': return "\\r";
    default: break;
  }
  char escaped[11];
  if (rune.value < 0x80) {
    std::snprintf(escaped, sizeof escaped, "\\x%02x", static_cast<unsigned>(rune.value));
  } else if (rune.value < 0x10000) {
    std::snprintf(escaped, sizeof escaped, "\\u%04x", static_cast<unsigned>(rune.value));
  } else {
    std::snprintf(escaped, sizeof escaped, "\\U%08x", static_cast<unsigned>(rune.value));
  }
  return escaped;
}

constexpr std::string_view kRedacted = "****";

}  // namespace

std::string redact_secrets(std::string_view text, const std::map<std::string, std::string>& secrets) {
  std::string out(text);
  for (const auto& [id, value] : secrets) {
    if (value.empty()) continue;
    for (std::size_t at = out.find(value); at != std::string::npos; at = out.find(value, at + kRedacted.size())) {
      out.replace(at, value.size(), kRedacted);
    }
  }
  return out;
}

std::string printable_text(std::string_view text, std::size_t max_bytes) {
  std::string out;
  // Where the text would be cut if what follows does not fit: the last place that leaves room
  // for the ellipsis.
  std::size_t cut = 0;
  for (std::size_t pos = 0; pos < text.size();) {
    DecodedRune rune = decode_rune(text, pos);
    std::string piece = shown(text, pos, rune);
    if (out.size() + piece.size() > max_bytes) {
      out.resize(cut);
      if (kEllipsis.size() <= max_bytes) out += kEllipsis;
      return out;
    }
    out += piece;
    if (out.size() + kEllipsis.size() <= max_bytes) cut = out.size();
    pos += rune.width;
  }
  return out;
}

}  // namespace kbuild
