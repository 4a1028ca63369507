// One record of the store as `du` lists it and prune removes it, as BuildKit's UsageInfo: a
// snapshot, a blob of the content store, a cache mount's directory, or a remembered context
// directory (store::LocalSources).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kbuild::gc {

using Clock = std::chrono::system_clock;

// BuildKit's record types (client.UsageRecordType) that this store has.
inline constexpr const char* kTypeRegular = "regular";
inline constexpr const char* kTypeCacheMount = "exec.cachemount";
inline constexpr const char* kTypeLocalSource = "source.local";

struct UsageRecord {
  enum class Kind { snapshot, blob, cache_mount, local_source };
  Kind kind = Kind::snapshot;
  // A snapshot's id, a blob's digest ("sha256:..."), a cache mount's or context's directory name.
  std::string id;
  std::vector<std::string> parents;  // a snapshot's parent: what du shows as Parent
  // Records that must stay as long as this one does: a snapshot's parent and its layer's blobs.
  std::vector<std::string> needs;
  Clock::time_point created;
  std::optional<Clock::time_point> last_used;
  uint64_t usage_count = 0;
  uint64_t size = 0;  // bytes on disk
  bool mutable_ = false;  // a cache mount, written by the steps that mount it
  bool in_use = false;    // held by an in-flight operation (or needed by what is)
  bool shared = false;    // part of a tagged image: never pruned
  // Part of an image without a name (a dangling one): pruned only with --all.
  bool image = false;
  std::string type = kTypeRegular;
  std::string description;

  // What age filters and ordering go by: the last use, or the making when never used.
  Clock::time_point last_activity() const { return last_used.value_or(created); }
};

}  // namespace kbuild::gc
