#include "engine/image/blob_io.h"

#include <unistd.h>

#include <cerrno>

#include "common/syscall.h"

namespace kbuild::image {

std::string read_small(int fd, size_t limit, std::string_view name) {
  std::string out;
  char buffer[65536];
  for (;;) {
    size_t n = read_some(fd, buffer, sizeof buffer, name);
    if (n == 0) return out;
    if (out.size() + n > limit) {
      throw Error(ErrorKind::user, std::string(name) + ": larger than " + std::to_string(limit) + " bytes");
    }
    out.append(buffer, n);
  }
}

}  // namespace kbuild::image
