#include "engine/remotecache/imported_cache.h"

#include <set>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "engine/image/json_depth.h"
#include "engine/remotecache/cache_manifest.h"

namespace kbuild::remotecache {
namespace {

using nlohmann::json;

// A small blob (a config) read whole, bounded by what a config may be.
std::string read_document(CacheSource& source, const image::Descriptor& blob) {
  if (blob.size < 0 || blob.size > static_cast<int64_t>(kCacheConfigLimit)) {
    throw Error(ErrorKind::user, "its config is larger than 4 MiB");
  }
  std::string bytes;
  source.blob(blob, [&](std::string_view data) { bytes.append(data); });
  return bytes;
}

// Every layer of the config must be a blob the envelope lists, with the same size and type:
// the envelope is what registries keep alive and copy.
void check_layers_listed(const CacheConfig& config, const std::vector<image::Descriptor>& blobs) {
  std::map<store::Digest, const image::Descriptor*> listed;
  for (const image::Descriptor& blob : blobs) listed.emplace(blob.digest, &blob);
  for (const CacheLayer& layer : config.layers) {
    auto it = listed.find(layer.blob.digest);
    if (it == listed.end()) throw Error(ErrorKind::user, "layer " + layer.blob.digest.str() + " is not in its manifest");
    if (it->second->size != layer.blob.size || it->second->media_type != layer.blob.media_type) {
      throw Error(ErrorKind::user, "layer " + layer.blob.digest.str() + " differs from its manifest's");
    }
  }
}

// An inline cache: the image's layers, each on the one below, and the records in its config.
CacheConfig inline_config(const std::string& config_bytes, const std::vector<image::Descriptor>& layers,
                          std::vector<std::string>& warnings) {
  json config = json::parse(config_bytes, nullptr, false);
  if (image::json_deeper_than(config, image::kJsonDepthLimit)) {
    throw Error(ErrorKind::user, "its config nests deeper than " + std::to_string(image::kJsonDepthLimit) + " levels");
  }
  if (!config.is_object() || !config.contains(kInlineCacheMember)) {
    throw Error(ErrorKind::user, "the image has no kbuild cache (build it with --cache-to type=inline)");
  }
  const json& cache = config[std::string(kInlineCacheMember)];
  const json* diff_ids = nullptr;
  if (config.contains("rootfs") && config["rootfs"].is_object() && config["rootfs"].contains("diff_ids")) {
    diff_ids = &config["rootfs"]["diff_ids"];
  }
  if (!cache.is_object() || !diff_ids || !diff_ids->is_array() || diff_ids->size() != layers.size()) {
    throw Error(ErrorKind::user, "its inline cache does not match its layers");
  }
  // The whole config goes through the one parser, so inline records are checked as others are.
  json whole = cache;
  whole["layers"] = json::array();
  for (size_t i = 0; i < layers.size(); ++i) {
    json layer = {{"blob", layers[i].digest.str()},
                  {"mediaType", layers[i].media_type},
                  {"size", layers[i].size},
                  {"diffID", (*diff_ids)[i]},
                  {"parent", static_cast<int>(i) - 1}};
    // The image's date is its last layer's: built on, the layers date the new image as before.
    if (config.contains("created") && config["created"].is_string()) layer["created"] = config["created"];
    whole["layers"].push_back(std::move(layer));
  }
  return parse_cache_config(whole.dump(), warnings);
}

}  // namespace

ImportedCache::ImportedCache(std::shared_ptr<CacheSource> source, CacheConfig config)
    : source_(std::move(source)), config_(std::move(config)) {
  for (const CacheRecord& record : config_.records) layer_of_key_.emplace(record.key, record.layer);
}

std::optional<std::vector<CacheLayer>> ImportedCache::find(const std::string& key) const {
  auto it = layer_of_key_.find(key);
  if (it == layer_of_key_.end()) return std::nullopt;
  std::vector<CacheLayer> chain;
  // Parents are below their layers (parse_cache_config checks it), so this ends.
  for (int layer = it->second; layer >= 0; layer = config_.layers[static_cast<size_t>(layer)].parent) {
    if (chain.size() == kMaxChainLayers) return std::nullopt;
    chain.push_back(config_.layers[static_cast<size_t>(layer)]);
  }
  return std::vector<CacheLayer>(chain.rbegin(), chain.rend());
}

ImportedCache import_cache(std::shared_ptr<CacheSource> source, const std::string& key_scheme,
                           std::vector<std::string>& warnings) {
  RootDocument root = source->root();
  FoundCache found = inspect_cache(root.media_type, root.bytes);
  CacheConfig config;
  switch (found.kind) {
    case FoundCache::Kind::kbuild:
      config = parse_cache_config(read_document(*source, found.config), warnings);
      check_layers_listed(config, found.blobs);
      break;
    case FoundCache::Kind::image:
      if (found.config.digest.empty()) {
        throw Error(ErrorKind::user, "an image index holds no inline cache of its own");
      }
      config = inline_config(read_document(*source, found.config), found.blobs, warnings);
      break;
    case FoundCache::Kind::buildkit:
      throw Error(ErrorKind::user, "it is a BuildKit cache (" + std::string(kBuildKitCacheConfigMediaType) +
                                       "), which kbuild cannot read");
    case FoundCache::Kind::unknown:
      throw Error(ErrorKind::user, found.why.empty() ? "not a cache manifest" : found.why);
  }
  if (config.key_scheme != key_scheme) {
    throw Error(ErrorKind::user, "its keys are of scheme \"" + config.key_scheme + "\", this kbuild's are \"" +
                                     key_scheme + "\"");
  }
  ImportedCache imported(std::move(source), std::move(config));
  imported.set_media_type(found.media_type);
  return imported;
}

}  // namespace kbuild::remotecache
