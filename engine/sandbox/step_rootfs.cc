#include "engine/sandbox/step_rootfs.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/syscall.h"

#ifndef STATX_ATTR_MOUNT_ROOT
#define STATX_ATTR_MOUNT_ROOT 0x00002000
#endif

namespace kbuild::sandbox {
namespace {

// Docker's masked and read-only paths: what a build step must not read or change on the host.
constexpr const char* kMaskedPaths[] = {
    "/proc/asound",        "/proc/acpi",        "/proc/interrupts", "/proc/kcore",
    "/proc/keys",          "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
    "/proc/sched_debug",   "/proc/scsi",        "/sys/firmware",    "/sys/devices/virtual/powercap",
};
constexpr const char* kReadOnlyPaths[] = {
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
};

struct DeviceNode {
  const char* name;
  unsigned major, minor;
};
constexpr DeviceNode kDevices[] = {{"null", 1, 3},    {"zero", 1, 5},    {"full", 1, 7},
                                   {"random", 1, 8},  {"urandom", 1, 9}, {"tty", 5, 0}};

constexpr unsigned long kProcRootInode = 1;

using Options = std::vector<std::pair<const char*, std::string>>;

const char* describe_type(mode_t mode) {
  switch (mode & S_IFMT) {
    case S_IFLNK: return "a symbolic link";
    case S_IFREG: return "a file";
    case S_IFIFO: return "a named pipe";
    case S_IFSOCK: return "a socket";
    case S_IFCHR:
    case S_IFBLK: return "a device node";
    case S_IFDIR: return "a directory";
    default: return "an unknown kind of file";
  }
}

long raw_openat2(int dir_fd, const char* path, uint64_t flags, uint64_t resolve) {
  open_how how{};
  how.flags = flags;
  how.resolve = resolve;
  return ::syscall(SYS_openat2, dir_fd, path, &how, sizeof how);
}

UniqueFd reopen_path(int dir_fd) {
  return UniqueFd(check(::openat(dir_fd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC), "open rootfs"));
}

// The components of an absolute path, without empty and "." parts.
std::vector<std::string> components(std::string_view path) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start < path.size()) {
    size_t slash = path.find('/', start);
    if (slash == std::string_view::npos) slash = path.size();
    std::string_view part = path.substr(start, slash - start);
    if (!part.empty() && part != ".") parts.emplace_back(part);
    start = slash + 1;
  }
  return parts;
}

// A directory kbuild mounts on (/proc, /sys, /dev) or mounts into (/etc): every component is a
// real directory, made when missing. Anything else is refused, as runc refuses to mount proc
// and sysfs on anything but an ordinary directory: following a symlink would put the mount
// where the image chose, and replacing the entry would change the step's layer.
UniqueFd open_fixed_dir(int root_fd, std::string_view path) {
  UniqueFd dir = reopen_path(root_fd);
  std::string so_far;
  for (const std::string& name : components(path)) {
    so_far += "/" + name;
    if (name == "..") throw Error(ErrorKind::internal, "sandbox path " + std::string(path) + " has \"..\"");
    struct stat st {};
    if (::fstatat(dir.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno != ENOENT) throw_errno("inspecting", so_far);
      if (::mkdirat(dir.get(), name.c_str(), 0755) != 0 && errno != EEXIST) throw_errno("creating", so_far);
    } else if (!S_ISDIR(st.st_mode)) {
      throw Error(ErrorKind::user, "the image's " + so_far + " is " + describe_type(st.st_mode) +
                                       ": a RUN step needs a directory there");
    }
    // O_NOFOLLOW | O_DIRECTORY: nothing but the directory just looked at is opened.
    int next = ::openat(dir.get(), name.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0) throw_errno("opening", so_far);
    dir = UniqueFd(next);
  }
  return dir;
}

