#include "engine/solver/classic_output.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <set>
#include <utility>

#include "common/directory.h"
#include "common/syscall.h"
#include "common/unique_fd.h"
#include "engine/store/digest.h"

namespace kbuild::solver::classic {
namespace {

constexpr int64_t kBlock = 512;

int64_t tree_size(int dir_fd, const std::string& path, std::set<std::pair<dev_t, ino_t>>& linked) {
  int64_t total = 0;
  for (const DirEntry& entry : list_directory(dir_fd, path)) {
    struct stat st{};
    check(::fstatat(dir_fd, entry.name.c_str(), &st, AT_SYMLINK_NOFOLLOW), "fstatat", path + "/" + entry.name);
    total += kBlock;
    if (S_ISREG(st.st_mode)) {
      if (st.st_nlink > 1 && !linked.emplace(st.st_dev, st.st_ino).second) continue;  // a hardlink header
      total += (st.st_size + kBlock - 1) / kBlock * kBlock;
    } else if (S_ISDIR(st.st_mode)) {
      UniqueFd sub(check(::openat(dir_fd, entry.name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC), "openat",
                         path + "/" + entry.name));
      total += tree_size(sub.get(), path + "/" + entry.name, linked);
    }
  }
  return total;
}

}  // namespace

std::string human_size(int64_t bytes) {
  static const char* const units[] = {"B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"};
  double size = static_cast<double>(bytes);
  size_t unit = 0;
  while (size >= 1000 && unit + 1 < std::size(units)) {
    size /= 1000;
    ++unit;
  }
  char text[64];
  std::snprintf(text, sizeof text, "%.4g%s", size, units[unit]);
  return text;
}

std::string sending_context(int64_t bytes) {
  std::string size = human_size(bytes);
  if (size.size() < 8) size.insert(0, 8 - size.size(), ' ');
  // Docker's client ends its progress line so even when stdout is no terminal.
  return "Sending build context to Docker daemon " + size + "\r\r\n";
}

int64_t context_tar_size(int dir_fd) {
  std::set<std::pair<dev_t, ino_t>> linked;
  return tree_size(dir_fd, ".", linked) + 2 * kBlock;
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
