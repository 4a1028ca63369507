#include "engine/store/metadata.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <chrono>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/temp_dir.h"

namespace kbuild::store {
namespace {

using namespace std::chrono_literals;

template <typename Action>
std::string error_of(Action action) {
  try {
    action();
  } catch (const Error& error) {
    return error.what();
  }
  return "<no error>";
}

// Runs one SQL statement on the database file with a connection of its own, returning the
// first column of the first row.
std::string sql_value(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) throw std::runtime_error("open failed");
  std::string value;
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK && sqlite3_step(stmt) == SQLITE_ROW) {
    auto* text = sqlite3_column_text(stmt, 0);
    if (text) value = reinterpret_cast<const char*>(text);
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return value;
}

Clock::time_point at_seconds(int64_t seconds) { return Clock::time_point(std::chrono::seconds(seconds)); }

ImageRecord image(std::string_view tag, int64_t created = 1700000000) {
  return ImageRecord{Digest::of(std::string("manifest of ") + std::string(tag)),
                     Digest::of(std::string("config of ") + std::string(tag)), at_seconds(created)};
}

SnapshotRecord snapshot(std::string id, std::optional<std::string> parent = {}, std::string kind = "layer") {
  return SnapshotRecord{std::move(id), std::move(parent), std::move(kind), std::nullopt, 4096, at_seconds(1700000000)};
}

std::string id_of(char c) { return std::string(32, c); }

class MetadataTest : public ::testing::Test {
 protected:
  TempDir root_{"/tmp", "kbuild-metadata-test-"};
  std::string path_ = root_.path() + "/metadata.db";
  MetadataStore db_{path_};
};

TEST_F(MetadataTest, ImageNamesRoundTrip) {
  EXPECT_FALSE(db_.image_by_name("docker.io/library/foo:latest"));
  db_.set_image_name("docker.io/library/foo:latest", image("foo"));
  db_.set_image_name("docker.io/library/bar:1", image("bar"));
  EXPECT_EQ(db_.image_by_name("docker.io/library/foo:latest"), image("foo"));

  // Setting a name again moves it.
  db_.set_image_name("docker.io/library/foo:latest", image("foo2", 1800000000));
  EXPECT_EQ(db_.image_by_name("docker.io/library/foo:latest"), image("foo2", 1800000000));

  auto names = db_.list_image_names();
  ASSERT_EQ(names.size(), 2u);
  EXPECT_EQ(names[0].first, "docker.io/library/bar:1");
  EXPECT_EQ(names[1].first, "docker.io/library/foo:latest");
  EXPECT_EQ(names[1].second, image("foo2", 1800000000));

  db_.remove_image_name("docker.io/library/bar:1");
  EXPECT_FALSE(db_.image_by_name("docker.io/library/bar:1"));
  EXPECT_NO_THROW(db_.remove_image_name("docker.io/library/bar:1"));
}

TEST_F(MetadataTest, NamesForConfigListsEveryTagOfAnImage) {
  db_.set_image_name("docker.io/library/foo:latest", image("foo"));
  db_.set_image_name("docker.io/library/foo:1.0", image("foo"));
  db_.set_image_name("docker.io/library/other:latest", image("other"));
  EXPECT_EQ(db_.names_for_config(image("foo").config),
            (std::vector<std::string>{"docker.io/library/foo:1.0", "docker.io/library/foo:latest"}));
  EXPECT_TRUE(db_.names_for_config(Digest::of("nothing")).empty());
}

TEST_F(MetadataTest, CacheRoundTripsAndGetMarksTheEntryUsed) {
  db_.add_snapshot(snapshot(id_of('a')));
  std::string key = Digest::of("op").str();
  db_.put_cache(key, CacheResult{id_of('a'), R"({"env":["A=1"]})"});
  auto before = db_.list_cache();
  ASSERT_EQ(before.size(), 1u);
  EXPECT_EQ(before[0].key, key);
  EXPECT_EQ(before[0].created, before[0].last_used);

  std::this_thread::sleep_for(5ms);
  auto result = db_.get_cache(key);
  ASSERT_TRUE(result);
  EXPECT_EQ(*result, (CacheResult{id_of('a'), R"({"env":["A=1"]})"}));
  auto after = db_.list_cache();
  EXPECT_EQ(after[0].created, before[0].created);
  EXPECT_GT(after[0].last_used, before[0].last_used);

  EXPECT_FALSE(db_.get_cache("sha256:unknown"));
  db_.remove_cache(key);
  EXPECT_FALSE(db_.get_cache(key));
}

TEST_F(MetadataTest, CacheResultWithoutSnapshotIsAllowed) {
  db_.put_cache("k", CacheResult{"", "{}"});
  EXPECT_EQ(db_.get_cache("k"), (CacheResult{"", "{}"}));
}

TEST_F(MetadataTest, CacheResultMustNameARecordedSnapshot) {
  EXPECT_EQ(error_of([&] { db_.put_cache("k", CacheResult{id_of('9'), "{}"}); }),
            "metadata: inserting cache key k: snapshot " + id_of('9') + " is not recorded");
  EXPECT_TRUE(db_.list_cache().empty());
}

TEST_F(MetadataTest, RemovingASnapshotRemovesItsCacheEntries) {
  db_.add_snapshot(snapshot(id_of('a')));
  db_.add_snapshot(snapshot(id_of('b')));
  db_.put_cache("ka", CacheResult{id_of('a'), "{}"});
  db_.put_cache("kb", CacheResult{id_of('b'), "{}"});
  db_.remove_snapshot(id_of('a'));
  EXPECT_FALSE(db_.get_cache("ka"));
  EXPECT_TRUE(db_.get_cache("kb"));
}

TEST_F(MetadataTest, SnapshotsRoundTripWithParentsAndChildren) {
  db_.add_snapshot(snapshot(id_of('a')));
  db_.add_snapshot(snapshot(id_of('c'), id_of('a')));
  db_.add_snapshot(snapshot(id_of('b'), id_of('a'), "context"));
  EXPECT_EQ(db_.get_snapshot(id_of('b')), snapshot(id_of('b'), id_of('a'), "context"));
  EXPECT_FALSE(db_.get_snapshot(id_of('f')));
  EXPECT_EQ(db_.children_of(id_of('a')), (std::vector<std::string>{id_of('b'), id_of('c')}));
  EXPECT_TRUE(db_.children_of(id_of('b')).empty());
  auto all = db_.list_snapshots();
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].id, id_of('a'));
  EXPECT_FALSE(all[0].parent);

  Digest diff_id = Digest::of("layer tar");
  db_.set_snapshot_diff_id(id_of('c'), diff_id);
  EXPECT_EQ(db_.get_snapshot(id_of('c'))->diff_id, diff_id);
  EXPECT_THROW(db_.set_snapshot_diff_id(id_of('f'), diff_id), Error);
}

