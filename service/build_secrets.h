// The secrets a Build call passes as fds, read once into memory. The daemon reads only what a
// caller could read itself and pass: a regular file it opened, or a sealed memfd; anything else
// (a directory, an O_PATH fd, a socket, a pipe, a device, an unsealed memfd) is refused by name.
#pragma once

#include <string>

namespace kbuild::service {

// At most this many bytes (BuildKit's MaxSecretSize).
inline constexpr size_t kMaxSecretBytes = 500 * 1024;

// The contents of secret `id` behind `fd` (borrowed; read with pread from 0, so the caller's
// offset does not matter). Throws kbuild::Error (user) naming what the fd is when it is refused.
std::string read_secret_fd(int fd, const std::string& id);

}  // namespace kbuild::service
