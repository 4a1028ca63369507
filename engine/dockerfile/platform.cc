#include "engine/dockerfile/platform.h"

#include <algorithm>
#include <cctype>
#include <vector>

#include "common/error.h"
#include "engine/dockerfile/go_values.h"

namespace kbuild::dockerfile {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool known_os(std::string_view os) {
  static const std::vector<std::string_view> names = {
      "aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos", "ios", "js", "linux",
      "nacl", "netbsd", "openbsd", "plan9", "solaris", "wasip1", "windows", "zos"};
  for (auto n : names) {
    if (n == os) return true;
  }
  return false;
}

// containerd's normalizeArch: aliases to the canonical architecture and variant.
bool normalize_arch(std::string& arch, std::string& variant) {
  static const std::vector<std::string_view> known = {
      "386", "amd64", "amd64p32", "arm", "armbe", "arm64", "arm64be", "loong64", "mips", "mipsle",
      "mips64", "mips64le", "mips64p32", "mips64p32le", "ppc", "ppc64", "ppc64le", "riscv", "riscv64",
      "s390", "s390x", "sparc", "sparc64", "wasm"};
  if (arch == "i386") {
    arch = "386";
    variant.clear();
  } else if (arch == "x86_64" || arch == "x86-64" || arch == "amd64") {
    arch = "amd64";
    if (variant == "v1") variant.clear();
  } else if (arch == "aarch64" || arch == "arm64") {
    arch = "arm64";
    if (variant == "8" || variant == "v8" || variant == "v8.0") variant.clear();
  } else if (arch == "armhf") {
    arch = "arm";
    variant = "v7";
  } else if (arch == "armel") {
    arch = "arm";
    variant = "v6";
  } else if (arch == "arm") {
    if (variant.empty() || variant == "7") variant = "v7";
    else if (variant == "5" || variant == "6" || variant == "8") variant = "v" + variant;
  }
  for (auto k : known) {
    if (k == arch) return true;
  }
  return false;
}

}  // namespace

Platform Platform::native() {
#if defined(__x86_64__)
  return {"linux", "amd64", ""};
#elif defined(__aarch64__)
  return {"linux", "arm64", ""};
#elif defined(__arm__)
  return {"linux", "arm", "v7"};
#elif defined(__i386__)
  return {"linux", "386", ""};
#elif defined(__powerpc64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  return {"linux", "ppc64le", ""};
#elif defined(__s390x__)
  return {"linux", "s390x", ""};
#elif defined(__riscv) && __riscv_xlen == 64
  return {"linux", "riscv64", ""};
#else
#error "unknown build architecture"
#endif
}

Platform Platform::parse(std::string_view spec) {
  auto invalid = [&](const std::string& why) {
    return Error(ErrorKind::user, go_quote(spec) + ": " + why + ": invalid argument");
  };
  if (spec.find('*') != std::string_view::npos) throw invalid("wildcards not yet supported");
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    size_t slash = spec.find('/', start);
    parts.push_back(lower(spec.substr(start, slash - start)));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  for (const std::string& p : parts) {
    if (p.empty() || p.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_.-") != std::string::npos) {
      throw invalid("invalid path component");
    }
  }
  Platform p;
  if (parts.size() == 1) {
    // A lone word is an OS when it is one, else an architecture on the native OS.
    if (known_os(parts[0])) {
      p = native();
      p.os = parts[0];
      if (p.os != "linux") p = {parts[0], native().architecture, native().variant};
      return p;
    }
    p.os = native().os;
    p.architecture = parts[0];
    if (!normalize_arch(p.architecture, p.variant)) throw invalid("unknown operating system or architecture");
    return p;
  }
  if (parts.size() > 3) throw invalid("cannot parse platform specifier");
  p.os = parts[0] == "macos" ? "darwin" : parts[0];
  p.architecture = parts[1];
  if (parts.size() == 3) p.variant = parts[2];
  if (!known_os(p.os)) throw invalid("unknown operating system or architecture");
  if (!normalize_arch(p.architecture, p.variant)) throw invalid("unknown operating system or architecture");
  return p;
}

std::vector<Platform> parse_platform_list(std::string_view specs) {
  std::vector<Platform> out;
  size_t start = 0;
  while (start <= specs.size() && !specs.empty()) {
    size_t comma = specs.find(',', start);
    std::string_view one = specs.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    while (!one.empty() && one.front() == ' ') one.remove_prefix(1);
    while (!one.empty() && one.back() == ' ') one.remove_suffix(1);
    Platform platform;
    try {
      platform = Platform::parse(one);
    } catch (const Error& e) {
      throw e.with_context("failed to parse platform " + std::string(one));
    }
    if (std::find(out.begin(), out.end(), platform) == out.end()) out.push_back(std::move(platform));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

std::string Platform::format() const {
  std::string out = os.empty() ? "unknown" : os;
  out += "/" + architecture;
  if (!variant.empty()) out += "/" + variant;
  return out;
}

}  // namespace kbuild::dockerfile
