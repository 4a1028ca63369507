#include "engine/context/hash_cache.h"

namespace kbuild::context {

std::size_t MemoryHashCache::KeyHash::operator()(const StatKey& k) const {
  std::uint64_t h = 1469598103934665603ull;
  for (std::uint64_t v : {std::uint64_t{k.scope}, k.dev, k.ino, static_cast<std::uint64_t>(k.size),
                          static_cast<std::uint64_t>(k.mtime_ns), static_cast<std::uint64_t>(k.ctime_ns)}) {
    h = (h ^ v) * 1099511628211ull;
    h ^= h >> 29;
  }
  return static_cast<std::size_t>(h);
}

std::optional<store::Digest> MemoryHashCache::get(const StatKey& key) {
  std::lock_guard lock(mutex_);
  auto it = digests_.find(key);
  if (it == digests_.end()) return std::nullopt;
  return it->second;
}

void MemoryHashCache::put(const std::vector<std::pair<StatKey, store::Digest>>& entries) {
  std::lock_guard lock(mutex_);
  for (const auto& [key, digest] : entries) digests_[key] = digest;
}

std::size_t MemoryHashCache::size() const {
  std::lock_guard lock(mutex_);
  return digests_.size();
}

void MemoryHashCache::clear() {
  std::lock_guard lock(mutex_);
  digests_.clear();
}

}  // namespace kbuild::context
