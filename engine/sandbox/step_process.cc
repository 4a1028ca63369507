#include "engine/sandbox/step_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <memory>
#include <utility>

#include "common/error.h"
#include "common/fd_io.h"
#include "common/syscall.h"
#include "engine/store/mount.h"

namespace kbuild::sandbox {
namespace {

// File actions dup2 in order: sources are first lifted above every target so that none is
// overwritten before it is duplicated.
constexpr int kLiftedFdBase = 256;

UniqueFd lift(int fd) { return UniqueFd(check(::fcntl(fd, F_DUPFD_CLOEXEC, kLiftedFdBase), "dup")); }

struct SpawnAttributes {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attributes;
  SpawnAttributes() {
    posix_spawn_file_actions_init(&actions);
    posix_spawnattr_init(&attributes);
  }
  ~SpawnAttributes() {
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attributes);
  }
};

// The helper as a child of this thread, with fds 0-4 and the extras, nothing else.
pid_t spawn_helper(const std::string& helper, const std::vector<int>& fds) {
  SpawnAttributes spawn;
  for (size_t target = 0; target < fds.size(); ++target) {
    posix_spawn_file_actions_adddup2(&spawn.actions, fds[target], static_cast<int>(target));
  }
  posix_spawn_file_actions_addclosefrom_np(&spawn.actions, static_cast<int>(fds.size()));
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&spawn.attributes, &none);
  posix_spawnattr_setsigdefault(&spawn.attributes, &all);
  posix_spawnattr_setflags(&spawn.attributes, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  char* argv[] = {const_cast<char*>(helper.c_str()), nullptr};
  // Nothing of the daemon's environment but the overlay API it was told to use.
  char legacy_overlay[] = "KBUILD_OVERLAY_API=legacy";
  char* envp[] = {store::default_overlay_api() == store::OverlayApi::legacy ? legacy_overlay : nullptr, nullptr};
  pid_t pid = 0;
  int error = ::posix_spawn(&pid, helper.c_str(), &spawn.actions, &spawn.attributes, argv, envp);
  if (error != 0) throw_errno("starting the step helper", helper, error);
  return pid;
}

struct Pipe {
  UniqueFd read, write;
  Pipe() {
    int fds[2];
    check(::pipe2(fds, O_CLOEXEC), "pipe");
    read.reset(fds[0]);
    write.reset(fds[1]);
  }
};

// Reaps the helper however the step ends.
class HelperProcess {
 public:
  explicit HelperProcess(pid_t pid) : pid_(pid) {
    pidfd_.reset(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    if (!pidfd_) throw_errno("pidfd_open");
  }
  ~HelperProcess() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    wait();
  }
  HelperProcess(const HelperProcess&) = delete;
  HelperProcess& operator=(const HelperProcess&) = delete;
  int pidfd() const { return pidfd_.get(); }
  // Hands the process over to someone else to reap.
  pid_t release() { return std::exchange(pid_, -1); }
  pid_t pid() const { return pid_; }
  int wait() {
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    return status;
  }

 private:
  pid_t pid_;
  UniqueFd pidfd_;
};

// A step's stdout or stderr, passed on a line at a time: two streams read from two pipes
// must not splice into each other mid-line. A partial line goes out when the stream ends or
// goes quiet (progress bars redrawn with \r still show).
class OutputStream {
 public:
  OutputStream(int stream, const std::function<void(int, std::string_view)>& output)
      : stream_(stream), output_(output) {}

  // Reads what the pipe has; false at its end.
  bool drain(int fd) {
    char buffer[65536];
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return true;
    if (n <= 0) {
      flush();
      return false;
    }
    pending_.append(buffer, static_cast<size_t>(n));
    size_t end = pending_.rfind('\n');
    if (end != std::string::npos) {
      output_(stream_, std::string_view(pending_).substr(0, end + 1));
      pending_.erase(0, end + 1);
    }
    if (pending_.size() >= sizeof buffer) flush();
    return true;
  }

  void flush() {
    if (pending_.empty()) return;
    output_(stream_, pending_);
    pending_.clear();
  }

 private:
  int stream_;
  const std::function<void(int, std::string_view)>& output_;
  std::string pending_;
};

}  // namespace

StepReaper::~StepReaper() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void StepReaper::adopt(pid_t helper, std::unique_ptr<StepCgroup> step) {
  std::lock_guard lock(mutex_);
  queue_.push_back(Entry{helper, std::move(step)});
  if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
  wake_.notify_one();
}

void StepReaper::run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;
    Entry entry = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    int status = 0;
    while (::waitpid(entry.helper, &status, 0) < 0 && errno == EINTR) {
    }
    entry.step.reset();
    lock.lock();
  }
}

