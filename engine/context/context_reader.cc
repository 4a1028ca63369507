#include "engine/context/context_reader.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "common/error.h"
#include "common/fd_io.h"
#include "common/syscall.h"
#include "common/unique_fd.h"
#include "engine/context/reader_program.h"

namespace kbuild::context {
namespace {

constexpr int kPipeSize = 1 << 20;

// A started reader: killed and reaped unless it was waited for.
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

  // The exit status once it exited by itself within `timeout_ms`; else (or once `cancel_fd`
  // is readable) it is killed (-1).
  int wait(int timeout_ms, int cancel_fd) {
    const pid_t pid = std::exchange(pid_, -1);
    UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    if (pidfd) {
      struct pollfd p[2] = {{pidfd.get(), POLLIN, 0}, {cancel_fd, POLLIN, 0}};
      while (::poll(p, cancel_fd >= 0 ? 2 : 1, timeout_ms) < 0 && errno == EINTR) {
      }
      if (!p[0].revents) ::kill(pid, SIGKILL);
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

struct SpawnActions {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attributes;
  SpawnActions() {
    posix_spawn_file_actions_init(&actions);
    posix_spawnattr_init(&attributes);
  }
  ~SpawnActions() {
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attributes);
  }
  SpawnActions(const SpawnActions&) = delete;
  SpawnActions& operator=(const SpawnActions&) = delete;
};

// Starts the reader program as root with /dev/null as 0-2, `fds` as 3, 4, ... and nothing else:
// no fd, environment variable or byte of memory of the daemon's.
pid_t spawn_reader(const std::string& program, const std::vector<int>& fds) {
  // Copies above every target number first, so that no dup2 overwrites a source.
  std::vector<UniqueFd> lifted;
  const int first = kReaderRootFd;
  const int floor = first + static_cast<int>(fds.size()) + 3;
  for (int fd : fds) lifted.emplace_back(check(::fcntl(fd, F_DUPFD_CLOEXEC, floor), "fcntl", "context reader fds"));
  SpawnActions spawn;
  posix_spawn_file_actions_addopen(&spawn.actions, 0, "/dev/null", O_RDWR, 0);
  posix_spawn_file_actions_adddup2(&spawn.actions, 0, 1);
  posix_spawn_file_actions_adddup2(&spawn.actions, 0, 2);
  for (size_t i = 0; i < lifted.size(); ++i) {
    posix_spawn_file_actions_adddup2(&spawn.actions, lifted[i].get(), first + static_cast<int>(i));
  }
  posix_spawn_file_actions_addclosefrom_np(&spawn.actions, first + static_cast<int>(fds.size()));
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&spawn.attributes, &none);
  posix_spawnattr_setsigdefault(&spawn.attributes, &all);
  posix_spawnattr_setflags(&spawn.attributes, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  char* argv[] = {const_cast<char*>(program.c_str()), nullptr};
  char* envp[] = {nullptr};
  pid_t pid = 0;
  const int error = ::posix_spawn(&pid, program.c_str(), &spawn.actions, &spawn.attributes, argv, envp);
  if (error != 0) throw_errno("starting the context reader", program, error);
  return pid;
}

}  // namespace

ContextReadResult read_context(const ContextReadRequest& request) {
  if (request.context_fd < 0 || (request.dest_fd < 0 && !request.update_previous)) {
    throw Error(ErrorKind::internal, "read_context: missing fd");
  }
  if (request.reader_program.empty()) throw Error(ErrorKind::internal, "read_context: no reader program");
  int data[2];
  check(::pipe2(data, O_CLOEXEC), "pipe2", "context stream");
  UniqueFd data_read(data[0]);
  UniqueFd data_write(data[1]);
  ::fcntl(data_write.get(), F_SETPIPE_SZ, kPipeSize);  // fewer, larger transfers; a hint only
  int requests[2];
  check(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, requests), "socketpair", "context stream");
  UniqueFd request_daemon(requests[0]);
  UniqueFd request_reader(requests[1]);

  ReaderOptions reader_options;
  reader_options.uid = request.caller.uid;
  reader_options.gid = request.caller.gid;
  reader_options.groups = request.caller.groups;
  reader_options.daemon = ::getpid();
  if (request.ignore) reader_options.ignore = request.ignore->patterns();
  reader_options.include_patterns = request.include_patterns;
  reader_options.follow_paths = request.follow_paths;
  UniqueFd options_fd = memfd_holding("context-reader-options", serialize_reader_options(reader_options));

  ReaderProcess reader(spawn_reader(request.reader_program,
                                    {request.context_fd, data_write.get(), request_reader.get(), options_fd.get()}));
  data_write.reset();
  request_reader.reset();
  options_fd.reset();

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
  const int status = reader.wait(5000, request.cancel_fd);
  if (status != 0) {
    struct pollfd cancel = {request.cancel_fd, POLLIN, 0};
    if (request.cancel_fd >= 0 && ::poll(&cancel, 1, 0) > 0) {
      throw Error(ErrorKind::canceled, "reading the build context was canceled");
    }
    throw Error(ErrorKind::internal, "context reader exited with status " + std::to_string(status));
  }
  return result;
}

}  // namespace kbuild::context
