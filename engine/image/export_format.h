// How an image leaves the store, in an archive or to a registry: the manifest and layer blobs
// BuildKit's exporter attributes ask for (compression, compression-level, force-compression,
// oci-mediatypes). The stored image keeps our layers uncompressed; their blobs in each format
// are made when first exported, then remembered.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/image/compressor.h"
#include "engine/image/oci.h"
#include "engine/store/store.h"

namespace kbuild::image {

struct ExportFormat {
  CompressionConfig compression;  // gzip at its default level unless asked otherwise
  // Converts base image layers compressed otherwise too; without it they keep their blobs.
  bool force_compression = false;
  // OCI media types, or Docker's (v2 schema 2). zstd layers always make it OCI, as BuildKit does.
  bool oci_media_types = false;
};

// BuildKit's default for oci-mediatypes: true for "oci", false for "docker", "image" and
// "registry".
bool default_oci_media_types(std::string_view output_type);

// The format an output's attributes ask for. Throws kbuild::Error (user) for a value BuildKit
// would refuse (an unknown compression, a level out of range, a boolean that is not one).
ExportFormat parse_export_format(const std::map<std::string, std::string>& attributes, bool oci_default);

struct ExportLayer {
  Descriptor stored;  // as the stored manifest lists it
  store::Digest diff_id;
  std::optional<Descriptor> blob;  // in the export's format, once it exists
};

// An image on its way out, with each layer's blob in the format as far as it exists yet.
struct ExportPlan {
  Manifest manifest;  // as stored
  ExportFormat format;
  std::vector<ExportLayer> layers;
};

// Layers as stored (ours uncompressed, others as they came), each blob in `format` as far as
// it exists or needs no work.
std::vector<ExportLayer> plan_layers(store::Store& store, const std::vector<Descriptor>& stored,
                                     const std::vector<store::Digest>& diff_ids, const ExportFormat& format);

// Which blobs exist already (or need no work) and which must be made.
ExportPlan plan_export(store::Store& store, const Manifest& stored, const ExportFormat& format);

// Makes one layer's missing blob; each byte also goes to `copy` as it is made.
void make_export_blob(store::Store& store, const ExportFormat& format, ExportLayer& layer, ByteSink* copy = nullptr);

// The manifest of a plan whose blobs all exist, written to the content store.
Descriptor store_export_manifest(store::Store& store, const ExportPlan& plan);

// All three: the image's manifest in `format`, every blob made, stored beside it.
Descriptor export_manifest(store::Store& store, const Manifest& stored, const ExportFormat& format);

}  // namespace kbuild::image
