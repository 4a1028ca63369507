// Materializes a client's build context inside the daemon. The reader program
// (kbuild-context-reader, reader_program.h), started fresh and running with the caller's uid,
// gid and groups (no capabilities, no new privileges, not dumpable, no fds but its own), walks
// the client's directory fd as BuildKit's fsutil does and streams it; the daemon writes it below a
// directory of its own, hashing what it receives. The daemon never opens a context file with
// its own privileges. A file whose stat data is unchanged since an earlier materialization is
// not read again: its content comes from that materialization (see receiver.h).
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "engine/context/hash_cache.h"
#include "engine/context/manifest.h"
#include "engine/context/receiver.h"
#include "engine/patterns/dockerignore.h"

namespace kbuild::context {

// Who the reader process runs as: the D-Bus caller, from SO_PEERCRED and its groups.
struct Credentials {
  uid_t uid = 65534;
  gid_t gid = 65534;
  std::vector<gid_t> groups;
};

struct ContextReadRequest {
  int context_fd = -1;  // the client's directory (O_DIRECTORY or O_PATH); not closed here
  Credentials caller;
  const patterns::IgnoreMatcher* ignore = nullptr;  // the client's .dockerignore rules, or none
  // What the build needs, as BuildKit's local source takes it: include patterns, and COPY/ADD
  // source paths whose symlinks are followed inside the context (FollowPaths). Both empty:
  // the whole context.
  std::vector<std::string> include_patterns;
  std::vector<std::string> follow_paths;
  int dest_fd = -1;  // an empty directory under the store root, owned by the daemon (see update_previous)
  HashCache* hash_cache = nullptr;
  std::optional<PreviousContext> previous;  // the last materialization of this client directory
  bool link_from_previous = true;
  // See ReceiveOptions::update_previous: `dest_fd` is not used then.
  bool update_previous = false;
  bool* previous_touched = nullptr;
  int cancel_fd = -1;  // readable (an eventfd, a pipe): stop with kbuild::Error (canceled)
  // The reader program: kbuild-context-reader (tests use probe builds of it).
  std::string reader_program;
};

// Reads the context into `dest_fd` and returns its manifest. Throws kbuild::Error: the
// reader's error as BuildKit words it ("failed to read context: open secret.txt: permission
// denied", kind permission), canceled, or internal.
ContextReadResult read_context(const ContextReadRequest& request);

}  // namespace kbuild::context
