// The daemon's half of a context transfer: reads what the reader process sends, decides which
// file contents it still needs, and materializes the context under a daemon-owned directory.
#pragma once

#include <cstdint>
#include <optional>

#include "engine/context/hash_cache.h"
#include "engine/context/manifest.h"

namespace kbuild::context {

// A materialization made earlier from the same client directory, kept by the daemon unchanged
// since: unchanged files are hard-linked (or copied) from it instead of being read again.
struct PreviousContext {
  int root_fd = -1;
  const Manifest* manifest = nullptr;
};

struct TransferStats {
  std::uint64_t entries = 0;         // in the result
  std::uint64_t files = 0;           // regular files in the result
  std::uint64_t files_received = 0;  // contents the reader sent
  std::uint64_t bytes_received = 0;
  std::uint64_t files_linked = 0;    // hard links into the previous materialization
  std::uint64_t files_kept = 0;      // left as they were in the previous tree (update_previous)
  std::uint64_t files_copied = 0;    // copied from it by content digest (reflinks where possible)
  std::uint64_t bytes_copied = 0;
  std::uint64_t hash_cache_hits = 0;
};

struct ContextReadResult {
  Manifest manifest;
  // Nothing changed since `previous`: dest was left empty, the previous tree is the context.
  bool unchanged = false;
  // update_previous: the changes were written into the previous tree, which is the context now.
  bool updated_previous = false;
  TransferStats stats;
};

struct ReceiveOptions {
  int dest_fd = -1;                // an empty directory owned by the daemon
  std::uint32_t cache_scope = 0;   // the caller's uid (see StatKey::scope)
  HashCache* hash_cache = nullptr;
  std::optional<PreviousContext> previous;
  // Unchanged files become hard links to the previous tree's (an inode shared by two trees,
  // both read-only); otherwise they are copied, reflinked where the file system can.
  bool link_from_previous = true;
  // Write the changes into the previous tree itself instead of a new tree in `dest_fd`
  // (unused then), so unchanged files cost nothing. No inode of it is ever modified: a changed
  // file, symlink or fifo is a new inode at its path, so layers that share the old inodes keep
  // their content. Only directories' metadata changes in place. The caller must hold the tree
  // alone (no build reading it) and, if the read throws after `*previous_touched` became true,
  // discard it: it is then half old, half new.
  bool update_previous = false;
  bool* previous_touched = nullptr;
  int cancel_fd = -1;              // readable: stop with kbuild::Error (canceled)
  std::uint64_t max_entries = 10'000'000;
};

// `data_fd`: the reader's stream (the read end of a pipe); `request_fd`: where to send the WANT
// frame (a socket). Throws kbuild::Error: the reader's own error ("failed to read context: open
// secret.txt: permission denied", kind permission), or an invalid stream (internal).
ContextReadResult receive_context(int data_fd, int request_fd, const ReceiveOptions& options);

}  // namespace kbuild::context
