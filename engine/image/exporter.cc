#include "engine/image/exporter.h"

#include <fcntl.h>

#include <algorithm>
#include <chrono>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/syscall.h"
#include "common/temp_dir.h"
#include "common/unique_fd.h"
#include "engine/image/image_archive.h"
#include "engine/image/image_store.h"
#include "engine/image/layer_tar.h"
#include "engine/image/plan_config.h"
#include "engine/image/reference.h"
#include "engine/store/fs.h"
#include "engine/store/mount.h"

namespace kbuild::image {
namespace {

// Stores a config or manifest document.
Descriptor put_document(store::Store& store, std::string_view media_type, const std::string& bytes) {
  return describe(media_type, store.content().put(bytes), static_cast<int64_t>(bytes.size()));
}

// The image's time is when its newest layer was made, so that a rebuild that hits the cache
// everywhere gives the same image ID, as BuildKit's does; SOURCE_DATE_EPOCH replaces it.
std::string creation_time(const std::vector<store::SnapshotRecord>& chain, std::optional<int64_t> source_date_epoch) {
  if (source_date_epoch) return format_time(*source_date_epoch);
  auto made = chain.empty() ? std::chrono::system_clock::now() : chain.back().created;
  int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(made.time_since_epoch()).count();
  return format_time(ns / 1000000000, static_cast<int32_t>(ns % 1000000000));
}

// The config without its layers: what the plan's instructions set, every history entry dated
// with the image's time.
ImageConfig config_of(const graph::ImageConfig& plan, const std::string& created) {
  ImageConfig config;
  config.created = created;
  config.author = plan.author;
  config.architecture = plan.architecture;
  config.os = plan.os;
  config.variant = plan.variant;
  config.config = to_container_config(plan);
  for (const graph::HistoryEntry& h : plan.history) {
    config.history.push_back(HistoryEntry{created, h.created_by, "", h.comment, h.empty_layer});
  }
  return config;
}

// A base image's layers, then one of ours for every snapshot above them. Ours stay
// uncompressed in the store: the blob's digest is the diff_id, and its tar is written only
// when an export or docker save reads it.
void add_layers(store::Store& store, const BuiltImage& built, const std::vector<store::SnapshotRecord>& chain,
                LayerJournalCache* journals, const ExportStatus& status, ImageConfig& config, Manifest& manifest) {
  config.rootfs.diff_ids = built.base_diff_ids;
  if (built.base_manifest) manifest.layers = parse_manifest(store.content().read_small(*built.base_manifest)).layers;
  // A base layer whose registry blob never came here (its layer was extracted from an imported
  // cache's blob instead): listed by the blob it was extracted from.
  for (size_t i = 0; i < manifest.layers.size() && i < chain.size(); ++i) {
    if (store.content().has(manifest.layers[i].digest) || !is_extracted(chain[i])) continue;
    ChainLayer layer = chain_layer(store, chain[i], std::nullopt);
    if (layer.diff_id == config.rootfs.diff_ids[i] && store.content().has(layer.blob.digest)) manifest.layers[i] = layer.blob;
  }
  status("exporting layers", false);
  for (size_t i = built.base_diff_ids.size(); i < chain.size(); ++i) {
    ChainLayer layer = chain_layer(store, chain[i], built.source_date_epoch, journals);
    // BuildKit keeps a layer whose diff is empty (a WORKDIR that existed): so do we.
    config.rootfs.diff_ids.push_back(layer.diff_id);
    manifest.layers.push_back(layer.blob);
  }
  status("exporting layers", true);
}

// The inline cache's records in the config (remotecache::kInlineCacheMember), sorted by key.
std::string inline_cache_json(const BuiltImage& built) {
  std::vector<std::pair<std::string, int>> records = built.inline_cache;
  std::sort(records.begin(), records.end());
  records.erase(std::unique(records.begin(), records.end()), records.end());
  nlohmann::ordered_json cache = {{"kbuildCache", 1}, {"keyScheme", built.inline_cache_scheme},
                                  {"records", nlohmann::ordered_json::array()}};
  for (const auto& [key, layer] : records) cache["records"].push_back({{"key", key}, {"layer", layer}});
  return cache.dump();
}

// "oci" and "docker": the image as an archive.
class ArchiveExporter : public Exporter {
 public:
  ArchiveExporter(store::Store& store, ArchiveFormat format, ExportFormat blobs, std::optional<std::string> name)
      : store_(store), format_(format), blobs_(blobs), name_(std::move(name)) {}

 private:
  void write_target(Descriptor target, std::vector<std::string> names, ByteSink& out) {
    if (name_) names.push_back(*name_);
    ArchiveWriteOptions options;
    options.format = format_;
    LazyBlobSource blobs(store_);
    write_image_archive({ArchiveImage{std::move(target), std::move(names)}}, blobs, out, options);
  }

 public:
  void write(const StoredImage& image, const BuiltImage&, ByteSink& out) override {
    write_target(export_manifest(store_, image.manifest, blobs_), image.names, out);
  }

  // The index again over each image in the output's format.
  void write_platforms(const StoredIndex& stored, const std::vector<PlatformExport>& images, ByteSink& out) override {
    Index index = stored.index;
    for (size_t i = 0; i < images.size(); ++i) {
      Descriptor exported = export_manifest(store_, images[i].stored.manifest, blobs_);
      exported.platform = index.manifests[i].platform;
      index.manifests[i] = std::move(exported);
    }
    write_target(put_document(store_, media_type::oci_index, serialize_index(index)), stored.names, out);
  }

