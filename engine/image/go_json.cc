#include "engine/image/go_json.h"

#include <cstdint>

#include "common/go_text.h"

namespace kbuild::image {
namespace {

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
        append_go_json_string(out, it.key());
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
      append_go_json_string(out, value.get_ref<const std::string&>());
      return;
    default:
      // null, booleans and numbers print the same in both encoders.
      out += value.dump();
      return;
  }
}

}  // namespace


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
