// The exporters on a real store in a temp dir: a build's result (a base image unpacked as
// `kbuildctl load` leaves one, and a layer of ours on it) stored as an image, then written as
// archives and as a rootfs tar. The rootfs needs root (it is mounted) and skips without it.
#include "engine/image/exporter.h"

#include <archive.h>
#include <archive_entry.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/temp_dir.h"
#include "engine/image/image_archive.h"
#include "engine/image/image_store.h"
#include "engine/image/layer_tar.h"
#include "engine/image/oci.h"
#include "engine/store/mount.h"
#include "tests/unit/image/image_test_util.h"

namespace kbuild::image {
namespace {

using ::testing::ElementsAre;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

constexpr int64_t kEpoch = 1700000000;

Descriptor describe(std::string_view media_type, const std::string& bytes) {
  Descriptor d;
  d.media_type = media_type;
  d.digest = store::Digest::of(bytes);
  d.size = static_cast<int64_t>(bytes.size());
  return d;
}

// Every entry of a tar by name: a file's contents, "" for anything else.
std::map<std::string, std::string> tar_entries(const std::string& bytes) {
  struct archive* tar = archive_read_new();
  archive_read_support_format_tar(tar);
  archive_read_open_memory(tar, bytes.data(), bytes.size());
  std::map<std::string, std::string> entries;
  archive_entry* entry = nullptr;
  while (archive_read_next_header(tar, &entry) == ARCHIVE_OK) {
    std::string content;
    if (archive_entry_filetype(entry) == AE_IFREG) {
      content.resize(static_cast<size_t>(archive_entry_size(entry)));
      archive_read_data(tar, content.data(), content.size());
    }
    entries[archive_entry_pathname(entry)] = content;
  }
  archive_read_free(tar);
  return entries;
}

class ExporterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // The rootfs exporter's mounts stay in a namespace of the test's own (still single-threaded here).
    if (::geteuid() == 0) store::enter_private_mount_namespace();
  }

  void SetUp() override { add_base_image(); }

  // "base:1": one gzip layer holding /base.
  void add_base_image() {
    TempDir files;
    testing::write_file(files.path() + "/base", "from the base image");
    StringSink blob;
    LayerDigests layer = write_layer(testing::open_dir(files.path()).get(), blob);
    base_diff_id_ = layer.diff_id;
    base_layer_ = describe(media_type::oci_layer_gzip, blob.bytes());
    store_->content().put(blob.bytes());

    ImageConfig config;
    config.architecture = "amd64";
    config.os = "linux";
    config.rootfs.diff_ids = {layer.diff_id};
    config.history = {HistoryEntry{"2023-01-01T00:00:00Z", "ADD base /", "", "", false}};
    Manifest manifest;
    manifest.media_type = media_type::oci_manifest;
    std::string config_bytes = serialize_config(config);
    manifest.config = describe(media_type::oci_config, config_bytes);
    store_->content().put(config_bytes);
    manifest.layers = {base_layer_};
    base_manifest_ = store_->content().put(serialize_manifest(manifest));
    store_->metadata().set_image_name("docker.io/library/base:1",
                                      store::ImageRecord{base_manifest_, manifest.config.digest, {}});
    ImageStore(*store_).unpack(base_manifest_);
    base_top_ = store_->metadata().get_cache(store::image_chain_key(manifest.config.digest))->snapshot_id;
  }

  // A snapshot on `parent` whose diff holds one file.
  std::string add_layer(const std::optional<std::string>& parent, const std::string& name, const std::string& content) {
    auto prepared = store_->snapshots().prepare(parent);
    testing::write_file(prepared.diff_path() + "/" + name, content);
    return store_->snapshots().commit(std::move(prepared)).id;
  }

  // FROM base:1, COPY app /, ENV, LABEL, CMD, for arm64/v8.
  BuiltImage built_on_base() {
    BuiltImage built;
    built.top = add_layer(base_top_, "app", "ours");
    built.base_diff_ids = {base_diff_id_};
    built.base_manifest = base_manifest_;
    built.config.architecture = "arm64";
    built.config.variant = "v8";
    built.config.env = {"PATH=/usr/bin", "MODE=test"};
    built.config.labels = {{"org.example.team", "build"}};
    built.config.cmd = std::vector<std::string>{"/app"};
    built.config.history = {{"ADD base /", "", false},
                            {"COPY app / # buildkit", "buildkit.dockerfile.v0", false},
                            {"ENV MODE=test", "buildkit.dockerfile.v0", true}};
    built.source_date_epoch = kEpoch;
    return built;
  }

