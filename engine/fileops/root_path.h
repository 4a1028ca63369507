// Paths inside an untrusted tree: resolved the way BuildKit's fs.RootPath resolves them (symlinks
// bounded by the tree's root), but by walking directory fds, never by joining strings.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/directory.h"
#include "common/unique_fd.h"

namespace kbuild::fileops {

// Throws kbuild::Error "<op> <path>: <text>" as Go's *os.PathError reads, with Go's lower-case
// errno text ("lstat /a/b: not a directory"); the kind follows errno (ENOENT: not_found, ...).
[[noreturn]] void throw_path_error(std::string_view op, std::string_view path, int error);
[[noreturn]] void throw_path_error(std::string_view op, std::string_view path);
// Go's text for an errno: strerror with a lower-case first letter.
std::string go_errno_text(int error);
// Returns `result` unless it is -1, else throw_path_error with errno.
template <typename T>
T check_path(T result, std::string_view op, std::string_view path) {
  if (result == static_cast<T>(-1)) throw_path_error(op, path);
  return result;
}

// The components of a path: empty ones and "." dropped, ".." kept.
std::vector<std::string> split_path(std::string_view path);

// "/a/b" for {"a", "b"} (the first `count` parts), "/" for none: an in-root path for messages.
std::string join_parts(const std::vector<std::string>& parts, std::size_t count = std::string::npos);

// A path resolved inside a root: no "..", and no symlink among the parts that exist.
struct RootedPath {
  std::vector<std::string> parts;
  std::size_t existing = 0;  // parts[0, existing) exist; the rest were kept as written
  bool exists() const { return existing == parts.size(); }
  std::string str() const { return join_parts(parts); }
};

// Resolves `path` inside the tree `root_fd` as fs.RootPath does: each component is opened with
// openat(O_PATH | O_NOFOLLOW) from the previous directory's fd; a symlink is read and its target
// resolved by us, an absolute target from the root; ".." never climbs above the root; from the
// first missing component on, the rest is kept lexically. With `follow_final` false a final
// symlink is left as it is (lstat). Going through a non-directory throws
// "lstat /a/b: not a directory"; more than 255 symlinks "... too many links".
RootedPath resolve_in_root(int root_fd, std::string_view path, bool follow_final = true);

// Opens parts[0, count) of a resolved path as a directory (O_RDONLY | O_DIRECTORY), following no
// symlink on the way: openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS),
// or an O_NOFOLLOW walk on kernels without openat2. Throws for a missing or non-directory part.
UniqueFd open_dir_parts(int root_fd, const std::vector<std::string>& parts, std::size_t count);

// Ownership for the entries a copy or an extraction creates.
struct Owner {
  uint32_t uid = 0;
  uint32_t gid = 0;
  bool operator==(const Owner&) const = default;
};

// BuildKit's MkdirAll on a resolved path: creates parts[existing, count) with `mode` (chmod'ed,
// whatever the umask), chowned to `owner` when there is one (else left as created: root). An
// existing non-directory on the way throws "mkdir /a: not a directory". Returns an fd of the
// directory parts[0, count) and how many directories it created.
struct MadeDirs {
  UniqueFd fd;
  std::size_t created = 0;
};
MadeDirs make_dirs(int root_fd, const RootedPath& path, std::size_t count, mode_t mode,
                   const std::optional<Owner>& owner);

// Removes `name` in `dirfd` and, for a directory, everything below it, never following a
// symlink. A missing entry is fine.
void remove_all_at(int dirfd, const std::string& name, const std::string& path_for_messages);

// fstatat(AT_SYMLINK_NOFOLLOW); nullopt for ENOENT, throws "lstat <path>: ..." otherwise.
std::optional<struct stat> lstat_at(int dirfd, const std::string& name, const std::string& path);

// `dir` + "/" + `name` for in-root paths ("/" + name at the root).
std::string child_path(const std::string& dir, std::string_view name);

}  // namespace kbuild::fileops
