// Layer compression for archives and pushes, using every core:
// - gzip in 1 MiB blocks compressed side by side, each block one gzip member (as BGZF does). A
//   gzip file of several members is one stream to every reader (RFC 1952; Go's compress/gzip,
//   zlib, libarchive). Pieces whose bytes already look random (compressed or encrypted files)
//   are stored, not searched for matches that are not there.
// - zstd with the library's own worker threads.
// - none: the bytes as they come.
// The output depends only on the input and the level, never on the number of cores.
#pragma once

#include <memory>
#include <optional>
#include <string_view>

#include "engine/image/blob_io.h"
#include "engine/image/layer_tar.h"

namespace kbuild::image {

struct CompressionConfig {
  Compression type = Compression::gzip;
  // gzip 0..9 (0 stores; libdeflate's levels), zstd 0..22 (0 is zstd's default); unset: gzip 3,
  // which matches the size of BuildKit's default gzip output, and zstd 3, BuildKit's default.
  std::optional<int> level;
  unsigned threads = 0;  // 0: one per core
};

// BuildKit's names: "gzip", "zstd", "uncompressed". Throws kbuild::Error (user) for others.
Compression parse_compression(std::string_view name);
std::string_view compression_name(Compression compression);
// Throws kbuild::Error (user) when the level is outside the format's range.
void check_compression(const CompressionConfig& config);

class Compressor : public ByteSink {
 public:
  // Writes what is still held and the format's end. Without it, the output is incomplete.
  virtual void finish() = 0;
};

// Compresses what is written to it into `out`, which is written from the calling thread only.
std::unique_ptr<Compressor> make_compressor(ByteSink& out, const CompressionConfig& config);

}  // namespace kbuild::image