  StoredImage store_built(const BuiltImage& built, const std::vector<std::string>& tags) {
    return store_image(*store_, built, tags, &journals_, [&](const std::string& text, bool done) {
      statuses_.emplace_back(text, done);
    });
  }

  // What `exporter` writes.
  std::string output_of(Exporter& exporter, const StoredImage& image, const BuiltImage& built) {
    StringSink out;
    exporter.write(image, built, out);
    return out.bytes();
  }

  ImportResult import(const std::string& archive) {
    std::string path = dir_.path() + "/archive.tar";
    testing::write_file(path, archive);
    check(::mkdir((dir_.path() + "/imported").c_str(), 0755), "mkdir");
    imported_ = std::make_unique<testing::DirBlobStore>(dir_.path() + "/imported");
    return read_image_archive(testing::open_read(path).get(), *imported_);
  }

  // The diff_id of a snapshot's layer, hashed here.
  store::Digest diff_id_of(const std::string& snapshot) {
    LayerOptions options;
    options.compression = Compression::none;
    options.source_date_epoch = kEpoch;
    NullSink nowhere;
    return write_layer(testing::open_dir(store_->snapshots().diff_path(snapshot)).get(), nowhere, options).diff_id;
  }

  TempDir dir_;
  std::unique_ptr<store::Store> store_ = store::Store::open(dir_.path() + "/store");
  LayerJournalCache journals_;
  std::vector<std::pair<std::string, bool>> statuses_;
  std::unique_ptr<testing::DirBlobStore> imported_;
  store::Digest base_diff_id_;
  Descriptor base_layer_;
  store::Digest base_manifest_;
  std::string base_top_;
};

TEST_F(ExporterTest, StoredConfigHasThePlansSettingsAndHistoryAndTheBaseLayersBeforeOurs) {
  BuiltImage built = built_on_base();
  StoredImage image = store_built(built, {"alpine"});

  ImageConfig expected;
  expected.created = format_time(kEpoch);
  expected.architecture = "arm64";
  expected.variant = "v8";
  expected.os = "linux";
  expected.config.env = {"PATH=/usr/bin", "MODE=test"};
  expected.config.labels = {{"org.example.team", "build"}};
  expected.config.cmd = {"/app"};
  expected.rootfs.diff_ids = {base_diff_id_, diff_id_of(*built.top)};
  expected.history = {HistoryEntry{expected.created, "ADD base /", "", "", false},
                      HistoryEntry{expected.created, "COPY app / # buildkit", "", "buildkit.dockerfile.v0", false},
                      HistoryEntry{expected.created, "ENV MODE=test", "", "buildkit.dockerfile.v0", true}};
  const std::string config_bytes = store_->content().read_small(image.id());
  EXPECT_EQ(config_bytes, serialize_config(expected));
  EXPECT_EQ(image.manifest.config, describe(media_type::oci_config, config_bytes));
}

TEST_F(ExporterTest, StoredManifestListsTheBaseBlobsThenOursUncompressed) {
  BuiltImage built = built_on_base();
  StoredImage image = store_built(built, {});
  const std::string manifest_bytes = store_->content().read_small(image.descriptor.digest);
  EXPECT_EQ(image.descriptor, describe(media_type::oci_manifest, manifest_bytes));
  Manifest manifest = parse_manifest(manifest_bytes);
  EXPECT_EQ(manifest, image.manifest);
  ASSERT_EQ(manifest.layers.size(), 2u);
  EXPECT_EQ(manifest.layers[0], base_layer_);
  EXPECT_EQ(manifest.layers[1].media_type, media_type::oci_layer);
  EXPECT_EQ(manifest.layers[1].digest, diff_id_of(*built.top));
}

TEST_F(ExporterTest, StoringRecordsTheChainAndNamesTheImageWithEachNormalizedTag) {
  BuiltImage built = built_on_base();
  StoredImage image = store_built(built, {"alpine", "me/app:1"});
  EXPECT_THAT(image.names, ElementsAre("docker.io/library/alpine:latest", "docker.io/me/app:1"));
  for (const std::string& name : image.names) {
    auto record = store_->metadata().image_by_name(name);
    ASSERT_TRUE(record) << name;
    EXPECT_EQ(record->manifest, image.descriptor.digest);
    EXPECT_EQ(record->config, image.id());
  }
  auto chain = store_->metadata().get_cache(store::image_chain_key(image.id()));
  ASSERT_TRUE(chain);
  EXPECT_EQ(chain->snapshot_id, *built.top);
  EXPECT_THAT(statuses_, ElementsAre(Pair("exporting layers", false), Pair("exporting layers", true),
                                     Pair("writing image " + image.id().str(), true),
                                     Pair("naming to docker.io/library/alpine:latest", true),
                                     Pair("naming to docker.io/me/app:1", true)));
}

