#include "engine/gc/collector.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>

#include "common/temp_dir.h"
#include "common/unique_fd.h"
#include "engine/store/added_blobs.h"
#include "engine/store/fs.h"

namespace kbuild::gc {
namespace {

class CollectorTest : public ::testing::Test {
 protected:
  // A snapshot with one file of `bytes` bytes on `parent`, and a cache entry `key` for it.
  std::string make_snapshot(size_t bytes, std::optional<std::string> parent = {}, const std::string& key = "") {
    auto prepared = store_->snapshots().prepare(parent);
    std::ofstream(prepared.diff_path() + "/file") << std::string(bytes, 'x');
    std::string id = store_->snapshots().commit(std::move(prepared)).id;
    if (!key.empty()) store_->metadata().put_cache(key, store::CacheResult{id, ""});
    return id;
  }

  const UsageRecord* find(const std::vector<UsageRecord>& records, const std::string& id) {
    auto it = std::find_if(records.begin(), records.end(), [&](const UsageRecord& r) { return r.id == id; });
    return it == records.end() ? nullptr : &*it;
  }

  bool has_snapshot(const std::string& id) { return store_->metadata().get_snapshot(id).has_value(); }

  // An image named `name` (empty: none, a dangling one) whose chain tops at `top`.
  store::Digest make_image(const std::string& name, const std::string& top, const std::string& salt) {
    store::Digest config = store_->content().put("{\"salt\":\"" + salt + "\"}");
    std::string manifest_json = R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",)"
                                R"("config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":")" +
                                config.str() + R"(","size":10},"layers":[]})";
    store::Digest manifest = store_->content().put(manifest_json);
    store_->metadata().put_cache(store::image_chain_key(config), store::CacheResult{top, ""});
    if (!name.empty()) store_->metadata().set_image_name(name, store::ImageRecord{manifest, config, Clock::now()});
    return config;
  }

  std::string make_cache_mount() {
    std::string dir = store_->root() + "/cache/" + std::string(64, 'a');
    store::fs::make_dirs(dir + "/data");
    std::ofstream(dir + "/data/object") << std::string(20000, 'y');
    return dir;
  }

  TempDir parent_{"/tmp", "kbuild-gc-test-"};
  std::unique_ptr<store::Store> store_ = store::Store::open(parent_.path() + "/root");
};

TEST_F(CollectorTest, DuListsSnapshotsBlobsAndCacheMountsWithTheirSizes) {
  std::string snapshot = make_snapshot(10000);
  store::Digest blob = store_->content().put(std::string(5000, 'b'));
  make_cache_mount();
  std::vector<UsageRecord> records = collect_usage(*store_);
  ASSERT_EQ(records.size(), 3u);
  const UsageRecord* layer = find(records, snapshot);
  ASSERT_TRUE(layer);
  EXPECT_EQ(layer->type, kTypeRegular);
  EXPECT_EQ(layer->size, store_->metadata().get_snapshot(snapshot)->size);
  EXPECT_GE(layer->size, 10000u);
  const UsageRecord* content = find(records, blob.str());
  ASSERT_TRUE(content);
  EXPECT_GE(content->size, 5000u);
  const UsageRecord* mount = find(records, std::string(64, 'a'));
  ASSERT_TRUE(mount);
  EXPECT_EQ(mount->type, kTypeCacheMount);
  EXPECT_TRUE(mount->mutable_);
  EXPECT_GE(mount->size, 20000u);
  for (const UsageRecord& record : records) EXPECT_FALSE(record.in_use || record.shared) << record.id;
}

TEST_F(CollectorTest, PruneRemovesAChainChildFirstAndReportsWhatItFreed) {
  std::string base = make_snapshot(4000, std::nullopt, "step-1");
  std::string top = make_snapshot(8000, base, "step-2");
  uint64_t sizes = store_->metadata().get_snapshot(base)->size + store_->metadata().get_snapshot(top)->size;
  PruneResult result = prune(*store_, {});
  ASSERT_EQ(result.removed.size(), 2u);
  EXPECT_EQ(result.removed[0].id, top);
  EXPECT_EQ(result.removed[1].id, base);
  EXPECT_EQ(result.reclaimed, sizes);
  EXPECT_FALSE(has_snapshot(base));
  EXPECT_FALSE(store_->metadata().get_cache("step-2"));  // its entries went with it
  EXPECT_TRUE(collect_usage(*store_).empty());
  EXPECT_EQ(::access(store_->snapshots().path(top).c_str(), F_OK), -1);
}

