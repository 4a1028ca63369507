// The second form of a build context: a tar stream (`kbuildctl build - < ctx.tar`, or a
// tarball), plain or gzip/bzip2/xz/zstd-compressed. It is unpacked below a daemon-owned
// directory with the rules of the directory form (no "..", no absolute path, nothing written
// through a symlink, hard links only to earlier files), then filtered by the .dockerignore the
// tar itself carries, since the client cannot read it separately.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "engine/context/manifest.h"

namespace kbuild::context {

struct TarContextRequest {
  int tar_fd = -1;   // read to its end; not closed, and its file status flags are left alone
  int dest_fd = -1;  // an empty directory under the store root, owned by the daemon
  // As BuildKit picks the ignore file: "<dockerfile_path>.dockerignore" when the tar has it,
  // else ".dockerignore" at its root.
  std::string dockerfile_path = "Dockerfile";
  std::vector<std::string> include_patterns;  // as in ContextReadRequest
  std::vector<std::string> follow_paths;
  // Files whose content is returned (up to 16 MiB each) whether the ignore rules keep them or
  // not: the Dockerfile, which BuildKit reads even when .dockerignore names it.
  std::vector<std::string> capture;
  int cancel_fd = -1;
};

struct TarContextResult {
  Manifest manifest;
  std::string ignore_file;  // the ignore file applied ("" when the tar has none)
  std::map<std::string, std::string> captured;
};

// Throws kbuild::Error: user for a malformed or hostile tar ("invalid tar context: ..."),
// canceled, or internal.
TarContextResult read_tar_context(const TarContextRequest& request);

}  // namespace kbuild::context
