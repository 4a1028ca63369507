#include "engine/solver/classic_output.h"

#include <algorithm>
#include <cstdio>

#include "common/go_units.h"
#include "engine/store/digest.h"

namespace kbuild::solver::classic {
namespace {

constexpr int64_t kBlock = 512;

int64_t blocks(int64_t bytes) { return (bytes + kBlock - 1) / kBlock * kBlock; }

bool is_ascii(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

// Whether ustar holds `name` without a PAX record, as Go's archive/tar (which docker's client
// writes with) decides: ASCII, and 100 bytes, or split at its last "/" within the first 156
// into a prefix of up to 155 and a name of up to 100.
bool fits_ustar_name(std::string_view name) {
  if (!is_ascii(name)) return false;
  if (name.size() <= 100) return true;
  std::string_view head = name.substr(0, 156);
  if (name.size() <= 156 && name.ends_with('/')) head.remove_suffix(1);  // a directory's own slash
  size_t slash = head.rfind('/');
  return slash != std::string_view::npos && slash > 0 && name.size() - slash - 1 <= 100 && slash + 1 < name.size();
}

// A PAX record, "<length> key=value\n", whose length counts its own digits.
int64_t pax_record_size(std::string_view key, std::string_view value) {
  int64_t rest = static_cast<int64_t>(key.size() + value.size()) + 3;  // " ", "=", "\n"
  int64_t size = rest + 1;
  while (static_cast<int64_t>(std::to_string(size).size()) + rest != size) ++size;
  return size;
}

int64_t entry_size(const context::Entry& entry) {
  std::string name = entry.type == context::EntryType::directory ? entry.path + "/" : entry.path;
  std::string_view link = entry.type == context::EntryType::symlink ? std::string_view(entry.link_target)
                                                                     : std::string_view(entry.hardlink_to);
  int64_t pax = 0;
  if (!fits_ustar_name(name)) pax += pax_record_size("path", name);
  if (link.size() > 100 || !is_ascii(link)) pax += pax_record_size("linkpath", link);
  int64_t size = kBlock + (pax ? kBlock + blocks(pax) : 0);
  if (entry.type == context::EntryType::regular && entry.hardlink_to.empty()) size += blocks(entry.size);
  return size;
}

}  // namespace

std::string human_size(int64_t bytes) { return go_human_size(static_cast<double>(bytes)); }

std::string sending_context(int64_t bytes) {
  std::string size = human_size(bytes);
  if (size.size() < 8) size.insert(0, 8 - size.size(), ' ');
  // Docker's client ends its progress line so even when stdout is no terminal.
  return "Sending build context to Docker daemon " + size + "\r\r\n";
}

int64_t context_tar_size(const context::Manifest& manifest) {
  int64_t total = 2 * kBlock;
  for (const context::Entry& entry : manifest.entries()) total += entry_size(entry);
  return total;
}

std::string step_line(size_t number, size_t total, std::string_view text) {
  return "Step " + std::to_string(number) + "/" + std::to_string(total) + " : " + std::string(text) + "\n";
}

std::string short_id(std::string_view digest) {
  if (size_t colon = digest.find(':'); colon != std::string_view::npos) digest.remove_prefix(colon + 1);
  return std::string(digest.substr(0, 12));
}

std::string step_id(std::string_view parent, std::string_view text, std::string_view key) {
  std::string seed = "classic-step\n" + std::string(parent) + "\n" + std::string(text) + "\n" + std::string(key);
  return short_id(store::Digest::of(seed).str());
}

std::string container_id(std::string_view step) {
  return short_id(store::Digest::of("classic-container\n" + std::string(step)).str());
}

std::string unused_build_args(std::vector<std::string> names) {
  if (names.empty()) return "";
  std::sort(names.begin(), names.end());
  std::string list;
  for (const std::string& name : names) list += (list.empty() ? "" : " ") + name;
  return "[Warning] One or more build-args [" + list + "] were not consumed\n";
}

std::string run_failure(const std::string& message, const std::vector<std::string>& argv) {
  static const std::string marker = "did not complete successfully: exit code: ";
  size_t at = message.find(marker);
  if (!message.starts_with("process \"") || at == std::string::npos) return message;
  std::string command;
  for (const std::string& word : argv) command += (command.empty() ? "" : " ") + word;
  return "The command '" + command + "' returned a non-zero code: " + message.substr(at + marker.size());
}

}  // namespace kbuild::solver::classic