TEST_F(CollectorTest, ATaggedImagesLayersAndBlobsAreSharedAndStay) {
  std::string base = make_snapshot(4000);
  std::string top = make_snapshot(4000, base);
  store::Digest config = make_image("docker.io/library/app:latest", top, "tagged");
  std::vector<UsageRecord> records = collect_usage(*store_);
  for (const UsageRecord& record : records) EXPECT_TRUE(record.shared) << record.id;
  PruneOptions all;
  all.all = true;
  EXPECT_TRUE(prune(*store_, all).removed.empty());
  EXPECT_TRUE(has_snapshot(base) && has_snapshot(top) && store_->content().has(config));
}

TEST_F(CollectorTest, AnUnnamedImagesLayersGoOnlyWithAll) {
  std::string top = make_snapshot(4000);
  make_image("", top, "dangling");
  EXPECT_TRUE(find(collect_usage(*store_), top)->image);
  prune(*store_, {});
  EXPECT_TRUE(has_snapshot(top));
  PruneOptions all;
  all.all = true;
  prune(*store_, all);
  EXPECT_FALSE(has_snapshot(top));
}

TEST_F(CollectorTest, ALeaseHoldsWhatWasMadeDuringItAndWhatItHolds) {
  std::string older = make_snapshot(1000);
  std::string made;
  {
    store::LeaseTable::Lease lease = store_->leases().acquire("build");
    ASSERT_TRUE(lease.hold_snapshot(older));
    made = make_snapshot(1000);
    store::Digest blob = store_->content().put("written by the build");
    std::vector<UsageRecord> records = collect_usage(*store_);
    EXPECT_TRUE(find(records, older)->in_use);
    EXPECT_TRUE(find(records, made)->in_use);
    EXPECT_TRUE(find(records, blob.str())->in_use);
    EXPECT_EQ(find(records, older)->usage_count, 1u);
    EXPECT_TRUE(prune(*store_, {}).removed.empty());
  }
  EXPECT_EQ(prune(*store_, {}).removed.size(), 3u);
  EXPECT_FALSE(has_snapshot(older) || has_snapshot(made));
}

TEST_F(CollectorTest, AHoldOnWhatAPruneRemovedFails) {
  std::string snapshot = make_snapshot(1000, std::nullopt, "key");
  prune(*store_, {});
  store::LeaseTable::Lease lease = store_->leases().acquire("build");
  EXPECT_FALSE(lease.hold_snapshot(snapshot));
}

TEST_F(CollectorTest, AFailedPullLeavesABlobAnotherPullClaimsOrARecordNames) {
  // Unrelated operations in flight (a pull stalled on a silent registry) change nothing.
  store::LeaseTable::Lease stalled = store_->leases().acquire("pull stalled");
  auto first = std::make_unique<store::AddedBlobs>(*store_);
  store::Digest shared;
  {
    store::AddedBlobs second(*store_);
    shared = store_->content().put("a layer both pulls fetch");
    second.add(shared);
    first->add(shared);  // its own download of the same layer committed too
  }  // the second pull failed: the first one still needs the layer
  EXPECT_TRUE(store_->content().has(shared));
  store::Digest skipped;
  {
    store::AddedBlobs storing(*store_);
    skipped = store_->content().put("a layer the first pull found stored");
    storing.add(skipped);
    first->use(skipped);
  }  // the pull that stored it failed; the first one reads it
  EXPECT_TRUE(store_->content().has(skipped));
  first->keep();
  first.reset();
  store::Digest named;
  {
    store::AddedBlobs added(*store_);
    named = store_->content().put("a layer a completed pull recorded");
    store_->metadata().put_layer_blob(store::Digest::of("diff"), store::LayerBlob{named, "application/vnd.oci.image.layer.v1.tar"});
    added.add(named);
  }
  EXPECT_TRUE(store_->content().has(named));
  store::Digest own;
  {
    store::AddedBlobs added(*store_);
    own = store_->content().put("a layer only this pull fetched");
    added.add(own);
  }
  EXPECT_FALSE(store_->content().has(own));
}

