#include "dbus/value.h"

#include <sys/stat.h>

#include "common/error.h"

namespace kbuild::dbus {

bool Fd::operator==(const Fd& other) const {
  if (get() < 0 || other.get() < 0) return get() == other.get();
  struct stat a {}, b {};
  if (::fstat(get(), &a) != 0 || ::fstat(other.get(), &b) != 0) return false;
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

const char* Value::signature() const {
  return std::visit([](const auto& v) { return signature_of<std::decay_t<decltype(v)>>(); }, value_);
}

void throw_option_type(std::string_view key, const Value& value, const char* expected) {
  throw Error(ErrorKind::user, "option " + std::string(key) + " is " + value.signature() +
                                   ", expected " + expected);
}

}  // namespace kbuild::dbus
