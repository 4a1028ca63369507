#include "common/syscall.h"

#include <cstring>

namespace kbuild {

ErrorKind error_kind_for_errno(int error) {
  switch (error) {
    case ENOENT:
    case ENOTDIR:
      return ErrorKind::not_found;
    case EACCES:
    case EPERM:
      return ErrorKind::permission;
    case ECANCELED:
    case EINTR:
      return ErrorKind::canceled;
    default:
      return ErrorKind::internal;
  }
}

void throw_errno(std::string_view what, std::string_view path, int error) {
  std::string message(what);
  if (!path.empty()) {
    message += " ";
    message += path;
  }
  message += ": ";
  message += std::strerror(error);
  throw Error(error_kind_for_errno(error), message);
}

}  // namespace kbuild