TEST_F(CollectorTest, ACacheMountAStepHoldsStays) {
  std::string dir = make_cache_mount();
  PruneOptions mounts;
  parse_filters({"type=exec.cachemount"}, mounts);
  {
    UniqueFd held(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    ASSERT_EQ(::flock(held.get(), LOCK_SH), 0);
    EXPECT_TRUE(find(collect_usage(*store_), std::string(64, 'a'))->in_use);
    EXPECT_TRUE(prune(*store_, mounts).removed.empty());
  }
  PruneResult result = prune(*store_, mounts);
  ASSERT_EQ(result.removed.size(), 1u);
  EXPECT_GE(result.reclaimed, 20000u);
  EXPECT_EQ(::access(dir.c_str(), F_OK), -1);
}

TEST_F(CollectorTest, ImagePruneRemovesDanglingImagesAndWithAllTheRest) {
  std::string dangling_top = make_snapshot(3000);
  std::string tagged_top = make_snapshot(3000);
  store::Digest dangling = make_image("", dangling_top, "old");
  store::Digest tagged = make_image("docker.io/library/app:latest", tagged_top, "new");
  ImagePruneResult result = prune_images(*store_, false);
  EXPECT_EQ(result.deleted, (std::vector<std::string>{"deleted: " + dangling.str()}));
  EXPECT_GT(result.reclaimed, 3000u);
  EXPECT_FALSE(has_snapshot(dangling_top));
  EXPECT_TRUE(has_snapshot(tagged_top));
  result = prune_images(*store_, true);
  EXPECT_EQ(result.deleted, (std::vector<std::string>{"untagged: app:latest", "deleted: " + tagged.str()}));
  EXPECT_FALSE(has_snapshot(tagged_top));
  EXPECT_TRUE(store_->content().list().empty());
}

TEST_F(CollectorTest, ImagePruneKeepsLayersTheBuildCacheUses) {
  std::string top = make_snapshot(3000, std::nullopt, "step");
  make_image("", top, "built");
  prune_images(*store_, false);
  EXPECT_TRUE(has_snapshot(top));
}

// Context directories as the solver's ContextCache keeps them: in memory, one held by a build.
class FakeLocalSources : public store::LocalSources {
 public:
  explicit FakeLocalSources(const std::string& root) : root_(root + "/contexts") {}
  void add(const std::string& id, size_t bytes, bool in_use) {
    store::fs::make_dirs(root_ + "/" + id);
    std::ofstream(root_ + "/" + id + "/file") << std::string(bytes, 'c');
    auto now = std::chrono::system_clock::now();
    entries_.push_back(Entry{id, root_ + "/" + id, "context", now - std::chrono::hours(1), now, 3, in_use});
  }
  std::vector<Entry> list() override { return entries_; }
  bool remove(const std::string& id) override {
    auto it = std::find_if(entries_.begin(), entries_.end(), [&](const Entry& e) { return e.id == id; });
    if (it == entries_.end() || it->in_use) return false;
    remove_tree(it->path);
    entries_.erase(it);
    return true;
  }

 private:
  std::string root_;
  std::vector<Entry> entries_;
};

TEST_F(CollectorTest, DuListsRememberedContextsAsLocalSources) {
  FakeLocalSources sources(store_->root());
  sources.add("context-idle", 30000, false);
  sources.add("context-held", 10000, true);
  EXPECT_TRUE(collect_usage(*store_).empty());  // without the cache, none
  std::vector<UsageRecord> records = collect_usage(*store_, &sources);
  ASSERT_EQ(records.size(), 2u);
  const UsageRecord* idle = find(records, "context-idle");
  ASSERT_TRUE(idle);
  EXPECT_EQ(idle->type, kTypeLocalSource);
  EXPECT_EQ(idle->description, "local source for context");
  EXPECT_GE(idle->size, 30000u);
  EXPECT_LT(idle->size, 30000u + 3 * 4096);
  EXPECT_EQ(idle->usage_count, 3u);
  EXPECT_TRUE(idle->mutable_);
  EXPECT_FALSE(idle->in_use);
  EXPECT_TRUE(find(records, "context-held")->in_use);
}

TEST_F(CollectorTest, PruneRemovesLocalSourcesNoBuildHolds) {
  FakeLocalSources sources(store_->root());
  sources.add("context-idle", 30000, false);
  sources.add("context-held", 10000, true);
  std::string snapshot = make_snapshot(4000, std::nullopt, "step-1");
  PruneOptions options;
  parse_filters({"type=source.local"}, options);
  PruneResult result = prune(*store_, options, &sources);
  ASSERT_EQ(result.removed.size(), 1u);
  EXPECT_EQ(result.removed[0].id, "context-idle");
  EXPECT_GE(result.reclaimed, 30000u);
  EXPECT_EQ(::access((store_->root() + "/contexts/context-idle").c_str(), F_OK), -1);
  EXPECT_EQ(::access((store_->root() + "/contexts/context-held").c_str(), F_OK), 0);
  EXPECT_TRUE(has_snapshot(snapshot));  // not of the type asked for
  // An image prune leaves them: they are no image's.
  sources.add("context-next", 1000, false);
  prune_images(*store_, true);
  EXPECT_EQ(sources.list().size(), 2u);
}

}  // namespace
}  // namespace kbuild::gc
