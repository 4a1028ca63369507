#include "common/directory.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "common/syscall.h"

namespace kbuild {

std::vector<DirEntry> list_directory(int dir_fd, std::string_view path) {
  const int own = check(::openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC), "open", path);
  DIR* dir = ::fdopendir(own);
  if (!dir) {
    const int error = errno;
    ::close(own);
    throw_errno("opendir", path, error);
  }
  std::vector<DirEntry> entries;
  errno = 0;
  while (const struct dirent* entry = ::readdir(dir)) {
    const std::string_view name = entry->d_name;
    if (name != "." && name != "..") entries.push_back(DirEntry{std::string(name), entry->d_type});
    errno = 0;
  }
  const int error = errno;
  ::closedir(dir);
  if (error != 0) throw_errno("readdir", path, error);
  std::sort(entries.begin(), entries.end(), [](const DirEntry& a, const DirEntry& b) { return a.name < b.name; });
  return entries;
}

}  // namespace kbuild
