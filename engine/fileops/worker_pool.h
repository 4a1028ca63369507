// A few threads that copy regular files while the tree walk goes on: creating many small files
// is mostly waiting on the file system, which several threads do better than one.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "engine/fileops/file_data.h"

namespace kbuild::fileops {

class WorkerPool {
 public:
  // A job gets its worker's FileDataCopier (buffers and what the devices support).
  using Job = std::function<void(FileDataCopier&)>;

  // Each queued job holds an open file: the bound keeps a copy well below the usual 1024 fds.
  explicit WorkerPool(unsigned threads, std::size_t max_queued = 256);
  // Stops the workers after their current job; jobs still queued are dropped.
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Queues a job, waiting while the queue is full. Rethrows the first error a job threw, after
  // which nothing more is queued.
  void submit(Job job);
  // Waits until every queued job has run; rethrows the first error a job threw.
  void drain();

 private:
  void work();
  void rethrow_locked();

  std::mutex mutex_;
  std::condition_variable work_ready_;
  std::condition_variable space_or_idle_;
  std::deque<Job> queue_;
  std::size_t running_ = 0;
  std::size_t max_queued_;
  bool stopping_ = false;
  std::exception_ptr error_;
  std::vector<std::thread> threads_;
};

}  // namespace kbuild::fileops
