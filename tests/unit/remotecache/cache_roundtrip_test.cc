// Export and import on real stores in temp dirs, with a cache held in memory: what one store
// exports, another makes local with the same layers and dates; only the blobs a hit needs are
// fetched; a cache that passes one layer off as another leaves nothing behind.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <map>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/temp_dir.h"
#include "engine/image/image_store.h"
#include "engine/image/layer_blobs.h"
#include "engine/remotecache/cache_export.h"
#include "engine/remotecache/imported_cache.h"
#include "engine/remotecache/materialize.h"
#include "tests/unit/image/image_test_util.h"

namespace kbuild::remotecache {
namespace {

using ::testing::HasSubstr;
using image::testing::read_file;
using image::testing::write_file;

constexpr const char* kScheme = "kbuild-key-v3";

std::string key(const std::string& name) { return store::Digest::of(name).str(); }

// A registry in memory: blobs by digest, one root document, and the blobs each fetch asked for.
class MemoryCache : public CacheSource, public CacheTarget {
 public:
  std::string name() const override { return "memory"; }
  RootDocument root() override {
    if (!root_) throw Error(ErrorKind::not_found, "no root");
    return *root_;
  }
  void blob(const image::Descriptor& blob, const std::function<void(std::string_view)>& sink) override {
    auto it = blobs.find(blob.digest);
    if (it == blobs.end()) throw Error(ErrorKind::not_found, "blob " + blob.digest.str() + " not found");
    fetched.push_back(blob.digest);
    sink(it->second);
  }
  bool has_blob(const store::Digest& digest) override { return blobs.count(digest) > 0; }
  void put_blob(const image::Descriptor& blob, const std::function<size_t(char*, size_t)>& read) override {
    std::string bytes;
    char buffer[4096];
    for (size_t n; (n = read(buffer, sizeof buffer)) > 0;) bytes.append(buffer, n);
    if (store::Digest::of(bytes) != blob.digest) throw Error(ErrorKind::user, "digest mismatch");
    blobs[blob.digest] = bytes;
    ++puts;
  }
  void put_root(const std::string& media_type, const std::string& bytes) override {
    root_ = RootDocument{media_type, bytes};
  }

  std::map<store::Digest, std::string> blobs;
  std::vector<store::Digest> fetched;
  int puts = 0;

 private:
  std::optional<RootDocument> root_;
};

class CacheRoundTripTest : public ::testing::Test {
 protected:
  static std::vector<ExportRecord> records(
      std::initializer_list<std::pair<std::string, std::optional<std::string>>> keys_and_tops) {
    std::vector<ExportRecord> out;
    for (const auto& [k, top] : keys_and_tops) out.push_back(ExportRecord{k, top, std::nullopt, nullptr});
    return out;
  }

  // A committed snapshot on `parent` holding `files` (name → content).
  std::string layer(store::Store& store, std::optional<std::string> parent,
                    const std::map<std::string, std::string>& files) {
    auto prepared = store.snapshots().prepare(std::move(parent));
    for (const auto& [name, content] : files) write_file(prepared.diff_path() + "/" + name, content);
    return store.snapshots().commit(std::move(prepared)).id;
  }

