// The half of a context transfer that runs as the caller, in the reader process: it walks the
// client's directory as fsutil's walker does and streams what it finds (wire.h).
#pragma once

#include <string>
#include <vector>

#include "engine/patterns/dockerignore.h"

namespace kbuild::context {

struct SenderOptions {
  const patterns::IgnoreMatcher* ignore = nullptr;  // the .dockerignore rules, or none
  std::vector<std::string> include_patterns;          // fsutil's IncludePatterns; empty: everything
  std::vector<std::string> follow_paths;              // fsutil's FollowPaths (BuildKit's COPY sources)
};

// Walks `root_fd` without following any symlink, sends ENTRY frames and END on `data_fd` (a
// blocking pipe), reads the WANT frame from `request_fd` and sends those files' contents. A
// failure is sent as an ERROR frame ("open secret.txt: permission denied"). Returns the
// process's exit status: 0, or 1 once the transfer failed. Never throws.
int run_context_sender(int root_fd, int data_fd, int request_fd, const SenderOptions& options) noexcept;

}  // namespace kbuild::context
