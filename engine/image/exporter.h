// What becomes of a build's result. The image always goes into the local store first
// (store_image: config, manifest, the chain of snapshots it stands on, its names), as BuildKit's
// image exporter puts it into containerd's; every other output then writes that image, or the
// rootfs under it, as one stream through an Exporter of its type.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/graph/image_config.h"
#include "engine/image/blob_io.h"
#include "engine/image/export_format.h"
#include "engine/image/layer_blobs.h"
#include "engine/image/oci.h"
#include "engine/store/store.h"

namespace kbuild::image {

// What a build made, as its exporters read it.
struct BuiltImage {
  std::optional<std::string> top;              // top snapshot of the rootfs chain; nullopt: an empty rootfs
  std::vector<store::Digest> base_diff_ids;    // a base image's layers: the chain's bottom snapshots, one each
  std::optional<store::Digest> base_manifest;  // the base image's manifest, which lists their blobs
  graph::ImageConfig config;                   // the target stage's, the build's --label values merged in
  std::optional<int64_t> source_date_epoch;
  // Records of the image's own layers for an inline cache, as the config carries them:
  // (cache key, index in rootfs.diff_ids or -1 for an empty tree).
  std::vector<std::pair<std::string, int>> inline_cache;
  std::string inline_cache_scheme;
};

// The image as store_image left it in the content store.
struct StoredImage {
  Descriptor descriptor;  // of the manifest
  // Our layers as uncompressed blobs named by their diff_ids (written when first read, see
  // LazyBlobSource); a base image's layers as the blobs it came with.
  Manifest manifest;
  std::vector<std::string> names;  // normalized, one per tag
  // The image id: the digest of its config.
  const store::Digest& id() const { return manifest.config.digest; }
};

// One platform's image of a build for several platforms.
struct PlatformExport {
  BuiltImage built;
  StoredImage stored;
  std::string platform;  // normalized: "linux/arm64", "linux/arm/v7"
};

// The index over them, as store_index left it in the content store.
struct StoredIndex {
  Descriptor descriptor;  // of the index
  Index index;
  std::vector<std::string> names;  // normalized, one per tag
};

// A status line of the export ("exporting layers"), closed by `done`.
using ExportStatus = std::function<void(const std::string& text, bool done)>;

// The image store's exporter (output types image and moby): hashes our layers (with `journals`,
// only from where they part from layers hashed before), writes the config and manifest to the
// content store, records store::image_chain_key(config) -> top so that FROM and COPY --from
// find the image unpacked, and names it with each tag. Reports "exporting layers",
// "writing image sha256:..." and "naming to NAME" as BuildKit does.
StoredImage store_image(store::Store& store, const BuiltImage& built, const std::vector<std::string>& tags,
                        LayerJournalCache* journals, const ExportStatus& status);

// An OCI index over images store_image stored (one per platform, in order), written to the
// content store and named with each tag: what `kbuildctl images` lists, and FROM picks its
// platform's image from. Reports "exporting manifest list sha256:..." and "naming to NAME".
StoredIndex store_index(store::Store& store, const std::vector<PlatformExport>& images,
                        const std::vector<std::string>& tags, const ExportStatus& status);

// The directory a platform's files go under in a local or tar output of several platforms,
// as BuildKit names it: "linux_arm64", "linux_arm_v7".
std::string platform_directory(const std::string& platform);

// Whether store_image is the exporter of an output type (image, moby).
bool is_store_output(std::string_view type);

// The exporter of one output type other than the image store's.
class Exporter {
 public:
  virtual ~Exporter() = default;
  // Writes the output of a build whose image is stored as `image` to `out`.
  virtual void write(const StoredImage& image, const BuiltImage& built, ByteSink& out) = 0;
  // The same for a build of several platforms: "oci" and "docker" write the index ("docker"'s
  // manifest.json names the first platform's image, as `save` writes it), "tar" and "local"
  // one directory per platform (platform_directory). The builder refuses "docker" for several
  // platforms before anything runs, as BuildKit's docker exporter does.
  virtual void write_platforms(const StoredIndex& index, const std::vector<PlatformExport>& images, ByteSink& out) = 0;
};

// "oci", "docker": an image archive with its layers in the format the attributes ask for
// (export_format.h; gzip by default, as BuildKit's exporters write them), named with the image's names and the output's name= attribute. "tar", "local": the
// rootfs as one uncompressed tar (kbuildctl unpacks `local` itself). Any other type is refused
// with kbuild::Error (user) "unsupported output type X"; a store one is an internal error.
std::unique_ptr<Exporter> make_exporter(store::Store& store, const std::string& type,
                                        const std::map<std::string, std::string>& attributes);

}  // namespace kbuild::image
