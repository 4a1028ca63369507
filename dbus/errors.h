// How kbuild::Error crosses D-Bus: its kind becomes the error name org.kbuild.Error.<Kind>, its
// text the error message, and the client turns both back into a kbuild::Error.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "common/error.h"

namespace kbuild::dbus {

// The message an Error crosses with: its text and, when it is about Dockerfile lines, a last
// line "(Dockerfile lines S-E)" that error_from_dbus turns back into its location.
std::string dbus_error_message(const Error& error);
Error error_from_dbus(ErrorKind kind, const std::string& message);

// A call refused because its caller, or the daemon, has too many calls in flight already.
inline constexpr const char* kTooManyRequestsError = "org.kbuild.Error.TooManyRequests";

// "org.kbuild.Error.User", ".NotFound", ".Permission", ".Canceled" or ".Internal".
const char* dbus_error_name(ErrorKind kind);

// The kind an error name stands for: one of ours (TooManyRequests is user: the caller's own
// doing), or a few standard ones (AccessDenied is permission, ...); nullopt for the rest.
std::optional<ErrorKind> error_kind_for_dbus_name(std::string_view name);

// `text` with every byte that is not part of valid UTF-8 replaced by U+FFFD and NULs dropped:
// D-Bus refuses other strings, and an error message may quote a file name.
std::string valid_utf8(std::string_view text);

}  // namespace kbuild::dbus
