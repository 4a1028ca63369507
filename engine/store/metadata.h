// The daemon's records in SQLite (<root>/metadata.db): image names, the build cache, snapshots,
// lazily made layer blobs and remembered context-file hashes. Every change is one SQLite
// transaction (WAL, synchronous=FULL), so a crash leaves the database as of the last commit.
// Safe to use from several threads: one connection, one operation or Transaction at a time.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/store/digest.h"

struct sqlite3;
struct sqlite3_stmt;

namespace kbuild::store {

using Clock = std::chrono::system_clock;

// What a name such as "docker.io/library/foo:latest" points at.
struct ImageRecord {
  Digest manifest;
  Digest config;
  Clock::time_point created;
  bool operator==(const ImageRecord&) const = default;
};

// What a cache key stands for: a snapshot (empty for ops that make none) and the op's
// metadata as JSON, which the store does not read.
struct CacheResult {
  std::string snapshot_id;
  std::string metadata;
  bool operator==(const CacheResult&) const = default;
};

struct CacheRecord {
  std::string key;
  CacheResult result;
  Clock::time_point created;
  Clock::time_point last_used;
};

// The cache record that holds an image's top snapshot (its layers, unpacked), by config digest.
std::string image_chain_key(const Digest& config);

struct SnapshotRecord {
  std::string id;
  std::optional<std::string> parent;
  std::string kind;               // "layer", "context", ...
  std::optional<Digest> diff_id;  // digest of the uncompressed layer tar, once it was made
  uint64_t size = 0;              // disk usage of its diff/ in bytes
  Clock::time_point created;
  bool unsynced = false;          // committed before a syncfs covered its files (not read back)
  // Read back only: set by mark_snapshot_used (none until the first use).
  std::optional<Clock::time_point> last_used{};
  uint64_t usage_count = 0;
  bool operator==(const SnapshotRecord&) const = default;
};

// A compressed form of a layer, made when it was first exported or pushed.
struct LayerBlob {
  Digest blob;
  std::string media_type;  // e.g. "application/vnd.oci.image.layer.v1.tar+gzip"
  bool operator==(const LayerBlob&) const = default;
};

// A context file as its reader saw it; a hash is remembered only for this exact key, as git's
// index does (plus the reader's uid, since what one user may read another may not).
struct FileKey {
  uint64_t dev = 0;
  uint64_t inode = 0;
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  int64_t ctime_ns = 0;
  uint32_t uid = 0;
  bool operator==(const FileKey&) const = default;
};

struct FileHash {
  FileKey key;
  Digest digest;
};

class MetadataStore {
 public:
  // Groups operations into one SQLite transaction: committed by commit(), rolled back by the
  // destructor otherwise (an exception, an early return). Nests: an inner Transaction is a
  // savepoint. It holds the store for its thread until it ends, so keep it short.
  class Transaction {
   public:
    // Stays on the thread that made it (it holds the store's lock).
    explicit Transaction(MetadataStore& store);
    ~Transaction();
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;
    void commit();

   private:
    MetadataStore& store_;
    std::unique_lock<std::recursive_mutex> lock_;
    int depth_;
    bool done_ = false;
  };

  // The schema version this build writes; older databases are migrated at open.
  static int current_schema_version();

  // Opens (creating or migrating) `path`, normally <root>/metadata.db.
  explicit MetadataStore(const std::string& path);
  ~MetadataStore();
  MetadataStore(const MetadataStore&) = delete;
  MetadataStore& operator=(const MetadataStore&) = delete;

  int schema_version();

  // Image names. The caller normalizes names ("docker.io/library/foo:latest").
  void set_image_name(std::string_view name, const ImageRecord& image);
  std::optional<ImageRecord> image_by_name(std::string_view name);
  void remove_image_name(std::string_view name);
  std::vector<std::pair<std::string, ImageRecord>> list_image_names();  // sorted by name
  std::vector<std::string> names_for_config(const Digest& config);     // sorted

  // Build cache. A result's snapshot must be recorded; removing the snapshot removes the
  // entries that point at it.
  void put_cache(std::string_view key, const CacheResult& result);
  std::optional<CacheResult> get_cache(std::string_view key);  // and marks it used now
  void remove_cache(std::string_view key);
  std::vector<CacheRecord> list_cache();  // sorted by key

  // Snapshots. A parent must be recorded before its children; one with children cannot be removed.
  void add_snapshot(const SnapshotRecord& snapshot);
  void mark_snapshots_synced(const std::vector<std::string>& ids);
  // Everything committed so far is on disk when it returns.
  void make_durable();
  // Snapshots whose files a crash may have lost, newest first.
  std::vector<std::string> unsynced_snapshots();
  std::optional<SnapshotRecord> get_snapshot(std::string_view id);
  void remove_snapshot(std::string_view id);
  std::vector<std::string> children_of(std::string_view id);  // sorted
  std::vector<SnapshotRecord> list_snapshots();               // sorted by id
  void set_snapshot_diff_id(std::string_view id, const Digest& diff_id);
  // A build used the snapshot now (garbage collection removes the least recently used first);
  // false when it is not recorded.
  bool mark_snapshot_used(std::string_view id);

  // Compressed layer blobs by diff_id and media type.
  void put_layer_blob(const Digest& diff_id, const LayerBlob& blob);
  // The blob of `media_type`, or with an empty media type any one of them.
  std::optional<LayerBlob> get_layer_blob(const Digest& diff_id, std::string_view media_type = {});
  // Forgets every mapping to `blob` (when it leaves the content store).
  void remove_layer_blob(const Digest& blob);
  // Whether a record names the blob: a layer blob mapping or an image name's manifest or config.
  bool blob_referenced(const Digest& blob);
  // Whether a recorded snapshot's layer maps to the blob, or an image name's manifest or config
  // is the blob: what garbage collection must leave.
  bool blob_needed(const Digest& blob);
  // Every layer blob mapping: (diff_id, blob), sorted by diff_id.
  std::vector<std::pair<Digest, LayerBlob>> list_layer_blobs();

  // Context-file hashes. Racy-git rule for callers: do not put the hash of a file whose
  // mtime or ctime is not safely in the past (a second or two before it was read), since a
  // change within the timestamp granularity would leave the key unchanged.
  std::optional<Digest> get_file_hash(const FileKey& key);
  void put_file_hashes(std::span<const FileHash> hashes);

 private:
  class Statement;
  class Query;
  struct Statements;
  void exec(const char* sql, std::string_view what);
  static SnapshotRecord read_snapshot(Query& q);
  Query query(const char* sql, std::string_view what, std::string_view subject = {});
  void migrate();

  struct CloseDb {
    void operator()(sqlite3* db) const;
  };

  std::string path_;
  std::unique_ptr<sqlite3, CloseDb> db_;
  std::recursive_mutex mutex_;
  int depth_ = 0;  // open Transactions, guarded by mutex_
  std::unique_ptr<Statements> statements_;  // finalized before db_ is closed
};

}  // namespace kbuild::store
