// The config blob of an exported build cache (application/vnd.kbuild.cache.config.v1+json):
// which layer chain each cache key gives. docs/cache-format.md describes the format and its
// versioning. Pure: bytes in, bytes out; fetching and pushing are the importer's and exporter's.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "engine/image/oci.h"
#include "engine/store/digest.h"

namespace kbuild::remotecache {

inline constexpr std::string_view kCacheConfigMediaType = "application/vnd.kbuild.cache.config.v1+json";
// The "kbuildCache" member this code writes and reads; docs/cache-format.md says what bumps it.
inline constexpr int kCacheConfigVersion = 1;
// The largest config read, the limit registry::kManifestLimit puts on manifests.
inline constexpr size_t kCacheConfigLimit = 4 << 20;

// One layer blob of the cache, stacked on its parent.
struct CacheLayer {
  image::Descriptor blob;  // only mediaType, digest and size are part of the config
  store::Digest diff_id;
  std::string created;  // RFC 3339 as Go writes it; empty when unknown
  int parent = -1;      // index in CacheConfig::layers, lower than the layer's own; -1: none
  bool operator==(const CacheLayer&) const = default;
};

// A cache key and the top of the layer chain its result is.
struct CacheRecord {
  std::string key;  // "sha256:<64 hex>", as the solver's cache keys are
  int layer = -1;   // index in CacheConfig::layers; -1: an empty tree
  bool operator==(const CacheRecord&) const = default;
};

struct CacheConfig {
  int version = kCacheConfigVersion;
  std::string key_scheme;  // how the keys were computed, e.g. "kbuild-key-v3"
  std::vector<CacheLayer> layers;
  std::vector<CacheRecord> records;
  bool operator==(const CacheConfig&) const = default;
};

// The config's canonical bytes: identical layers merged, layers parents first and then by blob,
// records by key, so the same cache always has the same digest. Throws kbuild::Error (internal)
// for a config parse_cache_config would not accept whole.
std::string serialize_cache_config(const CacheConfig& config);

// A config as stored, in its order. Throws kbuild::Error (user) for one that cannot be used at
// all: not JSON, over kCacheConfigLimit, another version, a member of the wrong type, a layer
// whose parent is not below it or whose media type is not a layer's. A record that cannot be
// used (a malformed key, a layer index out of range, a key seen before) is dropped alone, with
// a line in `warnings` saying why.
CacheConfig parse_cache_config(std::string_view json, std::vector<std::string>& warnings);

// The descriptor of a config's bytes, as a manifest lists it.
image::Descriptor cache_config_descriptor(std::string_view bytes);

}  // namespace kbuild::remotecache
