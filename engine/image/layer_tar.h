// Layer tars from overlayfs upper directories ("diffs"), written byte for byte as containerd's
// WriteDiff writes them for BuildKit (Go's archive/tar, hdr.Format = PAX): USTAR headers unless a
// field needs a PAX record, entries in filepath.Walk order, numeric owners without names, mtimes
// truncated to seconds (clamped to SOURCE_DATE_EPOCH when given), only security.capability among
// xattrs, hardlinks within the layer, whiteouts as empty ".wh." files with the zero time.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "engine/image/blob_io.h"
#include "engine/store/digest.h"

namespace kbuild::image {

enum class Compression { none, gzip, zstd };

struct LayerOptions {
  Compression compression = Compression::gzip;
  // gzip 0..9, zstd 1..22; unset: the format's default (see CompressionConfig).
  std::optional<int> level;
  unsigned compression_threads = 0;  // 0: one per core
  // false when the sink hashes what it keeps (a content-store writer): a compressed blob is
  // then hashed once, and blob_digest is left empty.
  bool hash_blob = true;
  // SOURCE_DATE_EPOCH: mtimes later than this are clamped to it (BuildKit's rewrite-timestamp).
  std::optional<int64_t> source_date_epoch;
};

struct LayerDigests {
  store::Digest diff_id;     // sha256 of the uncompressed tar
  uint64_t tar_size = 0;     // bytes of the uncompressed tar
  store::Digest blob_digest; // sha256 of the bytes written to the sink (== diff_id uncompressed)
  uint64_t blob_size = 0;
};

// The media type of a layer blob: OCI (application/vnd.oci.image.layer.v1.tar+gzip) or Docker
// (application/vnd.docker.image.rootfs.diff.tar.gzip).
std::string layer_media_type(Compression compression, bool oci);

// Writes the layer of `dir_fd`, a directory in overlayfs upper form: a character device 0/0 is
// a whiteout and becomes an empty ".wh.<name>" file; a directory with trusted.overlay.opaque
// (or user.overlay.opaque) "y" is followed by a ".wh..wh..opq" entry. Hashes, compresses and
// writes to `out` in one pass. Sockets are left out, as containerd leaves them out.
LayerDigests write_layer(int dir_fd, ByteSink& out, const LayerOptions& options = {});

// What hashing a layer leaves behind so that hashing a later layer that begins with the same
// entries resumes where they end: at checkpoints along the tar, the SHA-256 state and a digest
// of everything the tar held up to there, file contents standing in by device, inode, birth
// time, size and mtime. The last checkpoint is the end of the tar.
struct LayerHashJournal {
  struct Checkpoint {
    uint64_t offset = 0;  // tar bytes before it
    store::Digest seen;
    std::shared_ptr<const store::Sha256> state;
  };
  std::vector<Checkpoint> checkpoints;
};
using LayerJournals = std::vector<std::shared_ptr<const LayerHashJournal>>;

struct LayerHash {
  LayerDigests digests;  // uncompressed: blob_digest is diff_id
  std::shared_ptr<const LayerHashJournal> journal;
};

// The digests write_layer gives for the uncompressed tar of `dir_fd`, and its journal. Files an
// earlier journal already covers (same place in the tar, same inode, size and mtime) are not
// read. Sound only while the files those journals saw still exist unchanged: journals of
// snapshots that still exist, whose files are never modified in place.
LayerHash hash_layer(int dir_fd, std::optional<int64_t> source_date_epoch, const LayerJournals& earlier);

}  // namespace kbuild::image
