#include "engine/image/export_format.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <libdeflate.h>
#include <unistd.h>
#include <zstd.h>

#include <string>
#include <vector>

#include "common/error.h"
#include "common/syscall.h"
#include "common/temp_dir.h"
#include "common/unique_fd.h"
#include "engine/image/layer_blobs.h"

namespace kbuild::image {
namespace {

class Collect : public ByteSink {
 public:
  void write(const void* data, size_t size) override { bytes.append(static_cast<const char*>(data), size); }
  std::string bytes;
};

std::string compressed(const std::string& input, Compression type) {
  Collect out;
  auto compressor = make_compressor(out, {type, std::nullopt, 1});
  compressor->write(input.data(), input.size());
  compressor->finish();
  return out.bytes;
}

std::string decompressed(const std::string& blob, const std::string& media_type) {
  if (media_type.ends_with("zstd")) {
    std::string out(ZSTD_getFrameContentSize(blob.data(), blob.size()) == ZSTD_CONTENTSIZE_UNKNOWN ? 64 << 20 : 0, '\0');
    ZSTD_DCtx* d = ZSTD_createDCtx();
    ZSTD_inBuffer in{blob.data(), blob.size(), 0};
    ZSTD_outBuffer o{out.data(), out.size(), 0};
    while (in.pos < in.size && !ZSTD_isError(ZSTD_decompressStream(d, &o, &in))) {
    }
    ZSTD_freeDCtx(d);
    out.resize(o.pos);
    return out;
  }
  if (!media_type.ends_with("gzip")) return blob;
  libdeflate_decompressor* d = libdeflate_alloc_decompressor();
  std::string out;
  for (size_t offset = 0; offset < blob.size();) {
    std::vector<char> buffer(64 << 20);
    size_t in_used = 0, out_used = 0;
    EXPECT_EQ(libdeflate_gzip_decompress_ex(d, blob.data() + offset, blob.size() - offset, buffer.data(), buffer.size(),
                                            &in_used, &out_used),
              LIBDEFLATE_SUCCESS);
    out.append(buffer.data(), out_used);
    offset += in_used;
  }
  libdeflate_free_decompressor(d);
  return out;
}

Descriptor describe(std::string_view media_type, const store::Digest& digest, size_t size) {
  Descriptor d;
  d.media_type = media_type;
  d.digest = digest;
  d.size = static_cast<int64_t>(size);
  return d;
}

// An image of two layers: a base image's, stored as the gzip blob it came with, and one of
// ours, made from a snapshot and stored uncompressed.
class ExportFormatTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = store::Store::open(root_.path() + "/store");
    base_tar_ = std::string(300000, 'b') + "the base layer's tar";
    base_diff_id_ = store::Digest::of(base_tar_);
    std::string base_blob = compressed(base_tar_, Compression::gzip);
    Descriptor base = describe(media_type::oci_layer_gzip, store_->content().put(base_blob), base_blob.size());

    auto prepared = store_->snapshots().prepare();
    const std::string path = prepared.diff_path() + "/ours";
    UniqueFd fd(check(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644), "open", path));
    std::string content(2 << 20, 'o');
    ASSERT_EQ(::write(fd.get(), content.data(), content.size()), static_cast<ssize_t>(content.size()));
    store::SnapshotRecord snapshot = store_->snapshots().commit(std::move(prepared));
    LayerRecord ours = layer_for_snapshot(*store_, snapshot, std::nullopt);
    our_diff_id_ = ours.diff_id;

    ImageConfig config;
    config.architecture = "amd64";
    config.os = "linux";
    config.rootfs.diff_ids = {base_diff_id_, our_diff_id_};
    std::string config_bytes = serialize_config(config);
    manifest_.media_type = media_type::oci_manifest;
    manifest_.config = describe(media_type::oci_config, store_->content().put(config_bytes), config_bytes.size());
    manifest_.layers = {base, describe(media_type::oci_layer, ours.diff_id, ours.size)};
  }

  Manifest exported(const ExportFormat& format) {
    Descriptor d = export_manifest(*store_, manifest_, format);
    EXPECT_EQ(d.digest, store::Digest::of(store_->content().read_small(d.digest)));
    Manifest m = parse_manifest(store_->content().read_small(d.digest));
    EXPECT_EQ(m.media_type, d.media_type);
    EXPECT_EQ(m.config.digest, manifest_.config.digest);
    return m;
  }

  // The blob's bytes, decompressed, hash to the layer's diff_id.
  void expect_layer(const Descriptor& layer, const store::Digest& diff_id) {
    std::string blob = store_->content().read_small(layer.digest, 64 << 20);
    EXPECT_EQ(static_cast<int64_t>(blob.size()), layer.size);
    EXPECT_EQ(store::Digest::of(decompressed(blob, layer.media_type)), diff_id) << layer.media_type;
  }

  TempDir root_;
  std::unique_ptr<store::Store> store_;
  std::string base_tar_;
  store::Digest base_diff_id_, our_diff_id_;
  Manifest manifest_;
};

