// The blobs one operation (a pull, a cache import) adds to the content store, removed again
// unless it completes: a failed one leaves none of its blobs behind (the store has no garbage
// collection yet).
#pragma once

#include <mutex>
#include <vector>

#include "engine/store/content_store.h"

namespace kbuild::store {

class AddedBlobs {
 public:
  explicit AddedBlobs(ContentStore& content) : content_(content) {}
  AddedBlobs(const AddedBlobs&) = delete;
  AddedBlobs& operator=(const AddedBlobs&) = delete;
  ~AddedBlobs() {
    if (kept_) return;
    for (const Digest& digest : added_) {
      try {
        content_.remove(digest);
      } catch (...) {
        // The error that failed the operation is the one to report.
      }
    }
  }
  // Any thread.
  void add(const Digest& digest) {
    std::lock_guard lock(mutex_);
    added_.push_back(digest);
  }
  void keep() { kept_ = true; }

 private:
  ContentStore& content_;
  std::mutex mutex_;
  std::vector<Digest> added_;
  bool kept_ = false;
};

}  // namespace kbuild::store
