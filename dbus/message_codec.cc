#include "dbus/message_codec.h"

#include <fcntl.h>

#include <cstring>
#include <type_traits>

#include "common/error.h"
#include "common/syscall.h"

namespace kbuild::dbus {
namespace {

// Returns r unless it is a negative errno, in which case it throws.
int check_bus(int r, const char* what) {
  if (r < 0) throw Error(ErrorKind::internal, std::string(what) + ": " + std::strerror(-r));
  return r;
}

// The same for reading: the message does not hold what its signature promised.
int check_read(int r, const char* what) {
  if (r < 0) throw Error(ErrorKind::user, std::string("malformed arguments: ") + what + ": " + std::strerror(-r));
  return r;
}

// Reads one basic value of D-Bus type `type` (s, b, x, t).
template <typename T>
T read_basic(sd_bus_message* message, char type) {
  if constexpr (std::is_same_v<T, std::string>) {
    const char* value = nullptr;
    check_read(sd_bus_message_read_basic(message, type, &value), "sd_bus_message_read_basic");
    return value ? value : "";
  } else if constexpr (std::is_same_v<T, bool>) {
    int value = 0;
    check_read(sd_bus_message_read_basic(message, type, &value), "sd_bus_message_read_basic");
    return value != 0;
  } else {
    T value{};
    check_read(sd_bus_message_read_basic(message, type, &value), "sd_bus_message_read_basic");
    return value;
  }
}

// a{ss}, after the caller checked the signature.
StringMap read_string_map_entries(sd_bus_message* message) {
  StringMap map;
  while (check_read(sd_bus_message_enter_container(message, SD_BUS_TYPE_DICT_ENTRY, "ss"),
                   "sd_bus_message_enter_container") > 0) {
    std::string key = read_basic<std::string>(message, 's');
    map[std::move(key)] = read_basic<std::string>(message, 's');
    check_read(sd_bus_message_exit_container(message), "sd_bus_message_exit_container");
  }
  return map;
}

StringMap read_string_map(sd_bus_message* message) {
  check_read(sd_bus_message_enter_container(message, SD_BUS_TYPE_ARRAY, "{ss}"), "sd_bus_message_enter_container");
  StringMap map = read_string_map_entries(message);
  check_read(sd_bus_message_exit_container(message), "sd_bus_message_exit_container");
  return map;
}

std::vector<StringMap> read_string_maps(sd_bus_message* message) {
  check_read(sd_bus_message_enter_container(message, SD_BUS_TYPE_ARRAY, "a{ss}"), "sd_bus_message_enter_container");
  std::vector<StringMap> maps;
  while (check_read(sd_bus_message_enter_container(message, SD_BUS_TYPE_ARRAY, "{ss}"),
                   "sd_bus_message_enter_container") > 0) {
    maps.push_back(read_string_map_entries(message));
    check_read(sd_bus_message_exit_container(message), "sd_bus_message_exit_container");
  }
  check_read(sd_bus_message_exit_container(message), "sd_bus_message_exit_container");
  return maps;
}

Bytes read_bytes(sd_bus_message* message) {
  const void* data = nullptr;
  size_t size = 0;
  check_read(sd_bus_message_read_array(message, 'y', &data, &size), "sd_bus_message_read_array");
  const auto* bytes = static_cast<const std::uint8_t*>(data);
  return Bytes(bytes, bytes + size);
}

// The value inside a variant whose contents have signature `type`; nullopt (and skipped) for
// a type Value does not hold.
std::optional<Value> read_variant_contents(sd_bus_message* message, std::string_view type) {
  if (type == "s") return Value(read_basic<std::string>(message, 's'));
  if (type == "b") return Value(read_basic<bool>(message, 'b'));
  if (type == "x") return Value(read_basic<std::int64_t>(message, 'x'));
  if (type == "t") return Value(read_basic<std::uint64_t>(message, 't'));
  if (type == "as") return Value(read_strings(message));
  if (type == "a{ss}") return Value(read_string_map(message));
  if (type == "aa{ss}") return Value(read_string_maps(message));
  if (type == "ay") return Value(read_bytes(message));
  if (type == "h") return Value(Fd(read_fd(message)));
  check_read(sd_bus_message_skip(message, std::string(type).c_str()), "sd_bus_message_skip");
  return std::nullopt;
}

void append_value(sd_bus_message* message, const Value& value) {
  check_bus(sd_bus_message_open_container(message, SD_BUS_TYPE_VARIANT, value.signature()),
            "sd_bus_message_open_container");
  std::visit(
      [message](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string>) {
          check_bus(sd_bus_message_append_basic(message, 's', v.c_str()), "sd_bus_message_append_basic");
        } else if constexpr (std::is_same_v<T, bool>) {
          int b = v ? 1 : 0;
          check_bus(sd_bus_message_append_basic(message, 'b', &b), "sd_bus_message_append_basic");
        } else if constexpr (std::is_same_v<T, std::int64_t> || std::is_same_v<T, std::uint64_t>) {
          check_bus(sd_bus_message_append_basic(message, signature_of<T>()[0], &v), "sd_bus_message_append_basic");
        } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
          append_strings(message, v);
        } else if constexpr (std::is_same_v<T, StringMap>) {
          check_bus(sd_bus_message_open_container(message, SD_BUS_TYPE_ARRAY, "{ss}"), "sd_bus_message_open_container");
          for (const auto& [key, text] : v)
            check_bus(sd_bus_message_append(message, "{ss}", key.c_str(), text.c_str()), "sd_bus_message_append");
          check_bus(sd_bus_message_close_container(message), "sd_bus_message_close_container");
        } else if constexpr (std::is_same_v<T, std::vector<StringMap>>) {
          check_bus(sd_bus_message_open_container(message, SD_BUS_TYPE_ARRAY, "a{ss}"), "sd_bus_message_open_container");
          for (const StringMap& map : v) {
            check_bus(sd_bus_message_open_container(message, SD_BUS_TYPE_ARRAY, "{ss}"), "sd_bus_message_open_container");
            for (const auto& [key, text] : map)
              check_bus(sd_bus_message_append(message, "{ss}", key.c_str(), text.c_str()), "sd_bus_message_append");
            check_bus(sd_bus_message_close_container(message), "sd_bus_message_close_container");
          }
          check_bus(sd_bus_message_close_container(message), "sd_bus_message_close_container");
        } else if constexpr (std::is_same_v<T, Bytes>) {
          check_bus(sd_bus_message_append_array(message, 'y', v.data(), v.size()), "sd_bus_message_append_array");
        } else {
          static_assert(std::is_same_v<T, Fd>);
          // sd-bus sends a duplicate: the Value keeps its fd.
          int fd = v.get();
          check_bus(sd_bus_message_append_basic(message, 'h', &fd), "sd_bus_message_append_basic");
        }
      },
      value.variant());
  check_bus(sd_bus_message_close_container(message), "sd_bus_message_close_container");
}

}  // namespace

