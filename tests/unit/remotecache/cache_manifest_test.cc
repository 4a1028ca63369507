#include "engine/remotecache/cache_manifest.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "common/error.h"
#include "engine/remotecache/cache_config.h"

namespace kbuild::remotecache {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Kind = FoundCache::Kind;
namespace mt = image::media_type;

std::string hex(char c) { return std::string(64, c); }
store::Digest digest(char c) { return store::Digest::from_hex(hex(c)); }

image::Descriptor descriptor(std::string_view media_type, char c, int64_t size) {
  image::Descriptor d;
  d.media_type = media_type;
  d.digest = digest(c);
  d.size = size;
  return d;
}

const image::Descriptor kConfig = descriptor(kCacheConfigMediaType, 'c', 300);

std::string error_of(const std::function<void()>& f, ErrorKind kind = ErrorKind::user) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no error";
  return {};
}

std::string format_error(const std::map<std::string, std::string>& attributes) {
  return error_of([&] { parse_cache_format(attributes); });
}

// --- attributes -----------------------------------------------------------------------------

TEST(CacheFormat, DefaultsAreBuildKits) {
  CacheFormat f = parse_cache_format({{"type", "registry"}, {"ref", "registry.example/app:cache"}});
  EXPECT_EQ(f.mode, CacheFormat::Mode::min);
  EXPECT_TRUE(f.image_manifest);
  EXPECT_TRUE(f.oci_media_types);
  EXPECT_TRUE(f.blobs.oci_media_types);
  EXPECT_FALSE(f.ignore_error);
  EXPECT_EQ(f.blobs.compression.type, image::Compression::gzip);
  EXPECT_FALSE(f.blobs.compression.level);
  EXPECT_FALSE(f.blobs.force_compression);
  CacheFormat unset;
  EXPECT_EQ(unset.mode, f.mode);
  EXPECT_EQ(unset.image_manifest, f.image_manifest);
  EXPECT_EQ(unset.oci_media_types, f.oci_media_types);
  EXPECT_EQ(unset.blobs.oci_media_types, f.blobs.oci_media_types);
  EXPECT_EQ(unset.blobs.compression.type, f.blobs.compression.type);
}

TEST(CacheFormat, ReadsEveryAttribute) {
  CacheFormat f = parse_cache_format({{"mode", "max"},
                                      {"image-manifest", "false"},
                                      {"oci-mediatypes", "1"},
                                      {"compression", "zstd"},
                                      {"compression-level", "12"},
                                      {"force-compression", "true"},
                                      {"ignore-error", "True"}});
  EXPECT_EQ(f.mode, CacheFormat::Mode::max);
  EXPECT_FALSE(f.image_manifest);
  EXPECT_TRUE(f.oci_media_types);
  EXPECT_EQ(f.blobs.compression.type, image::Compression::zstd);
  EXPECT_EQ(f.blobs.compression.level, 12);
  EXPECT_TRUE(f.blobs.force_compression);
  EXPECT_TRUE(f.ignore_error);
  EXPECT_EQ(parse_cache_format({{"mode", "min"}}).mode, CacheFormat::Mode::min);
  CacheFormat uncompressed = parse_cache_format({{"compression", "uncompressed"}, {"compression-level", "3"}});
  EXPECT_FALSE(uncompressed.blobs.compression.level);
  EXPECT_TRUE(parse_cache_format({{"force-compression", ""}}).blobs.force_compression);
}

TEST(CacheFormat, DockerMediaTypesMakeAnIndexUnlessAnImageManifestIsAskedFor) {
  CacheFormat f = parse_cache_format({{"oci-mediatypes", "false"}});
  EXPECT_FALSE(f.oci_media_types);
  EXPECT_FALSE(f.blobs.oci_media_types);
  EXPECT_FALSE(f.image_manifest);
  EXPECT_FALSE(parse_cache_format({{"oci-mediatypes", "0"}, {"image-manifest", "false"}}).image_manifest);
  EXPECT_EQ(format_error({{"oci-mediatypes", "false"}, {"image-manifest", "true"}}),
            "invalid configuration for remote cache, OCI mediatypes are required for image-manifest cache format");
}

