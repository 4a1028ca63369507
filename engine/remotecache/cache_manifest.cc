#include "engine/image/json_depth.h"
#include "engine/remotecache/cache_manifest.h"

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/go_text.h"
#include "engine/image/go_json.h"
#include "engine/remotecache/cache_config.h"

namespace kbuild::remotecache {
namespace {

namespace mt = image::media_type;

// strconv.ParseBool with the error BuildKit's cache exporters wrap around it ("failed to parse
// %s"). Unlike the image exporters' attributes, an empty value is not "true" here.
bool parse_go_bool(const std::string& key, const std::string& value) {
  for (const char* yes : {"1", "t", "T", "TRUE", "true", "True"}) {
    if (value == yes) return true;
  }
  for (const char* no : {"0", "f", "F", "FALSE", "false", "False"}) {
    if (value == no) return false;
  }
  throw Error(ErrorKind::user,
              "failed to parse " + key + ": strconv.ParseBool: parsing " + go_quote(value) + ": invalid syntax");
}

const std::string* find(const std::map<std::string, std::string>& attributes, const char* key) {
  auto it = attributes.find(key);
  return it == attributes.end() ? nullptr : &it->second;
}

// The three members a descriptor of the envelope has of what it is given.
image::Descriptor plain(const image::Descriptor& d, std::string media_type) {
  image::Descriptor out;
  out.media_type = std::move(media_type);
  out.digest = d.digest;
  out.size = d.size;
  return out;
}

// --- inspecting ---------------------------------------------------------------------------

FoundCache unknown(std::string media_type, std::string why) {
  FoundCache found;
  found.media_type = std::move(media_type);
  found.why = std::move(why);
  return found;
}

// DetectManifestBlobMediaType: a document with "config" or "layers" is a manifest, else an
// index; its "mediaType", if it names either, must agree. Returns "" with `why` set otherwise.
std::string infer_media_type(const nlohmann::json& doc, std::string& why) {
  auto has = [&](const char* key) { return doc.contains(key) && !doc[key].is_null(); };
  std::string inferred(mt::docker_manifest_list);
  if (has("config") || has("layers")) {
    if (has("manifests")) {
      why = "invalid ambiguous manifest and manifest list";
      return {};
    }
    inferred = mt::docker_manifest;
  }
  if (doc.contains("mediaType") && doc["mediaType"].is_string()) {
    std::string declared = doc["mediaType"].get<std::string>();
    if (image::is_index_type(declared) || image::is_manifest_type(declared)) {
      if (image::is_index_type(declared) != image::is_index_type(inferred)) {
        why = "mediaType in manifest does not match manifest contents";
        return {};
      }
      return declared;
    }
  }
  return inferred;
}

FoundCache inspect_manifest(const std::string& media_type, std::string_view bytes) {
  image::Manifest manifest = image::parse_manifest(bytes);
  FoundCache found;
  found.media_type = media_type;
  found.config = manifest.config;
  found.blobs = manifest.layers;
  const std::string& config_type = manifest.config.media_type;
  if (config_type == kCacheConfigMediaType) {
    found.kind = FoundCache::Kind::kbuild;
  } else if (config_type == kBuildKitCacheConfigMediaType) {
    found.kind = FoundCache::Kind::buildkit;
  } else if (config_type == mt::oci_config || config_type == mt::docker_config) {
    found.kind = FoundCache::Kind::image;
  } else {
    return unknown(media_type,
                   "a manifest whose config is " + go_quote(config_type) + ", neither a cache's nor an image's");
  }
  return found;
}

FoundCache inspect_index(const std::string& media_type, std::string_view bytes) {
  image::Index index = image::parse_index(bytes);
  FoundCache found;
  found.media_type = media_type;
  // Our cache config first: an index with both is ours.
  for (auto [config_type, kind] : {std::pair{kCacheConfigMediaType, FoundCache::Kind::kbuild},
                                   std::pair{kBuildKitCacheConfigMediaType, FoundCache::Kind::buildkit}}) {
    size_t configs = 0;
    for (const image::Descriptor& d : index.manifests) {
      if (d.media_type == config_type) {
        ++configs;
        found.config = d;
      } else {
        found.blobs.push_back(d);
      }
    }
    if (configs == 1) {
      found.kind = kind;
      return found;
    }
    if (configs > 1) return unknown(media_type, "an index that lists " + std::to_string(configs) + " cache configs");
    found.blobs.clear();
  }
  if (index.manifests.empty()) return unknown(media_type, "an empty index");
  for (const image::Descriptor& d : index.manifests) {
    if (!image::is_manifest_type(d.media_type) && !image::is_index_type(d.media_type)) {
      return unknown(media_type, "an index that lists " + go_quote(d.media_type) + ", neither a cache nor an image");
    }
  }
  found.kind = FoundCache::Kind::image;
  found.blobs = index.manifests;
  return found;
}

}  // namespace

CacheFormat parse_cache_format(const std::map<std::string, std::string>& attributes) {
  CacheFormat format;
  // Compression first, as BuildKit's exporters parse it. oci-mediatypes is read below, with
  // the cache's default and error text, not the image exporters'.
  std::map<std::string, std::string> compression = attributes;
  compression.erase("oci-mediatypes");
  format.blobs = image::parse_export_format(compression, true);
  if (const std::string* v = find(attributes, "oci-mediatypes")) {
    format.oci_media_types = parse_go_bool("oci-mediatypes", *v);
  }
  format.blobs.oci_media_types = format.oci_media_types;
  if (const std::string* v = find(attributes, "image-manifest")) {
    format.image_manifest = parse_go_bool("image-manifest", *v);
  } else {
    format.image_manifest = format.oci_media_types;
  }
  if (format.image_manifest && !format.oci_media_types) {
    throw Error(ErrorKind::user,
                "invalid configuration for remote cache, OCI mediatypes are required for image-manifest cache format");
  }
  if (const std::string* v = find(attributes, "mode")) {
    if (*v == "min") {
      format.mode = CacheFormat::Mode::min;
    } else if (*v == "max") {
      format.mode = CacheFormat::Mode::max;
    } else {
      // BuildKit goes on with min; a typo would then lose every intermediate result unnoticed.
      throw Error(ErrorKind::user, "invalid cache export mode " + go_quote(*v) + ": min or max");
    }
  }
  if (const std::string* v = find(attributes, "ignore-error")) format.ignore_error = parse_go_bool("ignore-error", *v);
  return format;
}

std::string cache_layer_media_type(std::string_view media_type, bool oci) {
  if (oci) {
    if (media_type == mt::docker_layer) return std::string(mt::oci_layer);
    if (media_type == mt::docker_layer_gzip) return std::string(mt::oci_layer_gzip);
  } else {
    if (media_type == mt::oci_layer) return std::string(mt::docker_layer);
    if (media_type == mt::oci_layer_gzip) return std::string(mt::docker_layer_gzip);
  }
  return std::string(media_type);
}

std::string make_cache_manifest(const image::Descriptor& config, const std::vector<image::Descriptor>& layers,
                                const std::vector<store::Digest>& diff_ids, const CacheFormat& format) {
  if (format.image_manifest && !format.oci_media_types) {
    throw Error(ErrorKind::user,
                "invalid configuration for remote cache, OCI mediatypes are required for image-manifest cache format");
  }
  if (diff_ids.size() != layers.size()) {
    throw Error(ErrorKind::internal, "cache manifest: " + std::to_string(layers.size()) + " layers but " +
                                         std::to_string(diff_ids.size()) + " diffIDs");
  }
  std::vector<image::Descriptor> blobs;
  for (size_t i = 0; i < layers.size(); ++i) {
    image::Descriptor blob = plain(layers[i], cache_layer_media_type(layers[i].media_type, format.oci_media_types));
    blob.annotations[std::string(kUncompressedAnnotation)] = diff_ids[i].str();
    blobs.push_back(std::move(blob));
  }
  image::Descriptor config_blob = plain(config, config.media_type);
  if (format.image_manifest) {
    image::Manifest manifest;
    manifest.media_type = mt::oci_manifest;
    manifest.config = std::move(config_blob);
    manifest.layers = std::move(blobs);
    // serialize_manifest indents, as BuildKit does for images; its cache exporter does not.
    return image::go_marshal(nlohmann::ordered_json::parse(image::serialize_manifest(manifest)));
  }
  image::Index index;
  index.media_type = format.oci_media_types ? mt::oci_index : mt::docker_manifest_list;
  index.manifests = std::move(blobs);
  index.manifests.push_back(std::move(config_blob));  // last, as BuildKit's SetConfig appends it
  return image::serialize_index(index, image::JsonStyle::compact);
}

FoundCache inspect_cache(std::string_view media_type, std::string_view bytes) {
  std::string type(media_type);
  if (bytes.size() > kCacheConfigLimit) {
    return unknown(type, "larger than " + std::to_string(kCacheConfigLimit >> 20) + " MiB");
  }
  try {
    nlohmann::json doc = nlohmann::json::parse(bytes);
    if (!doc.is_object()) return unknown(type, "not a JSON object");
    if (image::json_deeper_than(doc, image::kJsonDepthLimit)) return unknown(type, "nested too deep");
    std::string why;
    std::string inferred = infer_media_type(doc, why);
    if (inferred.empty()) return unknown(type, why);
    if (!image::is_manifest_type(type) && !image::is_index_type(type)) {
      type = inferred;
    } else if (image::is_index_type(type) != image::is_index_type(inferred)) {
      return unknown(type, "the document is " + go_quote(inferred) + ", not " + go_quote(type));
    }
    return image::is_index_type(type) ? inspect_index(type, bytes) : inspect_manifest(type, bytes);
  } catch (const nlohmann::json::exception& e) {
    return unknown(type, e.what());
  } catch (const Error& e) {
    return unknown(type, e.what());
  }
}

}  // namespace kbuild::remotecache
