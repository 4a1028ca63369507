#include "dbus/value.h"

#include "common/error.h"

namespace kbuild::dbus {

const char* Value::signature() const {
  return std::visit([](const auto& v) { return signature_of<std::decay_t<decltype(v)>>(); }, value_);
}

void throw_option_type(std::string_view key, const Value& value, const char* expected) {
  throw Error(ErrorKind::user, "option " + std::string(key) + " is " + value.signature() +
                                   ", expected " + expected);
}

}  // namespace kbuild::dbus
