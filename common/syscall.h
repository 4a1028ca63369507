// Checked system calls: a failing call throws kbuild::Error naming the call, the path and
// errno's text, e.g. `check(::mkdirat(dirfd, name, 0755), "mkdirat", name)`.
#pragma once

#include <cerrno>
#include <string>
#include <string_view>

#include "common/error.h"

namespace kbuild {

// The kind of error an errno stands for: ENOENT is not_found, EACCES/EPERM permission, ...
ErrorKind error_kind_for_errno(int error);

// Throws for errno, as "what path: strerror" (or "what: strerror" without a path).
[[noreturn]] void throw_errno(std::string_view what, std::string_view path = {}, int error = errno);

// Returns `result` unless it is -1, in which case it throws with errno.
template <typename T>
T check(T result, std::string_view what, std::string_view path = {}) {
  if (result == static_cast<T>(-1)) throw_errno(what, path);
  return result;
}

}  // namespace kbuild
