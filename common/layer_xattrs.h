// Which extended attributes may travel into a snapshot with a file: from an image layer, an
// archive that ADD unpacks, or a COPY source. overlayfs keeps its own state (whiteouts,
// opaque directories, redirects, metacopy) in trusted.overlay.* (user.overlay.* on userxattr
// mounts): a file carrying those would make later steps see another tree than the exported
// image holds. Everything else trusted.* is not an image's to set either.
#pragma once

#include <string_view>

namespace kbuild {

inline bool layer_may_carry_xattr(std::string_view name) {
  if (name.starts_with("user.overlay.")) return false;
  return name.starts_with("user.") || name.starts_with("security.") || name.starts_with("system.posix_acl_");
}

}  // namespace kbuild
