// COPY and ADD between two directory trees, with BuildKit's semantics (dockerfile2llb's
// dispatchCopy, the solver's file backend and tonistiigi/fsutil's copy package), safe against
// hostile content in either tree: every path is resolved inside its root by walking fds.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/fileops/chmod.h"
#include "engine/fileops/chown.h"
#include "engine/fileops/root_path.h"

namespace kbuild::fileops {

// One COPY or ADD instruction's local sources, after variable expansion.
struct CopyRequest {
  // Sources as written ("src/*.go", "../x", "dir/"), relative to the source root. A leading "/",
  // "../" and a trailing "/" do not matter, as in BuildKit. URLs and Git refs are refused.
  std::vector<std::string> sources;
  // The destination as written: a trailing "/" (or "/.") makes it a directory; relative paths
  // are relative to `workdir`.
  std::string dest;
  std::string workdir = "/";
  // --chown, resolved with resolve_chown against the destination stage. Without it an entry
  // keeps its source's owner, and directories created on the way are left as made (root).
  std::optional<Owner> owner;
  // BuildKit's context transfer gives every file of a build context uid 0 and gid 0: set this
  // when the source root is the context (or a named local context), not for --from stages.
  bool source_owner_is_root = false;
  std::optional<Chmod> chmod;  // --chmod
  bool parents = false;        // --parents, with rsync's "/./" pivot
  std::vector<std::string> excludes;  // --exclude patterns, relative to each source
  // ADD: a source that is a local tar archive (plain, gzip, bzip2, xz or zstd, detected by
  // content) is extracted into `dest` instead of copied. ADD's default; false for COPY and for
  // ADD --unpack=false.
  bool unpack = false;
  // A named source (or a wildcard match) that is a symlink is followed inside the source root,
  // as BuildKit's FollowSymlinks does for Dockerfile sources. Symlinks inside a copied
  // directory are always copied as symlinks.
  bool follow_symlinks = true;
  // Hard-link a source file instead of copying it when the copy would be the same inode data
  // and metadata (owner and mode unchanged, no --chmod, no extended attributes, one
  // filesystem). Only for sources that are never written again, such as a materialized
  // context copied into a fresh layer.
  bool link_unchanged_files = false;
  // "COPY" or "ADD": only for the classic builder's messages.
  std::string instruction = "COPY";
  // DOCKER_BUILDKIT=0: the classic builder's extra checks ("When using COPY with more than one
  // source file, the destination must be a directory and end with a /", "no source files were
  // specified"), which BuildKit does not make.
  bool legacy_builder = false;
};

struct CopyStats {
  uint64_t files = 0;        // regular files written
  uint64_t directories = 0;  // directories created
  uint64_t symlinks = 0;
  uint64_t hardlinks = 0;
  uint64_t special = 0;      // devices, fifos, sockets (as empty files)
  uint64_t bytes = 0;        // file content copied or extracted
  uint64_t archives = 0;     // tar archives extracted by ADD
};

// Runs one COPY/ADD. `source_root_fd` and `dest_root_fd` are directory fds (O_PATH is fine) of
// the two trees; they may be the same tree. Throws kbuild::Error:
//  - kind not_found, message "\"/missing\": not found", for a named source that does not exist
//    (BuildKit prints it after "failed to compute cache key: failed to calculate checksum of ref
//    <id> ": the caller adds that prefix);
//  - kind user for what BuildKit refuses ("cannot copy to non-directory: /dest", "source can't
//    be a URL for COPY", "ADD from a URL is not supported yet", bad --exclude patterns, ...).
// On an error the destination may be partly written: callers discard that snapshot.
CopyStats copy_files(int source_root_fd, int dest_root_fd, const CopyRequest& request);

// The absolute destination path BuildKit copies to: `dest` made absolute against `workdir`
// and cleaned, keeping a trailing "/" or "/." ("" and "." mean the workdir as a directory).
std::string normalize_dest(const std::string& dest, const std::string& workdir);

}  // namespace kbuild::fileops
