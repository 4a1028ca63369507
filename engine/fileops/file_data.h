// Copying a regular file's bytes between two open fds as cheaply as the file systems allow:
// a reflink (FICLONE), else copy_file_range, else read/write through a large buffer.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace kbuild::fileops {

class FileDataCopier {
 public:
  FileDataCopier();

  // Copies `size` bytes (the source's size when it was stat'ed, as fsutil does) from the start
  // of `src` to the start of `dst`, stopping early if the source is shorter. What a device pair
  // does not support is remembered, so each file costs only the calls that can work.
  // Returns the bytes copied.
  uint64_t copy(int src, dev_t src_dev, int dst, dev_t dst_dev, uint64_t size, const std::string& dst_path);

 private:
  struct DevicePair {
    dev_t src;
    dev_t dst;
    bool clone = true;
    bool copy_range = true;
  };
  DevicePair& pair(dev_t src, dev_t dst);
  uint64_t copy_with_buffer(int src, int dst, uint64_t size, const std::string& dst_path);

  std::vector<DevicePair> pairs_;
  std::unique_ptr<char[]> buffer_;
};

}  // namespace kbuild::fileops
