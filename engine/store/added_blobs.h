// The blobs one operation (a pull, a cache import) adds to the content store, removed again
// unless it completes: a failed one leaves none of its blobs behind. Unless another operation
// in flight claims the same blob too (two pulls of one base, one of them canceled; a pull that
// found the layer stored and skipped it) or a record names it already (the other pull
// completed first): then it stays.
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
    try {
      // Under the lease table's lock, so that no claim or hold slips in between check and removal.
      LeaseTable::Collection collection(store_.leases());
      for (const Digest& digest : claimed_) collection.release_blob_claim(digest);
      if (kept_) return;
      for (const Digest& digest : added_) {
        // Not what leases hold: every active lease holds what this operation stored.
        if (collection.blob_claimed(digest) || store_.metadata().blob_referenced(digest)) continue;
        store_.content().remove(digest);
      }
    } catch (...) {
      // The error that failed the operation is the one to report.
    }
  }
  // A blob this operation stored. Any thread.
  void add(const Digest& digest) {
    store_.leases().claim_blob(digest);
    std::lock_guard lock(mutex_);
    claimed_.push_back(digest);
    added_.push_back(digest);
  }
  // A blob that was stored already and this operation reads: claimed before it is looked for.
  void use(const Digest& digest) {
    store_.leases().claim_blob(digest);
    std::lock_guard lock(mutex_);
    claimed_.push_back(digest);
  }
  void keep() { kept_ = true; }

 private:
  Store& store_;
  std::mutex mutex_;
  std::vector<Digest> claimed_;  // released when the operation ends
  std::vector<Digest> added_;
  bool kept_ = false;
};

}  // namespace kbuild::store
