#include "engine/sandbox/exec_helper.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <grp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/fd_io.h"
#include "common/syscall.h"
#include "common/unique_fd.h"
#include "engine/sandbox/mount.h"
#include "engine/sandbox/run_spec.h"

namespace kbuild::sandbox {
namespace {

constexpr const char* kDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// Docker's masked and read-only paths: what a build step must not read or change on the host.
constexpr const char* kMaskedPaths[] = {
    "/proc/asound",        "/proc/acpi",        "/proc/interrupts", "/proc/kcore",
    "/proc/keys",          "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
    "/proc/sched_debug",   "/proc/scsi",        "/sys/firmware",    "/sys/devices/virtual/powercap",
};
constexpr const char* kReadOnlyPaths[] = {
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
};

// What the helper writes to its error pipe or control socket after a failure: a write that
// fails too has nowhere left to be reported.
void report(int fd, std::string_view text) {
  try {
    write_all(fd, text, "report");
  } catch (const Error&) {
  }
}

int extra_fd(int index) { return kFirstExtraFd + index; }

// Opens `path` inside the rootfs without ever leaving it (symlinks resolve as if the rootfs
// were /, magic links are refused), creating what is missing: directories on the way and,
// last, a directory or an empty file. Returns an O_PATH fd of the target.
UniqueFd open_mount_target(int root_fd, const std::string& path, bool is_file) {
  open_how how{};
  how.flags = O_PATH | O_CLOEXEC;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  int fd = static_cast<int>(::syscall(SYS_openat2, root_fd, path.c_str(), &how, sizeof how));
  if (fd >= 0) return UniqueFd(fd);
  if (errno != ENOENT) throw_errno("opening mount target", path);
  // Walk down, making each missing component.
  UniqueFd dir(check(::openat(root_fd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC), "open rootfs"));
  size_t start = 0;
  while (start < path.size()) {
    size_t slash = path.find('/', start);
    if (slash == std::string::npos) slash = path.size();
    std::string name = path.substr(start, slash - start);
    start = slash + 1;
    if (name.empty() || name == ".") continue;
    bool last = slash >= path.size() || path.find_first_not_of('/', slash) == std::string::npos;
    open_how step{};
    step.flags = O_PATH | O_CLOEXEC;
    step.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    // Resolution restarts from the rootfs each time, so ".." and symlinks cannot escape.
    std::string so_far = path.substr(0, slash);
    int next = static_cast<int>(::syscall(SYS_openat2, root_fd, so_far.c_str(), &step, sizeof step));
    if (next < 0 && errno == ENOENT) {
      UniqueFd parent_dir(check(::openat(dir.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC), "open", path));
      if (last && is_file) {
        UniqueFd created(::openat(parent_dir.get(), name.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW,
                                  0644));
        if (!created && errno != EEXIST) throw_errno("creating mount target", path);
      } else if (::mkdirat(parent_dir.get(), name.c_str(), 0755) != 0 && errno != EEXIST) {
        throw_errno("creating mount target", path);
      }
      next = static_cast<int>(::syscall(SYS_openat2, root_fd, so_far.c_str(), &step, sizeof step));
    }
    if (next < 0) throw_errno("opening mount target", path);
    dir = UniqueFd(next);
  }
  return dir;
}

void attach(int mount_fd, int target_fd, const std::string& what) {
  check(::move_mount(mount_fd, "", target_fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH), "mounting",
        what);
}

UniqueFd new_filesystem(const char* type, const std::vector<std::pair<const char*, std::string>>& options,
                        unsigned attributes, const std::string& what) {
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

void mount_new(int root_fd, const std::string& path, const char* type,
               const std::vector<std::pair<const char*, std::string>>& options, unsigned attributes) {
  UniqueFd target = open_mount_target(root_fd, path, false);
  UniqueFd mnt = new_filesystem(type, options, attributes, path);
  attach(mnt.get(), target.get(), path);
}

void set_attributes(int mount_fd, uint64_t attributes, const std::string& what) {
  mount_attr attr{};
  attr.attr_set = attributes;
  check(static_cast<int>(::syscall(SYS_mount_setattr, mount_fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr)),
        "setting mount attributes of", what);
}

void make_read_only(int mount_fd, const std::string& what) { set_attributes(mount_fd, MOUNT_ATTR_RDONLY, what); }

// A detached copy of what the daemon opened for a bind mount. It must be made before the
// helper leaves the daemon's mount namespace: open_tree refuses mounts of another namespace.
UniqueFd clone_tree(int source_fd, bool read_only, const std::string& what) {
  UniqueFd tree(check(::open_tree(source_fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE),
                      "open_tree", what));
  set_attributes(tree.get(), MOUNT_ATTR_NODEV | (read_only ? MOUNT_ATTR_RDONLY : 0), what);
  return tree;
}

// Existing paths only: a path the rootfs lacks needs no mask.
UniqueFd open_existing(int root_fd, const char* path) {
  open_how how{};
  how.flags = O_PATH | O_CLOEXEC;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS;
  return UniqueFd(static_cast<int>(::syscall(SYS_openat2, root_fd, path, &how, sizeof how)));
}

void mask_paths(int root_fd, int dev_null) {
  for (const char* path : kMaskedPaths) {
    UniqueFd target = open_existing(root_fd, path);
    if (!target) continue;
    struct stat st {};
    check(::fstat(target.get(), &st), "stat", path);
    if (S_ISDIR(st.st_mode)) {
      UniqueFd mnt = new_filesystem("tmpfs", {{"size", "0"}}, MOUNT_ATTR_RDONLY, path);
      attach(mnt.get(), target.get(), path);
    } else {
      UniqueFd tree(check(::open_tree(dev_null, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH), "open_tree",
                          "/dev/null"));
      attach(tree.get(), target.get(), path);
    }
  }
  for (const char* path : kReadOnlyPaths) {
    UniqueFd target = open_existing(root_fd, path);
    if (!target) continue;
    UniqueFd tree(check(::open_tree(target.get(), "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE),
                        "open_tree", path));
    make_read_only(tree.get(), path);
    attach(tree.get(), target.get(), path);
  }
}

// /dev is a nodev tmpfs, so a step cannot make a device node it could open there (there is
// no device cgroup). Each standard device is a bind mount of its node onto itself, cleared of
// nodev: only these few nodes work.
void make_dev(int root_fd) {
  UniqueFd target = open_mount_target(root_fd, "/dev", false);
  UniqueFd dev = new_filesystem("tmpfs", {{"mode", "755"}, {"size", "65536k"}}, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                                "/dev");
  attach(dev.get(), target.get(), "/dev");
  struct Node {
    const char* name;
    unsigned major, minor;
  };
  for (Node node : {Node{"null", 1, 3}, Node{"zero", 1, 5}, Node{"full", 1, 7}, Node{"random", 1, 8},
                    Node{"urandom", 1, 9}, Node{"tty", 5, 0}}) {
    std::string what = std::string("/dev/") + node.name;
    check(::mknodat(dev.get(), node.name, S_IFCHR | 0666, makedev(node.major, node.minor)), "mknod", what);
    check(::fchmodat(dev.get(), node.name, 0666, 0), "chmod", what);
    UniqueFd tree(check(::open_tree(dev.get(), node.name, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC), "open_tree", what));
    mount_attr attr{};
    attr.attr_clr = MOUNT_ATTR_NODEV;
    check(static_cast<int>(::syscall(SYS_mount_setattr, tree.get(), "", AT_EMPTY_PATH, &attr, sizeof attr)),
          "allowing the device", what);
    UniqueFd at(check(::openat(dev.get(), node.name, O_PATH | O_NOFOLLOW | O_CLOEXEC), "open", what));
    attach(tree.get(), at.get(), what);
  }
  for (auto [name, link] : {std::pair{"fd", "/proc/self/fd"}, std::pair{"stdin", "/proc/self/fd/0"},
                            std::pair{"stdout", "/proc/self/fd/1"}, std::pair{"stderr", "/proc/self/fd/2"},
                            std::pair{"ptmx", "pts/ptmx"}, std::pair{"core", "/proc/kcore"}}) {
    check(::symlinkat(link, dev.get(), name), "symlink /dev/", name);
  }
  auto submount = [&](const char* name, const char* type, const std::vector<std::pair<const char*, std::string>>& options,
                      unsigned attributes) {
    check(::mkdirat(dev.get(), name, 0755), "mkdir /dev/", name);
    UniqueFd at(check(::openat(dev.get(), name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC), "open /dev/", name));
    UniqueFd mnt = new_filesystem(type, options, attributes, std::string("/dev/") + name);
    attach(mnt.get(), at.get(), std::string("/dev/") + name);
  };
  submount("pts", "devpts", {{"newinstance", ""}, {"ptmxmode", "0666"}, {"mode", "0620"}, {"gid", "5"}},
           MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC);
  submount("shm", "tmpfs", {{"mode", "1777"}, {"size", "65536k"}},
           MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
  submount("mqueue", "mqueue", {}, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
}

void bring_up_loopback() {
  UniqueFd sock(check(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), "socket"));
  ifreq request{};
  std::strncpy(request.ifr_name, "lo", IFNAMSIZ - 1);
  check(::ioctl(sock.get(), SIOCGIFFLAGS, &request), "reading loopback flags");
  request.ifr_flags = static_cast<short>(request.ifr_flags | IFF_UP | IFF_RUNNING);
  check(::ioctl(sock.get(), SIOCSIFFLAGS, &request), "bringing up loopback");
}

// The bind sources as detached trees, one per bind mount of the spec (tmpfs ones stay empty).
std::vector<UniqueFd> clone_bind_sources(const RunSpec& spec) {
  std::vector<UniqueFd> trees;
  for (const MountSpec& m : spec.mounts) {
    trees.push_back(m.kind == MountSpec::Kind::bind ? clone_tree(extra_fd(m.fd), m.read_only, m.target) : UniqueFd());
  }
  return trees;
}

void mount_user_mounts(int root_fd, const RunSpec& spec, const std::vector<UniqueFd>& trees) {
  for (size_t i = 0; i < spec.mounts.size(); ++i) {
    const MountSpec& m = spec.mounts[i];
    if (m.kind == MountSpec::Kind::bind) {
      UniqueFd target = open_mount_target(root_fd, m.target, m.is_file);
      attach(trees[i].get(), target.get(), m.target);
    } else {
      std::vector<std::pair<const char*, std::string>> options;
      if (m.size) options.emplace_back("size", std::to_string(*m.size));
      if (m.mode) {
        char mode[16];
        std::snprintf(mode, sizeof mode, "%o", *m.mode);
        options.emplace_back("mode", mode);
      }
      mount_new(root_fd, m.target, "tmpfs", options, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
    }
  }
}

void enter_root(int root_fd) {
  check(::fchdir(root_fd), "chdir to rootfs");
  check(static_cast<int>(::syscall(SYS_pivot_root, ".", ".")), "pivot_root");
  // The old root is stacked under the new one; detaching it leaves no way back to the host.
  check(::umount2(".", MNT_DETACH), "detaching the old root");
  check(::chdir("/"), "chdir /");
}

// The working directory, created if missing, never through a magic link (runc
// CVE-2024-21626: WORKDIR /proc/self/fd/N).
void enter_workdir(const std::string& cwd) {
  UniqueFd root(check(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC), "open /"));
  UniqueFd dir = open_mount_target(root.get(), cwd, false);
  struct stat st {};
  check(::fstat(dir.get(), &st), "stat", cwd);
  if (!S_ISDIR(st.st_mode)) throw Error(ErrorKind::user, "the working directory " + cwd + " is not a directory");
  check(::fchdir(dir.get()), "chdir", cwd);
}

std::vector<sock_filter> read_seccomp_program(int fd) {
  std::string bytes = read_all(fd, "seccomp program");
  if (bytes.empty() || bytes.size() % sizeof(sock_filter) != 0) {
    throw Error(ErrorKind::internal, "the seccomp program is malformed");
  }
  std::vector<sock_filter> program(bytes.size() / sizeof(sock_filter));
  std::memcpy(program.data(), bytes.data(), bytes.size());
  return program;
}

int last_capability() {
  UniqueFd fd(::open("/proc/sys/kernel/cap_last_cap", O_RDONLY | O_CLOEXEC));
  if (!fd) return CAP_LAST_CAP;
  std::string text = read_all(fd.get(), "cap_last_cap");
  return text.empty() ? CAP_LAST_CAP : std::stoi(text);
}

void drop_bounding_set(uint64_t keep, int last_cap) {
  for (int cap = 0; cap <= last_cap; ++cap) {
    if (keep & (uint64_t{1} << cap)) continue;
    check(::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), "dropping capability");
  }
}

uint64_t permitted_capabilities() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  check(static_cast<int>(::syscall(SYS_capget, &header, data)), "capget");
  return uint64_t{data[0].permitted} | (uint64_t{data[1].permitted} << 32);
}

void set_capabilities(uint64_t caps) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  data[0].effective = data[0].permitted = static_cast<uint32_t>(caps);
  data[1].effective = data[1].permitted = static_cast<uint32_t>(caps >> 32);
  check(static_cast<int>(::syscall(SYS_capset, &header, data)), "capset");
  check(::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clearing ambient capabilities");
}

void switch_user(const RunSpec& spec) {
  check(::setgroups(spec.groups.size(), spec.groups.data()), "setgroups");
  check(::setresgid(spec.gid, spec.gid, spec.gid), "setgid");
  check(::setresuid(spec.uid, spec.uid, spec.uid), "setuid");
}

std::string env_value(const std::vector<std::string>& env, std::string_view name) {
  for (const std::string& entry : env) {
    if (entry.size() > name.size() && entry.compare(0, name.size(), name) == 0 && entry[name.size()] == '=') {
      return entry.substr(name.size() + 1);
    }
  }
  return {};
}

// execvp's search, but with the step's PATH rather than the helper's.
[[noreturn]] void exec_command(const RunSpec& spec, int error_fd) {
  std::vector<char*> argv, envp;
  for (const std::string& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const std::string& e : spec.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  const std::string& file = spec.argv.front();
  int error = ENOENT;
  if (file.find('/') != std::string::npos) {
    ::execve(file.c_str(), argv.data(), envp.data());
    error = errno;
  } else {
    std::string path = env_value(spec.env, "PATH");
    if (path.empty()) path = kDefaultPath;
    size_t start = 0;
    bool found_any = false;
    while (start <= path.size()) {
      size_t colon = path.find(':', start);
      if (colon == std::string::npos) colon = path.size();
      std::string dir = path.substr(start, colon - start);
      start = colon + 1;
      std::string candidate = (dir.empty() ? "." : dir) + "/" + file;
      ::execve(candidate.c_str(), argv.data(), envp.data());
      if (errno != ENOENT && errno != ENOTDIR) {
        error = errno;
        found_any = true;
      }
    }
    if (!found_any) {
      report(error_fd, "exec: \"" + file + "\": executable file not found in $PATH");
      ::_exit(127);
    }
  }
  report(error_fd, "exec " + file + ": " + std::strerror(error));
  ::_exit(127);
}

// In the new PID namespace, as its PID 1: everything from mounts to execve.
[[noreturn]] void start_step(const RunSpec& spec, const std::vector<UniqueFd>& trees, int error_fd) {
  try {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    check(::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr), "making / private");
    UniqueFd dev_null(check(::open("/dev/null", O_PATH | O_CLOEXEC), "open /dev/null"));
    const RootfsSpec& rootfs = spec.rootfs;
    Mount overlay = Mount::overlay(rootfs.lowers, rootfs.upper, rootfs.work, rootfs.mountpoint);
    UniqueFd root(check(::open(rootfs.mountpoint.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC), "open rootfs"));
    overlay.release();  // the mount namespace dies with the step, and the mount with it
    // Device nodes in the image (or made by a step) cannot be opened: there is no device
    // cgroup to stop them. Insecure steps may.
    if (!spec.devices) set_attributes(root.get(), MOUNT_ATTR_NODEV, "rootfs");

    mount_new(root.get(), "/proc", "proc", {}, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
    make_dev(root.get());
    mount_new(root.get(), "/sys", "sysfs", {},
              MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
    mask_paths(root.get(), dev_null.get());
    mount_user_mounts(root.get(), spec, trees);
    int last_cap = last_capability();
    std::vector<sock_filter> seccomp_program;
    if (spec.seccomp_fd >= 0) seccomp_program = read_seccomp_program(extra_fd(spec.seccomp_fd));

    enter_root(root.get());
    root.reset();
    dev_null.reset();
    check(::sethostname(spec.hostname.data(), spec.hostname.size()), "sethostname");
    if (spec.network == NetworkMode::none) bring_up_loopback();
    enter_workdir(spec.cwd);
    ::umask(022);

    // "All capabilities" means those the helper has itself: capset refuses more.
    uint64_t capabilities = spec.capabilities & permitted_capabilities();
    if (last_cap < 63) capabilities &= (uint64_t{1} << (last_cap + 1)) - 1;
    drop_bounding_set(capabilities, last_cap);
    if (!seccomp_program.empty()) {
      sock_fprog program{static_cast<unsigned short>(seccomp_program.size()), seccomp_program.data()};
      check(static_cast<int>(::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &program)), "loading seccomp filter");
    }
    set_capabilities(capabilities);
    switch_user(spec);
    // Only 0-2 and the error pipe (close-on-exec) stay open.
    int moved = check(::fcntl(error_fd, F_DUPFD_CLOEXEC, 3), "dup");
    if (moved != 3) {
      check(::dup2(moved, 3), "dup2");
      check(::fcntl(3, F_SETFD, FD_CLOEXEC), "fcntl");
    }
    check(static_cast<int>(::syscall(SYS_close_range, 4, ~0U, 0)), "close_range");
    exec_command(spec, 3);
  } catch (const std::exception& e) {
    report(error_fd, e.what());
  }
  ::_exit(127);
}

StepExit run(const RunSpec& spec) {
  std::vector<UniqueFd> trees = clone_bind_sources(spec);
  int flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWCGROUP;
  if (spec.network == NetworkMode::none) flags |= CLONE_NEWNET;
  if (spec.network == NetworkMode::join) {
    check(::setns(extra_fd(spec.netns_fd), CLONE_NEWNET), "joining the build's network namespace");
  }
  check(::unshare(flags), "unshare");
  int error_pipe[2];
  check(::pipe2(error_pipe, O_CLOEXEC), "pipe");
  pid_t child = check(::fork(), "fork");
  if (child == 0) {
    ::close(error_pipe[0]);
    start_step(spec, trees, error_pipe[1]);
  }
  ::close(error_pipe[1]);
  UniqueFd errors(error_pipe[0]);
  std::string error = read_all(errors.get(), "the step's error pipe");
  int status = 0;
  while (::waitpid(child, &status, 0) < 0) {
    if (errno != EINTR) throw_errno("waitpid");
  }
  StepExit exit;
  if (!error.empty()) {
    exit.error = error;
  } else if (WIFEXITED(status)) {
    exit.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    exit.signal = WTERMSIG(status);
  }
  return exit;
}

}  // namespace

int exec_helper_main() {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  StepExit exit;
  try {
    RunSpec spec = parse_spec(read_all(kSpecFd, "run spec"));
    ::close(kSpecFd);
    char go = 0;
    ssize_t n;
    do {
      n = ::read(kControlFd, &go, 1);
    } while (n < 0 && errno == EINTR);
    if (n != 1 || go != 'g') return 1;  // the daemon gave up before the step started
    exit = run(spec);
  } catch (const std::exception& e) {
    exit.error = e.what();
  }
  report(kControlFd, serialize_exit(exit));
  return 0;
}

}  // namespace kbuild::sandbox
