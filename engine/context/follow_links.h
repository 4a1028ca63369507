// fsutil's FollowLinks: the paths COPY/ADD sources name (BuildKit's FollowPaths) plus the
// targets of the symlinks met on the way, resolved inside the context, as include patterns.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kbuild::context {

// Resolves `paths` inside the directory `root_fd` (never leaving it: an absolute or ".." target
// is taken relative to the context root, as fsutil does). Returns the sorted, de-duplicated
// include patterns, or nullopt when one of them is the whole context ("."). Throws kbuild::Error
// for a file that exists but cannot be examined.
std::optional<std::vector<std::string>> follow_links(int root_fd, const std::vector<std::string>& paths);

// fsutil's NewFilterFS: `include_patterns` plus what follow_links resolves from `follow_paths`.
std::vector<std::string> include_patterns_for(int root_fd, std::vector<std::string> include_patterns,
                                              const std::vector<std::string>& follow_paths);

}  // namespace kbuild::context
