#include "engine/sandbox/exec_helper.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <grp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/fd_io.h"
#include "common/syscall.h"
#include "common/unique_fd.h"
#include "engine/sandbox/run_spec.h"
#include "engine/sandbox/step_rootfs.h"
#include "engine/store/mount.h"
#include "seccomp/filter.h"

namespace kbuild::sandbox {
namespace {

constexpr const char* kDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// What the helper writes to its error pipe or control socket after a failure: a write that
// fails too has nowhere left to be reported.
void report(int fd, std::string_view text) {
  try {
    write_all(fd, text, "report");
  } catch (const Error&) {
  }
}

int extra_fd(int index) { return kFirstExtraFd + index; }

void set_attributes(int mount_fd, uint64_t attributes, const std::string& what) {
  mount_attr attr{};
  attr.attr_set = attributes;
  check(static_cast<int>(::syscall(SYS_mount_setattr, mount_fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr)),
        "setting mount attributes of", what);
}

// A detached copy of what the daemon opened for a bind mount. It must be made before the
// helper leaves the daemon's mount namespace: open_tree refuses mounts of another namespace.
UniqueFd clone_tree(int source_fd, bool read_only, const std::string& what) {
  UniqueFd tree(check(::open_tree(source_fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE),
                      "open_tree", what));
  set_attributes(tree.get(), MOUNT_ATTR_NODEV | (read_only ? MOUNT_ATTR_RDONLY : 0), what);
  return tree;
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

// The first bytes of the program at `path`, or of its interpreter when it is a "#!" script:
// what tells which platform a program execve refused is for. Empty when unreadable.
std::string program_header(const std::string& path, bool follow_script = true) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  char buf[128];
  if (!fd) return {};
  ssize_t n;
  do {
    n = ::read(fd.get(), buf, sizeof buf);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) return {};
  std::string_view header(buf, static_cast<size_t>(n));
  if (follow_script && header.starts_with("#!")) {
    size_t start = header.find_first_not_of(" \t", 2);
    if (start == std::string_view::npos) return {};
    size_t end = header.find_first_of(" \t\n", start);
    return program_header(std::string(header.substr(start, end == std::string_view::npos ? end : end - start)), false);
  }
  return std::string(header.substr(0, 64));
}

// errno's text as Go (and so runc and BuildKit) words it: "exec format error".
std::string errno_text(int error) {
  std::string text = std::strerror(error);
  if (!text.empty() && text[0] >= 'A' && text[0] <= 'Z') text[0] = static_cast<char>(text[0] - 'A' + 'a');
  return text;
}

// What the step's process writes to its error pipe when execve fails: the message, and for a
// program of a format the kernel does not run (ENOEXEC) or whose interpreter is missing
// (ENOENT for a file that is there: a dynamic loader, or a binfmt_misc handler's emulator
// looked up in the step's root), a NUL and its header, which the daemon turns into a hint
// about emulation.
void report_exec_failure(int error_fd, const std::string& file, const std::string& path, int error) {
  std::string report_text = "exec " + file + ": " + errno_text(error);
  std::string header = error == ENOEXEC || error == ENOENT ? program_header(path) : std::string();
  if (!header.empty()) report_text += '\0' + header;
  report(error_fd, report_text);
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
  std::string failed = file;  // the path whose execve gave `error`
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
        failed = candidate;
        found_any = true;
      }
    }
    if (!found_any) {
      report(error_fd, "exec: \"" + file + "\": executable file not found in $PATH");
      ::_exit(127);
    }
  }
  report_exec_failure(error_fd, file, failed, error);
  ::_exit(127);
}

// In the new PID namespace, as its PID 1: everything from mounts to execve.
[[noreturn]] void start_step(const RunSpec& spec, const std::vector<UniqueFd>& trees, int error_fd) {
  try {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    check(::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr), "making / private");
    UniqueFd dev_null(check(::open("/dev/null", O_PATH | O_CLOEXEC), "open /dev/null"));
    const RootfsSpec& rootfs = spec.rootfs;
    store::Mount overlay = store::Mount::overlay(rootfs.lowers, rootfs.upper, rootfs.work, rootfs.mountpoint);
    UniqueFd root(check(::open(rootfs.mountpoint.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC), "open rootfs"));
    overlay.release();  // the mount namespace dies with the step, and the mount with it
    make_step_rootfs(root.get(), dev_null.get(), spec, trees);
    int last_cap = last_capability();
    std::optional<seccomp::Filter> filter;
    if (spec.seccomp_fd >= 0) filter = seccomp::deserialize(read_all(extra_fd(spec.seccomp_fd), "seccomp program"));

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
    if (filter) seccomp::install(*filter);
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
    const size_t nul = error.find('\0');
    exit.error = error.substr(0, nul);
    if (nul != std::string::npos) exit.exec_header = error.substr(nul + 1);
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
