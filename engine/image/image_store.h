// The images of a store: names over manifests in the content store, and the layers unpacked
// into snapshots. What `kbuildctl images | rmi | tag | save | load` do, with no D-Bus in sight:
// the service only converts values.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/image/blob_io.h"
#include "engine/image/oci.h"
#include "engine/store/store.h"

namespace kbuild::image {

// The kind of a snapshot extracted from a layer blob (pulled, loaded, imported from a cache):
// its diff_id is the blob's, verified while it was extracted. Re-tarring its files is not
// guaranteed to give that tar again, so exports list the blob it came from.
inline constexpr std::string_view kExtractedKind = "extracted";
// The same, extracted from an imported build cache: made by a build elsewhere, whose date it
// keeps (an image's layers are dated when they arrive).
inline constexpr std::string_view kImportedKind = "imported";
bool is_extracted(const store::SnapshotRecord& snapshot);

// The OCI chain id of layers (bottom first) as a cache key: "chain:" + ChainID.
std::string chain_key(const std::vector<store::Digest>& diff_ids);

struct ImageSummary {
  store::Digest config;    // the image id
  store::Digest manifest;
  std::chrono::system_clock::time_point created;
  std::vector<std::string> names;  // normalised
  uint64_t size = 0;               // of its layer blobs (each once, for an index)
  std::vector<std::string> platforms;  // an index's, in its order; empty for one image
};

struct StoreUsage {
  uint64_t images = 0;         // tagged images
  uint64_t images_size = 0;    // the snapshots they stand on, each once
  uint64_t cache_records = 0;
  uint64_t cache_size = 0;     // every snapshot
  uint64_t blobs_size = 0;     // the content store
};

class ImageStore {
 public:
  explicit ImageStore(store::Store& store) : store_(store) {}

  std::vector<ImageSummary> list();
  // An image by reference ("alpine", normalised) or by id ("sha256:..." or a unique prefix of
  // its hex). Throws not_found "No such image: x", or a user error when a prefix is ambiguous.
  store::ImageRecord resolve(const std::string& reference);
  // Docker's rmi: untags a name, or (by id) every name, `force` needed for more than one.
  // Returns Docker's lines ("Untagged: alpine:latest", "Deleted: sha256:...").
  std::vector<std::string> remove(const std::string& reference, bool force);
  void tag(const std::string& source, const std::string& target);
  // A docker-archive of the images to `out`; layer blobs come from `blobs` (made lazily).
  void save(const std::vector<std::string>& references, BlobSource& blobs, ByteSink& out);
  // Reads a docker or OCI archive from `fd`, stores its blobs, unpacks its layers and names its
  // images; returns Docker's lines ("Loaded image: x"). Reads and extraction stop when
  // `cancel_fd` is readable.
  std::vector<std::string> load(int fd, int cancel_fd = -1);
  // Extracts the image's layers into snapshots once, verifying each against its diff_id; the
  // layers side by side, one per core. Stops, leaving nothing, once `canceled` says so.
  void unpack(const store::Digest& manifest, const std::function<bool()>& canceled = {});
  // Whether the image of this config has its layers unpacked.
  bool unpacked(const store::Digest& config);
  // The pieces of unpack, for a pull that extracts each layer as soon as it has arrived: one
  // layer extracted into a snapshot of its own, verified against `diff_id`, not yet on the
  // image's chain (in any order, on any thread); then the layers committed bottom up as the
  // chain of the image of `config`.
  store::SnapshotStore::Prepared extract(const Descriptor& layer, const store::Digest& diff_id,
                                         const std::function<bool()>& canceled = {},
                                         std::string_view kind = kExtractedKind);
  void commit_layers(const store::Digest& config, const std::vector<Descriptor>& layers,
                     const std::vector<store::Digest>& diff_ids, std::vector<store::SnapshotStore::Prepared>& extracted);
  // Extracted layers committed bottom up on `parent` (committed), synced, each blob remembered
  // for its diff_id. Returns the snapshot ids, bottom first; on failure none remains.
  std::vector<std::string> commit_chain(std::optional<std::string> parent, const std::vector<Descriptor>& layers,
                                        const std::vector<store::Digest>& diff_ids,
                                        std::vector<store::SnapshotStore::Prepared>& extracted);
  // The snapshot whose chain holds exactly these layers (bottom first), when one was
  // remembered and is still there: an imported cache reuses what a pull or import extracted.
  std::optional<std::string> find_chain(const std::vector<store::Digest>& diff_ids);
  void remember_chain(const std::vector<store::Digest>& diff_ids, const std::string& top);
  StoreUsage usage();

 private:
  store::Store& store_;
};

}  // namespace kbuild::image
