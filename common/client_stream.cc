#include "common/client_stream.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "common/error.h"
#include "common/syscall.h"

namespace kbuild {
namespace {

// Blocks SIGPIPE for the calling thread while a write may raise it, and swallows the one a
// broken pipe raises, so that no process-wide SIG_IGN is needed to survive a client leaving.
class SigpipeGuard {
 public:
  SigpipeGuard() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
  }
  ~SigpipeGuard() {
    if (broke_ && !was_pending_) {
      const timespec zero{};
      while (sigtimedwait(&pipe_, nullptr, &zero) == -1 && errno == EINTR) {
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  SigpipeGuard(const SigpipeGuard&) = delete;
  SigpipeGuard& operator=(const SigpipeGuard&) = delete;
  void broke() { broke_ = true; }

 private:
  sigset_t pipe_;
  sigset_t old_;
  bool was_pending_ = false;
  bool broke_ = false;
};

int remaining_ms(std::chrono::steady_clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  return left.count() < 0 ? 0 : static_cast<int>(left.count());
}

}  // namespace

ClientStream::ClientStream(int fd, Direction direction, int cancel_fd, std::string what)
    : fd_(fd), cancel_fd_(cancel_fd), what_(std::move(what)) {
  struct stat st {};
  check(::fstat(fd, &st), "fstat", what_);
  if (S_ISSOCK(st.st_mode)) {
    socket_ = nonblocking_ = true;
    return;
  }
  if (!S_ISFIFO(st.st_mode)) return;
  // A new open file description of the same pipe: O_NONBLOCK on it leaves the client's alone.
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  const int mode = direction == Direction::read ? O_RDONLY : O_WRONLY;
  own_.reset(::open(path.c_str(), mode | O_NONBLOCK | O_CLOEXEC | O_NOCTTY));
  if (!own_) {
    // Opening a pipe for writing without a reader fails with ENXIO.
    if (errno == ENXIO) throw Error(ErrorKind::canceled, "writing " + what_ + ": the reader has gone");
    throw_errno("reopening", what_);
  }
  struct stat again {};
  check(::fstat(own_.get(), &again), "fstat", what_);
  if (again.st_dev != st.st_dev || again.st_ino != st.st_ino) {
    throw Error(ErrorKind::internal, "reopening " + what_ + ": got another file");
  }
  fd_ = own_.get();
  nonblocking_ = true;
}

void ClientStream::throw_canceled() const { throw Error(ErrorKind::canceled, what_ + ": canceled"); }

bool ClientStream::wait(short events, int timeout_ms) {
  struct pollfd fds[2] = {{fd_, events, 0}, {cancel_fd_, POLLIN, 0}};
  const nfds_t count = cancel_fd_ >= 0 ? 2 : 1;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    const int ready = ::poll(fds, count, timeout_ms < 0 ? -1 : remaining_ms(deadline));
    if (ready < 0) {
      if (errno == EINTR) continue;
      throw_errno("poll", what_);
    }
    if (count == 2 && fds[1].revents) throw_canceled();
    // POLLHUP and POLLERR count as ready: the read or write that follows reports them.
    return ready > 0;
  }
}

std::size_t ClientStream::write_some(const void* data, std::size_t size, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  SigpipeGuard guard;
  for (;;) {
    if (!nonblocking_ && cancel_fd_ >= 0) {
      struct pollfd p = {cancel_fd_, POLLIN, 0};
      if (::poll(&p, 1, 0) > 0) throw_canceled();
    }
    const ssize_t n = socket_ ? ::send(fd_, data, size, MSG_DONTWAIT | MSG_NOSIGNAL) : ::write(fd_, data, size);
    if (n >= 0) return static_cast<std::size_t>(n);
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      if (!wait(POLLOUT, remaining_ms(deadline))) return 0;
      continue;
    }
    if (errno == EPIPE || errno == ECONNRESET) {
      guard.broke();
      throw Error(ErrorKind::canceled, "writing " + what_ + ": the reader has gone");
    }
    throw_errno("write", what_);
  }
}

void ClientStream::write_all(const void* data, std::size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    // A day is "forever" here: every wait is a poll that the cancel fd also wakes.
    const std::size_t n = write_some(p, size, std::chrono::hours(24));
    p += n;
    size -= n;
  }
}

std::size_t ClientStream::read_some(void* data, std::size_t size) {
  for (;;) {
    if (!nonblocking_ && cancel_fd_ >= 0) {
      struct pollfd p = {cancel_fd_, POLLIN, 0};
      if (::poll(&p, 1, 0) > 0) throw_canceled();
    }
    const ssize_t n = socket_ ? ::recv(fd_, data, size, MSG_DONTWAIT) : ::read(fd_, data, size);
    if (n >= 0) return static_cast<std::size_t>(n);
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      wait(POLLIN, -1);
      continue;
    }
    throw_errno("read", what_);
  }
}

CancelSignal::CancelSignal() : fd_(check(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), "eventfd", "cancel signal")) {}

void CancelSignal::cancel() noexcept {
  const std::uint64_t one = 1;
  // A full counter is as readable as a fresh one: nothing to handle.
  [[maybe_unused]] ssize_t n = ::write(fd_.get(), &one, sizeof one);
}

bool CancelSignal::canceled() const {
  struct pollfd p = {fd_.get(), POLLIN, 0};
  return ::poll(&p, 1, 0) > 0;
}

}  // namespace kbuild