TEST_F(MetadataTest, SnapshotNeedsARecordedParent) {
  EXPECT_EQ(error_of([&] { db_.add_snapshot(snapshot(id_of('b'), id_of('a'))); }),
            "metadata: adding snapshot " + id_of('b') + ": parent " + id_of('a') + " is not recorded");
  EXPECT_FALSE(db_.get_snapshot(id_of('b')));
}

TEST_F(MetadataTest, SnapshotWithChildrenCannotBeRemoved) {
  db_.add_snapshot(snapshot(id_of('a')));
  db_.add_snapshot(snapshot(id_of('b'), id_of('a')));
  EXPECT_EQ(error_of([&] { db_.remove_snapshot(id_of('a')); }),
            "metadata: removing snapshot " + id_of('a') + ": it is the parent of 1 snapshot(s), e.g. " + id_of('b'));
  EXPECT_TRUE(db_.get_snapshot(id_of('a')));
  db_.remove_snapshot(id_of('b'));
  db_.remove_snapshot(id_of('a'));
  EXPECT_TRUE(db_.list_snapshots().empty());
}

TEST_F(MetadataTest, DuplicateSnapshotIdNamesTheOperationAndSqlitesMessage) {
  db_.add_snapshot(snapshot(id_of('a')));
  EXPECT_EQ(error_of([&] { db_.add_snapshot(snapshot(id_of('a'))); }),
            "metadata: adding snapshot " + id_of('a') + ": UNIQUE constraint failed: snapshots.id");
}

