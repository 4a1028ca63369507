// An imported cache hit made local: its layer chain extracted into snapshots, as a pull
// extracts an image's, so that steps can run on it and exports can list its blobs.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "engine/remotecache/cache_config.h"
#include "engine/remotecache/cache_store.h"
#include "engine/store/store.h"

namespace kbuild::remotecache {

struct MaterializeOptions {
  int max_concurrent_downloads = 3;
  std::function<bool()> canceled;
  // A status line per blob: "pulling sha256:...", bytes so far and in all.
  std::function<void(const std::string& id, int64_t current, int64_t total, bool done)> progress;
};

// The snapshot whose chain is `chain` (bottom first; nullopt for an empty chain). The longest
// prefix the store already has (from a pull or an earlier import) is reused; the other blobs
// are fetched from `source` unless stored, each extracted as it arrives and verified against
// its diff_id, so that a cache cannot pass one layer off as another. Nothing of a chain that
// fails remains.
std::optional<std::string> materialize_chain(store::Store& store, CacheSource& source,
                                             const std::vector<CacheLayer>& chain, const MaterializeOptions& options);

}  // namespace kbuild::remotecache
