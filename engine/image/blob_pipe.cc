#include "engine/image/blob_pipe.h"

#include <algorithm>
#include <cstring>

#include "common/error.h"

namespace kbuild::image {

void BlobPipe::write(const void* data, size_t size) {
  const char* bytes = static_cast<const char*>(data);
  std::unique_lock lock(mutex_);
  while (size > 0) {
    changed_.wait(lock, [&] { return abandoned_ || held_ < ring_.size(); });
    if (abandoned_) throw Error(ErrorKind::canceled, "the upload stopped");
    size_t tail = (head_ + held_) % ring_.size();
    size_t n = std::min({size, ring_.size() - held_, ring_.size() - tail});
    std::memcpy(ring_.data() + tail, bytes, n);
    held_ += n;
    bytes += n;
    size -= n;
    changed_.notify_all();
  }
}

void BlobPipe::close() {
  std::lock_guard lock(mutex_);
  closed_ = true;
  changed_.notify_all();
}

void BlobPipe::fail(std::exception_ptr error) {
  std::lock_guard lock(mutex_);
  error_ = error;
  closed_ = true;
  changed_.notify_all();
}

size_t BlobPipe::read(char* buffer, size_t room) {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return error_ || held_ > 0 || closed_; });
  if (error_) std::rethrow_exception(error_);
  size_t n = std::min({room, held_, ring_.size() - head_});
  std::memcpy(buffer, ring_.data() + head_, n);
  head_ = (head_ + n) % ring_.size();
  held_ -= n;
  changed_.notify_all();
  return n;
}

void BlobPipe::abandon() {
  std::lock_guard lock(mutex_);
  abandoned_ = true;
  changed_.notify_all();
}

}  // namespace kbuild::image
