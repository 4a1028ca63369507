#include "engine/store/metadata.h"

#include <sqlite3.h>

#include <iterator>
#include <unordered_map>

#include "common/error.h"

namespace kbuild::store {
namespace {

// Migration i takes the schema from version i to i + 1; all pending ones run in one transaction.
// Append new migrations; never edit one that has shipped.
const char* const kMigrations[] = {
    R"sql(
CREATE TABLE images (
  name TEXT PRIMARY KEY,
  manifest_digest TEXT NOT NULL,
  config_digest TEXT NOT NULL,
  created_ns INTEGER NOT NULL
);
CREATE INDEX images_by_config ON images(config_digest);

CREATE TABLE snapshots (
  id TEXT PRIMARY KEY,
  parent TEXT REFERENCES snapshots(id),
  kind TEXT NOT NULL,
  diff_id TEXT,
  size INTEGER NOT NULL,
  created_ns INTEGER NOT NULL
);
CREATE INDEX snapshots_by_parent ON snapshots(parent);

CREATE TABLE cache (
  key TEXT PRIMARY KEY,
  snapshot_id TEXT REFERENCES snapshots(id) ON DELETE CASCADE,
  metadata TEXT NOT NULL,
  created_ns INTEGER NOT NULL,
  last_used_ns INTEGER NOT NULL
);
CREATE INDEX cache_by_snapshot ON cache(snapshot_id);

CREATE TABLE layer_blobs (
  diff_id TEXT NOT NULL,
  media_type TEXT NOT NULL,
  blob_digest TEXT NOT NULL,
  PRIMARY KEY (diff_id, media_type)
) WITHOUT ROWID;
CREATE INDEX layer_blobs_by_blob ON layer_blobs(blob_digest);

-- One row per file and reader: a changed file replaces its row instead of adding one.
CREATE TABLE file_hashes (
  dev INTEGER NOT NULL,
  inode INTEGER NOT NULL,
  uid INTEGER NOT NULL,
  size INTEGER NOT NULL,
  mtime_ns INTEGER NOT NULL,
  ctime_ns INTEGER NOT NULL,
  digest TEXT NOT NULL,
  PRIMARY KEY (dev, inode, uid)
) WITHOUT ROWID;
)sql",
    // Snapshots committed without a syncfs of their own, until a later one covers them.
    R"sql(
ALTER TABLE snapshots ADD COLUMN unsynced INTEGER NOT NULL DEFAULT 0;
)sql",
    // What garbage collection orders by: when a build last used a snapshot, and how often.
    R"sql(
ALTER TABLE snapshots ADD COLUMN last_used_ns INTEGER NOT NULL DEFAULT 0;
ALTER TABLE snapshots ADD COLUMN usage_count INTEGER NOT NULL DEFAULT 0;
)sql",
};

constexpr int kSchemaVersion = static_cast<int>(std::size(kMigrations));

int64_t to_ns(Clock::time_point time) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(time.time_since_epoch()).count();
}

Clock::time_point from_ns(int64_t ns) {
  return Clock::time_point(std::chrono::duration_cast<Clock::duration>(std::chrono::nanoseconds(ns)));
}

}  // namespace

// A prepared statement, kept for the life of the connection and finalized with it.
class MetadataStore::Statement {
 public:
  explicit Statement(sqlite3_stmt* stmt) : stmt_(stmt) {}
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(Statement&& other) noexcept : stmt_(std::exchange(other.stmt_, nullptr)) {}
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  Statement& operator=(Statement&&) = delete;
  sqlite3_stmt* get() const { return stmt_; }

 private:
  sqlite3_stmt* stmt_;
};

// Keyed by the address of the SQL literal: each call site prepares its statement once.
struct MetadataStore::Statements {
  std::unordered_map<const char*, Statement> by_sql;
};

// One use of a cached statement: binds, steps, reads columns, and resets it when done. Errors
// read "metadata: <what> <subject>: <sqlite message>".
class MetadataStore::Query {
 public:
  Query(sqlite3* db, sqlite3_stmt* stmt, std::string_view what, std::string_view subject)
      : db_(db), stmt_(stmt), what_(what), subject_(subject) {}
  ~Query() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  Query(const Query&) = delete;
  Query& operator=(const Query&) = delete;

