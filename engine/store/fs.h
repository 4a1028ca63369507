// Small checked file-system steps the store's parts share: directories made and opened,
// writes that finish, and fsyncs that make renames durable.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/unique_fd.h"

namespace kbuild::store::fs {

// mkdir -p with `mode` for the directories it creates; an existing directory is fine.
void make_dirs(const std::string& path, mode_t mode = 0755);
// An O_DIRECTORY | O_CLOEXEC fd for a directory (no symlink followed at the last component).
UniqueFd open_dir(const std::string& path);
// The names in the directory `dirfd` but "." and "..", in no particular order. Reads through
// a descriptor of its own, so several threads may list one directory fd at once.
std::vector<std::string> entries(int dirfd, const std::string& path);
// fsync, naming `path` when it fails.
void sync(int fd, const std::string& path);
// Disk usage of everything below the directory `dirfd` (st_blocks, hard links counted once),
// not following symlinks and not crossing into other file systems.
uint64_t disk_usage(int dirfd, const std::string& path);

}  // namespace kbuild::store::fs
