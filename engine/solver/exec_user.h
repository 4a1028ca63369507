// The user a RUN step runs as: USER resolved against the stage's own /etc/passwd and
// /etc/group, as BuildKit does (numeric "uid[:gid]" needs no lookup and gets no extra groups).
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/unique_fd.h"

namespace kbuild::solver {

struct ExecUser {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;
  std::string home = "/";  // HOME when the environment has none, as runc sets it
};

// Reads a file of the stage's rootfs ("/etc/passwd"); nullopt when it does not exist.
using RootfsFileReader = std::function<std::optional<std::string>(const std::string& path)>;

// Throws kbuild::Error (user) with BuildKit's texts for names that are not found.
ExecUser resolve_exec_user(const std::string& user, const RootfsFileReader& read_file);

// A path as the overlay of `lowers` (top first) shows it, without following symlinks: the
// directory that holds it in the topmost layer that has it, its name there and its stat.
struct LayerEntry {
  UniqueFd dir;
  std::string name;
  struct stat st;
};
std::optional<LayerEntry> lookup_in_layers(const std::vector<std::string>& lowers, const std::string& path);

// A file as the overlay of `lowers` (top first) shows it: the topmost layer that has the
// path decides; a whiteout or an opaque directory above it hides the lower ones.
std::optional<std::string> read_file_from_layers(const std::vector<std::string>& lowers, const std::string& path);

}  // namespace kbuild::solver
