#include "engine/image/json_depth.h"
#include "engine/remotecache/cache_config.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <set>
#include <tuple>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "engine/image/go_json.h"

namespace kbuild::remotecache {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;

// --- checks shared by writing (a bug if they fail) and reading (a broken config) ------------

bool is_digest(std::string_view text) {
  try {
    (void)store::Digest::parse(text);
    return true;
  } catch (const Error&) {
    return false;
  }
}

// Why a layer cannot be used at `index`, or "" if it can. `parent` is as read, before it is
// narrowed to the layer's int.
std::string layer_problem(const CacheLayer& layer, int64_t parent, size_t index) {
  if (!image::is_layer_type(layer.blob.media_type)) {
    return "media type \"" + layer.blob.media_type + "\" is not a layer type";
  }
  if (layer.blob.digest.empty()) return "no blob digest";
  if (layer.blob.size < 0) return "negative size";
  if (layer.diff_id.empty()) return "no diffID";
  // A parent below the layer's own index rules out loops and makes every chain finite.
  if (parent < -1 || parent >= static_cast<int64_t>(index)) {
    return "parent " + std::to_string(parent) + " is not below the layer";
  }
  if (!layer.created.empty()) {
    try {
      (void)image::parse_time(layer.created);
    } catch (const Error& e) {
      return e.what();
    }
  }
  return {};
}

// Why a record cannot be used, or "" if it can. `layer` is as read, before it is narrowed.
std::string record_problem(const std::string& key, int64_t layer, size_t layer_count) {
  if (!is_digest(key)) return "the key is not sha256:<64 hex>";
  if (layer < -1 || layer >= static_cast<int64_t>(layer_count)) {
    return "layer " + std::to_string(layer) + " is out of range (" + std::to_string(layer_count) + " layers)";
  }
  return {};
}

// A key as a warning shows it: a malformed one may be of any length. The JSON parser has
// checked it is UTF-8, and it is cut between characters, so that D-Bus takes the warning.
std::string shown(const std::string& key) {
  constexpr size_t kShown = 80;
  if (key.size() <= kShown) return "\"" + key + "\"";
  size_t end = kShown;
  while (end > 0 && (static_cast<unsigned char>(key[end]) & 0xC0) == 0x80) --end;
  return "\"" + key.substr(0, end) + "...\"";
}

// --- writing --------------------------------------------------------------------------------

// What a layer is in the config: the blob's digest, media type and size, nothing else of it.
CacheLayer config_layer(const CacheLayer& layer, int parent) {
  CacheLayer out;
  out.blob.media_type = layer.blob.media_type;
  out.blob.digest = layer.blob.digest;
  out.blob.size = layer.blob.size;
  out.diff_id = layer.diff_id;
  out.created = layer.created;
  out.parent = parent;
  return out;
}

auto layer_order(const CacheLayer& l) {
  return std::tie(l.blob.digest, l.parent, l.blob.media_type, l.blob.size, l.diff_id, l.created);
}

// The layers in canonical order, with `renumbered[old index] = new index`: by depth (a layer
// without a parent is at depth 0), so that parents come first; within a depth by blob, then by
// the parent's new index and the other members. Equal layers become one. This depends only on
// the set of chains, not on the order they came in (BuildKit's sortConfig orders by the old
// parent index, which does).
std::vector<CacheLayer> canonical_layers(const std::vector<CacheLayer>& layers, std::vector<int>& renumbered) {
  std::vector<std::vector<size_t>> by_depth;
  std::vector<size_t> depth(layers.size());
  for (size_t i = 0; i < layers.size(); ++i) {
    depth[i] = layers[i].parent < 0 ? 0 : depth[static_cast<size_t>(layers[i].parent)] + 1;
    if (depth[i] >= by_depth.size()) by_depth.resize(depth[i] + 1);
    by_depth[depth[i]].push_back(i);
  }
  renumbered.assign(layers.size(), -1);
  std::vector<CacheLayer> out;
  for (const std::vector<size_t>& level : by_depth) {
    std::vector<std::pair<CacheLayer, size_t>> candidates;
    for (size_t i : level) {
      int parent = layers[i].parent < 0 ? -1 : renumbered[static_cast<size_t>(layers[i].parent)];
      candidates.emplace_back(config_layer(layers[i], parent), i);
    }
    std::sort(candidates.begin(), candidates.end(),
              [](const auto& a, const auto& b) { return layer_order(a.first) < layer_order(b.first); });
    const size_t level_start = out.size();
    for (auto& [layer, old_index] : candidates) {
      if (out.size() == level_start || !(out.back() == layer)) out.push_back(std::move(layer));
      renumbered[old_index] = static_cast<int>(out.size() - 1);
    }
  }
  return out;
}

std::vector<CacheRecord> canonical_records(const std::vector<CacheRecord>& records,
                                           const std::vector<int>& renumbered) {
  std::vector<CacheRecord> out;
  for (const CacheRecord& r : records) {
    out.push_back({r.key, r.layer < 0 ? -1 : renumbered[static_cast<size_t>(r.layer)]});
  }
  std::sort(out.begin(), out.end(), [](const CacheRecord& a, const CacheRecord& b) {
    return std::tie(a.key, a.layer) < std::tie(b.key, b.layer);
  });
  out.erase(std::unique(out.begin(), out.end()), out.end());
  for (size_t i = 1; i < out.size(); ++i) {
    if (out[i].key == out[i - 1].key) {
      throw Error(ErrorKind::internal, "cache config: key " + out[i].key + " has two results");
    }
  }
  return out;
}

// --- reading: a structural problem throws, a bad record is dropped --------------------------

[[noreturn]] void broken(const std::string& why) {
  throw Error(ErrorKind::user, "invalid kbuild cache config: " + why);
}

const json* member(const json& o, const char* key) {
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) return nullptr;
  return &*it;
}