std::string read_string(sd_bus_message* message) { return read_basic<std::string>(message, 's'); }

bool read_bool(sd_bus_message* message) { return read_basic<bool>(message, 'b'); }

std::vector<std::string> read_strings(sd_bus_message* message) {
  check_read(sd_bus_message_enter_container(message, SD_BUS_TYPE_ARRAY, "s"), "sd_bus_message_enter_container");
  std::vector<std::string> strings;
  for (;;) {
    const char* value = nullptr;
    if (check_read(sd_bus_message_read_basic(message, 's', &value), "sd_bus_message_read_basic") == 0) break;
    strings.emplace_back(value);
  }
  check_read(sd_bus_message_exit_container(message), "sd_bus_message_exit_container");
  return strings;
}

Options read_options(sd_bus_message* message) {
  check_read(sd_bus_message_enter_container(message, SD_BUS_TYPE_ARRAY, "{sv}"), "sd_bus_message_enter_container");
  Options options;
  while (check_read(sd_bus_message_enter_container(message, SD_BUS_TYPE_DICT_ENTRY, "sv"),
                   "sd_bus_message_enter_container") > 0) {
    std::string key = read_basic<std::string>(message, 's');
    const char* contents = nullptr;
    check_read(sd_bus_message_peek_type(message, nullptr, &contents), "sd_bus_message_peek_type");
    std::string type = contents ? contents : "";
    check_read(sd_bus_message_enter_container(message, SD_BUS_TYPE_VARIANT, type.c_str()), "sd_bus_message_enter_container");
    if (std::optional<Value> value = read_variant_contents(message, type)) options[std::move(key)] = std::move(*value);
    check_read(sd_bus_message_exit_container(message), "sd_bus_message_exit_container");
    check_read(sd_bus_message_exit_container(message), "sd_bus_message_exit_container");
  }
  check_read(sd_bus_message_exit_container(message), "sd_bus_message_exit_container");
  return options;
}

UniqueFd read_fd(sd_bus_message* message) {
  int fd = -1;
  check_read(sd_bus_message_read_basic(message, 'h', &fd), "sd_bus_message_read_basic");
  return UniqueFd(check(::fcntl(fd, F_DUPFD_CLOEXEC, 3), "fcntl F_DUPFD_CLOEXEC"));
}

void append_strings(sd_bus_message* message, const std::vector<std::string>& strings) {
  check_bus(sd_bus_message_open_container(message, SD_BUS_TYPE_ARRAY, "s"), "sd_bus_message_open_container");
  for (const std::string& s : strings)
    check_bus(sd_bus_message_append_basic(message, 's', s.c_str()), "sd_bus_message_append_basic");
  check_bus(sd_bus_message_close_container(message), "sd_bus_message_close_container");
}

void append_options(sd_bus_message* message, const Options& options) {
  check_bus(sd_bus_message_open_container(message, SD_BUS_TYPE_ARRAY, "{sv}"), "sd_bus_message_open_container");
  for (const auto& [key, value] : options) {
    check_bus(sd_bus_message_open_container(message, SD_BUS_TYPE_DICT_ENTRY, "sv"), "sd_bus_message_open_container");
    check_bus(sd_bus_message_append_basic(message, 's', key.c_str()), "sd_bus_message_append_basic");
    append_value(message, value);
    check_bus(sd_bus_message_close_container(message), "sd_bus_message_close_container");
  }
  check_bus(sd_bus_message_close_container(message), "sd_bus_message_close_container");
}

void append_options_list(sd_bus_message* message, const std::vector<Options>& list) {
  check_bus(sd_bus_message_open_container(message, SD_BUS_TYPE_ARRAY, "a{sv}"), "sd_bus_message_open_container");
  for (const Options& options : list) append_options(message, options);
  check_bus(sd_bus_message_close_container(message), "sd_bus_message_close_container");
}

}  // namespace kbuild::dbus
