// File-system helpers of the context module: opening paths without leaving a directory, Go's
// error texts and subtree removal, all relative to directory fds (whole writes: common/fd_io.h).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/fd_io.h"

namespace kbuild::context {

// Opens `path` ("a/b", relative; "" is `root` itself) inside `root` without following any
// symlink and without leaving it: openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
// RESOLVE_NO_MAGICLINKS, or an O_NOFOLLOW walk component by component where the kernel lacks
// openat2. O_CLOEXEC is always added. Returns the fd, or -1 with errno set.
int open_beneath(int root, std::string_view path, int flags, mode_t mode = 0);

// errno's text the way Go prints it ("permission denied"), as BuildKit's messages carry it.
std::string errno_text(int error);


// CLOCK_REALTIME in nanoseconds: the clock file timestamps come from.
std::int64_t realtime_ns();

// The names in a directory (no "." or ".."), unsorted, read with getdents64. `dir_fd` must be a
// directory opened for reading and not yet read; with `reopen`, any directory fd (O_PATH, read
// before, shared with the client) is reopened as "." first. Returns false with errno set when the
// directory cannot be read.
bool read_dir_names(int dir_fd, std::vector<std::string>& names, bool reopen = true);

// Removes `name` in `parent_fd` and, for a directory, everything below it, never following a
// symlink. Missing is fine. Throws kbuild::Error on failure.
void remove_below(int parent_fd, const std::string& name, std::string_view display_path);

// The directory part of a context path ("a/b" → "a", "a" → "") and the last component.
inline std::string_view parent_of(std::string_view path) {
  const auto slash = path.rfind('/');
  return slash == std::string_view::npos ? std::string_view() : path.substr(0, slash);
}
inline std::string_view base_of(std::string_view path) {
  const auto slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

}  // namespace kbuild::context