  Query& bind(int index, std::string_view text) {
    // A null pointer would bind SQL NULL; an empty string_view may have one.
    const char* data = text.data() ? text.data() : "";
    return checked(sqlite3_bind_text(stmt_, index, data, static_cast<int>(text.size()), SQLITE_TRANSIENT));
  }
  Query& bind(int index, const char* text) { return bind(index, std::string_view(text)); }
  Query& bind(int index, const std::string& text) { return bind(index, std::string_view(text)); }
  Query& bind(int index, int64_t value) { return checked(sqlite3_bind_int64(stmt_, index, value)); }
  Query& bind(int index, uint64_t value) { return bind(index, static_cast<int64_t>(value)); }
  Query& bind(int index, const Digest& digest) {
    if (digest.empty()) throw Error(ErrorKind::internal, context() + ": empty digest");
    return bind(index, std::string_view(digest.str()));
  }
  Query& bind(int index, Clock::time_point time) { return bind(index, to_ns(time)); }
  template <typename T>
  Query& bind(int index, const std::optional<T>& value) {
    if (!value) return checked(sqlite3_bind_null(stmt_, index));
    return bind(index, *value);
  }

  // True while there is a row to read.
  bool step() {
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    fail();
  }
  void run() {
    while (step()) {
    }
  }

  bool is_null(int column) { return sqlite3_column_type(stmt_, column) == SQLITE_NULL; }
  int64_t integer(int column) { return sqlite3_column_int64(stmt_, column); }
  std::string text(int column) {
    auto* data = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, column));
    return data ? std::string(data, static_cast<size_t>(sqlite3_column_bytes(stmt_, column))) : std::string();
  }
  std::optional<std::string> optional_text(int column) {
    if (is_null(column)) return std::nullopt;
    return text(column);
  }
  Digest digest(int column) {
    std::string value = text(column);
    try {
      return Digest::parse(value);
    } catch (const Error&) {
      throw Error(ErrorKind::internal, context() + ": corrupt digest \"" + value + "\" in the database");
    }
  }
  Clock::time_point time(int column) { return from_ns(integer(column)); }

 private:
  Query& checked(int rc) {
    if (rc != SQLITE_OK) fail();
    return *this;
  }
  std::string context() const {
    std::string message = "metadata: ";
    message += what_;
    if (!subject_.empty()) {
      message += " ";
      message += subject_;
    }
    return message;
  }
  [[noreturn]] void fail() { throw Error(ErrorKind::internal, context() + ": " + sqlite3_errmsg(db_)); }

  sqlite3* db_;
  sqlite3_stmt* stmt_;
  std::string_view what_;
  std::string_view subject_;
};

void MetadataStore::CloseDb::operator()(sqlite3* db) const { sqlite3_close_v2(db); }

int MetadataStore::current_schema_version() { return kSchemaVersion; }

MetadataStore::MetadataStore(const std::string& path) : path_(path), statements_(std::make_unique<Statements>()) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX | SQLITE_OPEN_NOFOLLOW,
                           nullptr);
  db_.reset(db);
  if (rc != SQLITE_OK) {
    throw Error(ErrorKind::internal,
                "metadata: opening " + path + ": " + (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc)));
  }
  sqlite3_extended_result_codes(db, 1);
  // The daemon is the only writer; the wait covers a tool reading the database meanwhile.
  sqlite3_busy_timeout(db, 10000);
  exec("PRAGMA journal_mode=WAL", "enabling WAL");
  // NORMAL: commits reach the disk at the next checkpoint, not each with an fsync (a build
  // commits several per step). A power loss rolls back a suffix of transactions, never half
  // of one; snapshots that relied on later syncs are marked unsynced until then. The one
  // file-system step that needs its record on disk first (removing a snapshot's directory)
  // asks for it with make_durable().
  exec("PRAGMA synchronous=NORMAL", "setting synchronous");
  exec("PRAGMA foreign_keys=ON", "enabling foreign keys");
  migrate();
}

MetadataStore::~MetadataStore() = default;

void MetadataStore::exec(const char* sql, std::string_view what) {
  char* message = nullptr;
  if (sqlite3_exec(db_.get(), sql, nullptr, nullptr, &message) != SQLITE_OK) {
    std::string text = message ? message : sqlite3_errmsg(db_.get());
    sqlite3_free(message);
    throw Error(ErrorKind::internal, "metadata: " + std::string(what) + ": " + text);
  }
}

