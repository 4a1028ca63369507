// Reading the Builder1 API's arguments from sd-bus messages and appending its results to them.
// A message that cannot be read is the sender's mistake: reading throws a user error, which the
// server answers with InvalidArgs. Appending throws an internal error naming the sd-bus call.
#pragma once

#include <systemd/sd-bus.h>

#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "dbus/value.h"

namespace kbuild::dbus {

std::string read_string(sd_bus_message* message);
bool read_bool(sd_bus_message* message);
std::vector<std::string> read_strings(sd_bus_message* message);
// a{sv}; entries whose value has a type Value cannot hold are skipped, as unknown keys are.
// An fd (h) in it is a duplicate (O_CLOEXEC) the caller owns, as read_fd's.
Options read_options(sd_bus_message* message);
// h; the message keeps its fd, the caller gets a duplicate (O_CLOEXEC).
UniqueFd read_fd(sd_bus_message* message);

void append_strings(sd_bus_message* message, const std::vector<std::string>& strings);
void append_options(sd_bus_message* message, const Options& options);
void append_options_list(sd_bus_message* message, const std::vector<Options>& list);

}  // namespace kbuild::dbus
