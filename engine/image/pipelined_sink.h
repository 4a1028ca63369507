// A ByteSink that hands its bytes to another thread: the walk that reads a layer's files and
// the SHA-256 (and gzip) over its tar then run on two cores instead of one.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <utility>
#include <vector>

#include "engine/image/blob_io.h"

namespace kbuild::image {

class PipelinedSink : public ByteSink {
 public:
  // Bytes are passed on to `downstream` in order, from a worker thread, in chunks of
  // `chunk_size`; at most `queue_depth` full chunks wait. The worker starts with the first full
  // chunk, so a small stream never leaves the calling thread.
  explicit PipelinedSink(ByteSink& downstream, size_t chunk_size = 1 << 20, size_t queue_depth = 4);
  // Without finish(), the bytes not yet passed on are dropped.
  ~PipelinedSink() override;
  PipelinedSink(const PipelinedSink&) = delete;
  PipelinedSink& operator=(const PipelinedSink&) = delete;

  // Throws what downstream threw, at the latest by finish().
  void write(const void* data, size_t size) override;
  // The free end of the current chunk, never empty, for a caller that reads straight into it
  // (saving a copy of every file's bytes); commit() then says how much it put there.
  std::span<char> space();
  void commit(size_t size);
  // Runs `reached` on the thread that passes bytes on, right after everything written before
  // this call has been passed on: to look at downstream's state at that point of the stream.
  void mark(std::function<void()> reached);
  // Passes on the rest and waits until downstream has taken everything; rethrows its error.
  void finish();

 private:
  struct Chunk {
    std::unique_ptr<char[]> bytes;
    size_t used = 0;
    std::vector<std::pair<size_t, std::function<void()>>> marks;  // offset in bytes, callback
  };

  void pass_on(Chunk& chunk);
  void hand_off();
  void work();
  // Waits for the worker, after it has passed on the waiting chunks (drain) or dropped them.
  void stop(bool drain);
  void rethrow_failure();

  ByteSink& downstream_;
  const size_t chunk_size_;
  const size_t queue_depth_;
  Chunk current_;

  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Chunk> full_;    // waiting for the worker
  std::vector<Chunk> spare_;  // the worker's empties, reused
  bool closing_ = false;
  std::exception_ptr failure_;
  std::thread worker_;
};

}  // namespace kbuild::image