TEST_F(ExportFormatTest, BuildKitsImageDefaultsAreGzipWithDockerMediaTypes) {
  ExportPlan plan = plan_export(*store_, manifest_, ExportFormat{});
  ASSERT_EQ(plan.layers.size(), 2u);
  EXPECT_TRUE(plan.layers[0].blob) << "the base keeps its gzip blob";
  EXPECT_FALSE(plan.layers[1].blob) << "ours is compressed when first exported";

  Manifest m = exported(ExportFormat{});
  EXPECT_EQ(m.media_type, media_type::docker_manifest);
  EXPECT_EQ(m.config.media_type, media_type::docker_config);
  ASSERT_EQ(m.layers.size(), 2u);
  EXPECT_EQ(m.layers[0].media_type, media_type::docker_layer_gzip);
  EXPECT_EQ(m.layers[0].digest, manifest_.layers[0].digest);
  EXPECT_EQ(m.layers[1].media_type, media_type::docker_layer_gzip);
  expect_layer(m.layers[1], our_diff_id_);
  EXPECT_LT(m.layers[1].size, 100000);

  // Remembered: the next export finds the blob made.
  plan = plan_export(*store_, manifest_, ExportFormat{});
  ASSERT_TRUE(plan.layers[1].blob);
  EXPECT_EQ(plan.layers[1].blob->digest, m.layers[1].digest);
}

TEST_F(ExportFormatTest, OciMediaTypesAndUncompressedLayers) {
  ExportFormat format;
  format.oci_media_types = true;
  format.compression.type = Compression::none;
  Manifest m = exported(format);
  EXPECT_EQ(m.media_type, media_type::oci_manifest);
  EXPECT_EQ(m.config.media_type, media_type::oci_config);
  EXPECT_EQ(m.layers[0].media_type, media_type::oci_layer_gzip);
  EXPECT_EQ(m.layers[1].media_type, media_type::oci_layer);
  EXPECT_EQ(m.layers[1].digest, our_diff_id_) << "an uncompressed blob is the tar";
}

TEST_F(ExportFormatTest, ZstdMakesItOciAndForceCompressionConvertsTheBase) {
  ExportFormat format;
  format.compression.type = Compression::zstd;
  Manifest m = exported(format);
  EXPECT_EQ(m.media_type, media_type::oci_manifest) << "Docker has no zstd media type";
  EXPECT_EQ(m.layers[0].media_type, media_type::oci_layer_gzip);
  EXPECT_EQ(m.layers[1].media_type, media_type::oci_layer_zstd);
  expect_layer(m.layers[1], our_diff_id_);

  format.force_compression = true;
  m = exported(format);
  EXPECT_EQ(m.layers[0].media_type, media_type::oci_layer_zstd);
  expect_layer(m.layers[0], base_diff_id_);
  expect_layer(m.layers[1], our_diff_id_);
}

TEST_F(ExportFormatTest, ABaseBlobThatIsNotItsDiffIdIsNotConverted) {
  std::string other = compressed("not the base at all", Compression::gzip);
  manifest_.layers[0] = describe(media_type::oci_layer_gzip, store_->content().put(other), other.size());
  ExportFormat format;
  format.compression.type = Compression::zstd;
  format.force_compression = true;
  try {
    exported(format);
    FAIL() << "converted a layer that is not its diff_id";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not its diff_id"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(remembered_layer_blob(*store_, base_diff_id_, Compression::zstd));
}

TEST(ExportFormat, AttributesAsBuildKitParsesThem) {
  ExportFormat f = parse_export_format({}, false);
  EXPECT_EQ(f.compression.type, Compression::gzip);
  EXPECT_FALSE(f.compression.level);
  EXPECT_FALSE(f.force_compression);
  EXPECT_FALSE(f.oci_media_types);
  EXPECT_TRUE(parse_export_format({}, true).oci_media_types);
  EXPECT_TRUE(default_oci_media_types("oci"));
  EXPECT_FALSE(default_oci_media_types("docker"));
  EXPECT_FALSE(default_oci_media_types("image"));
  EXPECT_FALSE(default_oci_media_types("registry"));

  f = parse_export_format({{"compression", "zstd"}, {"compression-level", "19"}, {"force-compression", "true"},
                           {"oci-mediatypes", "0"}, {"name", "x"}, {"push", "true"}},
                          true);
  EXPECT_EQ(f.compression.type, Compression::zstd);
  EXPECT_EQ(f.compression.level, 19);
  EXPECT_TRUE(f.force_compression);
  EXPECT_FALSE(f.oci_media_types);
  EXPECT_TRUE(parse_export_format({{"force-compression", ""}}, false).force_compression);

  auto message = [](std::map<std::string, std::string> attributes) {
    try {
      parse_export_format(attributes, false);
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::user);
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_EQ(message({{"compression", "lz4"}}), "unsupported compression type lz4");
  EXPECT_EQ(message({{"compression-level", "fast"}}), "non-integer value fast specified for compression-level");
  EXPECT_EQ(message({{"compression-level", "7x"}}), "non-integer value 7x specified for compression-level");
  EXPECT_EQ(message({{"compression-level", "10"}}), "compression-level 10 is out of range for gzip (0..9)");
  EXPECT_EQ(message({{"force-compression", "maybe"}}), "non-bool value maybe specified for force-compression");
  EXPECT_EQ(message({{"oci-mediatypes", "yes"}}), "non-bool value yes specified for oci-mediatypes");
}

}  // namespace
}  // namespace kbuild::image
