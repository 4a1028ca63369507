// Bytes handed from the thread that makes a blob (a layer being compressed) to the one that
// sends it (an upload's body), with at most `capacity` of them waiting in memory.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <exception>
#include <mutex>
#include <vector>

#include "engine/image/blob_io.h"

namespace kbuild::image {

class BlobPipe : public ByteSink {
 public:
  explicit BlobPipe(size_t capacity = 4 << 20) : ring_(capacity) {}

  // Blocks while the pipe is full. Throws kbuild::Error (canceled) once the reader is gone.
  void write(const void* data, size_t size) override;
  // The writer's end: read() returns 0 once the rest is read.
  void close();
  // The writer failed: read() throws `error` (at once, even with bytes left).
  void fail(std::exception_ptr error);

  // Up to `room` bytes; blocks while the pipe is empty and open; 0 at the end.
  size_t read(char* buffer, size_t room);
  // The reader's end: writes from now on throw.
  void abandon();

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<char> ring_;
  size_t head_ = 0;  // next byte to read
  size_t held_ = 0;
  bool closed_ = false;
  bool abandoned_ = false;
  std::exception_ptr error_;
};

}  // namespace kbuild::image
