#include "cli/disk_commands.h"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <istream>
#include <iterator>
#include <optional>
#include <ostream>

#include <CLI/CLI.hpp>

#include "common/error.h"
#include "common/go_units.h"
#include "dbus/builder_client.h"
#include "engine/dockerfile/go_values.h"

namespace kbuild::cli {
namespace {

using Clock = std::chrono::system_clock;

constexpr const char* kBuildCacheWarning = "WARNING! This will remove all dangling build cache. Are you sure you want to continue?";
constexpr const char* kAllBuildCacheWarning = "WARNING! This will remove all build cache. Are you sure you want to continue?";
constexpr const char* kDanglingImagesWarning =
    "WARNING! This will remove all dangling images.\nAre you sure you want to continue?";
constexpr const char* kAllImagesWarning =
    "WARNING! This will remove all images without at least one container associated to them.\n"
    "Are you sure you want to continue?";

std::string field(const dbus::StringMap& record, const std::string& key) {
  auto it = record.find(key);
  return it == record.end() ? std::string() : it->second;
}

uint64_t number(const dbus::StringMap& record, const std::string& key) {
  std::string text = field(record, key);
  return text.empty() ? 0 : std::stoull(text);
}

Clock::time_point time_of(const std::string& ns) {
  return Clock::time_point(std::chrono::duration_cast<Clock::duration>(std::chrono::nanoseconds(std::stoll(ns))));
}

// Go's time.Time.String in UTC: "2024-01-02 15:04:05.123456789 +0000 UTC", no trailing zeros.
std::string go_time(const std::string& ns_text) {
  int64_t ns = std::stoll(ns_text);
  std::time_t seconds = static_cast<std::time_t>(ns / 1000000000);
  int64_t fraction = ns % 1000000000;
  char date[32];
  std::tm tm {};
  gmtime_r(&seconds, &tm);
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S", &tm);
  std::string out = date;
  if (fraction) {
    char digits[16];
    std::snprintf(digits, sizeof digits, ".%09lld", static_cast<long long>(fraction));
    std::string text = digits;
    while (text.back() == '0') text.pop_back();
    out += text;
  }
  return out + " +0000 UTC";
}

std::string last_accessed(const dbus::StringMap& record, Clock::time_point now) {
  std::string used = field(record, "last-used");
  if (used.empty()) return "";
  return human_duration(now - time_of(used)) + " ago";
}

bool confirm(const char* warning, std::istream& in, std::ostream& out) {
  out << warning << " [y/N] " << std::flush;
  std::string answer;
  std::getline(in, answer);
  return answer == "y" || answer == "Y";
}

uint64_t keep_storage_bytes(const std::string& text) {
  if (text.empty()) return 0;
  std::optional<int64_t> bytes = dockerfile::parse_ram_in_bytes(text);
  if (!bytes || *bytes < 0) {
    throw Error(ErrorKind::user, "invalid argument \"" + text + "\" for \"--keep-storage\" flag: invalid size: '" + text + "'");
  }
  return static_cast<uint64_t>(*bytes);
}

std::vector<dbus::StringMap> records_of(const dbus::Options& result) {
  return dbus::option_or(result, "records", std::vector<dbus::StringMap>{});
}

int run_du(dbus::BuilderClient& client, const DiskCommands& c, std::ostream& out) {
  dbus::Options usage = client.disk_usage({{"records", true}, {"filters", c.filters}});
  std::vector<dbus::StringMap> records = records_of(usage);
  Clock::time_point now = Clock::now();
  out << (c.verbose ? format_usage_verbose(records, now) : format_usage_table(records, now));
  if (c.filters.empty()) out << format_usage_summary(records);
  return 0;
}

int run_prune(dbus::BuilderClient& client, const DiskCommands& c, std::istream& in, std::ostream& out) {
  uint64_t keep = keep_storage_bytes(c.keep_storage);
  if (!c.force && !confirm(c.all ? kAllBuildCacheWarning : kBuildCacheWarning, in, out)) return 0;
  dbus::Options result =
      client.prune({{"all", c.all}, {"keep-storage", keep}, {"filters", c.filters}});
  std::vector<dbus::StringMap> removed = records_of(result);
  Clock::time_point now = Clock::now();
  if (c.verbose) {
    out << format_usage_verbose(removed, now);
  } else if (!removed.empty()) {
    // buildx flushes its table after each row: the header aligns with the first row only.
    std::vector<dbus::StringMap> first(removed.begin(), removed.begin() + 1);
    out << format_usage_table(first, now);
    for (size_t i = 1; i < removed.size(); ++i) {
      std::string table = format_usage_table({removed[i]}, now);
      out << table.substr(table.find('\n') + 1);  // its row without a header
    }
  }
  out << tab_align({{"Total:", human_size(dbus::option_or(result, "reclaimed", uint64_t{0}))}});
  return 0;
}

int run_image_prune(dbus::BuilderClient& client, const DiskCommands& c, std::istream& in, std::ostream& out) {
  if (!c.force && !confirm(c.all ? kAllImagesWarning : kDanglingImagesWarning, in, out)) return 0;
  dbus::Options result = client.prune_images({{"all", c.all}});
  std::vector<std::string> deleted = dbus::option_or(result, "deleted", std::vector<std::string>{});
  if (!deleted.empty()) {
    out << "Deleted Images:\n";
    for (const std::string& line : deleted) out << line << "\n";
    out << "\n";
  }
  out << "Total reclaimed space: " << human_size(dbus::option_or(result, "reclaimed", uint64_t{0})) << "\n";
  return 0;
}

}  // namespace

std::string human_size(uint64_t bytes) { return go_human_size(static_cast<double>(bytes)); }

std::string human_duration(std::chrono::nanoseconds duration) {
  using namespace std::chrono;
  const int64_t seconds = duration_cast<std::chrono::seconds>(duration).count();
  const int64_t minutes = duration_cast<std::chrono::minutes>(duration).count();
  const int64_t hours = static_cast<int64_t>(duration_cast<std::chrono::duration<double, std::ratio<3600>>>(duration).count() + 0.5);
  auto plural = [](int64_t n, const char* unit) { return std::to_string(n) + " " + unit; };
  if (seconds < 1) return "Less than a second";
  if (seconds == 1) return "1 second";
  if (seconds < 60) return plural(seconds, "seconds");
  if (minutes == 1) return "About a minute";
  if (minutes < 60) return plural(minutes, "minutes");
  if (hours == 1) return "About an hour";
  if (hours < 48) return plural(hours, "hours");
  if (hours < 24 * 7 * 2) return plural(hours / 24, "days");
  if (hours < 24 * 30 * 2) return plural(hours / 24 / 7, "weeks");
  if (hours < 24 * 365 * 2) return plural(hours / 24 / 30, "months");
  return plural(duration_cast<std::chrono::hours>(duration).count() / 24 / 365, "years");
}

std::string tab_align(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    for (size_t i = 0; i + 1 < row.size(); ++i) {
      if (widths.size() <= i) widths.resize(i + 1, 0);
      widths[i] = std::max(widths[i], row[i].size() + 1);
    }
  }
  std::string out;
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) {
      out += row[i];
      if (i + 1 == row.size()) break;
      size_t width = (widths[i] + 7) / 8 * 8;
      out.append((width - row[i].size() + 7) / 8, '\t');
    }
    out += "\n";
  }
  return out;
}

