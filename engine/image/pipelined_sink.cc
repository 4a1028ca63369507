#include "engine/image/pipelined_sink.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "common/error.h"

namespace kbuild::image {

PipelinedSink::PipelinedSink(ByteSink& downstream, size_t chunk_size, size_t queue_depth)
    : downstream_(downstream), chunk_size_(std::max<size_t>(chunk_size, 1)), queue_depth_(std::max<size_t>(queue_depth, 1)) {
  current_.bytes = std::make_unique_for_overwrite<char[]>(chunk_size_);
}

PipelinedSink::~PipelinedSink() { stop(/*drain=*/false); }

void PipelinedSink::write(const void* data, size_t size) {
  const char* bytes = static_cast<const char*>(data);
  while (size > 0) {
    std::span<char> room = space();
    const size_t take = std::min(size, room.size());
    std::memcpy(room.data(), bytes, take);
    commit(take);
    bytes += take;
    size -= take;
  }
}

std::span<char> PipelinedSink::space() {
  if (current_.used == chunk_size_) hand_off();
  return {current_.bytes.get() + current_.used, chunk_size_ - current_.used};
}

void PipelinedSink::commit(size_t size) {
  if (size > chunk_size_ - current_.used) throw Error(ErrorKind::internal, "pipelined sink: committed more than its space");
  current_.used += size;
}

void PipelinedSink::mark(std::function<void()> reached) {
  current_.marks.emplace_back(current_.used, std::move(reached));
}

void PipelinedSink::pass_on(Chunk& chunk) {
  size_t at = 0;
  for (auto& [offset, reached] : chunk.marks) {
    if (offset > at) downstream_.write(chunk.bytes.get() + at, offset - at);
    at = offset;
    reached();
  }
  if (chunk.used > at) downstream_.write(chunk.bytes.get() + at, chunk.used - at);
  chunk.marks.clear();
  chunk.used = 0;
}

void PipelinedSink::finish() {
  if (!worker_.joinable()) {
    // Everything fit in one chunk: no thread was needed.
    pass_on(current_);
    return;
  }
  if (current_.used > 0 || !current_.marks.empty()) hand_off();
  stop(/*drain=*/true);
  rethrow_failure();
}

void PipelinedSink::hand_off() {
  Chunk next;
  {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return full_.size() < queue_depth_ || failure_; });
    if (failure_) {
      lock.unlock();
      rethrow_failure();
    }
    full_.push_back(std::move(current_));
    if (!spare_.empty()) {
      next = std::move(spare_.back());
      spare_.pop_back();
    }
  }
  changed_.notify_all();
  if (!worker_.joinable()) worker_ = std::thread([this] { work(); });
  if (!next.bytes) next.bytes = std::make_unique_for_overwrite<char[]>(chunk_size_);
  next.used = 0;
  next.marks.clear();
  current_ = std::move(next);
}

void PipelinedSink::work() {
  for (;;) {
    Chunk chunk;
    {
      std::unique_lock lock(mutex_);
      changed_.wait(lock, [&] { return !full_.empty() || closing_; });
      if (full_.empty()) return;
      chunk = std::move(full_.front());
      full_.pop_front();
    }
    changed_.notify_all();
    try {
      pass_on(chunk);
    } catch (...) {
      std::lock_guard lock(mutex_);
      failure_ = std::current_exception();
      full_.clear();
      closing_ = true;
      changed_.notify_all();
      return;
    }
    std::lock_guard lock(mutex_);
    spare_.push_back(std::move(chunk));
  }
}

void PipelinedSink::stop(bool drain) {
  if (!worker_.joinable()) return;
  {
    std::lock_guard lock(mutex_);
    if (!drain) full_.clear();
    closing_ = true;
  }
  changed_.notify_all();
  worker_.join();
}

void PipelinedSink::rethrow_failure() {
  std::exception_ptr failure;
  {
    std::lock_guard lock(mutex_);
    failure = failure_;
  }
  if (failure) std::rethrow_exception(failure);
}

}  // namespace kbuild::image
