#include "engine/sandbox/ssh_forward_protocol.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <vector>

#include "common/error.h"
#include "common/syscall.h"

namespace kbuild::sandbox::ssh_forward {
namespace {

constexpr const char* kDaemon = "kbuildd";
// Room for more fds than a frame may carry, so that a frame with two is seen and refused
// rather than cut to one by the kernel.
constexpr int kFdRoom = 4;

void append_be(std::string& out, std::uint64_t value, int bytes) {
  for (int shift = (bytes - 1) * 8; shift >= 0; shift -= 8) out += static_cast<char>((value >> shift) & 0xff);
}

std::uint64_t read_be(const unsigned char* bytes, std::size_t size) {
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < size; ++i) value = (value << 8) | bytes[i];
  return value;
}

[[noreturn]] void throw_malformed(const std::string& detail) {
  throw Error(ErrorKind::internal, std::string(kDaemon) + " sent a malformed frame: " + detail);
}

[[noreturn]] void throw_canceled() {
  throw Error(ErrorKind::canceled, "SSH agent forwarding stopped");
}

// One recvmsg of up to `size` bytes into `data`, keeping every fd that came with them in `fds`.
// 0 at end of file, -1 when nothing is there yet.
ssize_t receive_some(int control, unsigned char* data, std::size_t size, std::vector<UniqueFd>& fds) {
  alignas(struct cmsghdr) char control_buffer[CMSG_SPACE(sizeof(int) * kFdRoom)];
  struct iovec iov = {data, size};
  struct msghdr msg {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control_buffer;
  msg.msg_controllen = sizeof control_buffer;
  const ssize_t n = ::recvmsg(control, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return -1;
    throw_errno("recvmsg", "the SSH agent forwarding socket");
  }
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int fd = -1;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      fds.emplace_back(fd);
    }
  }
  if (msg.msg_flags & MSG_CTRUNC) throw_malformed("more fds than a frame carries");
  return n;
}

// Fills `data` from `control`; false only when the peer hung up before the first byte and
// `frame_started` is false.
bool receive_exactly(int control, unsigned char* data, std::size_t size, bool frame_started, int stop_fd,
                     std::vector<UniqueFd>& fds) {
  while (size > 0) {
    if (!wait_ready(control, POLLIN, {stop_fd})) throw_canceled();
    const ssize_t n = receive_some(control, data, size, fds);
    if (n < 0) continue;
    if (n == 0) {
      if (!frame_started) return false;
      throw_malformed("the connection closed in the middle of a frame");
    }
    data += n;
    size -= static_cast<std::size_t>(n);
    frame_started = true;
  }
  return true;
}

}  // namespace

bool wait_ready(int fd, short events, std::initializer_list<int> wake_fds) {
  std::array<struct pollfd, 8> fds{};
  std::size_t count = 0;
  fds[count++] = {fd, events, 0};
  for (int wake : wake_fds) {
    if (wake >= 0 && count < fds.size()) fds[count++] = {wake, POLLIN, 0};
  }
  for (;;) {
    const int n = ::poll(fds.data(), count, -1);
    if (n < 0 && errno == EINTR) continue;
    check(n, "poll");
    for (std::size_t i = 1; i < count; ++i) {
      if (fds[i].revents) return false;
    }
    if (fds[0].revents) return true;
  }
}

void send_connection(int control, int fd, std::uint64_t number, std::initializer_list<int> wake_fds) {
  std::string frame(1, static_cast<char>(FrameType::connection));
  append_be(frame, 8, 4);
  append_be(frame, number, 8);
  alignas(struct cmsghdr) char control_buffer[CMSG_SPACE(sizeof(int))] = {};
  struct iovec iov = {frame.data(), frame.size()};
  struct msghdr msg {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control_buffer;
  msg.msg_controllen = sizeof control_buffer;
  struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  for (;;) {
    if (!wait_ready(control, POLLOUT, wake_fds)) throw_canceled();
    const ssize_t n = ::sendmsg(control, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) continue;
    if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
      throw Error(ErrorKind::internal, "kbuildctl closed the SSH agent forwarding");
    }
    if (n < 0) throw_errno("sendmsg", "the SSH agent forwarding socket");
    // Whole or nothing for a frame this small (see the header); anything else leaves the
    // stream out of step for good.
    if (static_cast<std::size_t>(n) != frame.size()) {
      throw Error(ErrorKind::internal, "the SSH agent forwarding socket took part of a frame");
    }
    return;
  }
}

std::optional<ReceivedConnection> receive_connection(int control, int stop_fd) {
  std::vector<UniqueFd> fds;
  std::array<unsigned char, kHeaderSize> header{};
  if (!receive_exactly(control, header.data(), header.size(), false, stop_fd, fds)) return std::nullopt;
  if (header[0] != static_cast<unsigned char>(FrameType::connection)) {
    throw_malformed("unknown frame type " + std::to_string(header[0]));
  }
  const std::uint64_t size = read_be(header.data() + 1, 4);
  if (size > kPayloadLimit) throw_malformed("a frame of " + std::to_string(size) + " bytes");
  std::array<unsigned char, kPayloadLimit> payload{};
  receive_exactly(control, payload.data(), size, true, stop_fd, fds);
  if (size != 8) throw_malformed("a connection frame of " + std::to_string(size) + " bytes");
  if (fds.size() != 1) throw_malformed("a connection frame with " + std::to_string(fds.size()) + " fds");
  struct stat st {};
  check(::fstat(fds[0].get(), &st), "fstat", "a forwarded SSH agent connection");
  if (!S_ISSOCK(st.st_mode)) throw_malformed("a connection frame whose fd is not a socket");
  return ReceivedConnection{read_be(payload.data(), 8), std::move(fds[0])};
}

void check_control_socket(int fd, const std::string& what) {
  struct stat st {};
  check(::fstat(fd, &st), "fstat", what);
  int domain = 0, type = 0;
  socklen_t size = sizeof domain;
  if (!S_ISSOCK(st.st_mode) || ::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &size) != 0 || domain != AF_UNIX) {
    throw Error(ErrorKind::user, what + ": not a Unix socket");
  }
  size = sizeof type;
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &size) != 0 || type != SOCK_STREAM) {
    throw Error(ErrorKind::user, what + ": not a stream socket");
  }
}

bool ConnectionThreads::start(std::function<void(int stop_fd)> serve) {
  std::lock_guard lock(mutex_);
  reap_locked();
  if (stopped_ || workers_.size() >= limit_) return false;
  Worker& worker = workers_.emplace_back();
  // The thread marks itself done under the mutex, which is held until `worker.thread` is set.
  worker.thread = std::thread([this, &worker, serve = std::move(serve)] {
    serve(stop_.fd());
    std::lock_guard done_lock(mutex_);
    worker.done = true;
  });
  return true;
}

void ConnectionThreads::reap_locked() {
  for (auto it = workers_.begin(); it != workers_.end();) {
    if (!it->done) {
      ++it;
      continue;
    }
    it->thread.join();
    it = workers_.erase(it);
  }
}

std::size_t ConnectionThreads::active() {
  std::lock_guard lock(mutex_);
  reap_locked();
  return workers_.size();
}

void ConnectionThreads::stop() noexcept {
  std::list<Worker> workers;
  {
    std::lock_guard lock(mutex_);
    stopped_ = true;
    stop_.cancel();
    workers.splice(workers.end(), workers_);
  }
  // Joined without the mutex: each thread takes it to say it is done.
  for (Worker& worker : workers) {
    if (worker.thread.joinable()) worker.thread.join();
  }
}

}  // namespace kbuild::sandbox::ssh_forward