 private:
  store::Store& store_;
  ArchiveFormat format_;
  ExportFormat blobs_;
  std::optional<std::string> name_;  // normalized
};

// "tar" and "local": the rootfs, its layers merged by a read-only overlay, as one tar.
class RootfsExporter : public Exporter {
 public:
  explicit RootfsExporter(store::Store& store) : store_(store) {}

  void write(const StoredImage&, const BuiltImage& built, ByteSink& out) override {
    TempDir view(views(), "view-");
    std::optional<store::Mount> mount = mount_rootfs(built, view.path());
    write_tree(view.path(), built.source_date_epoch, out);
  }

  // Each platform's rootfs mounted under its directory of one view, written as one tar.
  void write_platforms(const StoredIndex&, const std::vector<PlatformExport>& images, ByteSink& out) override {
    TempDir view(views(), "view-");
    std::vector<store::Mount> mounts;
    for (const PlatformExport& image : images) {
      std::string dir = view.path() + "/" + platform_directory(image.platform);
      store::fs::make_dirs(dir, 0755);
      if (auto mount = mount_rootfs(image.built, dir)) mounts.push_back(std::move(*mount));
    }
    write_tree(view.path(), images.front().built.source_date_epoch, out);
  }

 private:
  std::string views() {
    store::fs::make_dirs(store_.root() + "/mounts", 0700);
    return store_.root() + "/mounts";
  }

  // The rootfs's layers merged by a read-only overlay at `target`; nothing for an empty one.
  std::optional<store::Mount> mount_rootfs(const BuiltImage& built, const std::string& target) {
    std::vector<std::string> lowers;
    if (built.top) lowers = store_.snapshots().lower_chain(*built.top);
    if (lowers.empty()) return std::nullopt;
    return store::Mount::overlay(lowers, "", "", target);
  }

  static void write_tree(const std::string& path, std::optional<int64_t> source_date_epoch, ByteSink& out) {
    UniqueFd dir(check(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC), "open", path));
    LayerOptions options;
    options.compression = Compression::none;
    options.source_date_epoch = source_date_epoch;
    write_layer(dir.get(), out, options);
  }

  store::Store& store_;
};

}  // namespace

StoredImage store_image(store::Store& store, const BuiltImage& built, const std::vector<std::string>& tags,
                        LayerJournalCache* journals, const ExportStatus& status) {
  // What the image and its names refer to must be on disk before they are.
  store.snapshots().sync();
  std::vector<store::SnapshotRecord> chain = store.snapshots().records_bottom_up(built.top);
  ImageConfig config = config_of(built.config, creation_time(chain, built.source_date_epoch));
  StoredImage image;
  image.manifest.media_type = media_type::oci_manifest;
  add_layers(store, built, chain, journals, status, config, image.manifest);
  if (!built.inline_cache.empty()) config.kbuild_cache = inline_cache_json(built);

  image.manifest.config = put_document(store, media_type::oci_config, serialize_config(config));
  status("writing image " + image.id().str(), true);
  image.descriptor = put_document(store, media_type::oci_manifest, serialize_manifest(image.manifest));
  store.metadata().put_cache(store::image_chain_key(image.id()), store::CacheResult{built.top.value_or(""), ""});

  store::ImageRecord record{image.descriptor.digest, image.id(), std::chrono::system_clock::now()};
  for (const std::string& tag : tags) {
    std::string name = normalize_reference(tag);
    store.metadata().set_image_name(name, record);
    status("naming to " + name, true);
    image.names.push_back(std::move(name));
  }
  return image;
}

StoredIndex store_index(store::Store& store, const std::vector<PlatformExport>& images,
                        const std::vector<std::string>& tags, const ExportStatus& status) {
  StoredIndex out;
  out.index.media_type = media_type::oci_index;
  for (const PlatformExport& image : images) {
    Descriptor entry = image.stored.descriptor;
    const graph::ImageConfig& config = image.built.config;
    entry.platform = Platform{config.architecture, config.os, "", {}, config.variant};
    out.index.manifests.push_back(std::move(entry));
  }
  out.descriptor = put_document(store, media_type::oci_index, serialize_index(out.index));
  status("exporting manifest list " + out.descriptor.digest.str(), true);
  // The image id of an index is its own digest, as in Docker's containerd image store.
  store::ImageRecord record{out.descriptor.digest, out.descriptor.digest, std::chrono::system_clock::now()};
  for (const std::string& tag : tags) {
    std::string name = normalize_reference(tag);
    store.metadata().set_image_name(name, record);
    status("naming to " + name, true);
    out.names.push_back(std::move(name));
  }
  return out;
}

std::string platform_directory(const std::string& platform) {
  std::string out = platform;
  std::replace(out.begin(), out.end(), '/', '_');
  return out;
}

bool is_store_output(std::string_view type) { return type == "image" || type == "moby"; }

std::unique_ptr<Exporter> make_exporter(store::Store& store, const std::string& type,
                                        const std::map<std::string, std::string>& attributes) {
  if (type == "oci" || type == "docker") {
    std::optional<std::string> name;
    if (auto it = attributes.find("name"); it != attributes.end()) name = normalize_reference(it->second);
    return std::make_unique<ArchiveExporter>(store, type == "oci" ? ArchiveFormat::oci : ArchiveFormat::docker,
                                             parse_export_format(attributes, default_oci_media_types(type)),
                                             std::move(name));
  }
  if (type == "tar" || type == "local") return std::make_unique<RootfsExporter>(store);
  if (is_store_output(type)) throw Error(ErrorKind::internal, "output type " + type + " is written by store_image");
  throw Error(ErrorKind::user, "unsupported output type " + type);
}

}  // namespace kbuild::image
