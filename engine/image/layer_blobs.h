// Layer blobs made lazily: a layer is known by its diff_id as soon as its snapshot is hashed,
// and its tar is written to the content store only when something reads the blob (an export,
// docker save). The tar is deterministic, so writing it later gives the bytes hashed earlier.
#pragma once

#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include "engine/image/blob_io.h"
#include "engine/image/compressor.h"
#include "engine/image/layer_tar.h"
#include "engine/image/oci.h"
#include "engine/store/store.h"

namespace kbuild::image {

struct LayerRecord {
  store::Digest diff_id;  // also the digest of the uncompressed blob
  uint64_t size = 0;      // bytes of the uncompressed tar
};

// The journals of the layers hashed last (LayerHashJournal), so that a layer that
// begins as one of them did is hashed only from where the two part: a COPY of a large context
// after one file changed reads just what follows that file. Shared by a daemon's builds.
class LayerJournalCache {
 public:
  // The journals whose snapshots are still in `store`, newest first; the others are dropped.
  // A snapshot's record goes before its files do, so its files are all there if it is.
  LayerJournals usable(store::Store& store);
  void remember(const std::string& snapshot_id, std::shared_ptr<const LayerHashJournal> journal);

 private:
  static constexpr size_t kKept = 8;
  std::mutex mutex_;
  std::deque<std::pair<std::string, std::shared_ptr<const LayerHashJournal>>> recent_;  // newest first
};

// The layer of a committed snapshot (hashed once, remembered in the metadata). With `journals`,
// hashing starts from what earlier layers shared with this one and leaves its own journal.
LayerRecord layer_for_snapshot(store::Store& store, const store::SnapshotRecord& snapshot,
                               std::optional<int64_t> source_date_epoch, LayerJournalCache* journals = nullptr);

// A snapshot's layer as a manifest lists it, with its diff_id. One extracted from a blob (kind
// is_extracted) is that blob, unless SOURCE_DATE_EPOCH asks for its tar to be written again;
// one of ours is its uncompressed tar, named by its diff_id (see layer_for_snapshot).
struct ChainLayer {
  Descriptor blob;
  store::Digest diff_id;
};
ChainLayer chain_layer(store::Store& store, const store::SnapshotRecord& snapshot,
                       std::optional<int64_t> source_date_epoch, LayerJournalCache* journals = nullptr);

// The blob of a layer (by diff_id) in `compression`, when one was made before and is still in
// the content store.
std::optional<Descriptor> remembered_layer_blob(store::Store& store, const store::Digest& diff_id,
                                                Compression compression);

// Makes the blob of a layer in `compression` and remembers it: from the layer's snapshot when
// it is one of ours, else by decompressing `source` (a base image's blob, checked against
// diff_id). Each byte also goes to `copy`, if given, as it is made (a registry upload).
Descriptor make_layer_blob(store::Store& store, const store::Digest& diff_id, const Descriptor& source,
                           const CompressionConfig& compression, ByteSink* copy = nullptr);

// Reads blobs from the content store, writing a layer's tar there first when it is one of
// ours that nobody has read yet.
class LazyBlobSource : public BlobSource {
 public:
  explicit LazyBlobSource(store::Store& store) : store_(store) {}
  UniqueFd open(const store::Digest& digest) override;

 private:
  store::Store& store_;
};

}  // namespace kbuild::image