MetadataStore::Query MetadataStore::query(const char* sql, std::string_view what, std::string_view subject) {
  auto found = statements_->by_sql.find(sql);
  if (found == statements_->by_sql.end()) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v3(db_.get(), sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr) != SQLITE_OK) {
      throw Error(ErrorKind::internal, "metadata: preparing statement for " + std::string(what) + ": " +
                                           sqlite3_errmsg(db_.get()));
    }
    found = statements_->by_sql.emplace(sql, Statement(stmt)).first;
  }
  return Query(db_.get(), found->second.get(), what, subject);
}

void MetadataStore::migrate() {
  Transaction tx(*this);
  exec("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)", "creating the schema version table");
  int version = 0;
  {
    auto q = query("SELECT version FROM schema_version", "reading the schema version");
    if (q.step()) {
      version = static_cast<int>(q.integer(0));
    } else {
      query("INSERT INTO schema_version (version) VALUES (0)", "recording the schema version").run();
    }
  }
  if (version > kSchemaVersion) {
    throw Error(ErrorKind::internal, "metadata: " + path_ + " has schema version " + std::to_string(version) +
                                         ", newer than this kbuildd knows (" + std::to_string(kSchemaVersion) +
                                         "); was a newer kbuild installed before?");
  }
  for (; version < kSchemaVersion; ++version) {
    exec(kMigrations[version], ("migrating the schema to version " + std::to_string(version + 1)).c_str());
  }
  query("UPDATE schema_version SET version = ?", "recording the schema version").bind(1, int64_t{version}).run();
  tx.commit();
}

int MetadataStore::schema_version() {
  std::lock_guard lock(mutex_);
  auto q = query("SELECT version FROM schema_version", "reading the schema version");
  return q.step() ? static_cast<int>(q.integer(0)) : 0;
}

// ---- Transaction ----

MetadataStore::Transaction::Transaction(MetadataStore& store)
    : store_(store), lock_(store.mutex_), depth_(store.depth_) {
  if (depth_ == 0) {
    // IMMEDIATE: take the write lock now, so a busy database waits here, not at COMMIT.
    store_.exec("BEGIN IMMEDIATE", "beginning a transaction");
  } else {
    store_.exec(("SAVEPOINT tx" + std::to_string(depth_)).c_str(), "beginning a nested transaction");
  }
  ++store_.depth_;
}

void MetadataStore::Transaction::commit() {
  if (done_) throw Error(ErrorKind::internal, "metadata: transaction committed twice");
  if (depth_ == 0) {
    store_.exec("COMMIT", "committing a transaction");
  } else {
    store_.exec(("RELEASE tx" + std::to_string(depth_)).c_str(), "committing a nested transaction");
  }
  done_ = true;
  --store_.depth_;
}

MetadataStore::Transaction::~Transaction() {
  if (done_) return;
  --store_.depth_;
  sqlite3* db = store_.db_.get();
  // After some errors (disk full, I/O) SQLite has already rolled the whole transaction back.
  if (sqlite3_get_autocommit(db)) return;
  if (depth_ == 0) {
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
  } else {
    std::string name = "tx" + std::to_string(depth_);
    sqlite3_exec(db, ("ROLLBACK TO " + name + "; RELEASE " + name).c_str(), nullptr, nullptr, nullptr);
  }
}

// ---- images ----

void MetadataStore::set_image_name(std::string_view name, const ImageRecord& image) {
  Transaction tx(*this);
  query(R"sql(INSERT INTO images (name, manifest_digest, config_digest, created_ns) VALUES (?, ?, ?, ?)
              ON CONFLICT (name) DO UPDATE SET manifest_digest = excluded.manifest_digest,
                config_digest = excluded.config_digest, created_ns = excluded.created_ns)sql",
        "inserting image", name)
      .bind(1, name)
      .bind(2, image.manifest)
      .bind(3, image.config)
      .bind(4, image.created)
      .run();
  tx.commit();
}

std::optional<ImageRecord> MetadataStore::image_by_name(std::string_view name) {
  std::lock_guard lock(mutex_);
  auto q = query("SELECT manifest_digest, config_digest, created_ns FROM images WHERE name = ?", "reading image",
                 name);
  q.bind(1, name);
  if (!q.step()) return std::nullopt;
  return ImageRecord{q.digest(0), q.digest(1), q.time(2)};
}

void MetadataStore::remove_image_name(std::string_view name) {
  Transaction tx(*this);
  query("DELETE FROM images WHERE name = ?", "removing image", name).bind(1, name).run();
  tx.commit();
}

