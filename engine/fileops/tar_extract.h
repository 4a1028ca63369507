// ADD's local archives: detection by content and extraction into a directory that acts as the
// archive's root, as BuildKit does with moby/go-archive's chrootarchive.Untar.
#pragma once

#include <optional>

#include "engine/fileops/fileops.h"

namespace kbuild::fileops {

enum class Compression { none, gzip, bzip2, xz, zstd };

// Whether the regular file open at `fd` (read from offset 0) is a tar archive ADD extracts:
// compression.DecompressStream's magic numbers pick the decompressor, and the first header must
// be one Go's tar.Reader accepts (a valid checksum and numeric fields). Empty files, text, a bare
// compressed file or a broken stream are not archives: ADD copies them as files.
bool is_tar_archive(int fd, Compression* compression = nullptr);

// Extracts the archive at `fd` (from offset 0) below `dest_dir_fd`, which is the archive's root:
// "../x" and "/x" land in dest/x, symlinks in the archive or already in dest are resolved inside
// dest, hardlinks must point inside it. Like archive.Unpack: existing entries are replaced except
// directories, which merge; implied parent directories are made 0755 root:root; owners come from
// the headers unless `owner` is set; modes, times (directories' last) and SCHILY.xattr records
// are applied. Throws kbuild::Error for a damaged archive or a failing write.
void extract_tar(int fd, Compression compression, int dest_dir_fd, const std::optional<Owner>& owner,
                 CopyStats& stats);

}  // namespace kbuild::fileops
