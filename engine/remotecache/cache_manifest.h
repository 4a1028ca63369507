// The envelope of an exported cache, as BuildKit's remote cache exporters write theirs
// (cache/remotecache/export.go): an OCI image manifest whose config is the cache config and
// whose layers are the blobs, or an OCI index (a Docker manifest list) of the blobs and the
// config. Also the attributes that choose it and the check of what an import fetched. Pure.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "engine/image/export_format.h"
#include "engine/image/oci.h"
#include "engine/store/digest.h"

namespace kbuild::remotecache {

// BuildKit's cache config media type: recognised, never read (docs/cache-format.md says why).
inline constexpr std::string_view kBuildKitCacheConfigMediaType = "application/vnd.buildkit.cacheconfig.v0";
// The layer annotation that gives a blob's diffID, as BuildKit's cache blobs carry it.
inline constexpr std::string_view kUncompressedAnnotation = "containerd.io/uncompressed";

// How a cache is exported: the --cache-to attributes of the registry and local types.
struct CacheFormat {
  // compression, its level and force-compression; the media types follow oci_media_types
  image::ExportFormat blobs{.compression = {}, .force_compression = false, .oci_media_types = true};
  bool image_manifest = true;  // an image manifest; false: an index (or manifest list)
  bool oci_media_types = true;
  enum class Mode { min, max } mode = Mode::min;
  bool ignore_error = false;  // a failed export is a warning, not a failed build
};

// BuildKit's attributes and defaults: mode (min), image-manifest (true, but false when
// oci-mediatypes is false and image-manifest is not given), oci-mediatypes (true), compression,
// compression-level, force-compression, ignore-error (false). Other attributes (type, ref,
// dest, ...) are left to the caller. Throws kbuild::Error (user) for a value BuildKit refuses,
// for image-manifest=true with oci-mediatypes=false, and for a mode or ignore-error that is
// not one (BuildKit logs those at debug level and goes on with min and false).
CacheFormat parse_cache_format(const std::map<std::string, std::string>& attributes);

// A layer media type as the envelope lists it: OCI's or Docker's, as BuildKit's
// ConvertAllLayerMediaTypes gives it. zstd keeps its OCI type (Docker has none). The cache
// config must list each blob with this same type.
std::string cache_layer_media_type(std::string_view media_type, bool oci);

// The envelope's bytes (compact, as BuildKit's json.Marshal): `layers` in the order given, each
// with its media type for the format and annotated with its diffID, then the config. The same
// arguments always give the same bytes. Throws kbuild::Error (user) for image-manifest with
// Docker media types, (internal) when `diff_ids` does not match `layers`.
std::string make_cache_manifest(const image::Descriptor& config, const std::vector<image::Descriptor>& layers,
                                const std::vector<store::Digest>& diff_ids, const CacheFormat& format);

// What a fetched manifest or index is, to an importer.
struct FoundCache {
  enum class Kind {
    kbuild,    // our cache: `config` is its cache config, `blobs` the layers beside it
    buildkit,  // BuildKit's (cacheconfig.v0): kbuild cannot read it
    image,     // an image: from a manifest, its config and layers; from an index, no config
               // and `blobs` the manifests, one of which the caller picks by platform
    unknown,   // anything else; `why` says what
  } kind = Kind::unknown;
  std::string media_type;  // the document's, given or inferred
  image::Descriptor config;
  std::vector<image::Descriptor> blobs;
  std::string why;
};

// Classifies a fetched document. `media_type` is the one the registry or the layout gave; when
// it is empty or not a manifest's or index's, it is inferred from the bytes, as BuildKit's
// DetectManifestBlobMediaType does. Never throws for what the bytes hold.
FoundCache inspect_cache(std::string_view media_type, std::string_view bytes);

}  // namespace kbuild::remotecache