TEST_F(ExporterTest, AnImageStoredAgainFromTheSameSnapshotsHasTheSameId) {
  BuiltImage built = built_on_base();
  built.source_date_epoch.reset();
  EXPECT_EQ(store_built(built, {}).id(), store_built(built, {}).id());
}

TEST_F(ExporterTest, AnEmptyRootfsIsAnImageWithoutLayers) {
  BuiltImage built;
  built.config.architecture = "amd64";
  StoredImage image = store_built(built, {"empty"});
  EXPECT_TRUE(image.manifest.layers.empty());
  EXPECT_TRUE(parse_config(store_->content().read_small(image.id())).rootfs.diff_ids.empty());
  EXPECT_EQ(store_->metadata().get_cache(store::image_chain_key(image.id()))->snapshot_id, "");
}

TEST_F(ExporterTest, OciArchiveReadsBackWithTheImagesNamesAndTheOutputsName) {
  BuiltImage built = built_on_base();
  StoredImage image = store_built(built, {"alpine", "me/app:1"});
  auto exporter = make_exporter(*store_, "oci", {{"name", "named:v2"}});
  ImportResult result = import(output_of(*exporter, image, built));
  ASSERT_EQ(result.images.size(), 1u);
  EXPECT_THAT(result.images[0].names, UnorderedElementsAre("docker.io/library/alpine:latest", "docker.io/me/app:1",
                                                           "docker.io/library/named:v2"));
  // Our layer travels gzip-compressed; the config is the stored image's.
  Manifest manifest = parse_manifest(testing::read_file(imported_->path(result.images[0].target.digest)));
  EXPECT_EQ(manifest.config, image.manifest.config);
  ASSERT_EQ(manifest.layers.size(), 2u);
  EXPECT_EQ(manifest.layers[0], base_layer_);
  EXPECT_EQ(manifest.layers[1].media_type, media_type::oci_layer_gzip);
}

TEST_F(ExporterTest, DockerArchiveReadsBackWithItsNamesInManifestJson) {
  BuiltImage built = built_on_base();
  StoredImage image = store_built(built, {"alpine"});
  auto exporter = make_exporter(*store_, "docker", {{"name", "me/app:1"}});
  std::string archive = output_of(*exporter, image, built);
  std::vector<DockerArchiveEntry> entries = parse_docker_archive_manifest(tar_entries(archive).at("manifest.json"));
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_THAT(entries[0].repo_tags, UnorderedElementsAre("alpine:latest", "me/app:1"));
  EXPECT_EQ(entries[0].config, "blobs/sha256/" + std::string(image.id().hex()));
  ImportResult result = import(archive);
  ASSERT_EQ(result.images.size(), 1u);
  EXPECT_THAT(result.images[0].names, UnorderedElementsAre("docker.io/library/alpine:latest", "docker.io/me/app:1"));
}

TEST_F(ExporterTest, UnknownOutputTypeIsRefused) {
  try {
    make_exporter(*store_, "registry", {});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::user);
    EXPECT_STREQ(e.what(), "unsupported output type registry");
  }
  EXPECT_TRUE(is_store_output("image"));
  EXPECT_TRUE(is_store_output("moby"));
  EXPECT_FALSE(is_store_output("local"));
}

TEST_F(ExporterTest, TarAndLocalOutputsAreTheMergedRootfsAsOneTar) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: mounts";
  if (!store_->snapshots().overlay_supported()) GTEST_SKIP() << store_->snapshots().overlay_unsupported_reason();
  BuiltImage built = built_on_base();
  StoredImage image = store_built(built, {});
  auto tar = make_exporter(*store_, "tar", {});
  std::string bytes = output_of(*tar, image, built);
  std::map<std::string, std::string> entries = tar_entries(bytes);
  EXPECT_THAT(entries, UnorderedElementsAre(Pair("base", "from the base image"), Pair("app", "ours")));
  auto local = make_exporter(*store_, "local", {});
  EXPECT_EQ(output_of(*local, image, built), bytes);
}

}  // namespace
}  // namespace kbuild::image
