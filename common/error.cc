#include "common/error.h"

namespace kbuild {

Error Error::with_context(std::string_view context) const {
  std::string message(context);
  message += ": ";
  message += what();
  return Error(kind_, message, where_);
}

Error Error::at(SourceRange where) const {
  if (where_) return *this;
  return Error(kind_, what(), where);
}

void throw_user_error(const std::string& message, std::optional<SourceRange> where) {
  throw Error(ErrorKind::user, message, where);
}

const char* error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::user: return "user";
    case ErrorKind::not_found: return "not_found";
    case ErrorKind::permission: return "permission";
    case ErrorKind::canceled: return "canceled";
    case ErrorKind::internal: return "internal";
  }
  return "internal";
}

}  // namespace kbuild
