#include "engine/image/image_archive.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <string>

#include "engine/image/layer_tar.h"
#include "engine/image/oci.h"
#include "tests/unit/image/image_test_util.h"

namespace kbuild::image {
namespace {

using testing::DirBlobStore;
using testing::have_tool;
using testing::open_dir;
using testing::read_file;
using testing::run;
using testing::TarBuilder;
using testing::write_file;

// A one-layer image built the way the exporter will build it: layer blob, config, manifest.
class ImageArchiveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    blob_dir_ = work_.path() + "/blobs";
    check(::mkdir(blob_dir_.c_str(), 0755), "mkdir");
    store_ = std::make_unique<DirBlobStore>(blob_dir_);
    std::string upper = work_.path() + "/upper";
    check(::mkdir(upper.c_str(), 0755), "mkdir");
    check(::mkdir((upper + "/app").c_str(), 0755), "mkdir");
    write_file(upper + "/app/hello.txt", "hello from kbuild\n");
    write_file(upper + "/app/run.sh", "#!/bin/sh\necho hi\n", 0755);
    check(::symlink("hello.txt", (upper + "/app/greeting").c_str()), "symlink");

    auto writer = store_->writer();
    UniqueFd dir = open_dir(upper);
    layer_ = write_layer(dir.get(), *writer);
    EXPECT_EQ(writer->commit(layer_.blob_digest), layer_.blob_digest);

    ImageConfig config;
    config.architecture = "amd64";
    config.os = "linux";
    config.created = "2024-05-01T10:20:30Z";
    config.config.env = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"};
    config.config.cmd = {"/app/run.sh"};
    config.config.working_dir = "/app";
    config.rootfs.diff_ids = {layer_.diff_id};
    config.history = {{"2024-05-01T10:20:30Z", "COPY app /app # buildkit", "", "buildkit.dockerfile.v0", false}};
    config_bytes_ = serialize_config(config);
    store::Digest config_digest = store_->put(config_bytes_);

    Manifest manifest;
    manifest.media_type = media_type::oci_manifest;
    manifest.config.media_type = media_type::oci_config;
    manifest.config.digest = config_digest;
    manifest.config.size = static_cast<int64_t>(config_bytes_.size());
    Descriptor layer;
    layer.media_type = media_type::oci_layer_gzip;
    layer.digest = layer_.blob_digest;
    layer.size = static_cast<int64_t>(layer_.blob_size);
    manifest.layers.push_back(layer);
    manifest_bytes_ = serialize_manifest(manifest);
    target_.media_type = media_type::oci_manifest;
    target_.digest = store_->put(manifest_bytes_);
    target_.size = static_cast<int64_t>(manifest_bytes_.size());
  }

  std::string write_archive(ArchiveFormat format, const std::string& name) {
    std::string path = work_.path() + "/" + name;
    UniqueFd fd(check(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644), "open", path));
    FdSink sink(fd.get(), path);
    ArchiveWriteOptions options;
    options.format = format;
    write_image_archive({{target_, {"kbuild-test:v1"}}}, *store_, sink, options);
    return path;
  }

  ImportResult import(const std::string& path, const std::string& into) {
    std::string dir = work_.path() + "/" + into;
    check(::mkdir(dir.c_str(), 0755), "mkdir");
    imported_ = std::make_unique<DirBlobStore>(dir);
    UniqueFd fd = testing::open_read(path);
    return read_image_archive(fd.get(), *imported_);
  }

  TempDir work_;
  std::string blob_dir_;
  std::unique_ptr<DirBlobStore> store_;
  std::unique_ptr<DirBlobStore> imported_;
  LayerDigests layer_;
  std::string config_bytes_;
  std::string manifest_bytes_;
  Descriptor target_;
};

TEST_F(ImageArchiveTest, OciArchiveHasTheLayoutContainerdWrites) {
  std::string path = write_archive(ArchiveFormat::oci, "oci.tar");
  std::string listing;
  ASSERT_EQ(run("tar -tf " + path, &listing), 0);
  std::vector<std::string> blobs = {layer_.blob_digest.str(), store::Digest::of(config_bytes_).str(),
                                    target_.digest.str()};
  std::sort(blobs.begin(), blobs.end());
  std::string expected = "blobs/\nblobs/sha256/\n";
  for (const auto& b : blobs) expected += "blobs/sha256/" + b.substr(7) + "\n";
  expected += "index.json\noci-layout\n";
  EXPECT_EQ(listing, expected);
  std::string index;
  ASSERT_EQ(run("tar -xOf " + path + " index.json", &index), 0);
  EXPECT_EQ(index, R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[)"
                   R"({"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":")" +
                       target_.digest.str() + R"(","size":)" + std::to_string(target_.size) +
                       R"(,"annotations":{"io.containerd.image.name":"docker.io/library/kbuild-test:v1",)"
                       R"("org.opencontainers.image.ref.name":"v1"}}]})");
}

