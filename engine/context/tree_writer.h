// Writes a context tree below a daemon-owned directory from entries an untrusted party
// describes (the reader process, a tar stream). Every path is checked (relative, no "." or ".."
// components, no NUL) and created with *at calls relative to a directory this writer created,
// so nothing is written through a symlink or outside the root, whatever the entries say.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/unique_fd.h"
#include "engine/context/manifest.h"

namespace kbuild::context {

class TreeWriter {
 public:
  struct Options {
    // Tar streams may name "a/b" without "a": create such parents (0755, root, mtime now).
    bool create_missing_parents = false;
    // Tar streams may repeat a path: the later entry replaces the earlier one.
    bool replace_existing = false;
  };

  // `root_fd`: an empty directory owned by the daemon; the writer does not own the fd.
  TreeWriter(int root_fd, Options options);
  explicit TreeWriter(int root_fd) : TreeWriter(root_fd, Options{}) {}
  TreeWriter(const TreeWriter&) = delete;
  TreeWriter& operator=(const TreeWriter&) = delete;

  // Each throws kbuild::Error (user) for an entry it refuses: a bad path, a parent that is not
  // a directory this writer created, a repeated path (unless replace_existing).
  void add_directory(const Entry& entry);
  void add_symlink(const Entry& entry);
  void add_fifo(const Entry& entry);
  // Creates an empty file (0600) to write `entry`'s content into; then call finish_file.
  UniqueFd create_file(const Entry& entry);
  // create_file in two halves, for a caller that creates files on another thread: `reserve_file`
  // checks and records `entry` like create_file; then create exactly (see `create_reserved`).
  void reserve_file(const Entry& entry);
  // Creates a file reserve_file accepted, below `root_fd`, its parent opened through
  // `parent_fds` (a cache of the caller's, one per thread). Touches no state of a writer.
  static UniqueFd create_reserved(int root_fd, const std::string& path,
                                  std::unordered_map<std::string, UniqueFd>& parent_fds);
  // Sets owner, mode and mtime of a file made by create_file and records `entry` (with its digest).
  void finish_file(int fd, const Entry& entry);
  // `entry.hardlink_to` names an earlier file (or symlink, fifo) of this tree.
  void add_hardlink(const Entry& entry);
  // Links `from_path` of another daemon-owned tree (`from_root`) as `entry` when `allow_link`
  // (then `entry` must describe that file exactly: a link shares its inode), else copies it, a
  // reflink where the file system can. A link across file systems or past the inode's link
  // limit becomes a copy.
  struct Reused {
    bool linked = false;
    std::uint64_t bytes_copied = 0;
  };
  Reused reuse_file(int from_root, std::string_view from_path, const Entry& entry, bool allow_link);
  // Writes `entry` as a new file with the content of `from_fd` (an open regular file, read
  // from its start), replacing what is at its path; returns the bytes copied.
  std::uint64_t copy_file(int from_fd, const Entry& entry);

  // Updating a tree written earlier: `adopt` records what `manifest` says the root already
  // holds (call first, once); `keep` records `entry` for a path that stays as it is on disk.
  void adopt(const Manifest& manifest);
  void keep(const Entry& entry);
  // Removes an entry and, for a directory, everything below it.
  void remove(std::string_view path);
  void remove(const std::vector<std::string>& paths);

  // Applies directories' owner, mode and mtime, deepest first. Call once, at the end.
  void finish();

  const Entry* find(std::string_view path) const;
  // Everything written, in walk order.
  Manifest manifest() const;

 private:
  struct Parent {
    int fd;
    std::string name;
  };
  Parent prepare(const Entry& entry);
  int dir_fd(std::string_view dir);
  int source_dir_fd(int from_root, std::string_view dir);
  void make_parents(std::string_view dir);
  void record(const Entry& entry);
  void trim_cache();
  void remove_one(std::string_view path, std::vector<std::string>& removed, bool below_done);
  void repoint_hardlinks(const std::vector<std::string>& removed);
  void apply_link_metadata(int parent_fd, const std::string& name, const Entry& entry);

  int root_fd_;
  Options options_;
  std::unordered_map<std::string, Entry> entries_;
  std::unordered_map<std::string, UniqueFd> dir_fds_;  // a cache: entries arrive grouped by directory
  std::unordered_map<std::string, UniqueFd> source_dir_fds_;
  int source_root_ = -1;
  bool finished_ = false;
};

}  // namespace kbuild::context
