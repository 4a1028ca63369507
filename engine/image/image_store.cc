#include "engine/image/image_store.h"

#include <fcntl.h>
#include <poll.h>

#include <functional>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include "common/error.h"
#include "common/syscall.h"
#include "engine/image/image_archive.h"
#include "engine/image/image_platform.h"
#include "engine/image/layer_extract.h"
#include "engine/image/parallel.h"
#include "engine/image/oci.h"
#include "engine/image/reference.h"
#include "engine/store/added_blobs.h"

namespace kbuild::image {
namespace {

// One blob of an archive into the content store; a blob the store did not have is the
// load's, removed again if the load fails (`added`).
class StoreBlobWriter : public BlobWriter {
 public:
  StoreBlobWriter(store::ContentStore& content, store::AddedBlobs& added) : added_(added), writer_(content.writer()) {}
  void write(const void* data, size_t size) override { writer_.write(data, size); }
  store::Digest commit(std::optional<store::Digest> expected) override {
    // The load's lease holds the blob from here (ContentStore: made_blob), so a prune cannot
    // take one the store had between this commit and the claim.
    store::Digest digest = writer_.commit(expected);
    if (writer_.found_stored()) {
      added_.use(digest);
    } else {
      added_.add(digest);
    }
    return digest;
  }

 private:
  store::AddedBlobs& added_;
  store::ContentStore::Writer writer_;
};

// Blobs an archive brings, written straight into the content store.
class StoreBlobs : public BlobSink {
 public:
  StoreBlobs(store::ContentStore& content, store::AddedBlobs& added) : content_(content), added_(added) {}
  std::unique_ptr<BlobWriter> writer() override { return std::make_unique<StoreBlobWriter>(content_, added_); }