TEST_F(MetadataTest, LayerBlobsAreFoundByDiffIdAndMediaType) {
  Digest diff_id = Digest::of("tar");
  LayerBlob gzip{Digest::of("tar.gz"), "application/vnd.oci.image.layer.v1.tar+gzip"};
  LayerBlob zstd{Digest::of("tar.zst"), "application/vnd.oci.image.layer.v1.tar+zstd"};
  EXPECT_FALSE(db_.get_layer_blob(diff_id));
  db_.put_layer_blob(diff_id, gzip);
  db_.put_layer_blob(diff_id, zstd);
  EXPECT_EQ(db_.get_layer_blob(diff_id, gzip.media_type), gzip);
  EXPECT_EQ(db_.get_layer_blob(diff_id, zstd.media_type), zstd);
  EXPECT_TRUE(db_.get_layer_blob(diff_id));
  EXPECT_FALSE(db_.get_layer_blob(diff_id, "application/vnd.docker.image.rootfs.diff.tar.gzip"));
  db_.remove_layer_blob(gzip.blob);
  EXPECT_FALSE(db_.get_layer_blob(diff_id, gzip.media_type));
  EXPECT_EQ(db_.get_layer_blob(diff_id), zstd);
}

TEST_F(MetadataTest, FileHashMatchesOnlyTheExactKey) {
  FileKey key{2049, 123456, 42, 1700000000123456789, 1700000000223456789, 1000};
  Digest digest = Digest::of("file contents");
  db_.put_file_hashes(std::vector<FileHash>{{key, digest}});
  EXPECT_EQ(db_.get_file_hash(key), digest);
  for (int field = 0; field < 6; ++field) {
    FileKey changed = key;
    switch (field) {
      case 0: changed.dev += 1; break;
      case 1: changed.inode += 1; break;
      case 2: changed.size += 1; break;
      case 3: changed.mtime_ns += 1; break;
      case 4: changed.ctime_ns += 1; break;
      case 5: changed.uid += 1; break;
    }
    EXPECT_FALSE(db_.get_file_hash(changed)) << "field " << field;
  }
  // A changed file replaces its entry.
  FileKey modified = key;
  modified.mtime_ns += 1000;
  db_.put_file_hashes(std::vector<FileHash>{{modified, Digest::of("new contents")}});
  EXPECT_EQ(db_.get_file_hash(modified), Digest::of("new contents"));
  EXPECT_FALSE(db_.get_file_hash(key));
  EXPECT_EQ(sql_value(path_, "SELECT count(*) FROM file_hashes"), "1");
}

TEST_F(MetadataTest, FileHashKeysSurviveTheFullUnsignedRange) {
  FileKey key{UINT64_MAX, UINT64_MAX - 1, UINT64_MAX - 2, INT64_MIN, INT64_MAX, UINT32_MAX};
  db_.put_file_hashes(std::vector<FileHash>{{key, Digest::of("x")}});
  EXPECT_EQ(db_.get_file_hash(key), Digest::of("x"));
}

TEST_F(MetadataTest, FileHashBatchOfTenThousandRowsIsFast) {
  std::vector<FileHash> batch;
  for (uint64_t i = 0; i < 10000; ++i) {
    batch.push_back({FileKey{64768, 1000000 + i, i * 10, static_cast<int64_t>(i), static_cast<int64_t>(i), 0},
                     Digest::of(std::to_string(i))});
  }
  auto start = std::chrono::steady_clock::now();
  db_.put_file_hashes(batch);
  auto elapsed = std::chrono::steady_clock::now() - start;
  // One transaction and one reused statement: well under a second even on a busy CI disk.
  EXPECT_LT(elapsed, 2s);
  EXPECT_EQ(sql_value(path_, "SELECT count(*) FROM file_hashes"), "10000");
  EXPECT_EQ(db_.get_file_hash(batch[0].key), batch[0].digest);
  EXPECT_EQ(db_.get_file_hash(batch[9999].key), batch[9999].digest);
}

TEST_F(MetadataTest, TransactionRollsBackOnException) {
  db_.set_image_name("kept", image("kept"));
  EXPECT_THROW(
      {
        MetadataStore::Transaction tx(db_);
        db_.set_image_name("a", image("a"));
        db_.remove_image_name("kept");
        throw std::runtime_error("build failed");
      },
      std::runtime_error);
  EXPECT_FALSE(db_.image_by_name("a"));
  EXPECT_TRUE(db_.image_by_name("kept"));
}

