// What a step sees around its rootfs, made by kbuild-exec inside the step's mount namespace
// before pivot_root: /proc, /dev, /sys, Docker's masked and read-only paths, the files kbuild
// provides (/etc/hosts, /etc/resolv.conf) and the RUN mounts, then checked as a whole.
//
// The image never shapes these: what kbuild mounts lands at the very path it names, whatever
// the image holds there (a symlink of any kind, a file, a fifo, a device node). Where a mount
// cannot be placed exactly the step is refused with the path named; it never runs with less.
#pragma once

#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "engine/sandbox/run_spec.h"

namespace kbuild::sandbox {

// procfs at /proc, nosuid, nodev, noexec.
void mount_proc(int root_fd);
// A nodev tmpfs at /dev with the standard nodes, pts, shm and mqueue.
void mount_dev(int root_fd);
// sysfs at /sys, read-only.
void mount_sys(int root_fd);
// Docker's masked paths (an empty tmpfs or /dev/null over each), given a /dev/null fd.
void mask_paths(int root_fd, int dev_null_fd);
// Docker's read-only paths under /proc.
void make_paths_read_only(int root_fd);
// The spec's mounts, in order: `trees` holds one detached tree per bind mount (empty otherwise).
void mount_step_mounts(int root_fd, const std::vector<MountSpec>& mounts, const std::vector<UniqueFd>& trees);

// Checks what the functions above made, as the step will see it: procfs at /proc, sysfs
// read-only at /sys, kbuild's /dev, every masked path masked and every read-only path
// read-only, and a nodev rootfs unless `devices`. Throws naming the first path that is not.
void verify_step_rootfs(int root_fd, bool devices);

// Every mount above, in order; then the check.
void make_step_rootfs(int root_fd, int dev_null_fd, const RunSpec& spec, const std::vector<UniqueFd>& trees);

// Opens `path` inside the rootfs without ever leaving it (symlinks resolve as if the rootfs
// were /, magic links are refused), creating what is missing: directories on the way and,
// last, a directory or an empty file. Returns an O_PATH fd of the target. For the working
// directory and RUN mounts, which BuildKit also resolves inside the rootfs.
UniqueFd open_mount_target(int root_fd, const std::string& path, bool is_file);

}  // namespace kbuild::sandbox