  std::string error_of(const std::function<void()>& f) {
    try {
      f();
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }

  TempDir dir_;
  std::unique_ptr<store::Store> a_ = store::Store::open(dir_.path() + "/a");
  std::unique_ptr<store::Store> b_ = store::Store::open(dir_.path() + "/b");
  std::shared_ptr<MemoryCache> cache_ = std::make_shared<MemoryCache>();
  CacheFormat format_;
  std::vector<std::string> warnings_;
};

TEST_F(CacheRoundTripTest, ImportedChainHasTheExportersLayersAndDates) {
  std::string base = layer(*a_, std::nullopt, {{"base", "base\n"}});
  std::string built = layer(*a_, base, {{"built", "random 1234\n"}});
  std::string final_layer = layer(*a_, built, {{"final", "final\n"}});
  export_cache(*a_, records({{key("step1"), built}, {key("step2"), final_layer}, {key("empty"), std::nullopt}}), format_, kScheme,
               *cache_, [](const std::string&, bool) {});

  ImportedCache imported = import_cache(cache_, kScheme, warnings_);
  EXPECT_TRUE(warnings_.empty());
  ASSERT_TRUE(imported.find(key("step2")));
  EXPECT_EQ(imported.find(key("step2"))->size(), 3u);
  EXPECT_EQ(imported.find(key("step1"))->size(), 2u);
  EXPECT_TRUE(imported.find(key("empty"))->empty());
  EXPECT_FALSE(imported.find(key("other")));

  std::optional<std::string> top = materialize_chain(*b_, *cache_, *imported.find(key("step2")), {});
  ASSERT_TRUE(top);
  auto theirs = a_->snapshots().records_bottom_up(final_layer);
  auto ours = b_->snapshots().records_bottom_up(top);
  ASSERT_EQ(ours.size(), 3u);
  for (size_t i = 0; i < ours.size(); ++i) {
    EXPECT_EQ(image::chain_layer(*b_, ours[i], std::nullopt).diff_id,
              image::layer_for_snapshot(*a_, theirs[i], std::nullopt).diff_id);
    EXPECT_EQ(ours[i].created, theirs[i].created);
    EXPECT_EQ(ours[i].kind, image::kImportedKind);
  }
  EXPECT_EQ(read_file(b_->snapshots().diff_path(ours[1].id) + "/built"), "random 1234\n");
  EXPECT_FALSE(materialize_chain(*b_, *cache_, *imported.find(key("empty")), {}));
}

TEST_F(CacheRoundTripTest, ExportingTheSameResultsAgainSendsTheSameManifestAndNoBlob) {
  std::string base = layer(*a_, std::nullopt, {{"f", "x\n"}});
  std::string top = layer(*a_, base, {{"g", "y\n"}});
  auto noop = [](const std::string&, bool) {};
  image::Descriptor first = export_cache(*a_, records({{key("1"), base}, {key("2"), top}}), format_, kScheme, *cache_, noop);
  int puts = cache_->puts;
  image::Descriptor second = export_cache(*a_, records({{key("2"), top}, {key("1"), base}}), format_, kScheme, *cache_, noop);
  EXPECT_EQ(first.digest, second.digest);
  EXPECT_EQ(cache_->puts, puts);
}

TEST_F(CacheRoundTripTest, OnlyTheBlobsAboveWhatTheStoreHasAreFetched) {
  std::string base = layer(*a_, std::nullopt, {{"base", "shared\n"}});
  std::string builder = layer(*a_, base, {{"tool", "only the builder has this\n"}});
  std::string final_layer = layer(*a_, base, {{"app", "app\n"}});
  export_cache(*a_, records({{key("builder"), builder}, {key("final"), final_layer}, {key("base"), base}}), format_, kScheme,
               *cache_, [](const std::string&, bool) {});
  ImportedCache imported = import_cache(cache_, kScheme, warnings_);
  // B has the base already (as a pull would leave it): only the final step's own blob comes.
  materialize_chain(*b_, *cache_, *imported.find(key("base")), {});
  cache_->fetched.clear();
  std::vector<CacheLayer> chain = *imported.find(key("final"));
  materialize_chain(*b_, *cache_, chain, {});
  ASSERT_EQ(cache_->fetched.size(), 1u);
  EXPECT_EQ(cache_->fetched[0], chain.back().blob.digest);
  // And the same chain again is already there.
  cache_->fetched.clear();
  materialize_chain(*b_, *cache_, chain, {});
  EXPECT_TRUE(cache_->fetched.empty());
}

TEST_F(CacheRoundTripTest, ALayerThatIsNotItsDiffIdLeavesNothingBehind) {
  std::string honest = layer(*a_, std::nullopt, {{"f", "honest\n"}});
  std::string other = layer(*a_, std::nullopt, {{"f", "something else\n"}});
  export_cache(*a_, records({{key("honest"), honest}}), format_, kScheme, *cache_, [](const std::string&, bool) {});
  ImportedCache imported = import_cache(cache_, kScheme, warnings_);
  // The cache claims the other layer's diff_id for its blob: a poisoned chain.
  std::vector<CacheLayer> chain = *imported.find(key("honest"));
  chain[0].diff_id = image::layer_for_snapshot(*a_, *a_->metadata().get_snapshot(other), std::nullopt).diff_id;
  size_t snapshots = b_->metadata().list_snapshots().size();
  EXPECT_THAT(error_of([&] { materialize_chain(*b_, *cache_, chain, {}); }), HasSubstr("diff"));
  EXPECT_EQ(b_->metadata().list_snapshots().size(), snapshots);
  EXPECT_FALSE(b_->content().has(chain[0].blob.digest));
  EXPECT_FALSE(image::ImageStore(*b_).find_chain({chain[0].diff_id}));
}

TEST_F(CacheRoundTripTest, ALayerWhoseMediaTypeLiesLeavesNothingBehind) {
  // The media type is remembered with the blob and listed by later exports: a gzip blob the
  // cache calls zstd is refused.
  std::string base = layer(*a_, std::nullopt, {{"f", "x\n"}});
  export_cache(*a_, records({{key("one"), base}}), format_, kScheme, *cache_, [](const std::string&, bool) {});
  std::vector<CacheLayer> chain = *import_cache(cache_, kScheme, warnings_).find(key("one"));
  chain[0].blob.media_type = std::string(image::media_type::oci_layer_zstd);
  EXPECT_THAT(error_of([&] { materialize_chain(*b_, *cache_, chain, {}); }), HasSubstr("is not"));
  EXPECT_TRUE(b_->metadata().list_snapshots().empty());
  EXPECT_FALSE(b_->metadata().get_layer_blob(chain[0].diff_id));
}

TEST_F(CacheRoundTripTest, ARecordNeverNeededLocallyIsPassedOnFromItsImport) {
  std::string base = layer(*a_, std::nullopt, {{"base", "base\n"}});
  std::string builder = layer(*a_, base, {{"tool", "tool\n"}});
  export_cache(*a_, records({{key("builder"), builder}}), format_, kScheme, *cache_, [](const std::string&, bool) {});
  ImportedCache imported = import_cache(cache_, kScheme, warnings_);
  // B re-exports the builder's record to another cache without having extracted it: the
  // blobs are copied from the import, and the record is the same.
  auto other = std::make_shared<MemoryCache>();
  std::vector<ExportRecord> passed{ExportRecord{key("builder"), std::nullopt, imported.find(key("builder")), cache_.get()}};
  export_cache(*b_, passed, format_, kScheme, *other, [](const std::string&, bool) {});
  EXPECT_TRUE(b_->metadata().list_snapshots().empty());
  ImportedCache again = import_cache(other, kScheme, warnings_);
  ASSERT_TRUE(again.find(key("builder")));
  EXPECT_EQ(*again.find(key("builder")), *imported.find(key("builder")));
  materialize_chain(*b_, *other, *again.find(key("builder")), {});
  EXPECT_EQ(b_->metadata().list_snapshots().size(), 2u);
}

TEST_F(CacheRoundTripTest, AChainDeeperThanAnOverlayCanStackIsNoHit) {
  // A config of one blob stacked on itself kMaxChainLayers + 1 times: cheap to write, and it
  // would make a hit fetch and extract that many layers.
  std::string base = layer(*a_, std::nullopt, {{"f", "x\n"}});
  export_cache(*a_, records({{key("one"), base}}), format_, kScheme, *cache_, [](const std::string&, bool) {});
  ImportedCache one = import_cache(cache_, kScheme, warnings_);
  CacheConfig deep = one.config();
  for (size_t i = 1; i <= kMaxChainLayers; ++i) {
    CacheLayer next = deep.layers[0];
    next.parent = static_cast<int>(i) - 1;
    deep.layers.push_back(next);
  }
  deep.records = {CacheRecord{key("deep"), static_cast<int>(kMaxChainLayers)},
                  CacheRecord{key("fits"), static_cast<int>(kMaxChainLayers) - 1}};
  ImportedCache imported(cache_, deep);
  EXPECT_FALSE(imported.find(key("deep")));
  ASSERT_TRUE(imported.find(key("fits")));
  EXPECT_EQ(imported.find(key("fits"))->size(), kMaxChainLayers);
}

TEST_F(CacheRoundTripTest, ADocumentNestedMilesDeepIsRefusedNotFollowed) {
  // Copying or writing out JSON recurses: a few MiB of "[[[[" from a registry would overflow
  // the daemon's stack. An inline cache, a cache config and a manifest that deep are refused.
  std::string deep = std::string(200000, '[') + std::string(200000, ']');
  std::string config = "{\"rootfs\":{\"diff_ids\":[]},\"kbuild.cache.v1\":{\"a\":" + deep + "}}";
  EXPECT_TRUE(image::parse_config(config).kbuild_cache.empty());
  image::Manifest manifest;
  manifest.media_type = std::string(image::media_type::oci_manifest);
  manifest.config = image::describe(image::media_type::oci_config, store::Digest::of(config),
                                    static_cast<int64_t>(config.size()));
  cache_->blobs[manifest.config.digest] = config;
  cache_->put_root(manifest.media_type, image::serialize_manifest(manifest));
  EXPECT_THAT(error_of([&] { import_cache(cache_, kScheme, warnings_); }), HasSubstr("deeper"));
  EXPECT_THAT(error_of([&] { parse_cache_config("{\"kbuildCache\":1,\"x\":" + deep + "}", warnings_); }),
              HasSubstr("nested too deep"));
  EXPECT_EQ(inspect_cache("", "{\"x\":" + deep + "}").kind, FoundCache::Kind::unknown);
}

TEST_F(CacheRoundTripTest, ForeignAndBrokenCachesAreRefusedWithAReason) {
  EXPECT_THAT(error_of([&] { import_cache(cache_, kScheme, warnings_); }), HasSubstr("no root"));
  std::string base = layer(*a_, std::nullopt, {{"f", "x\n"}});
  export_cache(*a_, records({{key("1"), base}}), format_, kScheme, *cache_, [](const std::string&, bool) {});
  EXPECT_THAT(error_of([&] { import_cache(cache_, "kbuild-key-v9", warnings_); }), HasSubstr("kbuild-key-v9"));
  // A config whose layer the manifest does not list.
  RootDocument root = cache_->root();
  auto manifest = nlohmann::json::parse(root.bytes);
  manifest["layers"] = nlohmann::json::array();
  cache_->put_root(root.media_type, manifest.dump());
  EXPECT_THAT(error_of([&] { import_cache(cache_, kScheme, warnings_); }), HasSubstr("not in its manifest"));
  // BuildKit's own format.
  manifest = nlohmann::json::parse(root.bytes);
  manifest["config"]["mediaType"] = "application/vnd.buildkit.cacheconfig.v0";
  cache_->put_root(root.media_type, manifest.dump());
  EXPECT_THAT(error_of([&] { import_cache(cache_, kScheme, warnings_); }), HasSubstr("BuildKit"));
}

TEST_F(CacheRoundTripTest, InlineRecordsIndexTheImagesOwnLayers) {
  std::string base = layer(*a_, std::nullopt, {{"f", "x\n"}});
  std::string top = layer(*a_, base, {{"g", "y\n"}});
  // An image manifest and config, as store_image writes them with an inline cache.
  image::Manifest manifest;
  manifest.media_type = std::string(image::media_type::oci_manifest);
  image::ImageConfig config;
  config.created = "2025-03-01T10:00:00.5Z";
  for (const auto& snapshot : a_->snapshots().records_bottom_up(top)) {
    image::ChainLayer chain_layer = image::chain_layer(*a_, snapshot, std::nullopt);
    image::Descriptor blob = image::make_layer_blob(*a_, chain_layer.diff_id, chain_layer.blob, {});
    cache_->blobs[blob.digest] = a_->content().read_small(blob.digest, 1 << 20);
    manifest.layers.push_back(blob);
    config.rootfs.diff_ids.push_back(chain_layer.diff_id);
  }
  config.kbuild_cache = nlohmann::json{{"kbuildCache", 1}, {"keyScheme", kScheme},
                                       {"records", {{{"key", key("top")}, {"layer", 1}}, {{"key", key("base")}, {"layer", 0}}}}}
                            .dump();
  std::string config_bytes = image::serialize_config(config);
  manifest.config = image::describe(image::media_type::oci_config, store::Digest::of(config_bytes),
                                    static_cast<int64_t>(config_bytes.size()));
  cache_->blobs[manifest.config.digest] = config_bytes;
  cache_->put_root(manifest.media_type, image::serialize_manifest(manifest));

  ImportedCache imported = import_cache(cache_, kScheme, warnings_);
  ASSERT_TRUE(imported.find(key("top")));
  EXPECT_EQ(imported.find(key("top"))->size(), 2u);
  EXPECT_EQ(imported.find(key("base"))->size(), 1u);
  std::optional<std::string> made = materialize_chain(*b_, *cache_, *imported.find(key("top")), {});
  auto ours = b_->snapshots().records_bottom_up(made);
  ASSERT_EQ(ours.size(), 2u);
  EXPECT_EQ(ours[1].created, ours[0].created);
  EXPECT_EQ(read_file(b_->snapshots().diff_path(ours[1].id) + "/g"), "y\n");

  // An image without one is no cache.
  config.kbuild_cache.clear();
  config_bytes = image::serialize_config(config);
  manifest.config.digest = store::Digest::of(config_bytes);
  manifest.config.size = static_cast<int64_t>(config_bytes.size());
  cache_->blobs[manifest.config.digest] = config_bytes;
  cache_->put_root(manifest.media_type, image::serialize_manifest(manifest));
  EXPECT_THAT(error_of([&] { import_cache(cache_, kScheme, warnings_); }), HasSubstr("no kbuild cache"));
}

}  // namespace
}  // namespace kbuild::remotecache
