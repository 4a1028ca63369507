#include "engine/store/leases.h"

#include <utility>

namespace kbuild::store {

LeaseTable::Lease::Lease(Lease&& other) noexcept
    : table_(std::exchange(other.table_, nullptr)), id_(other.id_) {}

LeaseTable::Lease::~Lease() {
  if (table_) table_->release(id_);
}

bool LeaseTable::Lease::hold_snapshot(const std::string& id) {
  std::lock_guard lock(table_->mutex_);
  if (!table_->metadata_.mark_snapshot_used(id)) return false;
  table_->leases_.at(id_).snapshots.insert(id);
  return true;
}

void LeaseTable::Lease::hold_blob(const Digest& digest) {
  std::lock_guard lock(table_->mutex_);
  table_->leases_.at(id_).blobs.insert(digest);
}

bool LeaseTable::Collection::holds_snapshot(const std::string& id) const {
  for (const auto& [lease, held] : table_.leases_) {
    if (held.snapshots.contains(id)) return true;
  }
  return false;
}

bool LeaseTable::Collection::holds_blob(const Digest& digest) const {
  if (table_.claims_.contains(digest)) return true;
  for (const auto& [lease, held] : table_.leases_) {
    if (held.blobs.contains(digest)) return true;
  }
  return false;
}

void LeaseTable::Collection::release_blob_claim(const Digest& digest) {
  auto it = table_.claims_.find(digest);
  if (it != table_.claims_.end() && --it->second == 0) table_.claims_.erase(it);
}

LeaseTable::Lease LeaseTable::acquire(std::string owner) {
  std::lock_guard lock(mutex_);
  uint64_t id = next_id_++;
  leases_[id].owner = std::move(owner);
  return Lease(this, id);
}

void LeaseTable::made_snapshot(const std::string& id) {
  std::lock_guard lock(mutex_);
  for (auto& [lease, held] : leases_) held.snapshots.insert(id);
}

void LeaseTable::claim_blob(const Digest& digest) {
  std::lock_guard lock(mutex_);
  ++claims_[digest];
}

void LeaseTable::made_blob(const Digest& digest) {
  std::lock_guard lock(mutex_);
  for (auto& [lease, held] : leases_) held.blobs.insert(digest);
}

std::vector<std::string> LeaseTable::owners() {
  std::lock_guard lock(mutex_);
  std::vector<std::string> out;
  for (const auto& [lease, held] : leases_) out.push_back(held.owner);
  return out;
}

void LeaseTable::release(uint64_t id) {
  std::lock_guard lock(mutex_);
  leases_.erase(id);
}

}  // namespace kbuild::store
