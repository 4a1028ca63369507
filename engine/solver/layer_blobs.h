// Layer blobs made lazily: a layer is known by its diff_id as soon as its snapshot is hashed,
// and its tar is written to the content store only when something reads the blob (an export,
// docker save). The tar is deterministic, so writing it later gives the bytes hashed earlier.
#pragma once

#include <optional>

#include "engine/image/blob_io.h"
#include "engine/image/oci.h"
#include "engine/store/store.h"

namespace kbuild::solver {

struct LayerRecord {
  store::Digest diff_id;  // also the digest of the uncompressed blob
  uint64_t size = 0;      // bytes of the uncompressed tar
};

// The layer of a committed snapshot (hashed once, remembered in the metadata).
LayerRecord layer_for_snapshot(store::Store& store, const store::SnapshotRecord& snapshot,
                               std::optional<int64_t> source_date_epoch);

// The gzip blob of one of our layers (made once, then remembered), for exports; nullopt for a
// layer that is not ours (a base image's, which keeps the blob it came with).
std::optional<image::Descriptor> compressed_layer(store::Store& store, const store::Digest& diff_id);

// Reads blobs from the content store, writing a layer's tar there first when it is one of
// ours that nobody has read yet.
class LazyBlobSource : public image::BlobSource {
 public:
  explicit LazyBlobSource(store::Store& store) : store_(store) {}
  UniqueFd open(const store::Digest& digest) override;

 private:
  store::Store& store_;
};

}  // namespace kbuild::solver