std::vector<std::pair<std::string, ImageRecord>> MetadataStore::list_image_names() {
  std::lock_guard lock(mutex_);
  auto q = query("SELECT name, manifest_digest, config_digest, created_ns FROM images ORDER BY name",
                 "listing images");
  std::vector<std::pair<std::string, ImageRecord>> images;
  while (q.step()) images.emplace_back(q.text(0), ImageRecord{q.digest(1), q.digest(2), q.time(3)});
  return images;
}

std::vector<std::string> MetadataStore::names_for_config(const Digest& config) {
  std::lock_guard lock(mutex_);
  auto q = query("SELECT name FROM images WHERE config_digest = ? ORDER BY name", "listing names of config",
                 config.str());
  q.bind(1, config);
  std::vector<std::string> names;
  while (q.step()) names.push_back(q.text(0));
  return names;
}

// ---- cache ----

void MetadataStore::put_cache(std::string_view key, const CacheResult& result) {
  Transaction tx(*this);
  if (!result.snapshot_id.empty() && !get_snapshot(result.snapshot_id)) {
    throw Error(ErrorKind::not_found, "metadata: inserting cache key " + std::string(key) + ": snapshot " +
                                          result.snapshot_id + " is not recorded");
  }
  int64_t now = to_ns(Clock::now());
  query(R"sql(INSERT INTO cache (key, snapshot_id, metadata, created_ns, last_used_ns) VALUES (?, ?, ?, ?, ?)
              ON CONFLICT (key) DO UPDATE SET snapshot_id = excluded.snapshot_id, metadata = excluded.metadata,
                last_used_ns = excluded.last_used_ns)sql",
        "inserting cache key", key)
      .bind(1, key)
      .bind(2, result.snapshot_id.empty() ? std::optional<std::string>() : result.snapshot_id)
      .bind(3, result.metadata)
      .bind(4, now)
      .bind(5, now)
      .run();
  tx.commit();
}

std::optional<CacheResult> MetadataStore::get_cache(std::string_view key) {
  Transaction tx(*this);
  std::optional<CacheResult> result;
  {
    auto q = query("SELECT snapshot_id, metadata FROM cache WHERE key = ?", "reading cache key", key);
    q.bind(1, key);
    if (!q.step()) return std::nullopt;
    result = CacheResult{q.optional_text(0).value_or(""), q.text(1)};
  }
  query("UPDATE cache SET last_used_ns = ? WHERE key = ?", "marking cache key used", key)
      .bind(1, to_ns(Clock::now()))
      .bind(2, key)
      .run();
  tx.commit();
  return result;
}

void MetadataStore::remove_cache(std::string_view key) {
  Transaction tx(*this);
  query("DELETE FROM cache WHERE key = ?", "removing cache key", key).bind(1, key).run();
  tx.commit();
}

std::vector<CacheRecord> MetadataStore::list_cache() {
  std::lock_guard lock(mutex_);
  auto q = query("SELECT key, snapshot_id, metadata, created_ns, last_used_ns FROM cache ORDER BY key",
                 "listing the cache");
  std::vector<CacheRecord> records;
  while (q.step()) {
    records.push_back(CacheRecord{q.text(0), CacheResult{q.optional_text(1).value_or(""), q.text(2)}, q.time(3),
                                  q.time(4)});
  }
  return records;
}

// ---- snapshots ----

// The columns read_snapshot reads, in its order.
#define SNAPSHOT_COLUMNS "id, parent, kind, diff_id, size, created_ns, last_used_ns, usage_count"

SnapshotRecord MetadataStore::read_snapshot(Query& q) {
  SnapshotRecord record{q.text(0), q.optional_text(1), q.text(2), std::nullopt,
                        static_cast<uint64_t>(q.integer(4)), q.time(5)};
  if (!q.is_null(3)) record.diff_id = q.digest(3);
  if (q.integer(6)) record.last_used = q.time(6);
  record.usage_count = static_cast<uint64_t>(q.integer(7));
  return record;
}

bool MetadataStore::mark_snapshot_used(std::string_view id) {
  Transaction tx(*this);
  query("UPDATE snapshots SET last_used_ns = ?, usage_count = usage_count + 1 WHERE id = ?",
        "marking snapshot used", id)
      .bind(1, to_ns(Clock::now()))
      .bind(2, id)
      .run();
  bool found = sqlite3_changes(db_.get()) > 0;
  tx.commit();
  return found;
}

