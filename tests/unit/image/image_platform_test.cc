#include "engine/image/image_platform.h"

#include <gtest/gtest.h>

#include "common/temp_dir.h"

namespace kbuild::image {
namespace {

class ImagePlatformTest : public ::testing::Test {
 protected:
  // An image (config and manifest, no layers) that says `architecture` and `variant`.
  store::ImageRecord image(const std::string& architecture, const std::string& variant = "") {
    ImageConfig config;
    config.os = "linux";
    config.architecture = architecture;
    config.variant = variant;
    std::string config_bytes = serialize_config(config);
    Manifest manifest;
    manifest.media_type = media_type::oci_manifest;
    manifest.config = describe(media_type::oci_config, store_->content().put(config_bytes),
                               static_cast<int64_t>(config_bytes.size()));
    std::string manifest_bytes = serialize_manifest(manifest);
    return store::ImageRecord{store_->content().put(manifest_bytes), manifest.config.digest, {}};
  }

  Descriptor entry(const store::ImageRecord& record, const std::string& architecture, const std::string& variant = "") {
    Descriptor d = describe(media_type::oci_manifest, record.manifest,
                            static_cast<int64_t>(store_->content().size(record.manifest)));
    d.platform = Platform{architecture, "linux", "", {}, variant};
    return d;
  }

  store::ImageRecord index(const std::vector<Descriptor>& manifests) {
    Index index;
    index.media_type = media_type::oci_index;
    index.manifests = manifests;
    store::Digest digest = store_->content().put(serialize_index(index));
    return store::ImageRecord{digest, digest, {}};
  }

  TempDir dir_;
  std::unique_ptr<store::Store> store_ = store::Store::open(dir_.path() + "/store");
};

TEST_F(ImagePlatformTest, AnImageServesOnlyThePlatformItsConfigSays) {
  store::ImageRecord amd64 = image("amd64");
  EXPECT_FALSE(is_index(amd64));
  EXPECT_EQ(image_for_platform(*store_, amd64, "linux/amd64"), amd64);
  std::vector<std::string> found;
  EXPECT_EQ(image_for_platform(*store_, amd64, "linux/arm64", &found), std::nullopt);
  EXPECT_EQ(found, std::vector<std::string>{"linux/amd64"});
}

TEST_F(ImagePlatformTest, ArchitecturesAndVariantsAreComparedNormalized) {
  EXPECT_TRUE(image_for_platform(*store_, image("aarch64"), "linux/arm64"));
  EXPECT_TRUE(image_for_platform(*store_, image("arm64", "v8"), "linux/arm64"));
  EXPECT_TRUE(image_for_platform(*store_, image("arm"), "linux/arm/v7"));
  EXPECT_FALSE(image_for_platform(*store_, image("arm", "v6"), "linux/arm/v7"));
  // An image that names no architecture is taken for any, as Docker takes it.
  EXPECT_TRUE(image_for_platform(*store_, image(""), "linux/s390x"));
}

TEST_F(ImagePlatformTest, AnIndexServesEachPlatformItHoldsWithItsOwnImage) {
  store::ImageRecord amd64 = image("amd64"), arm64 = image("arm64");
  store::ImageRecord both = index({entry(amd64, "amd64"), entry(arm64, "arm64")});
  EXPECT_TRUE(is_index(both));
  EXPECT_EQ(image_for_platform(*store_, both, "linux/amd64")->config, amd64.config);
  EXPECT_EQ(image_for_platform(*store_, both, "linux/arm64")->config, arm64.config);
  std::vector<std::string> found;
  EXPECT_EQ(image_for_platform(*store_, both, "linux/riscv64", &found), std::nullopt);
  EXPECT_EQ(found, (std::vector<std::string>{"linux/amd64", "linux/arm64"}));
}

TEST_F(ImagePlatformTest, AnIndexEntryWhoseManifestIsNotStoredIsLeftOut) {
  store::ImageRecord amd64 = image("amd64");
  Descriptor missing = entry(amd64, "arm64");
  missing.digest = store::Digest::parse("sha256:" + std::string(64, 'a'));
  store::ImageRecord partial = index({entry(amd64, "amd64"), missing});
  std::vector<PlatformImage> images = platform_images(*store_, partial);
  ASSERT_EQ(images.size(), 1u);
  EXPECT_EQ(images[0].platform, "linux/amd64");
  EXPECT_EQ(image_for_platform(*store_, partial, "linux/arm64"), std::nullopt);
}

}  // namespace
}  // namespace kbuild::image
