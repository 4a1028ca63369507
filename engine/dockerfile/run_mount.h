// RUN --mount specifications, parsed and checked as BuildKit does, with its defaults.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace kbuild::dockerfile {

enum class MountType { bind, cache, tmpfs, secret, ssh };
enum class CacheSharing { shared, priv, locked };

// One RUN --mount, with BuildKit's defaults applied.
struct RunMount {
  MountType type = MountType::bind;
  std::string from;
  std::string source;
  std::string target;
  bool read_only = true;
  int64_t size_limit = 0;  // tmpfs size in bytes; 0 = no limit
  std::string cache_id;
  std::optional<CacheSharing> sharing;  // unset means shared, for cache mounts
  bool required = false;
  std::optional<std::string> env;  // secret exposed as an environment variable
  std::optional<uint32_t> mode, uid, gid;
};

// Expands one value of a mount spec.
using WordExpander = std::function<std::string(const std::string&)>;

// Parses one --mount value. With an expander, values are expanded first (as at dispatch);
// without one, only what can be checked before expansion is checked (BuildKit does the same
// in two passes). Throws kbuild::Error with BuildKit's message texts.
RunMount parse_run_mount(std::string_view spec, const WordExpander* expand);

const char* mount_type_name(MountType type);
const char* cache_sharing_name(CacheSharing sharing);

}  // namespace kbuild::dockerfile
