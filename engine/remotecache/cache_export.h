// Exporting build results as a cache (--cache-to): each cache key with the layer chain of its
// result, the layers' blobs in the requested format (made once, then remembered, as image
// exports make theirs), a cache config, and an envelope that lists them, sent to a CacheTarget.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "engine/remotecache/cache_config.h"
#include "engine/remotecache/cache_manifest.h"
#include "engine/remotecache/cache_store.h"
#include "engine/store/store.h"

namespace kbuild::remotecache {

// A result to export: its key and the top snapshot of its chain (nullopt: an empty tree); or,
// for a hit in an imported cache that this build never needed locally, that cache's chain,
// whose blobs are copied from `remote_source` only when the target lacks them.
struct ExportRecord {
  std::string key;
  std::optional<std::string> top;
  std::optional<std::vector<CacheLayer>> remote;
  CacheSource* remote_source = nullptr;
};

// The cache config of these records, with every layer's blob made in `format` (stored).
CacheConfig make_cache_config(store::Store& store, const std::vector<ExportRecord>& records, const CacheFormat& format,
                              const std::string& key_scheme);

// A status line of the export ("writing layer sha256:..."), closed by `done`.
using CacheStatus = std::function<void(const std::string& text, bool done)>;

// Sends the blobs `target` lacks, then the config, then the envelope, as BuildKit's exporters
// report it ("preparing build cache for export", "writing layer ...", "writing config ...",
// "writing cache manifest ..."). Returns the envelope's descriptor.
image::Descriptor export_cache(store::Store& store, const std::vector<ExportRecord>& records, const CacheFormat& format,
                               const std::string& key_scheme, CacheTarget& target, const CacheStatus& status);

}  // namespace kbuild::remotecache
