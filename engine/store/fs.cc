#include "engine/store/fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <set>
#include <string_view>
#include <utility>

#include "common/directory.h"
#include "common/syscall.h"

namespace kbuild::store::fs {

void make_dirs(const std::string& path, mode_t mode) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) throw_errno("mkdir", path, ENOTDIR);
    return;
  }
  auto slash = path.find_last_of('/');
  if (slash != std::string::npos && slash > 0) make_dirs(path.substr(0, slash), mode);
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) throw_errno("mkdir", path);
}

UniqueFd open_dir(const std::string& path) {
  return UniqueFd(check(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW), "open", path));
}

void sync(int fd, const std::string& path) { check(::fsync(fd), "fsync", path); }

std::vector<std::string> entries(int dirfd, const std::string& path) {
  std::vector<std::string> names;
  for (DirEntry& entry : list_directory(dirfd, path)) names.push_back(std::move(entry.name));
  return names;
}

namespace {

struct UsageWalk {
  dev_t device;
  std::set<std::pair<dev_t, ino_t>> linked;  // inodes with several links, counted once
  uint64_t total = 0;

  void add(const struct stat& st) {
    if (!S_ISDIR(st.st_mode) && st.st_nlink > 1 && !linked.emplace(st.st_dev, st.st_ino).second) return;
    total += static_cast<uint64_t>(st.st_blocks) * 512;
  }

  void walk(int dirfd, const std::string& path) {
    for (const auto& name : entries(dirfd, path)) {
      std::string child = path + "/" + name;
      struct stat st {};
      check(::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW), "stat", child);
      add(st);
      if (S_ISDIR(st.st_mode) && st.st_dev == device) {
        UniqueFd sub(check(::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW), "open",
                           child));
        walk(sub.get(), child);
      }
    }
  }
};

}  // namespace

uint64_t disk_usage(int dirfd, const std::string& path) {
  struct stat st {};
  check(::fstat(dirfd, &st), "stat", path);
  UsageWalk usage{st.st_dev, {}, 0};
  usage.walk(dirfd, path);
  return usage.total;
}

}  // namespace kbuild::store::fs
