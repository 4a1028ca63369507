#include "engine/image/oci.h"

#include <gtest/gtest.h>

#include "common/error.h"
#include "engine/image/go_json.h"

namespace kbuild::image {
namespace {

const store::Digest kLayer = store::Digest::from_hex("1111111111111111111111111111111111111111111111111111111111111111");
const store::Digest kDiff = store::Digest::from_hex("2222222222222222222222222222222222222222222222222222222222222222");

// What BuildKit's exporter writes for
//   FROM scratch / COPY x / ENV / EXPOSE / VOLUME / LABEL / HEALTHCHECK / SHELL / CMD
// (top-level keys sorted by patchImageConfig's map, "config" in DockerOCIImageConfig order,
// "<", ">" and "&" escaped by Go).
constexpr std::string_view kBuildkitConfig =
    R"({"architecture":"arm64","config":{"User":"app","ExposedPorts":{"443/tcp":{},"80/tcp":{}},)"
    R"("Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","A=x\u003cy\u0026z"],)"
    R"("Entrypoint":["/entry"],"Cmd":["/bin/sh","-c","echo hi \u003e /tmp/x"],"Volumes":{"/data":{}},)"
    R"("WorkingDir":"/srv","Labels":{"a":"1","b":"2"},"StopSignal":"SIGINT","ArgsEscaped":true,)"
    R"("Healthcheck":{"Test":["CMD-SHELL","curl -f http://localhost/"],"Interval":30000000000,)"
    R"("Timeout":5000000000,"StartPeriod":1000000000,"StartInterval":2000000000,"Retries":3},)"
    R"("OnBuild":["RUN echo onbuild"],"Shell":["/bin/bash","-c"]},"created":"2024-05-01T10:20:30.123456789Z",)"
    R"("history":[{"created":"2024-05-01T10:20:30.123456789Z","created_by":"COPY x / # buildkit",)"
    R"("comment":"buildkit.dockerfile.v0"},{"created":"2024-05-01T10:20:30.123456789Z",)"
    R"("created_by":"ENV A=x\u003cy\u0026z","comment":"buildkit.dockerfile.v0","empty_layer":true}],)"
    R"("os":"linux","rootfs":{"type":"layers","diff_ids":)"
    R"(["sha256:2222222222222222222222222222222222222222222222222222222222222222"]},"variant":"v8"})";

ImageConfig sample_config() {
  ImageConfig c;
  c.architecture = "arm64";
  c.os = "linux";
  c.variant = "v8";
  c.created = "2024-05-01T10:20:30.123456789Z";
  c.config.user = "app";
  c.config.exposed_ports = {"80/tcp", "443/tcp"};
  c.config.env = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "A=x<y&z"};
  c.config.entrypoint = {"/entry"};
  c.config.cmd = {"/bin/sh", "-c", "echo hi > /tmp/x"};
  c.config.volumes = {"/data"};
  c.config.working_dir = "/srv";
  c.config.labels = {{"b", "2"}, {"a", "1"}};
  c.config.stop_signal = "SIGINT";
  c.config.args_escaped = true;
  c.config.healthcheck = HealthConfig{{"CMD-SHELL", "curl -f http://localhost/"}, 30000000000, 5000000000,
                                      1000000000, 2000000000, 3};
  c.config.on_build = {"RUN echo onbuild"};
  c.config.shell = {"/bin/bash", "-c"};
  c.rootfs.diff_ids = {kDiff};
  c.history.push_back({c.created, "COPY x / # buildkit", "", "buildkit.dockerfile.v0", false});
  c.history.push_back({c.created, "ENV A=x<y&z", "", "buildkit.dockerfile.v0", true});
  return c;
}

TEST(ImageConfigJson, SerializesExactlyAsBuildkitExporter) {
  EXPECT_EQ(serialize_config(sample_config()), kBuildkitConfig);
}

TEST(ImageConfigJson, RoundTripsThroughParse) {
  ImageConfig parsed = parse_config(kBuildkitConfig);
  EXPECT_EQ(parsed, sample_config());
  EXPECT_EQ(serialize_config(parsed), kBuildkitConfig);
}

TEST(ImageConfigJson, DigestIsStableAcrossSerializations) {
  std::string once = serialize_config(sample_config());
  std::string twice = serialize_config(parse_config(once));
  EXPECT_EQ(store::Digest::of(once), store::Digest::of(twice));
}

TEST(ImageConfigJson, OmitsEmptyFieldsAsGoOmitempty) {
  ImageConfig c;
  c.architecture = "amd64";
  c.os = "linux";
  EXPECT_EQ(serialize_config(c),
            R"({"architecture":"amd64","config":{},"history":null,"os":"linux","rootfs":{"type":"layers","diff_ids":null}})");
}

TEST(ImageConfigJson, DropsDockerLegacyFieldsAndAcceptsNulls) {
  ImageConfig c = parse_config(
      R"({"architecture":"amd64","os":"linux","container_config":{"Hostname":"x"},"docker_version":"20.10",)"
      R"("config":{"Env":null,"Cmd":null,"Hostname":"","Labels":null,"OnBuild":null},)"
      R"("rootfs":{"type":"layers","diff_ids":["sha256:2222222222222222222222222222222222222222222222222222222222222222"]}})");
  EXPECT_TRUE(c.config.env.empty());
  EXPECT_EQ(c.rootfs.diff_ids.size(), 1u);
  EXPECT_EQ(serialize_config(c),
            R"({"architecture":"amd64","config":{},"history":null,"os":"linux","rootfs":{"type":"layers",)"
            R"("diff_ids":["sha256:2222222222222222222222222222222222222222222222222222222222222222"]}})");
}

TEST(ImageConfigJson, RejectsWrongTypesWithTheField) {
  try {
    parse_config(R"({"architecture":"amd64","os":"linux","config":{"Env":"PATH=/bin"}})");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("\"Env\" is not an array"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_config("[1]"), Error);
  EXPECT_THROW(parse_config("{"), Error);
}

Manifest sample_manifest(bool oci) {
  Manifest m;
  m.media_type = oci ? media_type::oci_manifest : media_type::docker_manifest;
  m.config.media_type = oci ? media_type::oci_config : media_type::docker_config;
  m.config.digest = store::Digest::of(kBuildkitConfig);
  m.config.size = static_cast<int64_t>(kBuildkitConfig.size());
  Descriptor layer;
  layer.media_type = oci ? media_type::oci_layer_gzip : media_type::docker_layer_gzip;
  layer.digest = kLayer;
  layer.size = 1234;
  m.layers.push_back(layer);
  return m;
}

TEST(ManifestJson, SerializesAsBuildkitMarshalIndent) {
  std::string expected = std::string(R"({
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.manifest.v1+json",
  "config": {
    "mediaType": "application/vnd.oci.image.config.v1+json",
    "digest": ")") + store::Digest::of(kBuildkitConfig).str() + R"(",
    "size": )" + std::to_string(kBuildkitConfig.size()) + R"(
  },
  "layers": [
    {
      "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
      "digest": "sha256:1111111111111111111111111111111111111111111111111111111111111111",
      "size": 1234
    }
  ]
})";
  EXPECT_EQ(serialize_manifest(sample_manifest(true)), expected);
}

