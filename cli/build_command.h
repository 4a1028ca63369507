// `kbuildctl build`: docker build's flags, the context and Dockerfile opened as the user,
// progress rendered BuildKit's way, outputs written as the user.
#pragma once

#include <iosfwd>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace kbuild::cli {

struct BuildFlags {
  std::string context = ".";
  std::string file;
  std::vector<std::string> tags;
  std::vector<std::string> build_args;
  std::vector<std::string> labels;
  std::string target;
  bool no_cache = false;
  std::vector<std::string> no_cache_filter;
  std::string progress = "auto";
  std::vector<std::string> outputs;
  std::string iidfile;
  std::string metadata_file;
  bool quiet = false;
  std::string platform;
  std::vector<std::string> allow;  // entitlements: network.host, security.insecure
  std::string memory;              // "512m": for the build's RUN steps together
  std::string cpus;                // "1.5"
  int64_t pids_limit = 0;
  bool pull = false;  // base images from their registries, even when stored
  bool push = false;  // the tags to their registries
  // Known to buildx but not built here yet: refused by name rather than as unknown arguments.
  std::vector<std::string> cache_from, cache_to, secrets, ssh;
};

// docker's memory sizes: "512m", "1.5g", "1024" (bytes); binary multiples. Throws kbuild::Error.
uint64_t parse_memory_bytes(const std::string& value);

// One --output: "type=local,dest=dir", or a bare path (type local), or "-" (tar to stdout).
struct OutputFlag {
  std::string type;
  std::map<std::string, std::string> attributes;
};
OutputFlag parse_output_flag(const std::string& value);

// A --cache-from or --cache-to value, as buildx parses it: CSV key=value pairs, or a bare
// registry ref ("reg/app:cache" is type=registry,ref=reg/app:cache).
struct CacheFlag {
  std::string type;
  std::map<std::string, std::string> attributes;
};
CacheFlag parse_cache_flag(const std::string& value);

// Every image name the flags carry (-t, an output's name=, a registry cache's ref), held to
// Docker's grammar in buildx's words. Throws kbuild::Error.
void check_image_names(const BuildFlags& flags);

// Runs a build against the daemon at `socket`; returns the exit code.
int run_build(const BuildFlags& flags, const std::string& socket, std::ostream& out, std::ostream& err);

}  // namespace kbuild::cli
