// Content hashes remembered by stat data, so an unchanged context file is never read again.
#pragma once

#include <mutex>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engine/context/manifest.h"
#include "engine/store/digest.h"

namespace kbuild::context {

// The daemon's memory of content digests by StatKey. The context reader asks once per file and
// stores what it hashed in one batch at the end (one transaction for an SQLite backing). Only
// keys the daemon hashed itself, and whose stat data was not too recent to trust, are stored.
class HashCache {
 public:
  virtual ~HashCache() = default;
  virtual std::optional<store::Digest> get(const StatKey& key) = 0;
  virtual void put(const std::vector<std::pair<StatKey, store::Digest>>& entries) = 0;
};

// A HashCache in memory, for tests and for a daemon without a metadata store. Thread-safe.
class MemoryHashCache final : public HashCache {
 public:
  std::optional<store::Digest> get(const StatKey& key) override;
  void put(const std::vector<std::pair<StatKey, store::Digest>>& entries) override;
  std::size_t size() const;
  void clear();

 private:
  struct KeyHash {
    std::size_t operator()(const StatKey& k) const;
  };
  mutable std::mutex mutex_;
  std::unordered_map<StatKey, store::Digest, KeyHash> digests_;
};

}  // namespace kbuild::context
