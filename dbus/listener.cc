#include "dbus/listener.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "common/error.h"
#include "common/syscall.h"
#include "dbus/authorization.h"

namespace kbuild::dbus {
namespace {

sockaddr_un socket_address(const std::string& path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof address.sun_path)
    throw Error(ErrorKind::user, "socket path " + path + ": empty or longer than " +
                                     std::to_string(sizeof address.sun_path - 1) + " bytes");
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  return address;
}

// True when a process still accepts connections on the socket at `path`.
bool socket_is_served(const sockaddr_un& address) {
  UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!probe) return false;
  return ::connect(probe.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0;
}

// Removes what an earlier run left at `path`, but only a socket nobody serves.
void remove_stale_socket(const std::string& path, const sockaddr_un& address) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return;
    throw_errno("lstat", path);
  }
  if (!S_ISSOCK(st.st_mode)) throw Error(ErrorKind::user, "cannot listen on " + path + ": it exists and is not a socket");
  if (socket_is_served(address))
    throw Error(ErrorKind::user, "cannot listen on " + path + ": another process is serving it");
  check(::unlink(path.c_str()), "unlink", path);
}

void set_nonblocking(int fd) {
  int flags = check(::fcntl(fd, F_GETFL), "fcntl F_GETFL");
  check(::fcntl(fd, F_SETFL, flags | O_NONBLOCK), "fcntl F_SETFL");
}

}  // namespace

Listener::Listener(UniqueFd fd, std::string path, bool owns_path)
    : fd_(std::move(fd)), path_(std::move(path)), owns_path_(owns_path) {}

Listener::Listener(Listener&& other) noexcept
    : fd_(std::move(other.fd_)), path_(std::move(other.path_)), owns_path_(std::exchange(other.owns_path_, false)) {}

Listener& Listener::operator=(Listener&& other) noexcept {
  if (this != &other) {
    remove_socket_file();
    fd_ = std::move(other.fd_);
    path_ = std::move(other.path_);
    owns_path_ = std::exchange(other.owns_path_, false);
  }
  return *this;
}

Listener::~Listener() { remove_socket_file(); }

void Listener::remove_socket_file() noexcept {
  if (owns_path_ && fd_) ::unlink(path_.c_str());
  owns_path_ = false;
}

std::optional<Listener> Listener::from_systemd() {
  int count = ::sd_listen_fds(1);
  if (count < 0) throw Error(ErrorKind::internal, std::string("sd_listen_fds: ") + std::strerror(-count));
  if (count == 0) return std::nullopt;
  if (count > 1)
    throw Error(ErrorKind::user, "systemd passed " + std::to_string(count) + " sockets; kbuildd serves exactly one");
  UniqueFd fd(SD_LISTEN_FDS_START);
  if (::sd_is_socket_unix(fd.get(), SOCK_STREAM, 1, nullptr, 0) <= 0)
    throw Error(ErrorKind::user, "the socket systemd passed is not a listening unix stream socket");
  set_nonblocking(fd.get());
  check(::fcntl(fd.get(), F_SETFD, FD_CLOEXEC), "fcntl F_SETFD");

  std::string path;
  sockaddr_un address{};
  socklen_t length = sizeof address;
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&address), &length) == 0 &&
      length > offsetof(sockaddr_un, sun_path) && address.sun_path[0] != '\0')
    path.assign(address.sun_path, strnlen(address.sun_path, sizeof address.sun_path));
  return Listener(std::move(fd), std::move(path), false);
}

Listener Listener::bind(const std::string& path, const BindOptions& options) {
  sockaddr_un address = socket_address(path);
  remove_stale_socket(path, address);

  UniqueFd fd(check(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), "socket"));
  check(::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address), "bind", path);
  Listener listener(std::move(fd), path, true);
  // Nobody can connect before listen(), so the file's mode and group are right before anyone can.
  check(::chmod(path.c_str(), options.mode), "chmod", path);
  if (std::optional<gid_t> gid = find_group(options.group))
    check(::lchown(path.c_str(), static_cast<uid_t>(-1), *gid), "lchown", path);
  check(::listen(listener.fd(), SOMAXCONN), "listen", path);
  return listener;
}

}  // namespace kbuild::dbus
