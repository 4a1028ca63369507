// kbuild-context-reader: the program that walks a client's build context as the caller. kbuildd
// starts it with posix_spawn (so it is a fresh image: nothing of the root daemon's memory, its
// environment or its fds reaches a process the caller may signal or inspect), as root with
// exactly these fds, and it switches to the caller's credentials itself.
#pragma once

#include <sys/types.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "engine/patterns/dockerignore.h"

namespace kbuild::context {

// The fds the reader starts with, besides /dev/null as 0-2.
inline constexpr int kReaderRootFd = 3;     // the client's context directory
inline constexpr int kReaderDataFd = 4;     // the stream to the daemon (wire.h)
inline constexpr int kReaderRequestFd = 5;  // the daemon's WANT frame
inline constexpr int kReaderOptionsFd = 6;  // ReaderOptions as JSON, read once and closed

// What the reader is told besides the fds.
struct ReaderOptions {
  uid_t uid = 65534;
  gid_t gid = 65534;
  std::vector<gid_t> groups;
  pid_t daemon = 0;  // the process that started it: the reader stops if that has gone
  std::optional<std::vector<patterns::IgnorePattern>> ignore;  // the .dockerignore rules, or none
  std::vector<std::string> include_patterns;
  std::vector<std::string> follow_paths;
};

std::string serialize_reader_options(const ReaderOptions& options);
// Throws kbuild::Error (internal) for anything but what serialize_reader_options writes.
ReaderOptions parse_reader_options(std::string_view json);

// The program's body; returns its exit status. `check` (tests only: a probe build of the
// program) runs after the switch to the caller's credentials, before the walk; what it throws
// becomes the read's error.
int context_reader_main(const std::function<void()>& check = {});

}  // namespace kbuild::context
