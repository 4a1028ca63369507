// --secret as buildx parses it, and each secret turned into the fd kbuildctl passes to kbuildd:
// the caller's own file, opened as the caller, or an environment variable's value sealed in a
// memfd. The value itself never crosses D-Bus, and no file is written for it.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/unique_fd.h"

namespace kbuild::cli {

// buildx's largest secret (BuildKit's MaxSecretSize).
inline constexpr size_t kMaxSecretSize = 500 * 1024;

struct SecretFlag {
  std::string id;
  std::string file;  // src= / source=
  std::string env;   // env=, or src= with type=env
};

// One --secret value: CSV key=value fields (type, id, src/source, env), keys case-insensitive.
// Throws kbuild::Error (user) with buildx's words.
SecretFlag parse_secret_flag(const std::string& value);

struct SecretFd {
  std::string id;
  UniqueFd fd;
};

// Opens every secret, checked before the build starts: an id, no id twice, a file that is a
// readable regular file of at most 500 KiB (a directory, a FIFO, a device is refused). The
// shorthand `id=X` is the variable X when it is set, else the file X. `getenv` reads the
// caller's environment.
std::vector<SecretFd> open_secrets(const std::vector<SecretFlag>& flags,
                                   const std::function<std::optional<std::string>(const std::string&)>& getenv);

}  // namespace kbuild::cli