std::string format_usage_table(const std::vector<dbus::StringMap>& records, Clock::time_point now) {
  std::vector<std::vector<std::string>> rows{{"ID", "RECLAIMABLE", "SIZE", "LAST ACCESSED"}};
  for (const dbus::StringMap& record : records) {
    std::string id = field(record, "id") + (field(record, "mutable") == "true" ? "*" : "");
    std::string reclaimable = field(record, "in-use") == "true" ? "false" : "true";
    std::string size = human_size(number(record, "size")) + (field(record, "shared") == "true" ? "*" : "");
    char cells[512];
    // buildx's "%-40s\t%-5v\t%-10s\t%s": the fixed widths are padding inside the cells.
    std::snprintf(cells, sizeof cells, "%-40s", id.c_str());
    std::string id_cell = cells;
    std::snprintf(cells, sizeof cells, "%-5s", reclaimable.c_str());
    std::string reclaimable_cell = cells;
    std::snprintf(cells, sizeof cells, "%-10s", size.c_str());
    rows.push_back({id_cell, reclaimable_cell, cells, last_accessed(record, now)});
  }
  return tab_align(rows);
}

std::string format_usage_verbose(const std::vector<dbus::StringMap>& records, Clock::time_point now) {
  std::string out;
  for (const dbus::StringMap& record : records) {
    std::vector<std::vector<std::string>> rows;
    rows.push_back({"ID:", field(record, "id")});
    if (!field(record, "parents").empty()) rows.push_back({"Parent:", field(record, "parents")});
    rows.push_back({"Created at:", go_time(field(record, "created"))});
    rows.push_back({"Mutable:", field(record, "mutable")});
    rows.push_back({"Reclaimable:", field(record, "in-use") == "true" ? "false" : "true"});
    rows.push_back({"Shared:", field(record, "shared")});
    rows.push_back({"Size:", human_size(number(record, "size"))});
    if (!field(record, "description").empty()) rows.push_back({"Description:", field(record, "description")});
    rows.push_back({"Usage count:", std::to_string(number(record, "usage-count"))});
    if (!field(record, "last-used").empty()) rows.push_back({"Last used:", last_accessed(record, now)});
    if (!field(record, "type").empty()) rows.push_back({"Type:", field(record, "type")});
    out += tab_align(rows) + "\n";
  }
  return out;
}

