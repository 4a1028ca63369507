// Running independent jobs side by side, a bounded number at a time.
#pragma once

#include <functional>
#include <vector>

namespace kbuild::image {

// Runs `jobs` with at most `limit` at once (the calling thread is one of them). After the first
// failure no job starts; that failure is rethrown once the running ones have ended.
void run_bounded(const std::vector<std::function<void()>>& jobs, int limit);

}  // namespace kbuild::image