TEST(ManifestJson, DockerSchema2UsesDockerMediaTypes) {
  std::string bytes = serialize_manifest(sample_manifest(false));
  EXPECT_NE(bytes.find(R"("mediaType": "application/vnd.docker.distribution.manifest.v2+json")"), std::string::npos);
  EXPECT_NE(bytes.find(R"("mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip")"), std::string::npos);
  EXPECT_EQ(parse_manifest(bytes), sample_manifest(false));
}

TEST(ManifestJson, RoundTripsAnnotationsSubjectAndPlatform) {
  Manifest m = sample_manifest(true);
  m.annotations = {{"org.opencontainers.image.created", "2024-05-01T10:20:30Z"}};
  m.subject = m.config;
  m.layers[0].annotations = {{"z", "1"}, {"a", "2"}};
  m.layers[0].urls = {"https://example.com/x"};
  std::string bytes = serialize_manifest(m);
  EXPECT_EQ(parse_manifest(bytes), m);
  EXPECT_EQ(serialize_manifest(parse_manifest(bytes)), bytes);
  EXPECT_LT(bytes.find("\"a\": \"2\""), bytes.find("\"z\": \"1\""));
}

TEST(IndexJson, CompactAndIndentedForms) {
  Index index;
  index.media_type = media_type::oci_index;
  Descriptor d;
  d.media_type = media_type::oci_manifest;
  d.digest = kLayer;
  d.size = 10;
  d.platform = Platform{"arm", "linux", "", {}, "v7"};
  d.annotations[std::string(annotation::image_name)] = "docker.io/library/app:latest";
  d.annotations[std::string(annotation::ref_name)] = "latest";
  index.manifests.push_back(d);
  EXPECT_EQ(serialize_index(index, JsonStyle::compact),
            R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":)"
            R"("application/vnd.oci.image.manifest.v1+json","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111",)"
            R"("size":10,"annotations":{"io.containerd.image.name":"docker.io/library/app:latest",)"
            R"("org.opencontainers.image.ref.name":"latest"},"platform":{"architecture":"arm","os":"linux","variant":"v7"}}]})");
  EXPECT_EQ(parse_index(serialize_index(index)), index);
  Index empty;
  EXPECT_EQ(serialize_index(empty), "{\n  \"schemaVersion\": 2,\n  \"manifests\": []\n}");
}

