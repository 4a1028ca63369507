#include "dbus/errors.h"

#include <cstdio>

#include <array>
#include <utility>

namespace kbuild::dbus {
namespace {

constexpr std::array<std::pair<ErrorKind, const char*>, 5> kErrorNames{{
    {ErrorKind::user, "org.kbuild.Error.User"},
    {ErrorKind::not_found, "org.kbuild.Error.NotFound"},
    {ErrorKind::permission, "org.kbuild.Error.Permission"},
    {ErrorKind::canceled, "org.kbuild.Error.Canceled"},
    {ErrorKind::internal, "org.kbuild.Error.Internal"},
}};

// The length of the valid UTF-8 sequence at the start of `text`, or 0 if there is none.
size_t utf8_sequence_length(std::string_view text) {
  auto byte = [&](size_t i) { return static_cast<unsigned char>(text[i]); };
  unsigned char first = byte(0);
  if (first < 0x80) return 1;
  size_t length;
  char32_t code;
  if ((first & 0xE0) == 0xC0) {
    length = 2;
    code = first & 0x1F;
  } else if ((first & 0xF0) == 0xE0) {
    length = 3;
    code = first & 0x0F;
  } else if ((first & 0xF8) == 0xF0) {
    length = 4;
    code = first & 0x07;
  } else {
    return 0;
  }
  if (text.size() < length) return 0;
  for (size_t i = 1; i < length; ++i) {
    if ((byte(i) & 0xC0) != 0x80) return 0;
    code = (code << 6) | (byte(i) & 0x3F);
  }
  static constexpr char32_t kSmallest[] = {0, 0, 0x80, 0x800, 0x10000};
  if (code < kSmallest[length] || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return 0;
  return length;
}

}  // namespace

const char* dbus_error_name(ErrorKind kind) {
  for (const auto& [k, name] : kErrorNames)
    if (k == kind) return name;
  return "org.kbuild.Error.Internal";
}

std::string dbus_error_message(const Error& error) {
  std::string message = error.what();
  if (error.where()) {
    message += "\n(Dockerfile lines " + std::to_string(error.where()->start_line) + "-" +
               std::to_string(error.where()->end_line) + ")";
  }
  return message;
}

Error error_from_dbus(ErrorKind kind, const std::string& message) {
  size_t nl = message.rfind("\n(Dockerfile lines ");
  int start = 0, end = 0;
  char close = 0;
  if (nl != std::string::npos &&
      std::sscanf(message.c_str() + nl, "\n(Dockerfile lines %d-%d%c", &start, &end, &close) == 3 && close == ')') {
    return Error(kind, message.substr(0, nl), SourceRange{start, end});
  }
  return Error(kind, message);
}

std::optional<ErrorKind> error_kind_for_dbus_name(std::string_view name) {
  for (const auto& [kind, n] : kErrorNames)
    if (name == n) return kind;
  if (name == kTooManyRequestsError) return ErrorKind::user;
  if (name == "org.freedesktop.DBus.Error.AccessDenied") return ErrorKind::permission;
  if (name == "org.freedesktop.DBus.Error.FileNotFound") return ErrorKind::not_found;
  return std::nullopt;
}

std::string valid_utf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  while (!text.empty()) {
    size_t length = utf8_sequence_length(text);
    if (length == 0) {
      out += "\xEF\xBF\xBD";
      length = 1;
    } else if (text[0] != '\0') {
      out.append(text.substr(0, length));
    }
    text.remove_prefix(length);
  }
  return out;
}

}  // namespace kbuild::dbus
