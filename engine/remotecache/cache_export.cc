#include "engine/remotecache/cache_export.h"

#include <unistd.h>

#include <chrono>
#include <map>
#include <set>

#include "common/error.h"
#include "common/syscall.h"
#include "engine/image/export_format.h"
#include "engine/image/image_store.h"
#include "engine/image/layer_blobs.h"

namespace kbuild::remotecache {
namespace {

// The config's layers as they are collected: one per snapshot, parents first.
struct LayerCollector {
  store::Store& store;
  const CacheFormat& format;
  std::map<std::string, int> index_of_snapshot;  // also "remote:<blob> on <parent index>"
  CacheConfig config;
  std::map<store::Digest, CacheSource*> remote_blobs;  // where blobs not in the store are

  // The layer index of an imported chain's top, its layers as the imported cache lists them.
  int add_remote(const std::vector<CacheLayer>& chain, CacheSource* source) {
    int parent = -1;
    for (const CacheLayer& layer : chain) {
      std::string id = "remote:" + layer.blob.digest.str() + " on " + std::to_string(parent);
      auto it = index_of_snapshot.find(id);
      if (it == index_of_snapshot.end()) {
        CacheLayer out = layer;
        out.blob.media_type = cache_layer_media_type(out.blob.media_type, format.oci_media_types);
        out.parent = parent;
        config.layers.push_back(std::move(out));
        if (!store.content().has(layer.blob.digest)) remote_blobs.emplace(layer.blob.digest, source);
        it = index_of_snapshot.emplace(id, static_cast<int>(config.layers.size()) - 1).first;
      }
      parent = it->second;
    }
    return parent;
  }

  // The layer index of `top`, its chain collected first.
  int add_chain(const std::optional<std::string>& top) {
    if (!top) return -1;
    if (auto it = index_of_snapshot.find(*top); it != index_of_snapshot.end()) return it->second;
    int parent = -1;
    for (const store::SnapshotRecord& snapshot : store.snapshots().records_bottom_up(top)) {
      auto it = index_of_snapshot.find(snapshot.id);
      if (it == index_of_snapshot.end()) it = index_of_snapshot.emplace(snapshot.id, add_layer(snapshot, parent)).first;
      parent = it->second;
    }
    return parent;
  }

  int add_layer(const store::SnapshotRecord& snapshot, int parent) {
    image::ChainLayer layer = image::chain_layer(store, snapshot, std::nullopt);
    std::vector<image::ExportLayer> planned = image::plan_layers(store, {layer.blob}, {layer.diff_id}, format.blobs);
    image::make_export_blob(store, format.blobs, planned[0]);
    CacheLayer out;
    out.blob = *planned[0].blob;
    out.blob.media_type = cache_layer_media_type(out.blob.media_type, format.oci_media_types);
    out.diff_id = layer.diff_id;
    // A pulled or loaded layer is dated when it arrived here, which no other host shares.
    if (snapshot.kind != image::kExtractedKind) {
      int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(snapshot.created.time_since_epoch()).count();
      out.created = image::format_time(ns / 1000000000, static_cast<int32_t>(ns % 1000000000));
    }
    out.parent = parent;
    config.layers.push_back(std::move(out));
    return static_cast<int>(config.layers.size()) - 1;
  }
};

// Reads an fd to its end, a buffer at a time.
std::function<size_t(char*, size_t)> fd_reader(int fd, const std::string& what) {
  return [fd, what](char* buffer, size_t room) {
    ssize_t n;
    do {
      n = ::read(fd, buffer, room);
    } while (n < 0 && errno == EINTR);
    if (n < 0) throw_errno("reading", what);
    return static_cast<size_t>(n);
  };
}

std::function<size_t(char*, size_t)> string_reader(const std::string& bytes) {
  return [&bytes, offset = size_t(0)](char* buffer, size_t room) mutable {
    size_t n = std::min(room, bytes.size() - offset);
    std::copy_n(bytes.data() + offset, n, buffer);
    offset += n;
    return n;
  };
}


LayerCollector collect(store::Store& store, const std::vector<ExportRecord>& records, const CacheFormat& format,
                       const std::string& key_scheme) {
  LayerCollector collector{store, format, {}, {}, {}};
  collector.config.key_scheme = key_scheme;
  std::set<std::string> seen;
  for (const ExportRecord& record : records) {
    if (!seen.insert(record.key).second) continue;
    int layer = record.remote ? collector.add_remote(*record.remote, record.remote_source) : collector.add_chain(record.top);
    collector.config.records.push_back(CacheRecord{record.key, layer});
  }
  return collector;
}

// A blob the target lacks: from the store, or first fetched into it from the imported cache.
void send_blob(store::Store& store, const image::Descriptor& blob, CacheSource* remote, CacheTarget& target) {
  if (!store.content().has(blob.digest)) {
    if (!remote) throw Error(ErrorKind::internal, "blob " + blob.digest.str() + " is nowhere to export from");
    store::ContentStore::Writer writer = store.content().writer();
    remote->blob(blob, [&](std::string_view data) { writer.write(data); });
    writer.commit(blob.digest);
  }
  UniqueFd fd = store.content().open(blob.digest);
  target.put_blob(blob, fd_reader(fd.get(), blob.digest.str()));
}

}  // namespace

CacheConfig make_cache_config(store::Store& store, const std::vector<ExportRecord>& records, const CacheFormat& format,
                              const std::string& key_scheme) {
  return collect(store, records, format, key_scheme).config;
}

image::Descriptor export_cache(store::Store& store, const std::vector<ExportRecord>& records, const CacheFormat& format,
                               const std::string& key_scheme, CacheTarget& target, const CacheStatus& status) {
  status("preparing build cache for export", false);
  // The canonical bytes, parsed back: layers merged and ordered as the envelope lists them.
  std::vector<std::string> unused;
  LayerCollector collected = collect(store, records, format, key_scheme);
  std::string config_bytes = serialize_cache_config(collected.config);
  CacheConfig config = parse_cache_config(config_bytes, unused);
  status("preparing build cache for export", true);
  std::vector<image::Descriptor> layers;
  std::vector<store::Digest> diff_ids;
  std::set<store::Digest> sent;
  for (const CacheLayer& layer : config.layers) {
    if (!sent.insert(layer.blob.digest).second) continue;
    layers.push_back(layer.blob);
    diff_ids.push_back(layer.diff_id);
    std::string line = "writing layer " + layer.blob.digest.str();
    status(line, false);
    if (!target.has_blob(layer.blob.digest)) {
      auto remote = collected.remote_blobs.find(layer.blob.digest);
      send_blob(store, layer.blob, remote == collected.remote_blobs.end() ? nullptr : remote->second, target);
    }
    status(line, true);
  }
  image::Descriptor config_blob = cache_config_descriptor(config_bytes);
  status("writing config " + config_blob.digest.str(), false);
  if (!target.has_blob(config_blob.digest)) target.put_blob(config_blob, string_reader(config_bytes));
  status("writing config " + config_blob.digest.str(), true);
  std::string envelope = make_cache_manifest(config_blob, layers, diff_ids, format);
  std::string media_type = format.image_manifest ? std::string(image::media_type::oci_manifest)
                           : format.oci_media_types ? std::string(image::media_type::oci_index)
                                                    : std::string(image::media_type::docker_manifest_list);
  image::Descriptor root = image::describe(media_type, store::Digest::of(envelope), static_cast<int64_t>(envelope.size()));
  status("writing cache manifest " + root.digest.str(), false);
  target.put_root(media_type, envelope);
  status("writing cache manifest " + root.digest.str(), true);
  return root;
}

}  // namespace kbuild::remotecache