TEST_F(ImageArchiveTest, DockerArchiveHasManifestJsonAndRepositories) {
  std::string path = write_archive(ArchiveFormat::docker, "docker.tar");
  std::string manifest, repositories;
  ASSERT_EQ(run("tar -xOf " + path + " manifest.json", &manifest), 0);
  EXPECT_EQ(manifest, R"([{"Config":"blobs/sha256/)" + std::string(store::Digest::of(config_bytes_).hex()) +
                          R"(","RepoTags":["kbuild-test:v1"],"Layers":["blobs/sha256/)" +
                          std::string(layer_.blob_digest.hex()) + R"("]}])");
  ASSERT_EQ(run("tar -xOf " + path + " repositories", &repositories), 0);
  EXPECT_EQ(repositories, R"({"kbuild-test":{"v1":")" + std::string(layer_.diff_id.hex()) + "\"}}\n");
}

TEST_F(ImageArchiveTest, SkopeoReadsBothArchives) {
  if (!have_tool("skopeo")) GTEST_SKIP() << "skopeo not installed";
  std::string oci = write_archive(ArchiveFormat::oci, "oci.tar");
  std::string raw;
  ASSERT_EQ(run("skopeo inspect --raw oci-archive:" + oci + " 2>&1", &raw), 0) << raw;
  EXPECT_EQ(raw, manifest_bytes_) << "the manifest bytes, hence the image digest, survive";
  std::string inspect;
  ASSERT_EQ(run("skopeo inspect oci-archive:" + oci + " 2>&1", &inspect), 0) << inspect;
  auto j = nlohmann::json::parse(inspect);
  EXPECT_EQ(j["Digest"], target_.digest.str());
  EXPECT_EQ(j["Architecture"], "amd64");
  EXPECT_EQ(j["Layers"][0], layer_.blob_digest.str());
  std::string config;
  ASSERT_EQ(run("skopeo inspect --config --raw oci-archive:" + oci + " 2>&1", &config), 0) << config;
  EXPECT_EQ(config, config_bytes_);

  std::string docker = write_archive(ArchiveFormat::docker, "docker.tar");
  ASSERT_EQ(run("skopeo inspect docker-archive:" + docker + " 2>&1", &inspect), 0) << inspect;
  j = nlohmann::json::parse(inspect);
  EXPECT_EQ(j["RepoTags"].size(), 0u);
  EXPECT_EQ(j["Architecture"], "amd64");
  EXPECT_EQ(j["Env"][0], "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
  ASSERT_EQ(run("skopeo inspect --config --raw docker-archive:" + docker + ":kbuild-test:v1 2>&1", &config), 0)
      << config;
  EXPECT_EQ(config, config_bytes_);
  // A full copy decompresses and checks every layer against the config's diff_ids.
  std::string out;
  EXPECT_EQ(run("skopeo copy --quiet docker-archive:" + docker + " oci:" + work_.path() + "/copied:x 2>&1", &out), 0)
      << out;
}

TEST_F(ImageArchiveTest, UmociUnpacksTheOciArchive) {
  if (!have_tool("umoci")) GTEST_SKIP() << "umoci not installed";
  std::string oci = write_archive(ArchiveFormat::oci, "oci.tar");
  std::string layout = work_.path() + "/layout";
  std::string bundle = work_.path() + "/bundle";
  std::string out;
  ASSERT_EQ(run("mkdir " + layout + " && tar -xf " + oci + " -C " + layout + " 2>&1", &out), 0) << out;
  std::string rootless = ::geteuid() == 0 ? "" : " --rootless";
  ASSERT_EQ(run("umoci unpack" + rootless + " --image " + layout + ":v1 " + bundle + " 2>&1", &out), 0) << out;
  EXPECT_EQ(read_file(bundle + "/rootfs/app/hello.txt"), "hello from kbuild\n");
  struct stat st {};
  ASSERT_EQ(::stat((bundle + "/rootfs/app/run.sh").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0755u);
  char target[32] = {};
  ASSERT_GT(::readlink((bundle + "/rootfs/app/greeting").c_str(), target, sizeof target), 0);
  EXPECT_STREQ(target, "hello.txt");
  std::string config = read_file(bundle + "/config.json");
  EXPECT_NE(config.find("/app/run.sh"), std::string::npos);
}

TEST_F(ImageArchiveTest, ReadsBackWhatItWrites) {
  for (ArchiveFormat format : {ArchiveFormat::oci, ArchiveFormat::docker}) {
    std::string name = format == ArchiveFormat::oci ? "oci" : "docker";
    ImportResult result = import(write_archive(format, name + ".tar"), name + "-in");
    EXPECT_EQ(result.format, ArchiveFormat::oci) << "Docker 25+ archives are OCI layouts first";
    ASSERT_EQ(result.images.size(), 1u);
    EXPECT_EQ(result.images[0].names, std::vector<std::string>{"docker.io/library/kbuild-test:v1"});
    EXPECT_EQ(result.images[0].target, target_);
    EXPECT_EQ(read_file(imported_->path(layer_.blob_digest)), read_file(store_->path(layer_.blob_digest)));
    EXPECT_EQ(read_file(imported_->path(target_.digest)), manifest_bytes_);
  }
}

TEST_F(ImageArchiveTest, ReadsALegacyDockerSave) {
  std::string layer_tar = TarBuilder().file("etc/motd", "legacy\n").finish();
  ImageConfig config;
  config.architecture = "arm64";
  config.os = "linux";
  config.rootfs.diff_ids = {store::Digest::of(layer_tar)};
  std::string config_bytes = serialize_config(config);
  std::string hex(store::Digest::of(config_bytes).hex());
  std::string archive = TarBuilder()
                            .dir("3f1a/")
                            .file("3f1a/VERSION", "1.0")
                            .file("3f1a/layer.tar", layer_tar)
                            .symlink("77aa/layer.tar", "../3f1a/layer.tar")
                            .file(hex + ".json", config_bytes)
                            .file("manifest.json", R"([{"Config":")" + hex +
                                                       R"(.json","RepoTags":["legacy/app:old"],"Layers":["77aa/layer.tar"]}])")
                            .file("repositories", R"({"legacy/app":{"old":"3f1a"}})")
                            .finish();
  std::string path = work_.path() + "/legacy.tar";
  write_file(path, archive);
  ImportResult result = import(path, "legacy-in");
  EXPECT_EQ(result.format, ArchiveFormat::docker);
  ASSERT_EQ(result.images.size(), 1u);
  const ImportedImage& image = result.images[0];
  EXPECT_EQ(image.names, std::vector<std::string>{"docker.io/legacy/app:old"});
  EXPECT_EQ(image.target.media_type, media_type::docker_manifest);
  ASSERT_TRUE(image.target.platform);
  EXPECT_EQ(image.target.platform->architecture, "arm64");
  Manifest manifest = parse_manifest(read_file(imported_->path(image.target.digest)));
  EXPECT_EQ(manifest.config.digest.hex(), hex);
  EXPECT_EQ(manifest.config.media_type, media_type::docker_config);
  ASSERT_EQ(manifest.layers.size(), 1u);
  EXPECT_EQ(manifest.layers[0].media_type, media_type::docker_layer);
  EXPECT_EQ(manifest.layers[0].digest, store::Digest::of(layer_tar));
}

