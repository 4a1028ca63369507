// The blobs one operation (a pull, a cache import) adds to the content store, removed again
// unless it completes: a failed one leaves none of its blobs behind. Unless another operation
// holds the same blob too (two pulls of one base, one of them canceled) or a record refers to
// it already (the other pull completed first): then it stays.
#pragma once

#include <mutex>
#include <vector>

#include "engine/store/store.h"

namespace kbuild::store {

class AddedBlobs {
 public:
  explicit AddedBlobs(Store& store) : store_(store) {}
  AddedBlobs(const AddedBlobs&) = delete;
  AddedBlobs& operator=(const AddedBlobs&) = delete;
  ~AddedBlobs() {
    if (kept_) return;
    for (const Digest& digest : added_) {
      try {
        // Under the lease table's lock, so that no hold slips in between check and removal.
        LeaseTable::Collection collection(store_.leases());
        // One holder is this operation's own lease (every active lease holds what is made).
        if (collection.blob_holders(digest) > 1 || store_.metadata().blob_referenced(digest)) continue;
        store_.content().remove(digest);
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
  Store& store_;
  std::mutex mutex_;
  std::vector<Digest> added_;
  bool kept_ = false;
};

}  // namespace kbuild::store
