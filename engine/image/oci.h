// Image config, manifest and index documents (OCI image-spec and Docker v2 schema 2) with the
// JSON bytes BuildKit writes for them: the same field names, order and omissions as Go's
// encoding/json gives the structs BuildKit marshals. Serialize a document once and hash those
// bytes: the digest of a config or manifest is the digest of exactly the bytes stored and pushed.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "engine/store/digest.h"

namespace kbuild::image {

namespace media_type {
inline constexpr std::string_view oci_manifest = "application/vnd.oci.image.manifest.v1+json";
inline constexpr std::string_view oci_index = "application/vnd.oci.image.index.v1+json";
inline constexpr std::string_view oci_config = "application/vnd.oci.image.config.v1+json";
inline constexpr std::string_view oci_layer = "application/vnd.oci.image.layer.v1.tar";
inline constexpr std::string_view oci_layer_gzip = "application/vnd.oci.image.layer.v1.tar+gzip";
inline constexpr std::string_view oci_layer_zstd = "application/vnd.oci.image.layer.v1.tar+zstd";
inline constexpr std::string_view docker_manifest = "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr std::string_view docker_manifest_list = "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr std::string_view docker_config = "application/vnd.docker.container.image.v1+json";
inline constexpr std::string_view docker_layer = "application/vnd.docker.image.rootfs.diff.tar";
inline constexpr std::string_view docker_layer_gzip = "application/vnd.docker.image.rootfs.diff.tar.gzip";
}  // namespace media_type

namespace annotation {
inline constexpr std::string_view image_name = "io.containerd.image.name";  // full normalized reference
inline constexpr std::string_view ref_name = "org.opencontainers.image.ref.name";
inline constexpr std::string_view created = "org.opencontainers.image.created";
}  // namespace annotation

bool is_manifest_type(std::string_view media_type);
bool is_index_type(std::string_view media_type);
// A layer kbuild can unpack: a tar, plain or gzip- or zstd-compressed, by its OCI or Docker
// media type (zstd has only the OCI one). Others (foreign and non-distributable layers, other
// compressions) are refused by name.
bool is_layer_type(std::string_view media_type);

// HEALTHCHECK; durations in nanoseconds as Go's time.Duration marshals them.
struct HealthConfig {
  std::vector<std::string> test;
  int64_t interval = 0;
  int64_t timeout = 0;
  int64_t start_period = 0;
  int64_t start_interval = 0;
  int64_t retries = 0;
  bool operator==(const HealthConfig&) const = default;
};

// The "config" object: OCI ImageConfig plus Docker's Healthcheck, OnBuild and Shell.
struct ContainerConfig {
  std::string user;
  std::set<std::string> exposed_ports;  // "80/tcp"
  std::vector<std::string> env;
  std::vector<std::string> entrypoint;
  std::vector<std::string> cmd;
  std::set<std::string> volumes;
  std::string working_dir;
  std::map<std::string, std::string> labels;
  std::string stop_signal;
  bool args_escaped = false;
  std::optional<HealthConfig> healthcheck;
  std::vector<std::string> on_build;
  std::vector<std::string> shell;
  bool operator==(const ContainerConfig&) const = default;
};

struct HistoryEntry {
  std::string created;  // RFC 3339 as Go writes it; empty when absent
  std::string created_by;
  std::string author;
  std::string comment;
  bool empty_layer = false;
  bool operator==(const HistoryEntry&) const = default;
};

struct RootFs {
  std::string type = "layers";
  std::vector<store::Digest> diff_ids;
  bool operator==(const RootFs&) const = default;
};

// An image config (application/vnd.oci.image.config.v1+json or Docker's container.image.v1).
// Fields BuildKit does not know (container_config, docker_version, ...) are dropped on parse,
// as BuildKit drops them when it re-exports a base image's config.
struct ImageConfig {
  std::string created;
  std::string author;
  std::string architecture;
  std::string os;
  std::string os_version;
  std::vector<std::string> os_features;
  std::string variant;
  ContainerConfig config;
  RootFs rootfs;
  std::vector<HistoryEntry> history;
  // The inline build cache (--cache-to type=inline), the JSON of the top-level member
  // "kbuild.cache.v1" (remotecache/imported_cache.h); empty: none.
  std::string kbuild_cache;
  bool operator==(const ImageConfig&) const = default;
};

struct Platform {
  std::string architecture;
  std::string os;
  std::string os_version;
  std::vector<std::string> os_features;
  std::string variant;
  bool operator==(const Platform&) const = default;
};

struct Descriptor {
  std::string media_type;
  store::Digest digest;
  int64_t size = 0;
  std::vector<std::string> urls;
  std::map<std::string, std::string> annotations;
  std::string data;  // base64, as in the JSON
  std::optional<Platform> platform;
  std::string artifact_type;
  bool operator==(const Descriptor&) const = default;
};

// An OCI image manifest or a Docker v2 schema 2 manifest (they differ only in media types).
struct Manifest {
  int schema_version = 2;
  std::string media_type;
  std::string artifact_type;
  Descriptor config;
  std::vector<Descriptor> layers;
  std::optional<Descriptor> subject;
  std::map<std::string, std::string> annotations;
  bool operator==(const Manifest&) const = default;
};

// An OCI image index or a Docker manifest list.
struct Index {
  int schema_version = 2;
  std::string media_type;
  std::string artifact_type;
  std::vector<Descriptor> manifests;
  std::optional<Descriptor> subject;
  std::map<std::string, std::string> annotations;
  bool operator==(const Index&) const = default;
};

// One entry of a docker-archive's manifest.json.
struct DockerArchiveEntry {
  std::string config;                  // path inside the archive
  std::vector<std::string> repo_tags;  // familiar names: "alpine:3.20", "user/app:v1"
  std::vector<std::string> layers;     // paths inside the archive
  bool operator==(const DockerArchiveEntry&) const = default;
};

// Config bytes as BuildKit's exporter writes them (json.Marshal of a map: top-level keys
// sorted; "config" members in struct order; "rootfs" and "history" always present).
std::string serialize_config(const ImageConfig& config);
ImageConfig parse_config(std::string_view json);

// Manifest and index bytes as BuildKit writes them (json.MarshalIndent with two spaces).
std::string serialize_manifest(const Manifest& manifest);
Manifest parse_manifest(std::string_view json);
enum class JsonStyle { indented, compact };
// indented for image indexes pushed or stored; compact for an OCI layout's index.json.
std::string serialize_index(const Index& index, JsonStyle style = JsonStyle::indented);
Index parse_index(std::string_view json);
std::string serialize_descriptor(const Descriptor& descriptor);
Descriptor parse_descriptor(std::string_view json);
// A descriptor of just a media type, digest and size.
Descriptor describe(std::string_view media_type, const store::Digest& digest, int64_t size);

// The media type found in a manifest or index document, "" if it has none.
std::string document_media_type(std::string_view json);

// docker-archive manifest.json (compact, as containerd's and BuildKit's docker exporter write it).
std::string serialize_docker_archive_manifest(const std::vector<DockerArchiveEntry>& entries);
std::vector<DockerArchiveEntry> parse_docker_archive_manifest(std::string_view json);

// A time as Go's time.Time marshals in UTC (RFC 3339, fraction without trailing zeros, "Z").
std::string format_time(int64_t unix_seconds, int32_t nanoseconds = 0);
// Seconds since the epoch of an RFC 3339 time; throws kbuild::Error (user) if malformed.
int64_t parse_time(std::string_view text);

}  // namespace kbuild::image
