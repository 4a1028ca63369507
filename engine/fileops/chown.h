// COPY/ADD --chown: a user and group spec resolved against the destination stage's /etc/passwd
// and /etc/group, read through the stage's root fd.
#pragma once

#include <string_view>

#include "engine/fileops/root_path.h"

namespace kbuild::fileops {

enum class ChownStyle {
  // BuildKit (llb.WithUser + the solver's readUser): "user", "user:group", "uid", "uid:gid",
  // ":group". A numeric part (or "root") is an id; a name is looked up, and a user or group name
  // that is not found, or a missing passwd/group file, leaves the id 0 without an error. "user"
  // alone takes the user's primary gid, "uid" alone gid = uid, an empty part is id 0.
  buildkit,
  // The classic builder (DOCKER_BUILDKIT=0): one part means the same name or id for both; an
  // unknown name fails with "can't find uid for user foo: no such user: foo".
  classic,
};

// Resolves a --chown value. `rootfs_fd` is the destination stage's root (the state the COPY
// writes into); /etc/passwd and /etc/group are found inside it with symlinks bounded by it.
// Throws kbuild::Error (kind user) for what BuildKit rejects: a passwd or group file that is
// not a regular file or exceeds 10 MiB.
Owner resolve_chown(std::string_view spec, int rootfs_fd, ChownStyle style = ChownStyle::buildkit);

}  // namespace kbuild::fileops