StepOutcome run_step_process(StepLaunch& launch, BuildCgroup& cgroup,
                             const std::function<void(int stream, std::string_view data)>& output,
                             const std::function<bool()>& canceled, StepReaper* reaper) {
  Pipe out, err;
  int control[2];
  check(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, control), "socketpair");
  UniqueFd control_daemon(control[0]), control_helper(control[1]);
  UniqueFd dev_null(check(::open("/dev/null", O_RDWR | O_CLOEXEC), "open /dev/null"));
  UniqueFd spec = memfd_holding("kbuild-step-spec", serialize_spec(launch.spec));

  std::vector<UniqueFd> lifted;
  for (int fd : {dev_null.get(), out.write.get(), err.write.get(), spec.get(), control_helper.get()}) {
    lifted.push_back(lift(fd));
  }
  for (const UniqueFd& fd : launch.extra_fds) lifted.push_back(lift(fd.get()));
  std::vector<int> numbers;
  for (const UniqueFd& fd : lifted) numbers.push_back(fd.get());
  HelperProcess helper(spawn_helper(launch.helper_path, numbers));
  lifted.clear();
  out.write.reset();
  err.write.reset();
  control_helper.reset();
  spec.reset();

  std::unique_ptr<StepCgroup> step = cgroup.add_step(helper.pid(), launch.step_name, launch.description, launch.limits);
  if (::send(control_daemon.get(), "g", 1, MSG_NOSIGNAL) != 1) {
    // The helper gave up before the step started; what it said is on the socket.
    int error = errno;
    std::string said;
    char buffer[4096];
    ssize_t n;
    while ((n = ::read(control_daemon.get(), buffer, sizeof buffer)) > 0) said.append(buffer, static_cast<size_t>(n));
    std::string reason = said.empty() ? std::string(std::strerror(error)) : parse_exit(said).error;
    throw Error(ErrorKind::internal, "starting the step (" + launch.helper_path + "): " + reason);
  }

  StepOutcome outcome;
  std::string result;
  bool out_open = true, err_open = true, control_open = true, helper_alive = true;
  OutputStream stdout_lines(1, output), stderr_lines(2, output);
  // The helper closes its control socket when it exits, before the kernel drops its
  // namespaces: a step that succeeded is done then.
  bool succeeded = false;
  while (out_open || err_open || control_open || (helper_alive && !(succeeded && reaper))) {
    if (!outcome.canceled && canceled()) {
      outcome.canceled = true;
      step->kill();
    }
    std::array<pollfd, 4> fds{{{out_open ? out.read.get() : -1, POLLIN, 0},
                               {err_open ? err.read.get() : -1, POLLIN, 0},
                               {control_open ? control_daemon.get() : -1, POLLIN, 0},
                               {helper_alive ? helper.pidfd() : -1, POLLIN, 0}}};
    int ready = ::poll(fds.data(), fds.size(), 100);
    if (ready < 0 && errno != EINTR) throw_errno("poll");
    if (ready == 0) {
      stdout_lines.flush();
      stderr_lines.flush();
    }
    if (ready <= 0) continue;
    if (fds[0].revents) out_open = stdout_lines.drain(out.read.get());
    if (fds[1].revents) err_open = stderr_lines.drain(err.read.get());
    if (fds[2].revents) {
      char buffer[4096];
      ssize_t n = ::read(control_daemon.get(), buffer, sizeof buffer);
      if (n > 0) {
        result.append(buffer, static_cast<size_t>(n));
      } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        control_open = false;
        if (!result.empty() && !outcome.canceled) {
          StepExit exit = parse_exit(result);
          succeeded = exit.error.empty() && exit.signal == 0 && exit.exit_code == 0;
        }
      }
    }
    if (fds[3].revents) {
      helper_alive = false;
      // What the step left running keeps the pipes open: nothing of it may outlive it.
      step->kill();
    }
  }
  if (helper_alive && succeeded && reaper) {
    outcome.exit = parse_exit(result);
    reaper->adopt(helper.release(), std::move(step));
    return outcome;
  }
  int status = helper.wait();
  outcome.usage = step->usage();
  step.reset();
  if (!result.empty()) {
    outcome.exit = parse_exit(result);
  } else if (WIFSIGNALED(status)) {
    outcome.exit.signal = WTERMSIG(status);
  } else {
    outcome.exit.error = "the step helper ended without a result (exit status " + std::to_string(WEXITSTATUS(status)) + ")";
  }
  return outcome;
}

}  // namespace kbuild::sandbox
