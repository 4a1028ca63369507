#include "common/fd_io.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>

#include "common/syscall.h"

namespace kbuild {

void write_all(int fd, const void* data, std::size_t size, std::string_view what) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("write", what);
    }
    p += n;
    size -= static_cast<std::size_t>(n);
  }
}

std::size_t read_some(int fd, void* data, std::size_t size, std::string_view what) {
  for (;;) {
    const ssize_t n = ::read(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("read", what);
    return static_cast<std::size_t>(n);
  }
}

std::string read_all(int fd, std::string_view what) {
  std::string out;
  char buffer[16384];
  for (std::size_t n; (n = read_some(fd, buffer, sizeof buffer, what)) != 0;) out.append(buffer, n);
  return out;
}

UniqueFd memfd_holding(const char* name, std::string_view data) {
  UniqueFd fd(check(::memfd_create(name, MFD_CLOEXEC), "memfd_create", name));
  write_all(fd.get(), data, name);
  check(::lseek(fd.get(), 0, SEEK_SET), "lseek", name);
  return fd;
}

}  // namespace kbuild
