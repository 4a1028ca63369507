// The listening unix socket kbuildd serves on: the one systemd passes (kbuild.socket), or one it
// binds itself (kbuildd --listen PATH, tests).
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

#include "common/unique_fd.h"

namespace kbuild::dbus {

// Where kbuild.socket listens.
inline constexpr const char* kDefaultSocketPath = "/run/kbuild/kbuild.sock";

class Listener {
 public:
  struct BindOptions {
    mode_t mode = 0660;
    // The socket file's group when that group exists; "" leaves the group alone.
    std::string group = "kbuild";
  };

  // The socket systemd passed with socket activation (sd_listen_fds), or nullopt when there is
  // none. Throws if systemd passed more than one fd or something that is not a listening
  // stream unix socket.
  static std::optional<Listener> from_systemd();

  // Binds and listens on `path`. A socket file left there by an earlier run is replaced; anything
  // else at the path, or a socket another process still serves, is an error. The file is removed
  // again when the Listener goes away.
  static Listener bind(const std::string& path, const BindOptions& options);
  static Listener bind(const std::string& path) { return bind(path, BindOptions{}); }

  Listener(Listener&& other) noexcept;
  Listener& operator=(Listener&& other) noexcept;
  ~Listener();

  // The listening socket, non-blocking and close-on-exec.
  int fd() const { return fd_.get(); }
  // The path it listens on, when known.
  const std::string& path() const { return path_; }

 private:
  Listener(UniqueFd fd, std::string path, bool owns_path);
  void remove_socket_file() noexcept;

  UniqueFd fd_;
  std::string path_;
  bool owns_path_ = false;
};

}  // namespace kbuild::dbus
