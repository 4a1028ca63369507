// What the cgroup backend tests share: a child process to put in a cgroup before it runs.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <functional>
#include <stdexcept>

namespace kbuild::sandbox::testing {

constexpr uint64_t kMiB = 1024 * 1024;

// A forked child that waits on a pipe until released, then runs `body` and exits with its result.
class Child {
 public:
  explicit Child(std::function<int()> body) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
    pid_ = ::fork();
    if (pid_ == 0) {
      ::close(fds[1]);
      char byte;
      while (::read(fds[0], &byte, 1) < 0 && errno == EINTR) {
      }
      ::_exit(body());
    }
    ::close(fds[0]);
    release_fd_ = fds[1];
  }
  ~Child() {
    if (release_fd_ >= 0) ::close(release_fd_);
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return pid_; }
  void release() {
    char byte = 1;
    EXPECT_EQ(::write(release_fd_, &byte, 1), 1);
    ::close(release_fd_);
    release_fd_ = -1;
  }
  int wait() {
    int status = 0;
    EXPECT_EQ(::waitpid(pid_, &status, 0), pid_);
    reaped_ = true;
    return status;
  }

 private:
  pid_t pid_ = -1;
  int release_fd_ = -1;
  bool reaped_ = false;
};

inline int sleep_forever() {
  for (;;) ::pause();
}

}  // namespace kbuild::sandbox::testing
