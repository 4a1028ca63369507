#include "engine/fileops/worker_pool.h"

#include <utility>

namespace kbuild::fileops {

WorkerPool::WorkerPool(unsigned threads, std::size_t max_queued) : max_queued_(max_queued) {
  threads_.reserve(threads);
  for (unsigned i = 0; i < threads; ++i) threads_.emplace_back([this] { work(); });
}

WorkerPool::~WorkerPool() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    queue_.clear();
  }
  work_ready_.notify_all();
  space_or_idle_.notify_all();
  for (std::thread& thread : threads_) thread.join();
}

void WorkerPool::rethrow_locked() {
  if (error_) std::rethrow_exception(error_);
}

void WorkerPool::submit(Job job) {
  std::unique_lock lock(mutex_);
  space_or_idle_.wait(lock, [this] { return queue_.size() < max_queued_ || error_ || stopping_; });
  rethrow_locked();
  queue_.push_back(std::move(job));
  lock.unlock();
  work_ready_.notify_one();
}

void WorkerPool::drain() {
  std::unique_lock lock(mutex_);
  space_or_idle_.wait(lock, [this] { return (queue_.empty() && running_ == 0) || stopping_; });
  rethrow_locked();
}

void WorkerPool::work() {
  FileDataCopier copier;
  std::unique_lock lock(mutex_);
  for (;;) {
    work_ready_.wait(lock, [this] { return !queue_.empty() || stopping_; });
    if (stopping_) return;
    Job job = std::move(queue_.front());
    queue_.pop_front();
    ++running_;
    lock.unlock();
    std::exception_ptr failure;
    try {
      job(copier);
    } catch (...) {
      failure = std::current_exception();
    }
    job = nullptr;  // release what the job held before reporting it done
    lock.lock();
    --running_;
    if (failure && !error_) {
      error_ = failure;
      queue_.clear();  // the copy has failed: the rest is not worth doing
    }
    space_or_idle_.notify_all();
  }
}

}  // namespace kbuild::fileops