void MetadataStore::make_durable() {
  std::lock_guard lock(mutex_);
  // A checkpoint fsyncs the WAL before anything else.
  int rc = sqlite3_wal_checkpoint_v2(db_.get(), nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
  if (rc != SQLITE_OK && rc != SQLITE_BUSY) {
    throw Error(ErrorKind::internal, std::string("metadata: checkpoint: ") + sqlite3_errmsg(db_.get()));
  }
}

void MetadataStore::mark_snapshots_synced(const std::vector<std::string>& ids) {
  Transaction tx(*this);
  for (const std::string& id : ids) {
    query("UPDATE snapshots SET unsynced = 0 WHERE id = ?", "marking snapshot synced", id).bind(1, id).run();
  }
  tx.commit();
}

std::vector<std::string> MetadataStore::unsynced_snapshots() {
  std::lock_guard lock(mutex_);
  std::vector<std::string> ids;
  auto q = query("SELECT id FROM snapshots WHERE unsynced != 0 ORDER BY created_ns DESC", "listing unsynced snapshots");
  while (q.step()) ids.push_back(q.text(0));
  return ids;
}

void MetadataStore::add_snapshot(const SnapshotRecord& snapshot) {
  Transaction tx(*this);
  if (snapshot.parent && !get_snapshot(*snapshot.parent)) {
    throw Error(ErrorKind::not_found, "metadata: adding snapshot " + snapshot.id + ": parent " + *snapshot.parent +
                                          " is not recorded");
  }
  query("INSERT INTO snapshots (id, parent, kind, diff_id, size, created_ns, unsynced) VALUES (?, ?, ?, ?, ?, ?, ?)",
        "adding snapshot", snapshot.id)
      .bind(1, snapshot.id)
      .bind(2, snapshot.parent)
      .bind(3, snapshot.kind)
      .bind(4, snapshot.diff_id)
      .bind(5, snapshot.size)
      .bind(6, snapshot.created)
      .bind(7, int64_t{snapshot.unsynced ? 1 : 0})
      .run();
  tx.commit();
}

std::optional<SnapshotRecord> MetadataStore::get_snapshot(std::string_view id) {
  std::lock_guard lock(mutex_);
  auto q = query("SELECT " SNAPSHOT_COLUMNS " FROM snapshots WHERE id = ?", "reading snapshot", id);
  q.bind(1, id);
  if (!q.step()) return std::nullopt;
  return read_snapshot(q);
}

void MetadataStore::remove_snapshot(std::string_view id) {
  Transaction tx(*this);
  auto children = children_of(id);
  if (!children.empty()) {
    throw Error(ErrorKind::internal, "metadata: removing snapshot " + std::string(id) + ": it is the parent of " +
                                         std::to_string(children.size()) + " snapshot(s), e.g. " + children[0]);
  }
  query("DELETE FROM snapshots WHERE id = ?", "removing snapshot", id).bind(1, id).run();
  tx.commit();
}

std::vector<std::string> MetadataStore::children_of(std::string_view id) {
  std::lock_guard lock(mutex_);
  auto q = query("SELECT id FROM snapshots WHERE parent = ? ORDER BY id", "listing children of snapshot", id);
  q.bind(1, id);
  std::vector<std::string> children;
  while (q.step()) children.push_back(q.text(0));
  return children;
}

std::vector<SnapshotRecord> MetadataStore::list_snapshots() {
  std::lock_guard lock(mutex_);
  auto q = query("SELECT " SNAPSHOT_COLUMNS " FROM snapshots ORDER BY id", "listing snapshots");
  std::vector<SnapshotRecord> records;
  while (q.step()) records.push_back(read_snapshot(q));
  return records;
}

void MetadataStore::set_snapshot_diff_id(std::string_view id, const Digest& diff_id) {
  Transaction tx(*this);
  query("UPDATE snapshots SET diff_id = ? WHERE id = ?", "setting the diff id of snapshot", id)
      .bind(1, diff_id)
      .bind(2, id)
      .run();
  if (sqlite3_changes(db_.get()) == 0) {
    throw Error(ErrorKind::not_found, "metadata: setting the diff id of snapshot " + std::string(id) +
                                          ": no such snapshot");
  }
  tx.commit();
}

// ---- layer blobs ----

void MetadataStore::put_layer_blob(const Digest& diff_id, const LayerBlob& blob) {
  Transaction tx(*this);
  query(R"sql(INSERT INTO layer_blobs (diff_id, media_type, blob_digest) VALUES (?, ?, ?)
              ON CONFLICT (diff_id, media_type) DO UPDATE SET blob_digest = excluded.blob_digest)sql",
        "inserting layer blob for", diff_id.str())
      .bind(1, diff_id)
      .bind(2, blob.media_type)
      .bind(3, blob.blob)
      .run();
  tx.commit();
}