TEST(CacheFormat, RefusesWhatBuildKitRefusesWithItsText) {
  EXPECT_EQ(format_error({{"oci-mediatypes", "yes"}}),
            "failed to parse oci-mediatypes: strconv.ParseBool: parsing \"yes\": invalid syntax");
  EXPECT_EQ(format_error({{"oci-mediatypes", ""}}),
            "failed to parse oci-mediatypes: strconv.ParseBool: parsing \"\": invalid syntax");
  EXPECT_EQ(format_error({{"image-manifest", "on"}}),
            "failed to parse image-manifest: strconv.ParseBool: parsing \"on\": invalid syntax");
  EXPECT_EQ(format_error({{"compression", "lz4"}}), "unsupported compression type lz4");
  EXPECT_EQ(format_error({{"compression", "estargz"}}),
            "compression type estargz is not supported (gzip, zstd, uncompressed are)");
  EXPECT_EQ(format_error({{"compression-level", "high"}}), "non-integer value high specified for compression-level");
  EXPECT_EQ(format_error({{"compression-level", "10"}}), "compression-level 10 is out of range for gzip (0..9)");
  EXPECT_EQ(format_error({{"compression", "zstd"}, {"compression-level", "23"}}),
            "compression-level 23 is out of range for zstd (0..22)");
  EXPECT_EQ(format_error({{"force-compression", "maybe"}}), "non-bool value maybe specified for force-compression");
}

TEST(CacheFormat, RefusesAModeOrIgnoreErrorThatIsNotOne) {
  // BuildKit logs these at debug level and exports with min and false.
  EXPECT_EQ(format_error({{"mode", "maximum"}}), "invalid cache export mode \"maximum\": min or max");
  EXPECT_EQ(format_error({{"mode", ""}}), "invalid cache export mode \"\": min or max");
  EXPECT_EQ(format_error({{"ignore-error", "please"}}),
            "failed to parse ignore-error: strconv.ParseBool: parsing \"please\": invalid syntax");
}

// --- the envelope ---------------------------------------------------------------------------

const std::vector<image::Descriptor> kLayers = {descriptor(mt::oci_layer_gzip, 'a', 100),
                                                descriptor(mt::docker_layer_gzip, 'b', 200)};
const std::vector<store::Digest> kDiffIds = {digest('1'), digest('2')};

std::string layer_json(std::string_view media_type, char blob, int size, char diff) {
  return R"({"mediaType":")" + std::string(media_type) + R"(","digest":"sha256:)" + hex(blob) +
         R"(","size":)" + std::to_string(size) + R"(,"annotations":{"containerd.io/uncompressed":"sha256:)" +
         hex(diff) + R"("}})";
}

