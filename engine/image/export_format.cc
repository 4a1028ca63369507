#include "engine/image/export_format.h"

#include <charconv>

#include "common/error.h"
#include "engine/image/layer_blobs.h"

namespace kbuild::image {
namespace {

// Go's strconv.ParseBool, which BuildKit's exporters use; an empty value turns the option on.
bool parse_bool(const std::string& key, const std::string& value) {
  if (value.empty()) return true;
  for (const char* yes : {"1", "t", "T", "TRUE", "true", "True"}) {
    if (value == yes) return true;
  }
  for (const char* no : {"0", "f", "F", "FALSE", "false", "False"}) {
    if (value == no) return false;
  }
  throw Error(ErrorKind::user, "non-bool value " + value + " specified for " + key);
}

int parse_level(const std::string& value) {
  int level = 0;
  auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), level);
  if (error != std::errc() || end != value.data() + value.size()) {
    throw Error(ErrorKind::user, "non-integer value " + value + " specified for compression-level");
  }
  return level;
}

// What a stored layer's blob is compressed with; nullopt for a type left as it is (a foreign
// or non-distributable layer).
std::optional<Compression> compression_of(std::string_view media_type) {
  if (media_type == media_type::oci_layer || media_type == media_type::docker_layer) return Compression::none;
  if (media_type == media_type::oci_layer_gzip || media_type == media_type::docker_layer_gzip) return Compression::gzip;
  if (media_type == media_type::oci_layer_zstd) return Compression::zstd;
  return std::nullopt;
}

}  // namespace

bool default_oci_media_types(std::string_view output_type) { return output_type == "oci"; }

ExportFormat parse_export_format(const std::map<std::string, std::string>& attributes, bool oci_default) {
  ExportFormat format;
  format.oci_media_types = oci_default;
  for (const auto& [key, value] : attributes) {
    if (key == "compression") {
      format.compression.type = parse_compression(value);
    } else if (key == "compression-level") {
      format.compression.level = parse_level(value);
    } else if (key == "force-compression") {
      format.force_compression = parse_bool(key, value);
    } else if (key == "oci-mediatypes") {
      format.oci_media_types = parse_bool(key, value);
    }
  }
  check_compression(format.compression);
  if (format.compression.type == Compression::none) format.compression.level.reset();
  return format;
}

std::vector<ExportLayer> plan_layers(store::Store& store, const std::vector<Descriptor>& stored,
                                     const std::vector<store::Digest>& diff_ids, const ExportFormat& format) {
  if (diff_ids.size() != stored.size()) {
    throw Error(ErrorKind::internal, "plan_layers: " + std::to_string(diff_ids.size()) + " diff_ids for " +
                                         std::to_string(stored.size()) + " layers");
  }
  const Compression wanted = format.compression.type;
  std::vector<ExportLayer> layers;
  for (size_t i = 0; i < stored.size(); ++i) {
    ExportLayer layer{stored[i], diff_ids[i], std::nullopt};
    std::optional<Compression> current = compression_of(layer.stored.media_type);
    // Kept as they are: foreign types, blobs already in the format, and a base image's
    // compressed blobs unless force-compression asks for them to be converted.
    bool keep = !current || *current == wanted || (*current != Compression::none && !format.force_compression);
    if (keep) {
      layer.blob = layer.stored;
    } else {
      layer.blob = remembered_layer_blob(store, layer.diff_id, wanted);
    }
    layers.push_back(std::move(layer));
  }
  return layers;
}

ExportPlan plan_export(store::Store& store, const Manifest& stored, const ExportFormat& format) {
  ImageConfig config = parse_config(store.content().read_small(stored.config.digest));
  if (config.rootfs.diff_ids.size() != stored.layers.size()) {
    throw Error(ErrorKind::internal, "image config " + stored.config.digest.str() + " lists " +
                                         std::to_string(config.rootfs.diff_ids.size()) + " layers, its manifest " +
                                         std::to_string(stored.layers.size()));
  }
  return ExportPlan{stored, format, plan_layers(store, stored.layers, config.rootfs.diff_ids, format)};
}

void make_export_blob(store::Store& store, const ExportFormat& format, ExportLayer& layer, ByteSink* copy) {
  if (layer.blob) return;
  layer.blob = make_layer_blob(store, layer.diff_id, layer.stored, format.compression, copy);
}

Descriptor store_export_manifest(store::Store& store, const ExportPlan& plan) {
  Manifest manifest = plan.manifest;
  bool oci = plan.format.oci_media_types;
  for (const ExportLayer& layer : plan.layers) {
    if (!layer.blob) throw Error(ErrorKind::internal, "layer " + layer.diff_id.str() + " has no blob to export");
    if (compression_of(layer.blob->media_type) == Compression::zstd) oci = true;  // Docker has no zstd type
  }
  manifest.media_type = oci ? media_type::oci_manifest : media_type::docker_manifest;
  manifest.config.media_type = oci ? media_type::oci_config : media_type::docker_config;
  manifest.layers.clear();
  for (const ExportLayer& layer : plan.layers) {
    Descriptor blob = *layer.blob;
    if (auto compression = compression_of(blob.media_type)) blob.media_type = layer_media_type(*compression, oci);
    manifest.layers.push_back(std::move(blob));
  }
  std::string bytes = serialize_manifest(manifest);
  return describe(manifest.media_type, store.content().put(bytes), static_cast<int64_t>(bytes.size()));
}

Descriptor export_manifest(store::Store& store, const Manifest& stored, const ExportFormat& format) {
  ExportPlan plan = plan_export(store, stored, format);
  // One layer at a time: compressing one already keeps every core busy.
  for (ExportLayer& layer : plan.layers) make_export_blob(store, format, layer);
  return store_export_manifest(store, plan);
}

}  // namespace kbuild::image
