// Whole reads and writes on file descriptors, retried across EINTR and short counts; errors
// throw kbuild::Error naming `what` (a path, or what the fd carries).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "common/unique_fd.h"

namespace kbuild {

void write_all(int fd, const void* data, std::size_t size, std::string_view what);
inline void write_all(int fd, std::string_view data, std::string_view what) {
  write_all(fd, data.data(), data.size(), what);
}

// Everything until end of file.
std::string read_all(int fd, std::string_view what);
// Up to `size` bytes, retrying EINTR; 0 at end of file.
std::size_t read_some(int fd, void* data, std::size_t size, std::string_view what);

// A close-on-exec memfd holding `data`, positioned at its start: bytes for another process.
UniqueFd memfd_holding(const char* name, std::string_view data);

}  // namespace kbuild