std::optional<LayerBlob> MetadataStore::get_layer_blob(const Digest& diff_id, std::string_view media_type) {
  std::lock_guard lock(mutex_);
  auto q = query(R"sql(SELECT blob_digest, media_type FROM layer_blobs
                       WHERE diff_id = ?1 AND (?2 = '' OR media_type = ?2) ORDER BY media_type LIMIT 1)sql",
                 "reading layer blob for", diff_id.str());
  q.bind(1, diff_id).bind(2, media_type);
  if (!q.step()) return std::nullopt;
  return LayerBlob{q.digest(0), q.text(1)};
}

void MetadataStore::remove_layer_blob(const Digest& blob) {
  Transaction tx(*this);
  query("DELETE FROM layer_blobs WHERE blob_digest = ?", "removing layer blob", blob.str()).bind(1, blob).run();
  tx.commit();
}

bool MetadataStore::blob_referenced(const Digest& blob) {
  std::lock_guard lock(mutex_);
  auto q = query(R"sql(SELECT 1 WHERE EXISTS (SELECT 1 FROM layer_blobs WHERE blob_digest = ?1)
                       OR EXISTS (SELECT 1 FROM images WHERE manifest_digest = ?1 OR config_digest = ?1))sql",
                 "looking up references to blob", blob.str());
  q.bind(1, blob);
  return q.step();
}

bool MetadataStore::blob_needed(const Digest& blob) {
  std::lock_guard lock(mutex_);
  auto q = query(R"sql(SELECT 1 WHERE EXISTS (SELECT 1 FROM layer_blobs JOIN snapshots ON snapshots.diff_id = layer_blobs.diff_id
                                     WHERE layer_blobs.blob_digest = ?1)
                       OR EXISTS (SELECT 1 FROM images WHERE manifest_digest = ?1 OR config_digest = ?1))sql",
                 "looking up what needs blob", blob.str());
  q.bind(1, blob);
  return q.step();
}

std::vector<std::pair<Digest, LayerBlob>> MetadataStore::list_layer_blobs() {
  std::lock_guard lock(mutex_);
  auto q = query("SELECT diff_id, blob_digest, media_type FROM layer_blobs ORDER BY diff_id, media_type",
                 "listing layer blobs");
  std::vector<std::pair<Digest, LayerBlob>> out;
  while (q.step()) out.emplace_back(q.digest(0), LayerBlob{q.digest(1), q.text(2)});
  return out;
}

// ---- context file hashes ----

std::optional<Digest> MetadataStore::get_file_hash(const FileKey& key) {
  std::lock_guard lock(mutex_);
  auto q = query(R"sql(SELECT digest FROM file_hashes WHERE dev = ? AND inode = ? AND uid = ?
                       AND size = ? AND mtime_ns = ? AND ctime_ns = ?)sql",
                 "reading a file hash");
  q.bind(1, key.dev).bind(2, key.inode).bind(3, int64_t{key.uid}).bind(4, key.size);
  q.bind(5, key.mtime_ns).bind(6, key.ctime_ns);
  if (!q.step()) return std::nullopt;
  return q.digest(0);
}

void MetadataStore::put_file_hashes(std::span<const FileHash> hashes) {
  if (hashes.empty()) return;
  Transaction tx(*this);
  for (const auto& hash : hashes) {
    query(R"sql(INSERT OR REPLACE INTO file_hashes (dev, inode, uid, size, mtime_ns, ctime_ns, digest)
                VALUES (?, ?, ?, ?, ?, ?, ?))sql",
          "inserting file hashes")
        .bind(1, hash.key.dev)
        .bind(2, hash.key.inode)
        .bind(3, int64_t{hash.key.uid})
        .bind(4, hash.key.size)
        .bind(5, hash.key.mtime_ns)
        .bind(6, hash.key.ctime_ns)
        .bind(7, hash.digest)
        .run();
  }
  tx.commit();
}

std::string image_chain_key(const Digest& config) { return "image-chain:" + config.str(); }

}  // namespace kbuild::store