const json& required(const json& o, const char* key, const std::string& where) {
  const json* v = member(o, key);
  if (!v) broken(where + "no \"" + key + "\"");
  return *v;
}

std::string string_member(const json& o, const char* key, const std::string& where, bool needed = true) {
  const json* v = needed ? &required(o, key, where) : member(o, key);
  if (!v) return {};
  if (!v->is_string()) broken(where + "\"" + key + "\" is not a string");
  return v->get<std::string>();
}

// An integer member; values beyond int64's range are clamped, which keeps them out of range.
int64_t integer_member(const json& o, const char* key, const std::string& where) {
  const json& v = required(o, key, where);
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    return u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ? std::numeric_limits<int64_t>::max()
                                                                         : static_cast<int64_t>(u);
  }
  if (!v.is_number_integer()) broken(where + "\"" + key + "\" is not an integer");
  return v.get<int64_t>();
}

store::Digest digest_member(const json& o, const char* key, const std::string& where) {
  std::string text = string_member(o, key, where);
  try {
    return store::Digest::parse(text);
  } catch (const Error& e) {
    broken(where + "\"" + key + "\": " + e.what());
  }
}

const json* array_member(const json& o, const char* key) {
  const json* v = member(o, key);
  if (v && !v->is_array()) broken(std::string("\"") + key + "\" is not an array");
  return v;
}

// An index that fits in an int, or one that is out of range for any config.
int to_index(int64_t value) {
  if (value < std::numeric_limits<int>::min() || value > std::numeric_limits<int>::max()) {
    return std::numeric_limits<int>::min();
  }
  return static_cast<int>(value);
}

CacheLayer parse_layer(const json& o, size_t index) {
  const std::string where = "layer " + std::to_string(index) + ": ";
  if (!o.is_object()) broken(where + "not an object");
  CacheLayer layer;
  layer.blob.digest = digest_member(o, "blob", where);
  layer.blob.media_type = string_member(o, "mediaType", where);
  layer.blob.size = integer_member(o, "size", where);
  layer.diff_id = digest_member(o, "diffID", where);
  layer.created = string_member(o, "created", where, false);
  int64_t parent = integer_member(o, "parent", where);
  layer.parent = to_index(parent);
  if (std::string problem = layer_problem(layer, parent, index); !problem.empty()) broken(where + problem);
  return layer;
}

}  // namespace