const std::string kConfigJson =
    R"({"mediaType":"application/vnd.kbuild.cache.config.v1+json","digest":"sha256:)" + hex('c') + R"(","size":300})";

TEST(CacheManifest, ImageManifestBytesArePinned) {
  image::Descriptor config = kConfig;
  config.annotations["dropped"] = "yes";
  std::vector<image::Descriptor> layers = kLayers;
  layers[0].annotations["buildkit/createdat"] = "dropped";
  EXPECT_EQ(make_cache_manifest(config, layers, kDiffIds, CacheFormat{}),
            R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":)" + kConfigJson +
                R"(,"layers":[)" + layer_json(mt::oci_layer_gzip, 'a', 100, '1') + "," +
                layer_json(mt::oci_layer_gzip, 'b', 200, '2') + "]}");
}

TEST(CacheManifest, IndexListsTheLayersThenTheConfig) {
  CacheFormat f;
  f.image_manifest = false;
  EXPECT_EQ(make_cache_manifest(kConfig, kLayers, kDiffIds, f),
            R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[)" +
                layer_json(mt::oci_layer_gzip, 'a', 100, '1') + "," + layer_json(mt::oci_layer_gzip, 'b', 200, '2') +
                "," + kConfigJson + "]}");
}

TEST(CacheManifest, DockerManifestListHasDockerLayerTypesButZstdStaysOci) {
  CacheFormat f = parse_cache_format({{"oci-mediatypes", "false"}});
  std::vector<image::Descriptor> layers = kLayers;
  layers.push_back(descriptor(mt::oci_layer, 'd', 400));
  layers.push_back(descriptor(mt::oci_layer_zstd, 'e', 500));
  std::vector<store::Digest> diff_ids = kDiffIds;
  diff_ids.push_back(digest('4'));
  diff_ids.push_back(digest('5'));
  EXPECT_EQ(make_cache_manifest(kConfig, layers, diff_ids, f),
            R"({"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json",)"
            R"("manifests":[)" +
                layer_json(mt::docker_layer_gzip, 'a', 100, '1') + "," +
                layer_json(mt::docker_layer_gzip, 'b', 200, '2') + "," + layer_json(mt::docker_layer, 'd', 400, '4') +
                "," + layer_json(mt::oci_layer_zstd, 'e', 500, '5') + "," + kConfigJson + "]}");
}

TEST(CacheManifest, LayerMediaTypesConvertAsBuildKitsDo) {
  EXPECT_EQ(cache_layer_media_type(mt::docker_layer, true), mt::oci_layer);
  EXPECT_EQ(cache_layer_media_type(mt::docker_layer_gzip, true), mt::oci_layer_gzip);
  EXPECT_EQ(cache_layer_media_type(mt::oci_layer_zstd, true), mt::oci_layer_zstd);
  EXPECT_EQ(cache_layer_media_type(mt::oci_layer, false), mt::docker_layer);
  EXPECT_EQ(cache_layer_media_type(mt::oci_layer_gzip, false), mt::docker_layer_gzip);
  EXPECT_EQ(cache_layer_media_type(mt::oci_layer_zstd, false), mt::oci_layer_zstd);
  EXPECT_EQ(cache_layer_media_type("application/x-other", false), "application/x-other");
}

TEST(CacheManifest, RefusesAnImageManifestWithDockerTypesAndMismatchedDiffIds) {
  CacheFormat docker;
  docker.oci_media_types = false;
  EXPECT_EQ(error_of([&] { make_cache_manifest(kConfig, kLayers, kDiffIds, docker); }),
            "invalid configuration for remote cache, OCI mediatypes are required for image-manifest cache format");
  EXPECT_EQ(error_of([&] { make_cache_manifest(kConfig, kLayers, {digest('1')}, CacheFormat{}); }, ErrorKind::internal),
            "cache manifest: 2 layers but 1 diffIDs");
}

// --- inspecting what an import fetched -------------------------------------------------------

TEST(InspectCache, FindsOurImageManifestWithOrWithoutItsMediaType) {
  std::string bytes = make_cache_manifest(kConfig, kLayers, kDiffIds, CacheFormat{});
  for (std::string_view given : {mt::oci_manifest, std::string_view(), std::string_view("application/octet-stream")}) {
    FoundCache found = inspect_cache(given, bytes);
    EXPECT_EQ(found.kind, Kind::kbuild) << given << ": " << found.why;
    EXPECT_EQ(found.media_type, mt::oci_manifest);
    EXPECT_EQ(found.config, kConfig);
    ASSERT_EQ(found.blobs.size(), 2u);
    EXPECT_EQ(found.blobs[1].digest, digest('b'));
    EXPECT_EQ(found.blobs[1].media_type, mt::oci_layer_gzip);
    EXPECT_EQ(found.blobs[1].annotations.at("containerd.io/uncompressed"), digest('2').str());
  }
}

TEST(InspectCache, FindsOurIndexAndManifestList) {
  for (bool oci : {true, false}) {
    CacheFormat f = parse_cache_format({{"oci-mediatypes", oci ? "true" : "false"}, {"image-manifest", "false"}});
    std::string bytes = make_cache_manifest(kConfig, kLayers, kDiffIds, f);
    FoundCache found = inspect_cache("", bytes);
    EXPECT_EQ(found.kind, Kind::kbuild) << found.why;
    EXPECT_EQ(found.media_type, oci ? mt::oci_index : mt::docker_manifest_list);
    EXPECT_EQ(found.config, kConfig);
    ASSERT_EQ(found.blobs.size(), 2u);
    EXPECT_EQ(found.blobs[0].digest, digest('a'));
  }
}

TEST(InspectCache, RecognisesBuildKitsCacheInEitherEnvelope) {
  // As BuildKit's registry exporter pushes them, image-manifest=true and false.
  std::string manifest =
      R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":)"
      R"({"mediaType":"application/vnd.buildkit.cacheconfig.v0","digest":"sha256:)" + hex('c') + R"(","size":1006},)"
      R"("layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:)" + hex('a') +
      R"(","size":3623807,"annotations":{"buildkit/createdat":"2024-01-01T00:00:00Z",)"
      R"("containerd.io/uncompressed":"sha256:)" + hex('1') + R"("}}]})";
  FoundCache found = inspect_cache(mt::oci_manifest, manifest);
  EXPECT_EQ(found.kind, Kind::buildkit);
  EXPECT_EQ(found.config.media_type, kBuildKitCacheConfigMediaType);
  EXPECT_THAT(found.blobs, ElementsAre(::testing::Field(&image::Descriptor::digest, digest('a'))));

  std::string index = R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[)"
                      R"({"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:)" + hex('a') +
                      R"(","size":3623807},{"mediaType":"application/vnd.buildkit.cacheconfig.v0","digest":"sha256:)" +
                      hex('c') + R"(","size":1006}]})";
  found = inspect_cache("", index);
  EXPECT_EQ(found.kind, Kind::buildkit);
  EXPECT_EQ(found.config.digest, digest('c'));
  EXPECT_EQ(found.blobs.size(), 1u);
}

