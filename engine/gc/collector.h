// Garbage collection of a store: its records as `du` lists them, and prune / image prune,
// which remove what prune_policy selects while in-flight operations hold theirs (leases).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/gc/prune_policy.h"
#include "engine/gc/usage_record.h"
#include "engine/store/local_sources.h"
#include "engine/store/store.h"

namespace kbuild::gc {

// Every snapshot, blob and cache mount of the store, and the context directories `sources`
// remembers (when given), sorted by id: sizes on disk (blocks, hard links once per record),
// what holds them, which tagged images share them.
std::vector<UsageRecord> collect_usage(store::Store& store, store::LocalSources* sources = nullptr);

struct PruneResult {
  std::vector<UsageRecord> removed;  // in the order removed
  uint64_t reclaimed = 0;            // bytes
};

// Removes the records select_for_prune picks. Each removal is decided again under the lease
// table's lock (a context directory's under the cache's): a record an operation came to hold
// meanwhile stays.
PruneResult prune(store::Store& store, const PruneOptions& options, store::LocalSources* sources = nullptr);

struct ImagePruneResult {
  std::vector<std::string> deleted;  // Docker's lines: "untagged: alpine:latest", "deleted: sha256:..."
  uint64_t reclaimed = 0;
};

// docker image prune: the images without a name (dangling), or with `all` every image no
// in-flight operation uses (untagging it), and then what only they held: their manifests,
// configs and layer blobs, and their layers that no build cache entry uses.
ImagePruneResult prune_images(store::Store& store, bool all);

}  // namespace kbuild::gc
