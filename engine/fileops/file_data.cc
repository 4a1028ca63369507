#include "engine/fileops/file_data.h"

#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "common/syscall.h"
#include "engine/fileops/root_path.h"

namespace kbuild::fileops {
namespace {

constexpr std::size_t kBufferSize = 1 << 20;
constexpr std::size_t kMaxCopyRange = 1 << 30;

// Errors meaning "this kind of copy cannot work here", as Go's copy_file_range fallback lists
// them (internal/poll/copy_file_range_linux.go), plus what FICLONE answers on file systems
// without reflinks.
bool unsupported(int error) {
  return error == ENOSYS || error == EXDEV || error == EPERM || error == EIO || error == EOPNOTSUPP ||
         error == EINVAL || error == ENOTTY || error == EBADF;
}

}  // namespace

FileDataCopier::FileDataCopier() = default;

FileDataCopier::DevicePair& FileDataCopier::pair(dev_t src, dev_t dst) {
  for (DevicePair& p : pairs_) {
    if (p.src == src && p.dst == dst) return p;
  }
  pairs_.push_back(DevicePair{src, dst});
  return pairs_.back();
}

uint64_t FileDataCopier::copy(int src, dev_t src_dev, int dst, dev_t dst_dev, uint64_t size,
                              const std::string& dst_path) {
  if (size == 0) return 0;
  DevicePair& devices = pair(src_dev, dst_dev);
  if (devices.clone) {
    if (::ioctl(dst, FICLONE, src) == 0) return size;
    if (!unsupported(errno)) throw_path_error("clone", dst_path);
    devices.clone = false;
  }
  if (devices.copy_range) {
    uint64_t done = 0;
    while (done < size) {
      const std::size_t chunk = static_cast<std::size_t>(std::min<uint64_t>(size - done, kMaxCopyRange));
      const ssize_t n = ::copy_file_range(src, nullptr, dst, nullptr, chunk, 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (done == 0 && unsupported(errno)) {
          devices.copy_range = false;
          return copy_with_buffer(src, dst, size, dst_path);
        }
        throw_path_error("copy_file_range", dst_path);
      }
      if (n == 0) break;  // the source is shorter than it was
      done += static_cast<uint64_t>(n);
    }
    return done;
  }
  return copy_with_buffer(src, dst, size, dst_path);
}

uint64_t FileDataCopier::copy_with_buffer(int src, int dst, uint64_t size, const std::string& dst_path) {
  if (!buffer_) buffer_ = std::make_unique<char[]>(kBufferSize);
  uint64_t done = 0;
  while (done < size) {
    const std::size_t want = static_cast<std::size_t>(std::min<uint64_t>(size - done, kBufferSize));
    const ssize_t n = ::read(src, buffer_.get(), want);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_path_error("read", dst_path);
    }
    if (n == 0) break;
    std::size_t written = 0;
    while (written < static_cast<std::size_t>(n)) {
      const ssize_t w = ::write(dst, buffer_.get() + written, static_cast<std::size_t>(n) - written);
      if (w < 0) {
        if (errno == EINTR) continue;
        throw_path_error("write", dst_path);
      }
      written += static_cast<std::size_t>(w);
    }
    done += static_cast<uint64_t>(n);
  }
  return done;
}

}  // namespace kbuild::fileops
