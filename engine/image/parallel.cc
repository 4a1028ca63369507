#include "engine/image/parallel.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <future>

namespace kbuild::image {

void run_bounded(const std::vector<std::function<void()>>& jobs, int limit) {
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next++; i < jobs.size(); i = next++) jobs[i]();
  };
  size_t count = std::min<size_t>(static_cast<size_t>(std::max(limit, 1)), jobs.size());
  std::vector<std::future<void>> others;
  for (size_t w = 1; w < count; ++w) others.push_back(std::async(std::launch::async, work));
  std::exception_ptr first;
  try {
    if (count > 0) work();
  } catch (...) {
    first = std::current_exception();
    next = jobs.size();
  }
  for (auto& other : others) {
    try {
      other.get();
    } catch (...) {
      if (!first) first = std::current_exception();
      next = jobs.size();
    }
  }
  if (first) std::rethrow_exception(first);
}

}  // namespace kbuild::image