// A file kbuild provides (/etc/hosts, /etc/resolv.conf, /dev/pipes): its parents are real
// directories, and the file is mounted over the entry at exactly `path`, whatever it is: a
// symlink (the kernel mounts on the link itself, so neither it nor its target changes), a
// file, a fifo or a device node. A directory there is refused. A missing entry is made, as
// BuildKit's mount stubs are (and removed from the layer afterwards).
UniqueFd open_fixed_target(int root_fd, const std::string& path, bool is_file) {
  if (!is_file) return open_fixed_dir(root_fd, path);
  size_t slash = path.rfind('/');
  std::string leaf = path.substr(slash + 1);
  if (leaf.empty() || leaf == "." || leaf == "..") throw Error(ErrorKind::internal, "sandbox file " + path);
  UniqueFd parent = open_fixed_dir(root_fd, path.substr(0, slash));
  struct stat st {};
  if (::fstatat(parent.get(), leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno != ENOENT) throw_errno("inspecting", path);
    UniqueFd created(::openat(parent.get(), leaf.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644));
    if (!created && errno != EEXIST) throw_errno("creating", path);
  } else if (S_ISDIR(st.st_mode)) {
    throw Error(ErrorKind::user, "the image's " + path + " is a directory: a RUN step needs a file there");
  }
  return UniqueFd(check(static_cast<int>(::openat(parent.get(), leaf.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC)),
                        "opening", path));
}

void attach(int mount_fd, int target_fd, const std::string& what) {
  check(::move_mount(mount_fd, "", target_fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH), "mounting",
        what);
}

UniqueFd new_filesystem(const char* type, const Options& options, unsigned attributes, const std::string& what) {
  UniqueFd fs(check(::fsopen(type, FSOPEN_CLOEXEC), "fsopen", type));
  for (const auto& [key, value] : options) {
    if (value.empty()) {
      check(::fsconfig(fs.get(), FSCONFIG_SET_FLAG, key, nullptr, 0), "mount option", key);
    } else {
      check(::fsconfig(fs.get(), FSCONFIG_SET_STRING, key, value.c_str(), 0), "mount option", key);
    }
  }
  check(::fsconfig(fs.get(), FSCONFIG_CMD_CREATE, nullptr, nullptr, 0), "creating filesystem for", what);
  return UniqueFd(check(::fsmount(fs.get(), FSMOUNT_CLOEXEC, attributes), "fsmount", what));
}

void set_attributes(int mount_fd, uint64_t set, uint64_t clear, unsigned flags, const std::string& what) {
  mount_attr attr{};
  attr.attr_set = set;
  attr.attr_clr = clear;
  check(static_cast<int>(::syscall(SYS_mount_setattr, mount_fd, "", AT_EMPTY_PATH | flags, &attr, sizeof attr)),
        "setting mount attributes of", what);
}

UniqueFd clone_mount(int fd, unsigned flags, const std::string& what) {
  return UniqueFd(check(::open_tree(fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | flags),
                        "open_tree", what));
}

// A path the kernel's own file systems may lack (e.g. /proc/scsi): none is followed through a
// symlink, and "does not exist" is the only failure that is not the step's end.
UniqueFd open_kernel_path(int root_fd, const char* path, const char* why) {
  long fd = raw_openat2(root_fd, path, O_PATH | O_CLOEXEC, RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS);
  if (fd >= 0) return UniqueFd(static_cast<int>(fd));
  if (errno == ENOENT) return UniqueFd();
  throw_errno(why, path);
}

struct FsFacts {
  struct stat st {};
  long type = 0;
  unsigned long flags = 0;  // ST_RDONLY, ST_NODEV, ...
  bool mount_root = false;
};

FsFacts facts_of(int fd, const std::string& path) {
  FsFacts facts;
  check(::fstat(fd, &facts.st), "stat", path);
  struct statfs fs {};
  check(::fstatfs(fd, &fs), "statfs", path);
  facts.type = static_cast<long>(fs.f_type);
  struct statvfs vfs {};
  check(::fstatvfs(fd, &vfs), "statvfs", path);
  facts.flags = vfs.f_flag;
  struct statx sx {};
  check(::statx(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &sx), "statx", path);
  facts.mount_root = (sx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) && (sx.stx_attributes & STATX_ATTR_MOUNT_ROOT);
  return facts;
}

