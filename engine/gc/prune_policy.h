// What a prune removes, decided without touching the store: BuildKit's filters ("type==regular",
// "until=24h"), its --all and keep-storage, and its order (the least recently and least often
// used first). Pure, so that the rules are tested on plain records.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/gc/usage_record.h"

namespace kbuild::gc {

// The filters of `du --filter` and `prune --filter` other than the age: a record matches when
// it matches every key given, and a key given several times when it matches any of its values.
struct RecordFilter {
  std::vector<std::string> types;       // type==X
  std::vector<std::string> not_types;   // type!=X
  std::vector<std::string> ids;         // id==X: X a prefix of the id
  std::vector<std::string> descriptions;  // description~=X: X a part of the description
  std::optional<bool> in_use;           // inuse / !inuse (BuildKit's "inuse" and "idle")
  std::optional<bool> mutable_;         // mutable / immutable
  std::optional<bool> shared;           // shared / private
  bool matches(const UsageRecord& record) const;
  bool empty() const;
};

struct PruneOptions {
  bool all = false;  // also the layers of images without a name
  // Stop once the store's records (but those tagged images share) add up to at most this many
  // bytes; 0: no such limit.
  uint64_t keep_storage = 0;
  // Only records not used for this long (filter until= or unused-for=).
  std::optional<std::chrono::nanoseconds> unused_for;
  RecordFilter filter;
};

// Parses filter values as Docker's --filter gives them ("type=regular", "type!=regular",
// "until=24h", "unused-for=2h30m", "inuse", "description~=apk") into `options`. Throws a user
// error in Docker's words: "invalid filter 'x'", "bad format of filter (expected name=value)",
// "\"until\" filter expects a duration (e.g., '24h'): time: invalid duration \"x\"".
void parse_filters(const std::vector<std::string>& filters, PruneOptions& options);

// The records a prune removes, as indexes into `records`, in the order to remove them: never
// one in use or shared, nor one another remaining record needs (a removal makes its parent
// and blobs removable in turn); without `all` none of an image's; only those matching the
// filters; the least recently used first (then the least often used); and with keep_storage,
// only until the total of the records tagged images do not share is at most keep_storage.
std::vector<size_t> select_for_prune(const std::vector<UsageRecord>& records, const PruneOptions& options,
                                     Clock::time_point now);

}  // namespace kbuild::gc
