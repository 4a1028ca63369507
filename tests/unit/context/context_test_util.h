// Small file-system helpers shared by the context module's tests.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>

#include "common/syscall.h"
#include "common/unique_fd.h"

namespace kbuild::context::testing {

inline void write_file(const std::string& path, std::string_view content, mode_t mode = 0644) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  if (!fd) throw_errno("open", path);
  std::size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::write(fd.get(), content.data() + done, content.size() - done);
    if (n < 0) throw_errno("write", path);
    done += static_cast<std::size_t>(n);
  }
  check(::fchmod(fd.get(), mode), "fchmod", path);
}

inline void make_dir(const std::string& path, mode_t mode = 0755) {
  check(::mkdir(path.c_str(), mode), "mkdir", path);
  check(::chmod(path.c_str(), mode), "chmod", path);
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

inline bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

inline struct stat lstat_of(const std::string& path) {
  struct stat st {};
  check(::lstat(path.c_str(), &st), "lstat", path);
  return st;
}

inline UniqueFd open_dir(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) throw_errno("open", path);
  return fd;
}

inline std::string read_link(const std::string& path) {
  char buffer[4096];
  const ssize_t n = ::readlink(path.c_str(), buffer, sizeof(buffer));
  if (n < 0) throw_errno("readlink", path);
  return std::string(buffer, static_cast<std::size_t>(n));
}

// Empties a directory, keeping the directory itself.
inline void remove_tree_contents(const std::string& dir) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) std::filesystem::remove_all(e.path(), ec);
}

}  // namespace kbuild::context::testing
