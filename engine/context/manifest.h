// What a materialized build context holds: one entry per directory, file, symlink and fifo
// below its root, with the content digest of every regular file.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/store/digest.h"

namespace kbuild::context {

enum class EntryType : std::uint8_t { regular = 1, directory = 2, symlink = 3, fifo = 4 };

const char* entry_type_name(EntryType type);

// A client file's stat data, which stands for its content as git's index has it: while
// (dev, ino, size, mtime, ctime) are unchanged the content is taken to be unchanged. chmod,
// chown and link all move ctime, so a match also means the metadata is unchanged.
struct StatKey {
  // The uid of the caller that read the file. One user's cached hash never answers for a file
  // another user presents (a bind mount can show someone else's inode with its stat data).
  std::uint32_t scope = 0;
  std::uint64_t dev = 0;
  std::uint64_t ino = 0;
  std::int64_t size = 0;
  std::int64_t mtime_ns = 0;
  std::int64_t ctime_ns = 0;

  // No key: the file came from a tar stream, or was changed too recently to trust its stat.
  bool empty() const { return dev == 0 && ino == 0; }
  bool operator==(const StatKey&) const = default;
};

struct Entry {
  std::string path;  // relative, "/"-separated, cleaned ("a/b.txt")
  EntryType type = EntryType::regular;
  std::uint32_t mode = 0;  // permission, setuid, setgid and sticky bits (07777)
  // Always 0 in a build context: the client's owners are reset (receiver.cc, tar_context.cc).
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::int64_t size = 0;      // regular files
  std::int64_t mtime_ns = 0;  // nanoseconds since the epoch
  std::string link_target;    // symlinks: the target, never followed
  std::string hardlink_to;    // a regular file that is a hard link of this earlier entry's inode
  store::Digest digest;       // regular files: sha256 of the content
  StatKey source;             // the client file it was read from (empty: unknown)

  bool operator==(const Entry&) const = default;
};

// Whether `path` is a context path the daemon accepts: not empty, at most 4096 bytes, no NUL,
// no leading or trailing "/", no empty, "." or ".." component.
bool is_valid_context_path(std::string_view path);

// Orders paths the way a walk visits them, a directory's entries right after it:
// "a" < "a/z" < "a.txt" ("/" sorts before every other byte).
bool path_less(std::string_view a, std::string_view b);

class Manifest {
 public:
  Manifest() = default;
  // Sorts by path_less. Throws kbuild::Error (internal) on an invalid or repeated path.
  explicit Manifest(std::vector<Entry> entries);

  const std::vector<Entry>& entries() const { return entries_; }
  std::size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }
  const Entry* find(std::string_view path) const;
  // The entries strictly below directory `dir` ("" is the root: all of them), in walk order.
  std::span<const Entry> below(std::string_view dir) const;

  // A compact binary form for the metadata store, and back. decode() checks what it reads and
  // throws kbuild::Error (internal) on anything malformed.
  std::string encode() const;
  static Manifest decode(std::string_view bytes);

  bool operator==(const Manifest&) const = default;

 private:
  std::vector<Entry> entries_;
};

}  // namespace kbuild::context