[[noreturn]] void not_as_made(const std::string& path, const std::string& what) {
  throw Error(ErrorKind::internal, "the step's sandbox is not as it was made: " + path + " " + what +
                                       "; the step is not run");
}

FsFacts facts_at(int root_fd, const char* path) {
  UniqueFd fd = open_kernel_path(root_fd, path, "checking");
  if (!fd) not_as_made(path, "is missing");
  return facts_of(fd.get(), path);
}

bool has(unsigned long flags, unsigned long wanted) { return (flags & wanted) == wanted; }

}  // namespace

UniqueFd open_mount_target(int root_fd, const std::string& path, bool is_file) {
  long fd = raw_openat2(root_fd, path.c_str(), O_PATH | O_CLOEXEC, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
  if (fd >= 0) return UniqueFd(static_cast<int>(fd));
  if (errno != ENOENT) throw_errno("opening mount target", path);
  // Walk down, making each missing component.
  UniqueFd dir = reopen_path(root_fd);
  size_t start = 0;
  while (start < path.size()) {
    size_t slash = path.find('/', start);
    if (slash == std::string::npos) slash = path.size();
    std::string name = path.substr(start, slash - start);
    start = slash + 1;
    if (name.empty() || name == ".") continue;
    bool last = slash >= path.size() || path.find_first_not_of('/', slash) == std::string::npos;
    // Resolution restarts from the rootfs each time, so ".." and symlinks cannot escape.
    std::string so_far = path.substr(0, slash);
    long next = raw_openat2(root_fd, so_far.c_str(), O_PATH | O_CLOEXEC, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
    if (next < 0 && errno == ENOENT) {
      if (last && is_file) {
        UniqueFd created(
            ::openat(dir.get(), name.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0644));
        if (!created && errno != EEXIST) throw_errno("creating mount target", path);
      } else if (::mkdirat(dir.get(), name.c_str(), 0755) != 0 && errno != EEXIST) {
        throw_errno("creating mount target", path);
      }
      next = raw_openat2(root_fd, so_far.c_str(), O_PATH | O_CLOEXEC, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
    }
    if (next < 0) throw_errno("opening mount target", path);
    dir = UniqueFd(static_cast<int>(next));
  }
  return dir;
}

void mount_proc(int root_fd) {
  UniqueFd target = open_fixed_dir(root_fd, "/proc");
  UniqueFd proc = new_filesystem("proc", {}, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC, "/proc");
  attach(proc.get(), target.get(), "/proc");
}

void mount_sys(int root_fd) {
  UniqueFd target = open_fixed_dir(root_fd, "/sys");
  UniqueFd sys = new_filesystem("sysfs", {},
                                MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC, "/sys");
  attach(sys.get(), target.get(), "/sys");
}

// /dev is a nodev tmpfs, so a step cannot make a device node it could open there (there is
// no device cgroup). Each standard device is a bind mount of its node onto itself, cleared of
// nodev: only these few nodes work. Everything below /dev is made on the fresh tmpfs.
void mount_dev(int root_fd) {
  UniqueFd target = open_fixed_dir(root_fd, "/dev");
  UniqueFd dev = new_filesystem("tmpfs", {{"mode", "755"}, {"size", "65536k"}}, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                                "/dev");
  attach(dev.get(), target.get(), "/dev");
  for (DeviceNode node : kDevices) {
    std::string what = std::string("/dev/") + node.name;
    check(::mknodat(dev.get(), node.name, S_IFCHR | 0666, makedev(node.major, node.minor)), "mknod", what);
    check(::fchmodat(dev.get(), node.name, 0666, 0), "chmod", what);
    UniqueFd tree(check(::open_tree(dev.get(), node.name, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC), "open_tree", what));
    set_attributes(tree.get(), 0, MOUNT_ATTR_NODEV, 0, what);
    UniqueFd at(check(::openat(dev.get(), node.name, O_PATH | O_NOFOLLOW | O_CLOEXEC), "open", what));
    attach(tree.get(), at.get(), what);
  }
  for (auto [name, link] : {std::pair{"fd", "/proc/self/fd"}, std::pair{"stdin", "/proc/self/fd/0"},
                            std::pair{"stdout", "/proc/self/fd/1"}, std::pair{"stderr", "/proc/self/fd/2"},
                            std::pair{"ptmx", "pts/ptmx"}, std::pair{"core", "/proc/kcore"}}) {
    check(::symlinkat(link, dev.get(), name), "symlink /dev/", name);
  }
  auto submount = [&](const char* name, const char* type, const Options& options, unsigned attributes) {
    std::string what = std::string("/dev/") + name;
    check(::mkdirat(dev.get(), name, 0755), "mkdir", what);
    UniqueFd at(check(::openat(dev.get(), name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC), "open", what));
    UniqueFd mnt = new_filesystem(type, options, attributes, what);
    attach(mnt.get(), at.get(), what);
  };
  submount("pts", "devpts", {{"newinstance", ""}, {"ptmxmode", "0666"}, {"mode", "0620"}, {"gid", "5"}},
           MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC);
  submount("shm", "tmpfs", {{"mode", "1777"}, {"size", "65536k"}},
           MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
  submount("mqueue", "mqueue", {}, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
}

void mask_paths(int root_fd, int dev_null_fd) {
  for (const char* path : kMaskedPaths) {
    UniqueFd target = open_kernel_path(root_fd, path, "masking");
    if (!target) continue;
    struct stat st {};
    check(::fstat(target.get(), &st), "masking", path);
    UniqueFd mask = S_ISDIR(st.st_mode) ? new_filesystem("tmpfs", {{"size", "0"}}, MOUNT_ATTR_RDONLY, path)
                                        : clone_mount(dev_null_fd, 0, "/dev/null");
    attach(mask.get(), target.get(), path);
  }
}

void make_paths_read_only(int root_fd) {
  for (const char* path : kReadOnlyPaths) {
    UniqueFd target = open_kernel_path(root_fd, path, "making read-only");
    if (!target) continue;
    UniqueFd tree = clone_mount(target.get(), AT_RECURSIVE, path);
    set_attributes(tree.get(), MOUNT_ATTR_RDONLY, 0, AT_RECURSIVE, path);
    attach(tree.get(), target.get(), path);
  }
}

void mount_step_mounts(int root_fd, const std::vector<MountSpec>& mounts, const std::vector<UniqueFd>& trees) {
  struct stat root {}, dev {};
  check(::fstat(root_fd, &root), "stat", "/");
  UniqueFd dev_fd = open_kernel_path(root_fd, "/dev", "opening");
  if (dev_fd) check(::fstat(dev_fd.get(), &dev), "stat", "/dev");
  for (size_t i = 0; i < mounts.size(); ++i) {
    const MountSpec& m = mounts[i];
    UniqueFd target = m.exact ? open_fixed_target(root_fd, m.target, m.is_file)
                              : open_mount_target(root_fd, m.target, m.is_file);
    // What the sandbox itself stands on is not for a RUN mount to cover (runc refuses mounts
    // inside /proc the same way): the target is judged where it resolved, not by its name.
    struct stat st {};
    struct statfs fs {};
    check(::fstat(target.get(), &st), "stat", m.target);
    check(::fstatfs(target.get(), &fs), "statfs", m.target);
    auto same = [&](const struct stat& a) { return st.st_dev == a.st_dev && st.st_ino == a.st_ino; };
    const char* covered = same(root)                                  ? "/"
                          : dev_fd && same(dev)                       ? "/dev"
                          : fs.f_type == PROC_SUPER_MAGIC             ? "/proc"
                          : fs.f_type == static_cast<long>(SYSFS_MAGIC) ? "/sys"
                                                                      : nullptr;
    if (covered) {
      throw Error(ErrorKind::user, "mount target " + m.target + " cannot be mounted: it is " +
                                       (std::string(covered) == "/" || std::string(covered) == "/dev" ? "" : "inside ") +
                                       covered);
    }
    if (m.kind == MountSpec::Kind::bind) {
      attach(trees[i].get(), target.get(), m.target);
      continue;
    }
    Options options;
    if (m.size) options.emplace_back("size", std::to_string(*m.size));
    if (m.mode) {
      char mode[16];
      std::snprintf(mode, sizeof mode, "%o", *m.mode);
      options.emplace_back("mode", mode);
    }
    UniqueFd tmpfs = new_filesystem("tmpfs", options, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, m.target);
    attach(tmpfs.get(), target.get(), m.target);
  }
}

// Read from what the step will see, through fds, rather than from mount options: a mount that
// is somewhere else, or covered by another, shows here as the wrong file system.
void verify_step_rootfs(int root_fd, bool devices) {
  if (!devices && !has(facts_of(root_fd, "/").flags, ST_NODEV)) not_as_made("/", "allows device nodes");

  FsFacts proc = facts_at(root_fd, "/proc");
  if (proc.type != PROC_SUPER_MAGIC || !proc.mount_root || proc.st.st_ino != kProcRootInode) {
    not_as_made("/proc", "is not procfs");
  }
  if (!has(proc.flags, ST_NOSUID | ST_NODEV | ST_NOEXEC)) not_as_made("/proc", "lacks nosuid, nodev or noexec");

  FsFacts sys = facts_at(root_fd, "/sys");
  if (sys.type != static_cast<long>(SYSFS_MAGIC) || !sys.mount_root) not_as_made("/sys", "is not sysfs");
  if (!has(sys.flags, ST_RDONLY)) not_as_made("/sys", "is writable");

  FsFacts dev = facts_at(root_fd, "/dev");
  if (dev.type != static_cast<long>(TMPFS_MAGIC) || !dev.mount_root || !has(dev.flags, ST_NODEV | ST_NOSUID)) {
    not_as_made("/dev", "is not kbuild's nodev tmpfs");
  }
  for (DeviceNode node : kDevices) {
    std::string path = std::string("/dev/") + node.name;
    FsFacts facts = facts_at(root_fd, path.c_str());
    if (!S_ISCHR(facts.st.st_mode) || facts.st.st_rdev != makedev(node.major, node.minor)) {
      not_as_made(path, "is not the device it should be");
    }
  }

  for (const char* path : kMaskedPaths) {
    UniqueFd fd = open_kernel_path(root_fd, path, "checking");
    if (!fd) continue;
    FsFacts facts = facts_of(fd.get(), path);
    bool dev_null = S_ISCHR(facts.st.st_mode) && facts.st.st_rdev == makedev(1, 3);
    bool empty_tmpfs = S_ISDIR(facts.st.st_mode) && facts.type == static_cast<long>(TMPFS_MAGIC) &&
                       facts.mount_root && has(facts.flags, ST_RDONLY);
    if (!dev_null && !empty_tmpfs) not_as_made(path, "is not masked");
  }
  for (const char* path : kReadOnlyPaths) {
    UniqueFd fd = open_kernel_path(root_fd, path, "checking");
    if (!fd) continue;
    if (!has(facts_of(fd.get(), path).flags, ST_RDONLY)) not_as_made(path, "is writable");
  }
}

void make_step_rootfs(int root_fd, int dev_null_fd, const RunSpec& spec, const std::vector<UniqueFd>& trees) {
  // Device nodes in the image (or made by a step) cannot be opened: there is no device
  // cgroup to stop them. Insecure steps may.
  if (!spec.devices) set_attributes(root_fd, MOUNT_ATTR_NODEV, 0, AT_RECURSIVE, "rootfs");
  mount_proc(root_fd);
  mount_dev(root_fd);
  mount_sys(root_fd);
  mask_paths(root_fd, dev_null_fd);
  make_paths_read_only(root_fd);
  mount_step_mounts(root_fd, spec.mounts, trees);
  verify_step_rootfs(root_fd, spec.devices);
}

}  // namespace kbuild::sandbox
