// The engine's image store on a real store in a temp dir: names, ids, tags and removal as
// Docker has them, without D-Bus. (Loading and saving archives run end to end in
// tests/integration/test_daemon.py.)
#include "engine/image/image_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/error.h"
#include "common/temp_dir.h"
#include "engine/image/oci.h"
#include "engine/image/reference.h"
#include "tests/unit/image/image_test_util.h"

namespace kbuild::image {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class ImageStoreTest : public ::testing::Test {
 protected:
  // An image of one 100-byte layer whose config holds `label`, named `names`.
  store::ImageRecord add_image(const std::string& label, const std::vector<std::string>& names) {
    ImageConfig config;
    config.os = "linux";
    config.architecture = "amd64";
    config.config.labels["l"] = label;
    std::string config_bytes = serialize_config(config);
    Manifest manifest;
    manifest.media_type = std::string(media_type::oci_manifest);
    manifest.config.media_type = "application/vnd.oci.image.config.v1+json";
    manifest.config.digest = store_->content().put(config_bytes);
    manifest.config.size = static_cast<int64_t>(config_bytes.size());
    Descriptor layer;
    layer.media_type = "application/vnd.oci.image.layer.v1.tar+gzip";
    layer.digest = store::Digest::of("layer " + label);
    layer.size = 100;
    manifest.layers.push_back(layer);
    store::ImageRecord record{store_->content().put(serialize_manifest(manifest)), manifest.config.digest,
                              std::chrono::system_clock::now()};
    for (const std::string& name : names) store_->metadata().set_image_name(normalize_reference(name), record);
    return record;
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
  std::unique_ptr<store::Store> store_ = store::Store::open(dir_.path() + "/store");
  ImageStore images_{*store_};
};

TEST_F(ImageStoreTest, ListsEachImageOnceWithAllItsNamesAndItsLayersSize) {
  store::ImageRecord a = add_image("a", {"alpine", "me/app:1"});
  add_image("b", {"busybox:1.36"});
  std::vector<ImageSummary> listed = images_.list();
  ASSERT_EQ(listed.size(), 2u);
  const ImageSummary& first = listed[0].config == a.config ? listed[0] : listed[1];
  EXPECT_THAT(first.names, ElementsAre("docker.io/library/alpine:latest", "docker.io/me/app:1"));
  EXPECT_EQ(first.manifest, a.manifest);
  EXPECT_EQ(first.size, 100u);
}

TEST_F(ImageStoreTest, ResolvesNamesIdsAndUniqueIdPrefixes) {
  store::ImageRecord a = add_image("a", {"alpine"});
  EXPECT_EQ(images_.resolve("alpine").config, a.config);
  EXPECT_EQ(images_.resolve("docker.io/library/alpine:latest").config, a.config);
  EXPECT_EQ(images_.resolve(a.config.str()).config, a.config);
  EXPECT_EQ(images_.resolve(std::string(a.config.hex())).config, a.config);
  EXPECT_EQ(images_.resolve(std::string(a.config.hex().substr(0, 12))).config, a.config);
  EXPECT_EQ(error_of([&] { images_.resolve("nothere"); }), "No such image: nothere");
  EXPECT_THAT(error_of([&] { images_.resolve("Upper"); }), HasSubstr("must be lowercase"));
}

TEST_F(ImageStoreTest, TagsAndRemovesAsDockerDoes) {
  store::ImageRecord a = add_image("a", {"alpine"});
  images_.tag("alpine", "me/copy:2");
  EXPECT_EQ(images_.resolve("me/copy:2").config, a.config);
  EXPECT_THAT(error_of([&] { images_.tag("alpine", "Bad"); }), HasSubstr("invalid reference format"));
  // By id with two names: refused unless forced.
  EXPECT_THAT(error_of([&] { images_.remove(std::string(a.config.hex().substr(0, 12)), false); }),
              HasSubstr("must be forced"));
  EXPECT_THAT(images_.remove("me/copy:2", false), ElementsAre("Untagged: me/copy:2"));
  EXPECT_THAT(images_.remove("alpine", false), ElementsAre("Untagged: alpine:latest", "Deleted: " + a.config.str()));
  EXPECT_TRUE(images_.list().empty());
}

TEST_F(ImageStoreTest, UsageCountsTaggedImagesOnce) {
  add_image("a", {"alpine", "again"});
  add_image("b", {"busybox"});
  StoreUsage usage = images_.usage();
  EXPECT_EQ(usage.images, 2u);
  EXPECT_GT(usage.blobs_size, 0u);
  EXPECT_EQ(usage.images_size, 0u);  // no layers unpacked into snapshots here
}

TEST_F(ImageStoreTest, AnImageWhoseLayerDoesNotUnpackLeavesNoSnapshot) {
  std::string good = testing::TarBuilder().file("a", "first layer").finish();
  std::string tar = testing::TarBuilder().file("b", "second layer").finish();
  std::string corrupt = tar.substr(0, 700);  // the tar ends inside its entry
  ImageConfig config;
  config.os = "linux";
  config.architecture = "amd64";
  config.rootfs.diff_ids = {store::Digest::of(good), store::Digest::of(tar)};
  std::string config_bytes = serialize_config(config);
  Manifest manifest;
  manifest.media_type = std::string(media_type::oci_manifest);
  auto describe = [&](std::string_view type, const std::string& bytes) {
    Descriptor d;
    d.media_type = std::string(type);
    d.digest = store_->content().put(bytes);
    d.size = static_cast<int64_t>(bytes.size());
    return d;
  };
  manifest.config = describe(media_type::oci_config, config_bytes);
  manifest.layers = {describe(media_type::oci_layer, good), describe(media_type::oci_layer, corrupt)};
  store::Digest digest = store_->content().put(serialize_manifest(manifest));
  EXPECT_THAT(error_of([&] { images_.unpack(digest); }), HasSubstr(manifest.layers[1].digest.str()));
  EXPECT_TRUE(store_->metadata().list_snapshots().empty());
}

}  // namespace
}  // namespace kbuild::image
