// Leases: what in-flight operations (a build, a pull, a load) hold in the store, so that
// garbage collection never removes it under them. As containerd's leases, with one difference:
// the snapshots and blobs an operation makes are not handed to it one by one; everything made
// while a lease is active is held by it (and by every other lease active then), from before
// it is named until the lease ends. That over-holds a little and never misses a path that makes
// content. What existed before an operation started and it goes on to use (a cache hit, a base
// image) it holds with hold_snapshot(), which fails when a collection has removed it.
//
// Collection takes the table's lock (Collection) for each removal decision and removal, so a
// hold either comes first (and the content stays) or after (and finds it gone).
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "engine/store/digest.h"
#include "engine/store/metadata.h"

namespace kbuild::store {

class LeaseTable {
 public:
  // Held by one operation until destroyed. Move-only; any thread.
  class Lease {
   public:
    Lease(Lease&& other) noexcept;
    Lease& operator=(Lease&&) = delete;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease();

    // Holds a recorded snapshot (and so its ancestors, which a child keeps) and marks it used;
    // false when it is not recorded (a collection removed it): the caller treats it as absent.
    bool hold_snapshot(const std::string& id);
    // Holds a stored blob the operation goes on to read (an existing layer a pull skips).
    void hold_blob(const Digest& digest);
    uint64_t id() const { return id_; }

   private:
    friend class LeaseTable;
    Lease(LeaseTable* table, uint64_t id) : table_(table), id_(id) {}
    LeaseTable* table_;  // null once moved from
    uint64_t id_;
  };

  // The lock a collection holds while it decides on and removes one thing.
  class Collection {
   public:
    explicit Collection(LeaseTable& table) : table_(table), lock_(table.mutex_) {}
    bool holds_snapshot(const std::string& id) const;
    bool holds_blob(const Digest& digest) const;
    // Drops one claim on a blob (see claim_blob); whether any remains.
    void release_blob_claim(const Digest& digest);
    bool blob_claimed(const Digest& digest) const { return table_.claims_.contains(digest); }

   private:
    LeaseTable& table_;
    std::unique_lock<std::mutex> lock_;
  };

  explicit LeaseTable(MetadataStore& metadata) : metadata_(metadata) {}
  LeaseTable(const LeaseTable&) = delete;
  LeaseTable& operator=(const LeaseTable&) = delete;

  // `owner` says who holds it ("build 3f2a...", "pull alpine"), for du and logs.
  Lease acquire(std::string owner);
  // Called by the snapshot and content stores with a name they are about to make visible,
  // before any record of it exists.
  void made_snapshot(const std::string& id);
  void made_blob(const Digest& digest);
  // An operation goes on to read a blob that was stored already (a layer a pull skips): held
  // as a new one is. Check that it is still there afterwards.
  void used_blob(const Digest& digest) { made_blob(digest); }
  // A pull or import stores or reads the blob and, should it fail, removes what it stored
  // unless another one claims it too: counted per operation (AddedBlobs), not per lease, since
  // every lease holds every blob made while it is active.
  void claim_blob(const Digest& digest);
  // The owners of the active leases, for du's descriptions and tests.
  std::vector<std::string> owners();

 private:
  struct Held {
    std::string owner;
    std::set<std::string> snapshots;
    std::set<Digest> blobs;
  };
  void release(uint64_t id);

  MetadataStore& metadata_;
  mutable std::mutex mutex_;
  uint64_t next_id_ = 1;
  std::map<uint64_t, Held> leases_;
  std::map<Digest, size_t> claims_;
};

}  // namespace kbuild::store
