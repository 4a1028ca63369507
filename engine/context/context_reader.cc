#include "engine/context/context_reader.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/error.h"
#include "common/syscall.h"
#include "common/unique_fd.h"
#include "engine/context/fs.h"
#include "engine/context/sender.h"
#include "engine/context/wire.h"

namespace kbuild::context {
namespace {

constexpr int kRootFd = 3;
constexpr int kDataFd = 4;
constexpr int kRequestFd = 5;
constexpr int kPipeSize = 1 << 20;

// A forked reader: killed and reaped unless it was waited for.
class ReaderProcess {
 public:
  explicit ReaderProcess(pid_t pid) : pid_(pid) {}
  ~ReaderProcess() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  ReaderProcess(const ReaderProcess&) = delete;
  ReaderProcess& operator=(const ReaderProcess&) = delete;

  // The exit status once it exited by itself within `timeout_ms`; else it is killed (-1).
  int wait(int timeout_ms) {
    const pid_t pid = std::exchange(pid_, -1);
    UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    if (pidfd) {
      struct pollfd p = {pidfd.get(), POLLIN, 0};
      while (::poll(&p, 1, timeout_ms) < 0 && errno == EINTR) {
      }
      if (!p.revents) ::kill(pid, SIGKILL);
    }
    int status = 0;
    for (int waited = 0;; ++waited) {
      const pid_t r = ::waitpid(pid, &status, pidfd ? 0 : WNOHANG);
      if (r == pid) break;
      if (r < 0 && errno != EINTR) return -1;
      if (r == 0) {
        if (waited >= timeout_ms) ::kill(pid, SIGKILL);
        ::usleep(1000);
      }
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

 private:
  pid_t pid_;
};

// In the reader process, before anything can be reported: the daemon reads this as an error.
[[noreturn]] void die(int data_fd, ErrorKind kind, const std::string& message) {
  std::string frame;
  wire::append_error(frame, kind, message);
  [[maybe_unused]] ssize_t ignored = ::write(data_fd, frame.data(), frame.size());
  ::_exit(1);
}

[[noreturn]] void die_errno(int data_fd, const char* what) {
  die(data_fd, ErrorKind::internal, std::string("context reader: ") + what + ": " + errno_text(errno));
}

// Exactly `root`, `data` and `request` (as 3, 4, 5) and /dev/null as 0-2; nothing else.
void keep_only_fds(int root, int data, int request) {
  int fds[3] = {root, data, request};
  const int floor = std::max({root, data, request, kRequestFd}) + 1;
  for (int& fd : fds) {
    fd = ::fcntl(fd, F_DUPFD, floor);
    if (fd < 0) ::_exit(2);
  }
  if (::dup2(fds[0], kRootFd) < 0 || ::dup2(fds[1], kDataFd) < 0 || ::dup2(fds[2], kRequestFd) < 0) ::_exit(2);
  const int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null < 0) die_errno(kDataFd, "open /dev/null");
  for (int fd = 0; fd < 3; ++fd) {
    if (::dup2(null, fd) < 0) die_errno(kDataFd, "dup2");
  }
  if (::syscall(SYS_close_range, kRequestFd + 1, ~0U, 0) != 0) die_errno(kDataFd, "close_range");
}

void drop_privileges(const Credentials& caller) {
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) die_errno(kDataFd, "no_new_privs");
  if (::setgroups(caller.groups.size(), caller.groups.data()) != 0) die_errno(kDataFd, "setgroups");
  if (::setresgid(caller.gid, caller.gid, caller.gid) != 0) die_errno(kDataFd, "setresgid");
  if (::setresuid(caller.uid, caller.uid, caller.uid) != 0) die_errno(kDataFd, "setresuid");
  // Leaving uid 0 cleared the capabilities already; a root caller keeps only the one that lets
  // root read any file, as a client running as root could.
  struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct data[2] = {};
  if (caller.uid == 0) {
    data[0].effective = data[0].permitted = 1u << CAP_DAC_READ_SEARCH;
  }
  if (::syscall(SYS_capset, &header, data) != 0) die_errno(kDataFd, "capset");
  // The process is a copy of the daemon's memory: the caller must not be able to read it
  // (ptrace, /proc/pid/mem), even with fs.suid_dumpable=1.
  if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) die_errno(kDataFd, "dumpable");
}

[[noreturn]] void run_reader(const ContextReadRequest& request, int data_fd, int request_fd, pid_t daemon) noexcept {
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::signal(SIGPIPE, SIG_DFL);  // the daemon went away: nothing left to do
  keep_only_fds(request.context_fd, data_fd, request_fd);
  drop_privileges(request.caller);
  // Set after the credential change, which clears it.
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) die_errno(kDataFd, "pdeathsig");
  if (::getppid() != daemon) ::_exit(1);
  // One fd per directory level of the walk.
  struct rlimit files {};
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &files);
  }
  if (request.reader_check) {
    try {
      request.reader_check();
    } catch (const Error& e) {
      die(kDataFd, e.kind(), e.what());
    } catch (...) {
      die(kDataFd, ErrorKind::internal, "reader check failed");
    }
  }
  SenderOptions options;
  options.ignore = request.ignore;
  options.include_patterns = request.include_patterns;
  options.follow_paths = request.follow_paths;
  ::_exit(run_context_sender(kRootFd, kDataFd, kRequestFd, options));
}

}  // namespace

ContextReadResult read_context(const ContextReadRequest& request) {
  if (request.context_fd < 0 || (request.dest_fd < 0 && !request.update_previous)) {
    throw Error(ErrorKind::internal, "read_context: missing fd");
  }
  int data[2];
  check(::pipe2(data, O_CLOEXEC), "pipe2", "context stream");
  UniqueFd data_read(data[0]);
  UniqueFd data_write(data[1]);
  ::fcntl(data_write.get(), F_SETPIPE_SZ, kPipeSize);  // fewer, larger transfers; a hint only
  int requests[2];
  check(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, requests), "socketpair", "context stream");
  UniqueFd request_daemon(requests[0]);
  UniqueFd request_reader(requests[1]);

  const pid_t daemon = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw_errno("fork", "context reader");
  if (pid == 0) run_reader(request, data_write.get(), request_reader.get(), daemon);
  ReaderProcess reader(pid);
  data_write.reset();
  request_reader.reset();

  ReceiveOptions options;
  options.dest_fd = request.dest_fd;
  options.cache_scope = request.caller.uid;
  options.hash_cache = request.hash_cache;
  options.previous = request.previous;
  options.link_from_previous = request.link_from_previous;
  options.update_previous = request.update_previous;
  options.previous_touched = request.previous_touched;
  options.cancel_fd = request.cancel_fd;
  ContextReadResult result = receive_context(data_read.get(), request_daemon.get(), options);
  request_daemon.reset();
  const int status = reader.wait(5000);
  if (status != 0) throw Error(ErrorKind::internal, "context reader exited with status " + std::to_string(status));
  return result;
}

}  // namespace kbuild::context