TEST(MediaTypes, LayersAreTarsPlainGzipOrZstdAndNothingElse) {
  for (std::string_view t : {media_type::oci_layer, media_type::oci_layer_gzip, media_type::oci_layer_zstd,
                             media_type::docker_layer, media_type::docker_layer_gzip}) {
    EXPECT_TRUE(is_layer_type(t)) << t;
  }
  for (std::string_view t : {"application/vnd.example.layer+lz4", "application/vnd.oci.image.layer.v1.tar+lz4",
                             "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                             "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "application/octet-stream"}) {
    EXPECT_FALSE(is_layer_type(t)) << t;
  }
  EXPECT_FALSE(is_layer_type(media_type::oci_config));
}

TEST(DockerArchiveManifest, WritesContainerdShape) {
  std::vector<DockerArchiveEntry> entries = {{"blobs/sha256/aa", {"app:latest"}, {"blobs/sha256/bb"}},
                                             {"blobs/sha256/cc", {}, {}}};
  std::string bytes = serialize_docker_archive_manifest(entries);
  EXPECT_EQ(bytes, R"([{"Config":"blobs/sha256/aa","RepoTags":["app:latest"],"Layers":["blobs/sha256/bb"]},)"
                   R"({"Config":"blobs/sha256/cc","RepoTags":null,"Layers":null}])");
  EXPECT_EQ(parse_docker_archive_manifest(bytes), entries);
}

TEST(GoJson, EscapesLikeEncodingJson) {
  nlohmann::ordered_json j = std::string("a\"b\\c\n\t\b\f\x01<>&\xe2\x80\xa8 \xff\xc3\xa9");
  EXPECT_EQ(go_marshal(j), R"("a\"b\\c\n\t\b\f\u0001\u003c\u003e\u0026\u2028 \ufffd)"
                           "\xc3\xa9\"");
}

TEST(Time, FormatsAndParsesRfc3339) {
  EXPECT_EQ(format_time(0), "1970-01-01T00:00:00Z");
  EXPECT_EQ(format_time(1714558830, 120000000), "2024-05-01T10:20:30.12Z");
  EXPECT_EQ(parse_time("2024-05-01T10:20:30.12Z"), 1714558830);
  EXPECT_EQ(parse_time("2024-05-01T12:20:30+02:00"), 1714558830);
  EXPECT_THROW(parse_time("yesterday"), Error);
}

}  // namespace
}  // namespace kbuild::image
