// An exported cache read back for a build (--cache-from): which layer chain each cache key
// gives, and where the blobs are. Reading it fetches only the root document and the cache
// config; the blobs of a chain are fetched when a hit needs them (materialize_chain).
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/remotecache/cache_config.h"
#include "engine/remotecache/cache_store.h"

namespace kbuild::remotecache {

// The deepest chain a record may stand for: an overlay cannot stack many more layers, and a
// cache must not make a build fetch and extract thousands of blobs for one hit.
inline constexpr size_t kMaxChainLayers = 256;

class ImportedCache {
 public:
  ImportedCache(std::shared_ptr<CacheSource> source, CacheConfig config);

  // The layers of the result recorded under `key`, bottom first (empty for an empty tree);
  // nullopt when the cache has no record of it, or only one deeper than kMaxChainLayers.
  std::optional<std::vector<CacheLayer>> find(const std::string& key) const;
  CacheSource& source() const { return *source_; }
  const CacheConfig& config() const { return config_; }
  // The media type of the root document it was read from (BuildKit reports it).
  const std::string& media_type() const { return media_type_; }
  void set_media_type(std::string media_type) { media_type_ = std::move(media_type); }

 private:
  std::shared_ptr<CacheSource> source_;
  CacheConfig config_;
  std::map<std::string, int> layer_of_key_;
  std::string media_type_;
};

// The image config member that carries an inline cache (--cache-to type=inline): the records
// of the image's own layers, as {"kbuildCache":1,"keyScheme":...,"records":[{"key","layer"}]}
// where "layer" indexes rootfs.diff_ids.
inline constexpr std::string_view kInlineCacheMember = "kbuild.cache.v1";

// Reads the cache `source` holds: our cache manifest and its config, or an image whose config
// carries an inline cache. Records of another key scheme than `key_scheme` cannot hit. Throws
// kbuild::Error (user) saying why a cache cannot be used at all (BuildKit's own format, an
// image without a cache, a corrupt config); records dropped alone go to `warnings`.
ImportedCache import_cache(std::shared_ptr<CacheSource> source, const std::string& key_scheme,
                           std::vector<std::string>& warnings);

}  // namespace kbuild::remotecache
