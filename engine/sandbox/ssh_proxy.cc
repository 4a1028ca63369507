#include "engine/sandbox/ssh_proxy.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <memory>

#include "common/syscall.h"

namespace kbuild::sandbox {
namespace {

using ssh_forward::ConnectionThreads;

constexpr std::size_t kBufferSize = 16 << 10;

// The listening agent socket at `path`, with `owner`'s mode and ids set before it listens.
UniqueFd listen_at(const std::string& path, const SshSocketOwner& owner) {
  struct sockaddr_un addr {};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    throw Error(ErrorKind::internal, "SSH agent socket path " + path + " is longer than a Unix socket allows");
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  UniqueFd fd(check(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), "socket", path));
  check(::bind(fd.get(), reinterpret_cast<const struct sockaddr*>(&addr), sizeof addr), "bind", path);
  // The directory is ours and 0700, so nobody reaches the file between bind and these.
  check(::chmod(path.c_str(), owner.mode & 07777), "chmod", path);
  check(::lchown(path.c_str(), owner.uid, owner.gid), "chown", path);
  check(::listen(fd.get(), SOMAXCONN), "listen", path);
  return fd;
}

// Bytes one way between two sockets, through a buffer refilled only once it has been sent.
struct Flow {
  int from;
  int to;
  std::array<char, kBufferSize> buffer{};
  std::size_t begin = 0, end = 0;
  bool eof = false;

  bool empty() const { return begin == end; }
  bool done() const { return eof && empty(); }
  short from_events() const { return !eof && empty() ? POLLIN : 0; }
  short to_events() const { return empty() ? 0 : POLLOUT; }

  // Moves what poll said is ready; false when a side failed and the splice must end.
  bool pump(short from_ready, short to_ready) {
    if (empty() && !eof && (from_ready & (POLLIN | POLLHUP | POLLERR))) {
      const ssize_t n = ::recv(from, buffer.data(), buffer.size(), MSG_DONTWAIT);
      if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
      if (n == 0) {
        // Half-close, so that a client that reads to end of file (ssh-add does not; others
        // might) still sees the answer to what it sent.
        eof = true;
        ::shutdown(to, SHUT_WR);
        return true;
      }
      begin = 0;
      end = static_cast<std::size_t>(n);
    }
    if (!empty() && (to_ready & (POLLOUT | POLLHUP | POLLERR))) {
      const ssize_t n = ::send(to, buffer.data() + begin, end - begin, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
      begin += static_cast<std::size_t>(n);
    }
    return true;
  }
};

// Copies both ways between `step` and `client` until both directions ended, a side failed or
// hung up for good, or `stop_fd` or `cancel_fd` turned readable.
void splice(int step, int client, int stop_fd, int cancel_fd) {
  auto up = std::make_unique<Flow>(Flow{step, client});
  auto down = std::make_unique<Flow>(Flow{client, step});
  while (!(up->done() && down->done())) {
    std::array<struct pollfd, 4> fds = {{
        {step, static_cast<short>(up->from_events() | down->to_events()), 0},
        {client, static_cast<short>(down->from_events() | up->to_events()), 0},
        {stop_fd, POLLIN, 0},
        {cancel_fd, POLLIN, 0},
    }};
    const int n = ::poll(fds.data(), cancel_fd >= 0 ? 4 : 3, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || fds[2].revents || fds[3].revents) return;
    if (!up->pump(fds[0].revents, fds[1].revents) || !down->pump(fds[1].revents, fds[0].revents)) return;
    // A socket whose peer has gone takes nothing more: once what it sent is passed on, the
    // other direction has nowhere to go. (Without this, its POLLHUP would spin the poll.)
    if ((fds[0].revents & (POLLHUP | POLLERR)) && up->done()) return;
    if ((fds[1].revents & (POLLHUP | POLLERR)) && down->done()) return;
  }
}

// Why the control socket turned readable, as the error that ends forwarding: kbuildctl never
// writes to it, so it either hung up or misbehaves.
[[noreturn]] void throw_control_ended(int control) {
  char byte = 0;
  const ssize_t n = ::recv(control, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n > 0) throw Error(ErrorKind::internal, "kbuildctl wrote to the SSH agent forwarding socket");
  if (n == 0 || errno == ECONNRESET) throw Error(ErrorKind::internal, "kbuildctl closed the SSH agent forwarding");
  throw_errno("recv", "the SSH agent forwarding socket");
}

}  // namespace

SshAgentProxy::SshAgentProxy(int control, const std::string& parent_dir, SshSocketOwner owner, int cancel_fd,
                             std::string id)
    : control_(control), cancel_fd_(cancel_fd), id_(std::move(id)), dir_(parent_dir, "ssh-") {
  ssh_forward::check_control_socket(control_, "ssh agent " + id_);
  socket_path_ = dir_.path() + "/agent.sock";
  listener_ = listen_at(socket_path_, owner);
  socket_file_.reset(check(::open(socket_path_.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC), "open", socket_path_));
  thread_ = std::thread([this] { run(); });
}

SshAgentProxy::~SshAgentProxy() {
  // Wakes the accepting thread too: it polls the same stop fd.
  connections_.stop();
  if (thread_.joinable()) thread_.join();
}

std::optional<Error> SshAgentProxy::failure() const {
  std::lock_guard lock(mutex_);
  return failure_;
}

void SshAgentProxy::run() noexcept {
  std::optional<Error> failed;
  try {
    while (serve_next()) {
    }
  } catch (const Error& e) {
    // canceled is our own stop or the build's cancel: the normal end.
    if (e.kind() != ErrorKind::canceled) failed = e.with_context("ssh agent " + id_);
  } catch (const std::exception& e) {
    failed = Error(ErrorKind::internal, "ssh agent " + id_ + ": " + e.what());
  }
  // From now on a connection is refused at once rather than left waiting in the backlog.
  listener_.reset();
  std::lock_guard lock(mutex_);
  failure_ = std::move(failed);
}

bool SshAgentProxy::serve_next() {
  std::array<struct pollfd, 4> fds = {{
      {listener_.get(), POLLIN, 0},
      {control_, POLLIN | POLLRDHUP, 0},
      {connections_.stop_fd(), POLLIN, 0},
      {cancel_fd_, POLLIN, 0},
  }};
  const int n = ::poll(fds.data(), cancel_fd_ >= 0 ? 4 : 3, -1);
  if (n < 0 && errno == EINTR) return true;
  check(n, "poll");
  if (fds[2].revents || fds[3].revents) return false;
  if (fds[1].revents) throw_control_ended(control_);
  if (!fds[0].revents) return true;
  UniqueFd connection(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
  if (!connection) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED) return true;
    throw_errno("accept", socket_path_);
  }
  forward(std::move(connection));
  return true;
}

void SshAgentProxy::forward(UniqueFd connection) {
  // Over the limit the step's connection is closed unanswered, before kbuildctl hears of it.
  if (connections_.active() >= kConnectionLimit) return;
  int pair[2];
  check(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), "socketpair");
  auto ends = std::make_shared<std::pair<UniqueFd, UniqueFd>>(UniqueFd(pair[0]), UniqueFd(pair[1]));
  ssh_forward::send_connection(control_, ends->second.get(), ++forwarded_, {connections_.stop_fd(), cancel_fd_});
  ends->second.reset();  // kbuildctl holds it now
  auto step = std::make_shared<UniqueFd>(std::move(connection));
  connections_.start([step, ends, cancel_fd = cancel_fd_](int stop_fd) {
    splice(step->get(), ends->first.get(), stop_fd, cancel_fd);
  });
}

}  // namespace kbuild::sandbox