std::string format_usage_summary(const std::vector<dbus::StringMap>& records) {
  uint64_t total = 0, reclaimable = 0, shared = 0;
  for (const dbus::StringMap& record : records) {
    uint64_t size = number(record, "size");
    total += size;
    if (field(record, "in-use") != "true") reclaimable += size;
    if (field(record, "shared") == "true") shared += size;
  }
  std::vector<std::vector<std::string>> rows;
  if (shared > 0) {
    rows.push_back({"Shared:", human_size(shared)});
    rows.push_back({"Private:", human_size(total - shared)});
  }
  rows.push_back({"Reclaimable:", human_size(reclaimable)});
  rows.push_back({"Total:", human_size(total)});
  return tab_align(rows);
}

void add_disk_commands(CLI::App& app, DiskCommands& c) {
  c.du = app.add_subcommand("du", "Disk usage");
  c.du->add_option("--filter", c.filters, "Provide filter values")->allow_extra_args(false);
  c.du->add_flag("--verbose", c.verbose, "Provide a more verbose output");
  c.prune = app.add_subcommand("prune", "Remove build cache");
  c.prune->add_flag("-a,--all", c.all, "Include internal/frontend images");
  c.prune->add_option("--filter", c.filters, "Provide filter values (e.g., \"until=24h\")")->allow_extra_args(false);
  c.prune->add_option("--keep-storage", c.keep_storage, "Amount of disk space to keep for cache");
  c.prune->add_flag("-f,--force", c.force, "Do not prompt for confirmation");
  c.prune->add_flag("--verbose", c.verbose, "Provide a more verbose output");
  CLI::App* image = app.add_subcommand("image", "Manage images");
  image->require_subcommand(1);
  c.image_prune = image->add_subcommand("prune", "Remove unused images");
  c.image_prune->add_flag("-a,--all", c.all, "Remove all unused images, not just dangling ones");
  c.image_prune->add_flag("-f,--force", c.force, "Do not prompt for confirmation");
}

bool disk_command_parsed(const DiskCommands& c) {
  return c.du->parsed() || c.prune->parsed() || c.image_prune->parsed();
}

int run_disk_commands(const DiskCommands& c, const std::string& socket, std::istream& in, std::ostream& out) {
  dbus::BuilderClient client(socket);
  if (c.du->parsed()) return run_du(client, c, out);
  if (c.prune->parsed()) return run_prune(client, c, in, out);
  return run_image_prune(client, c, in, out);
}

}  // namespace kbuild::cli
