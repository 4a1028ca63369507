// Applying a layer tar (gzip, zstd or uncompressed, detected from its bytes) to a directory.
// Layers are untrusted and the daemon is root: every entry is resolved inside the root
// (openat2 RESOLVE_IN_ROOT), so no path, symlink or hardlink in a layer reaches outside it.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "engine/image/layer_tar.h"
#include "engine/store/digest.h"

namespace kbuild::image {

enum class WhiteoutMode {
  // Into an empty overlayfs upper dir: ".wh.x" becomes a character device 0/0 named x,
  // ".wh..wh..opq" the xattr trusted.overlay.opaque=y on its directory.
  overlay,
  // Onto a flattened rootfs: ".wh.x" deletes x, ".wh..wh..opq" empties its directory of what
  // lower layers put there.
  apply,
};

enum class DeviceNodes {
  reject,  // a block or character device in the layer is an error
  skip,    // left out silently
  create,  // made with mknod (root only)
};

struct ExtractOptions {
  WhiteoutMode whiteouts = WhiteoutMode::overlay;
  DeviceNodes devices = DeviceNodes::reject;
  // Verified once the whole tar is read; a mismatch throws (the directory must then be discarded).
  std::optional<store::Digest> expected_diff_id;
  // Owners from the tar (root only); otherwise files belong to the caller.
  bool set_owners = true;
  // Names the layer in errors: "layer sha256:...: entry ../x escapes the root".
  std::string layer_name;
  // Asked between entries and every few MiB of the layer; true stops the extraction with a
  // canceled error (the caller went away: a layer of many GiB must not run to its end).
  std::function<bool()> canceled;
};

struct ExtractResult {
  store::Digest diff_id;   // sha256 of the uncompressed tar
  uint64_t tar_size = 0;
  store::Digest blob_digest;  // sha256 of the bytes read from the fd
  uint64_t blob_size = 0;
  Compression compression = Compression::none;
};

// Reads the layer from `blob_fd` to its end and applies it to the directory `root_fd`. Throws
// kbuild::Error on a hostile or malformed entry; what was extracted so far stays in place.
// Zeros in regular files are not written: blocks of them stay holes, and a layer of zeros costs
// no disk.
ExtractResult extract_layer(int blob_fd, int root_fd, const ExtractOptions& options = {});

}  // namespace kbuild::image