 private:
  store::ContentStore& content_;
  store::AddedBlobs& added_;
};

bool is_hex(std::string_view s) {
  return !s.empty() && s.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

}  // namespace

std::vector<ImageSummary> ImageStore::list() {
  std::map<store::Digest, ImageSummary> by_config;
  for (const auto& [name, record] : store_.metadata().list_image_names()) {
    ImageSummary& summary = by_config[record.config];
    summary.config = record.config;
    summary.manifest = record.manifest;
    summary.created = record.created;
    summary.names.push_back(name);
  }
  std::vector<ImageSummary> out;
  for (auto& [config, summary] : by_config) {
    store::ImageRecord record{summary.manifest, summary.config, summary.created};
    const bool index = is_index(record);
    std::set<store::Digest> layers;
    for (const PlatformImage& image : platform_images(store_, record)) {
      if (index) summary.platforms.push_back(image.platform);
      for (const auto& layer : parse_manifest(store_.content().read_small(image.image.manifest)).layers) {
        if (layers.insert(layer.digest).second) summary.size += static_cast<uint64_t>(layer.size);
      }
    }
    out.push_back(std::move(summary));
  }
  return out;
}

store::ImageRecord ImageStore::resolve(const std::string& reference) {
  std::string hex = reference.starts_with("sha256:") ? reference.substr(7) : reference;
  if (is_hex(hex)) {
    // An id prefix may also read as a name ("abc123"): a stored name wins, as in Docker.
    try {
      if (auto record = store_.metadata().image_by_name(normalize_reference(reference))) return *record;
    } catch (const Error&) {
      // Not a valid name (a full 64-hex id): only an id.
    }
    std::optional<store::ImageRecord> found;
    for (const auto& [name, record] : store_.metadata().list_image_names()) {
      if (std::string(record.config.hex()).starts_with(hex)) {
        if (found && found->config != record.config) {
          throw Error(ErrorKind::user, "image id " + reference + " is ambiguous");
        }
        found = record;
      }
    }
    if (found) return *found;
  } else if (auto record = store_.metadata().image_by_name(normalize_reference(reference))) {
    return *record;
  }
  throw Error(ErrorKind::not_found, "No such image: " + reference);
}

std::vector<std::string> ImageStore::remove(const std::string& reference, bool force) {
  std::vector<std::string> removed;
  std::optional<std::string> name;
  try {
    name = normalize_reference(reference);
  } catch (const Error&) {
    // An id, not a name.
  }
  if (name) {
    if (auto record = store_.metadata().image_by_name(*name)) {
      store_.metadata().remove_image_name(*name);
      removed.push_back("Untagged: " + familiar_reference(*name));
      if (store_.metadata().names_for_config(record->config).empty()) removed.push_back("Deleted: " + record->config.str());
      return removed;
    }
  }
  store::ImageRecord record = resolve(reference);
  std::vector<std::string> names = store_.metadata().names_for_config(record.config);
  if (names.size() > 1 && !force) {
    throw Error(ErrorKind::user, "conflict: unable to delete " + std::string(record.config.hex().substr(0, 12)) +
                                     " (must be forced) - image is referenced in multiple repositories");
  }
  for (const auto& n : names) {
    store_.metadata().remove_image_name(n);
    removed.push_back("Untagged: " + familiar_reference(n));
  }
  removed.push_back("Deleted: " + record.config.str());
  return removed;
}

void ImageStore::tag(const std::string& source, const std::string& target) {
  std::string name = normalize_reference(target);
  store_.metadata().set_image_name(name, resolve(source));
}

void ImageStore::save(const std::vector<std::string>& references, BlobSource& blobs, ByteSink& out) {
  std::vector<ArchiveImage> images;
  for (const std::string& reference : references) {
    store::ImageRecord record = resolve(reference);
    Descriptor target;
    target.media_type = document_media_type(store_.content().read_small(record.manifest));
    target.digest = record.manifest;
    target.size = static_cast<int64_t>(store_.content().size(record.manifest));
    // Named in the archive by the name it was asked by, when that is one of its names.
    std::vector<std::string> names;
    try {
      std::string name = normalize_reference(reference);
      if (store_.metadata().image_by_name(name)) names.push_back(name);
    } catch (const Error&) {
      // Asked by id: saved without a name.
    }
    images.push_back(ArchiveImage{target, names});
  }
  ArchiveWriteOptions options;
  options.format = ArchiveFormat::docker;
  write_image_archive(images, blobs, out, options);
}

bool is_extracted(const store::SnapshotRecord& snapshot) {
  return snapshot.kind == kExtractedKind || snapshot.kind == kImportedKind;
}

std::string chain_key(const std::vector<store::Digest>& diff_ids) {
  // ChainID(L0) = DiffID(L0); ChainID(L0..n) = sha256(ChainID(L0..n-1) + " " + DiffID(Ln)).
  std::string chain;
  for (const store::Digest& diff_id : diff_ids) {
    chain = chain.empty() ? diff_id.str() : store::Digest::of(chain + " " + diff_id.str()).str();
  }
  return "chain:" + chain;
}

void ImageStore::unpack(const store::Digest& manifest_digest, const std::function<bool()>& canceled) {
  Manifest manifest = parse_manifest(store_.content().read_small(manifest_digest));
  ImageConfig config = parse_config(store_.content().read_small(manifest.config.digest));
  if (config.rootfs.diff_ids.size() != manifest.layers.size()) {
    throw Error(ErrorKind::user, "image " + manifest_digest.str() + ": the config lists " +
                                     std::to_string(config.rootfs.diff_ids.size()) + " layers, the manifest " +
                                     std::to_string(manifest.layers.size()));
  }
  if (unpacked(manifest.config.digest)) return;
  std::vector<std::optional<store::SnapshotStore::Prepared>> slots(manifest.layers.size());
  std::vector<std::function<void()>> jobs;
  for (size_t i = 0; i < slots.size(); ++i) {
    jobs.push_back([&, i] { slots[i].emplace(extract(manifest.layers[i], config.rootfs.diff_ids[i], canceled)); });
  }
  run_bounded(jobs, static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  std::vector<store::SnapshotStore::Prepared> extracted;
  for (auto& slot : slots) extracted.push_back(std::move(*slot));
  commit_layers(manifest.config.digest, manifest.layers, config.rootfs.diff_ids, extracted);
}

bool ImageStore::unpacked(const store::Digest& config) {
  return store_.metadata().get_cache(store::image_chain_key(config)).has_value();
}

store::SnapshotStore::Prepared ImageStore::extract(const Descriptor& layer, const store::Digest& diff_id,
                                                   const std::function<bool()>& canceled, std::string_view kind) {
  store::SnapshotStore::Prepared prepared = store_.snapshots().prepare(std::nullopt, std::string(kind));
  UniqueFd blob = store_.content().open(layer.digest);
  UniqueFd root(check(::open(prepared.diff_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC), "open",
                      prepared.diff_path()));
  ExtractOptions options;
  options.expected_diff_id = diff_id;
  options.devices = DeviceNodes::create;
  options.layer_name = layer.digest.str();
  options.canceled = canceled;
  ExtractResult extracted = extract_layer(blob.get(), root.get(), options);
  // The media type is remembered with the blob and listed by every export of this layer: a
  // registry or cache must not call a gzip blob zstd (or a tar gzip).
  if (layer_media_type(extracted.compression, true) != layer.media_type &&
      layer_media_type(extracted.compression, false) != layer.media_type) {
    throw Error(ErrorKind::user, "layer " + layer.digest.str() + " is not " + layer.media_type);
  }
  return prepared;
}

void ImageStore::commit_layers(const store::Digest& config, const std::vector<Descriptor>& layers,
                               const std::vector<store::Digest>& diff_ids,
                               std::vector<store::SnapshotStore::Prepared>& extracted) {
  std::vector<std::string> chain = commit_chain(std::nullopt, layers, diff_ids, extracted);
  // Every prefix, so that an imported cache whose layers start as this image's reuses them.
  for (size_t i = 0; i < chain.size(); ++i) {
    remember_chain(std::vector<store::Digest>(diff_ids.begin(), diff_ids.begin() + static_cast<long>(i) + 1), chain[i]);
  }
  store_.metadata().put_cache(store::image_chain_key(config), store::CacheResult{chain.empty() ? "" : chain.back(), ""});
}

std::vector<std::string> ImageStore::commit_chain(std::optional<std::string> parent, const std::vector<Descriptor>& layers,
                                                  const std::vector<store::Digest>& diff_ids,
                                                  std::vector<store::SnapshotStore::Prepared>& extracted) {
  if (layers.size() != diff_ids.size() || layers.size() != extracted.size()) {
    throw Error(ErrorKind::internal, "commit_chain: layers, diff_ids and snapshots differ in number");
  }
  std::vector<std::string> committed;  // removed again if a later one fails
  try {
    for (size_t i = 0; i < layers.size(); ++i) {
      if (parent) store_.snapshots().set_parent(extracted[i], *parent);
      // One sync for all of them, before anything refers to them.
      store::SnapshotRecord record = store_.snapshots().commit_deferred(std::move(extracted[i]), diff_ids[i]);
      committed.push_back(record.id);
      store_.metadata().put_layer_blob(diff_ids[i], store::LayerBlob{layers[i].digest, layers[i].media_type});
      parent = record.id;
    }
  } catch (...) {
    // Nothing refers to a chain before its key is put: layers that cannot all be committed
    // leave none of theirs behind.
    for (auto id = committed.rbegin(); id != committed.rend(); ++id) {
      try {
        store_.snapshots().remove(*id);
      } catch (...) {
        // The first error is the one to report.
      }
    }
    throw;
  }
  store_.snapshots().sync();
  return committed;
}

std::optional<std::string> ImageStore::find_chain(const std::vector<store::Digest>& diff_ids) {
  auto hit = store_.metadata().get_cache(chain_key(diff_ids));
  if (!hit || hit->snapshot_id.empty() || !store_.metadata().get_snapshot(hit->snapshot_id)) return std::nullopt;
  return hit->snapshot_id;
}

void ImageStore::remember_chain(const std::vector<store::Digest>& diff_ids, const std::string& top) {
  store_.metadata().put_cache(chain_key(diff_ids), store::CacheResult{top, ""});
}

namespace {

// The images of a loaded index that the archive holds, each for a platform (attestations,
// "unknown/unknown", are not images).
std::vector<Descriptor> platform_manifests(store::Store& store, const Index& index) {
  std::vector<Descriptor> out;
  for (const Descriptor& entry : index.manifests) {
    if (!entry.platform || entry.platform->os == "unknown" || !is_manifest_type(entry.media_type)) continue;
    if (store.content().has(entry.digest)) out.push_back(entry);
  }
  return out;
}

}  // namespace

std::vector<std::string> ImageStore::load(int fd, int cancel_fd) {
  // A load that fails leaves none of the blobs it brought.
  store::AddedBlobs added(store_);
  StoreBlobs blobs(store_.content(), added);
  ImportResult imported = read_image_archive(fd, blobs, cancel_fd);
  // Every name checked before any layer is unpacked or any name set: a bad one loads nothing.
  for (const auto& image : imported.images) {
    for (const std::string& name : image.names) {
      try {
        normalize_reference(name);
      } catch (const Error& e) {
        throw e.with_context("the archive names an image \"" + name + "\"");
      }
    }
  }
  auto canceled = [cancel_fd] {
    struct pollfd p = {cancel_fd, POLLIN, 0};
    return cancel_fd >= 0 && ::poll(&p, 1, 0) > 0;
  };
  // Every image unpacked before any is named: a failure names nothing, and no name is left on
  // a manifest or config the failure removes.
  std::vector<store::ImageRecord> records;
  for (const auto& image : imported.images) {
    store::ImageRecord& record = records.emplace_back(image.target.digest, store::Digest{}, std::chrono::system_clock::now());
    std::vector<Descriptor> platforms;
    if (is_index_type(image.target.media_type)) {
      Index index = parse_index(store_.content().read_small(image.target.digest));
      if (index.manifests.empty()) throw Error(ErrorKind::user, "image index " + image.target.digest.str() + " is empty");
      platforms = platform_manifests(store_, index);
      // An index of images for platforms stays one (a multi-platform image); one without
      // platforms gives its first image.
      if (platforms.empty()) record.manifest = index.manifests.front().digest;
    }
    if (platforms.empty()) {
      unpack(record.manifest, canceled);
      record.config = parse_manifest(store_.content().read_small(record.manifest)).config.digest;
    } else {
      for (const Descriptor& platform : platforms) unpack(platform.digest, canceled);
      record.config = record.manifest;  // an index's id is its own digest
    }
  }
  std::vector<std::string> loaded;
  for (size_t i = 0; i < records.size(); ++i) {
    const std::vector<std::string>& names = imported.images[i].names;
    if (names.empty()) loaded.push_back("Loaded image ID: " + records[i].config.str());
    for (const std::string& name : names) {
      std::string normalized = normalize_reference(name);
      store_.metadata().set_image_name(normalized, records[i]);
      loaded.push_back("Loaded image: " + familiar_reference(normalized));
    }
  }
  added.keep();
  return loaded;
}

StoreUsage ImageStore::usage() {
  StoreUsage usage;
  for (const auto& digest : store_.content().list()) usage.blobs_size += store_.content().size(digest);
  std::map<std::string, store::SnapshotRecord> by_id;
  for (auto& s : store_.metadata().list_snapshots()) {
    usage.cache_size += s.size;
    by_id.emplace(s.id, std::move(s));
  }
  usage.cache_records = store_.metadata().list_cache().size();
  // The layers the tagged images stand on, each counted once however many images share it.
  std::set<store::Digest> images;
  std::set<std::string> image_layers;
  for (const auto& [name, record] : store_.metadata().list_image_names()) {
    if (!images.insert(record.config).second) continue;
    auto chain = store_.metadata().get_cache(store::image_chain_key(record.config));
    for (std::optional<std::string> id = chain ? std::optional(chain->snapshot_id) : std::nullopt;
         id && !id->empty() && image_layers.insert(*id).second;) {
      auto found = by_id.find(*id);
      id = found == by_id.end() ? std::nullopt : found->second.parent;
    }
  }
  usage.images = images.size();
  for (const std::string& id : image_layers) {
    if (auto found = by_id.find(id); found != by_id.end()) usage.images_size += found->second.size;
  }
  return usage;
}

}  // namespace kbuild::image
