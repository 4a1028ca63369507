// Cache-key digests of build context content, with BuildKit's contenthash idea: a file counts by
// what its tar header holds minus name and mtime (type, mode, uid, gid, size, link target) plus
// its content; a selection counts by each selected path and that file digest. An mtime change
// alone never changes a key; a content, mode, owner or link change always does. A build
// context's owners are always 0 (the client's are reset on the way in, as BuildKit's client
// does), so the same files give the same digests on any host, whoever owns them there. Modes
// stay in: bits that differ by umask or checkout are a real difference, as in BuildKit.
#pragma once

#include <string>
#include <vector>

#include "engine/context/manifest.h"
#include "engine/store/digest.h"

namespace kbuild::context {

// One entry's digest, name and mtime left out (BuildKit's NewFromStat + WriteV1TarsumHeaders).
// Symlinks count as mode 0777 and with their target; directories without content.
store::Digest entry_digest(const Entry& entry);

// What one COPY/ADD source takes from a context, in fsutil's terms: include patterns (a path
// names its whole subtree) and exclude patterns (.dockerignore syntax, COPY --exclude).
struct Selection {
  std::vector<std::string> include_patterns;
  std::vector<std::string> exclude_patterns;
};

// The digest of everything `selection` takes from `manifest`: each selected path (relative to
// the context root) with its entry_digest, in walk order. Directories above a selected path
// but not selected themselves do not count. Nothing selected gives the digest of "".
// Throws kbuild::Error (user) for a bad pattern.
store::Digest selection_digest(const Manifest& manifest, const Selection& selection);

}  // namespace kbuild::context