std::string serialize_cache_config(const CacheConfig& config) {
  if (config.version != kCacheConfigVersion) {
    throw Error(ErrorKind::internal, "cache config: version " + std::to_string(config.version) + " cannot be written");
  }
  for (size_t i = 0; i < config.layers.size(); ++i) {
    if (std::string problem = layer_problem(config.layers[i], config.layers[i].parent, i); !problem.empty()) {
      throw Error(ErrorKind::internal, "cache config: layer " + std::to_string(i) + ": " + problem);
    }
  }
  for (const CacheRecord& record : config.records) {
    if (std::string problem = record_problem(record.key, record.layer, config.layers.size()); !problem.empty()) {
      throw Error(ErrorKind::internal, "cache config: record " + shown(record.key) + ": " + problem);
    }
  }
  std::vector<int> renumbered;
  std::vector<CacheLayer> layers = canonical_layers(config.layers, renumbered);
  std::vector<CacheRecord> records = canonical_records(config.records, renumbered);

  ordered_json o = ordered_json::object();
  o["kbuildCache"] = config.version;
  o["keyScheme"] = config.key_scheme;
  o["layers"] = ordered_json::array();
  for (const CacheLayer& l : layers) {
    ordered_json j = ordered_json::object();
    j["blob"] = l.blob.digest.str();
    j["mediaType"] = l.blob.media_type;
    j["size"] = l.blob.size;
    j["diffID"] = l.diff_id.str();
    if (!l.created.empty()) j["created"] = l.created;
    j["parent"] = l.parent;
    o["layers"].push_back(std::move(j));
  }
  o["records"] = ordered_json::array();
  for (const CacheRecord& r : records) o["records"].push_back(ordered_json{{"key", r.key}, {"layer", r.layer}});
  return image::go_marshal(o);
}

CacheConfig parse_cache_config(std::string_view text, std::vector<std::string>& warnings) {
  if (text.size() > kCacheConfigLimit) {
    broken("larger than " + std::to_string(kCacheConfigLimit >> 20) + " MiB");
  }
  json o;
  try {
    o = json::parse(text);
  } catch (const json::exception& e) {
    broken(e.what());
  }
  if (!o.is_object()) broken("not a JSON object");
  if (image::json_deeper_than(o, image::kJsonDepthLimit)) broken("nested too deep");
  const json* version = member(o, "kbuildCache");
  if (!version) broken("no \"kbuildCache\" version");
  if (!version->is_number_integer()) broken("\"kbuildCache\" is not an integer");
  if (*version != kCacheConfigVersion) {
    broken("version " + version->dump() + " is not supported (kbuild reads version " +
           std::to_string(kCacheConfigVersion) + ")");
  }

  CacheConfig config;
  config.key_scheme = string_member(o, "keyScheme", "");
  if (const json* layers = array_member(o, "layers")) {
    for (const json& l : *layers) config.layers.push_back(parse_layer(l, config.layers.size()));
  }
  const json* records = array_member(o, "records");
  if (!records) return config;
  std::set<std::string> keys_seen;
  for (size_t i = 0; i < records->size(); ++i) {
    const json& r = (*records)[i];
    const std::string where = "record " + std::to_string(i) + ": ";
    if (!r.is_object()) broken(where + "not an object");
    CacheRecord record;
    record.key = string_member(r, "key", where);
    int64_t layer = integer_member(r, "layer", where);
    record.layer = to_index(layer);
    std::string problem = record_problem(record.key, layer, config.layers.size());
    if (problem.empty() && keys_seen.contains(record.key)) problem = "an earlier record has the same key";
    if (!problem.empty()) {
      warnings.push_back("cache record " + shown(record.key) + " dropped: " + problem);
      continue;
    }
    keys_seen.insert(record.key);
    config.records.push_back(std::move(record));
  }
  return config;
}

image::Descriptor cache_config_descriptor(std::string_view bytes) {
  image::Descriptor descriptor;
  descriptor.media_type = kCacheConfigMediaType;
  descriptor.digest = store::Digest::of(bytes);
  descriptor.size = static_cast<int64_t>(bytes.size());
  return descriptor;
}

}  // namespace kbuild::remotecache