TEST_F(ImageArchiveTest, RejectsABlobThatDoesNotMatchItsName) {
  std::string fake = "sha256:" + std::string(64, 'a');
  std::string archive = TarBuilder()
                            .file("oci-layout", R"({"imageLayoutVersion":"1.0.0"})")
                            .file("blobs/sha256/" + std::string(64, 'a'), "not what the name says")
                            .file("index.json", R"({"schemaVersion":2,"manifests":[]})")
                            .finish();
  std::string path = work_.path() + "/bad.tar";
  write_file(path, archive);
  try {
    import(path, "bad-in");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("digest mismatch"), std::string::npos) << e.what();
  }
}

TEST_F(ImageArchiveTest, RejectsAnIndexNamingAMissingBlob) {
  std::string archive = TarBuilder()
                            .file("oci-layout", R"({"imageLayoutVersion":"1.0.0"})")
                            .file("index.json", R"({"schemaVersion":2,"manifests":[{"mediaType":)"
                                                R"("application/vnd.oci.image.manifest.v1+json","digest":"sha256:)" +
                                                    std::string(64, 'b') + R"(","size":3}]})")
                            .finish();
  std::string path = work_.path() + "/missing.tar";
  write_file(path, archive);
  EXPECT_THROW(import(path, "missing-in"), Error);
}


}  // namespace
}  // namespace kbuild::image