TEST(InspectCache, TellsAnImageFromACache) {
  image::Manifest m;
  m.media_type = mt::docker_manifest;
  m.config = descriptor(mt::docker_config, 'c', 1500);
  m.layers = {descriptor(mt::docker_layer_gzip, 'a', 100)};
  FoundCache found = inspect_cache(mt::docker_manifest, image::serialize_manifest(m));
  EXPECT_EQ(found.kind, Kind::image);
  EXPECT_EQ(found.config.digest, digest('c'));
  EXPECT_EQ(found.blobs.size(), 1u);

  image::Index index;
  index.media_type = mt::oci_index;
  index.manifests = {descriptor(mt::oci_manifest, 'd', 500), descriptor(mt::oci_manifest, 'e', 500)};
  found = inspect_cache(mt::oci_index, image::serialize_index(index));
  EXPECT_EQ(found.kind, Kind::image);
  EXPECT_TRUE(found.config.digest.empty());
  EXPECT_EQ(found.blobs, index.manifests);
}

TEST(InspectCache, AnythingElseIsUnknownWithAReason) {
  auto why = [](std::string_view media_type, std::string_view bytes) {
    FoundCache found = inspect_cache(media_type, bytes);
    EXPECT_EQ(found.kind, Kind::unknown) << bytes;
    return found.why;
  };
  EXPECT_THAT(why("", "not json"), HasSubstr("parse_error"));
  EXPECT_EQ(why("", "[1]"), "not a JSON object");
  EXPECT_EQ(why("", std::string(kCacheConfigLimit + 1, ' ')), "larger than 4 MiB");
  EXPECT_EQ(why("", R"({"config":{},"manifests":[]})"), "invalid ambiguous manifest and manifest list");
  EXPECT_EQ(why("", R"({"mediaType":"application/vnd.oci.image.index.v1+json","layers":[]})"),
            "mediaType in manifest does not match manifest contents");
  EXPECT_EQ(why(mt::oci_manifest, R"({"manifests":[]})"),
            "the document is \"application/vnd.docker.distribution.manifest.list.v2+json\", not "
            "\"application/vnd.oci.image.manifest.v1+json\"");
  EXPECT_EQ(why("", R"({"manifests":[]})"), "an empty index");
  EXPECT_THAT(why("", R"({"layers":[]})"), HasSubstr("no \"config\""));
  EXPECT_EQ(why("", R"({"config":{"mediaType":"application/vnd.example+json","digest":"sha256:)" + hex('c') +
                        R"(","size":2},"layers":[]})"),
            "a manifest whose config is \"application/vnd.example+json\", neither a cache's nor an image's");
  EXPECT_EQ(why("", R"({"manifests":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:)" +
                        hex('a') + R"(","size":2}]})"),
            "an index that lists \"application/vnd.oci.image.layer.v1.tar\", neither a cache nor an image");
  EXPECT_EQ(why("", R"({"manifests":[)" + kConfigJson + "," + kConfigJson + "]}"),
            "an index that lists 2 cache configs");
}

}  // namespace
}  // namespace kbuild::remotecache
