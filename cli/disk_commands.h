// kbuildctl's disk usage commands: du and prune as `docker buildx du` / `docker buildx prune`
// print them, and image prune as `docker image prune` does.
#pragma once

#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "dbus/value.h"

namespace CLI {
class App;
}

namespace kbuild::cli {

struct DiskCommands {
  CLI::App* du = nullptr;
  CLI::App* prune = nullptr;
  CLI::App* image_prune = nullptr;
  bool verbose = false;
  bool all = false;
  bool force = false;
  std::vector<std::string> filters;
  std::string keep_storage;
};

// Declares du, prune and image prune on `app`, binding their flags to `commands`.
void add_disk_commands(CLI::App& app, DiskCommands& commands);
bool disk_command_parsed(const DiskCommands& commands);
// Runs whichever was parsed; `in` answers prune's confirmation prompt. Returns the exit code.
int run_disk_commands(const DiskCommands& commands, const std::string& socket, std::istream& in, std::ostream& out);

// The pieces, for tests. go-units' HumanSize ("1.057MB", 4 significant digits, powers of 1000)
// and HumanDuration ("About an hour").
std::string human_size(uint64_t bytes);
std::string human_duration(std::chrono::nanoseconds duration);
// Go's text/tabwriter with '\t' padding (minwidth 1, tabwidth 8, padding 1), as buildx
// prints: every cell but a row's last padded with tabs to its column's width; `rows` is one
// block of lines that are aligned together.
std::string tab_align(const std::vector<std::vector<std::string>>& rows);
// buildx du's table (header and one row per record) or, verbose, its per-record fields, and
// its totals.
std::string format_usage_table(const std::vector<dbus::StringMap>& records, std::chrono::system_clock::time_point now);
std::string format_usage_verbose(const std::vector<dbus::StringMap>& records, std::chrono::system_clock::time_point now);
std::string format_usage_summary(const std::vector<dbus::StringMap>& records);

}  // namespace kbuild::cli
