#include "engine/image/go_json.h"

#include <cstdint>

namespace kbuild::image {
namespace {

constexpr char kHex[] = "0123456789abcdef";

// Decodes one UTF-8 sequence as Go's utf8.DecodeRuneInString does: returns its length, or 0
// when it is invalid (overlong, surrogate, out of range or truncated).
size_t utf8_sequence(std::string_view s, size_t i, uint32_t& rune) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char b0 = byte(i);
  size_t length;
  uint32_t min;
  if (b0 >= 0xc2 && b0 <= 0xdf) {
    length = 2, rune = b0 & 0x1f, min = 0x80;
  } else if (b0 >= 0xe0 && b0 <= 0xef) {
    length = 3, rune = b0 & 0x0f, min = 0x800;
  } else if (b0 >= 0xf0 && b0 <= 0xf4) {
    length = 4, rune = b0 & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (i + length > s.size()) return 0;
  for (size_t k = 1; k < length; ++k) {
    unsigned char b = byte(i + k);
    if ((b & 0xc0) != 0x80) return 0;
    rune = (rune << 6) | (b & 0x3f);
  }
  if (rune < min || rune > 0x10ffff || (rune >= 0xd800 && rune <= 0xdfff)) return 0;
  return length;
}

void append_value(std::string& out, const nlohmann::ordered_json& value, const std::string* indent, int depth);

void newline(std::string& out, const std::string* indent, int depth) {
  if (!indent) return;
  out += '\n';
  for (int i = 0; i < depth; ++i) out += *indent;
}

void append_value(std::string& out, const nlohmann::ordered_json& value, const std::string* indent, int depth) {
  using nlohmann::ordered_json;
  switch (value.type()) {
    case ordered_json::value_t::object: {
      if (value.empty()) {
        out += "{}";
        return;
      }
      out += '{';
      bool first = true;
      for (auto it = value.begin(); it != value.end(); ++it) {
        if (!first) out += ',';
        first = false;
        newline(out, indent, depth + 1);
        append_go_string(out, it.key());
        out += indent ? ": " : ":";
        append_value(out, it.value(), indent, depth + 1);
      }
      newline(out, indent, depth);
      out += '}';
      return;
    }
    case ordered_json::value_t::array: {
      if (value.empty()) {
        out += "[]";
        return;
      }
      out += '[';
      bool first = true;
      for (const auto& element : value) {
        if (!first) out += ',';
        first = false;
        newline(out, indent, depth + 1);
        append_value(out, element, indent, depth + 1);
      }
      newline(out, indent, depth);
      out += ']';
      return;
    }
    case ordered_json::value_t::string:
      append_go_string(out, value.get_ref<const std::string&>());
      return;
    default:
      // null, booleans and numbers print the same in both encoders.
      out += value.dump();
      return;
  }
}

}  // namespace

void append_go_string(std::string& out, std::string_view text) {
  out += '"';
  for (size_t i = 0; i < text.size();) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
          if (c < 0x20 || c == '<' || c == '>' || c == '&') {
            out += "\\u00";
            out += kHex[c >> 4];
            out += kHex[c & 0xf];
          } else {
            out += static_cast<char>(c);
          }
      }
      ++i;
      continue;
    }
    uint32_t rune = 0;
    size_t length = utf8_sequence(text, i, rune);
    if (length == 0) {
      out += "\\ufffd";
      ++i;
    } else if (rune == 0x2028 || rune == 0x2029) {
      out += rune == 0x2028 ? "\\u2028" : "\\u2029";
      i += length;
    } else {
      out.append(text.substr(i, length));
      i += length;
    }
  }
  out += '"';
}

std::string go_marshal(const nlohmann::ordered_json& value) {
  std::string out;
  append_value(out, value, nullptr, 0);
  return out;
}

std::string go_marshal_indent(const nlohmann::ordered_json& value, const std::string& indent) {
  std::string out;
  append_value(out, value, &indent, 0);
  return out;
}

}  // namespace kbuild::image