TEST_F(MetadataTest, TransactionCommitsEverythingAtOnce) {
  {
    MetadataStore::Transaction tx(db_);
    db_.add_snapshot(snapshot(id_of('a')));
    db_.put_cache("k", CacheResult{id_of('a'), "{}"});
    tx.commit();
  }
  EXPECT_TRUE(db_.get_snapshot(id_of('a')));
  EXPECT_TRUE(db_.get_cache("k"));
}

TEST_F(MetadataTest, NestedTransactionRollsBackOnlyItsOwnPart) {
  {
    MetadataStore::Transaction outer(db_);
    db_.set_image_name("outer", image("outer"));
    try {
      MetadataStore::Transaction inner(db_);
      db_.set_image_name("inner", image("inner"));
      throw std::runtime_error("inner step failed");
    } catch (const std::runtime_error&) {
    }
    outer.commit();
  }
  EXPECT_TRUE(db_.image_by_name("outer"));
  EXPECT_FALSE(db_.image_by_name("inner"));
}

TEST_F(MetadataTest, TransactionHoldsOffOtherThreadsUntilItEnds) {
  std::atomic<bool> other_done = false;
  std::thread other;
  {
    MetadataStore::Transaction tx(db_);
    db_.set_image_name("first", image("first"));
    other = std::thread([&] {
      db_.set_image_name("second", image("second"));
      other_done = true;
    });
    std::this_thread::sleep_for(50ms);
    EXPECT_FALSE(other_done);
    tx.commit();
  }
  other.join();
  EXPECT_TRUE(db_.image_by_name("first"));
  EXPECT_TRUE(db_.image_by_name("second"));
}

TEST_F(MetadataTest, ConcurrentThreadsWriteAndReadSafely) {
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 100; ++i) {
        std::string name = "img" + std::to_string(t) + "-" + std::to_string(i);
        db_.set_image_name(name, image(name));
        EXPECT_EQ(db_.image_by_name(name), image(name));
        db_.put_cache(name, CacheResult{"", name});
        EXPECT_EQ(db_.get_cache(name)->metadata, name);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(db_.list_image_names().size(), 400u);
  EXPECT_EQ(db_.list_cache().size(), 400u);
}

TEST_F(MetadataTest, ReopeningAnExistingDatabaseKeepsItsRecords) {
  db_.set_image_name("docker.io/library/foo:latest", image("foo"));
  db_.add_snapshot(snapshot(id_of('a')));
  db_.put_file_hashes(std::vector<FileHash>{{FileKey{1, 2, 3, 4, 5, 6}, Digest::of("f")}});
  MetadataStore again(path_);
  EXPECT_EQ(again.image_by_name("docker.io/library/foo:latest"), image("foo"));
  EXPECT_EQ(again.get_snapshot(id_of('a')), snapshot(id_of('a')));
  EXPECT_EQ(again.get_file_hash(FileKey{1, 2, 3, 4, 5, 6}), Digest::of("f"));
  EXPECT_EQ(again.schema_version(), MetadataStore::current_schema_version());
}

TEST_F(MetadataTest, SchemaVersionIsRecordedInItsTable) {
  EXPECT_GE(MetadataStore::current_schema_version(), 1);
  EXPECT_EQ(db_.schema_version(), MetadataStore::current_schema_version());
  EXPECT_EQ(sql_value(path_, "SELECT version FROM schema_version"),
            std::to_string(MetadataStore::current_schema_version()));
  EXPECT_EQ(sql_value(path_, "SELECT count(*) FROM schema_version"), "1");
}

TEST_F(MetadataTest, DatabaseIsInWalMode) {
  EXPECT_EQ(sql_value(path_, "PRAGMA journal_mode"), "wal");
}

TEST_F(MetadataTest, NewerSchemaIsRefused) {
  sql_value(path_, "UPDATE schema_version SET version = 999");
  std::string message = error_of([&] { MetadataStore newer(path_); });
  EXPECT_NE(message.find("has schema version 999, newer than this kbuildd knows"), std::string::npos) << message;
}

TEST(Metadata, OpeningAFileThatIsNotADatabaseFailsClearly) {
  TempDir root("/tmp", "kbuild-metadata-test-");
  std::string path = root.path() + "/metadata.db";
  std::ofstream(path) << std::string(4096, 'x');
  std::string message = error_of([&] { MetadataStore db(path); });
  EXPECT_EQ(message.rfind("metadata: ", 0), 0u) << message;
  EXPECT_NE(message.find("file is not a database"), std::string::npos) << message;
}

}  // namespace
}  // namespace kbuild::store
