#include "engine/image/layer_blobs.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/syscall.h"
#include "engine/image/layer_tar.h"

namespace kbuild::image {
namespace {

// A stored blob gzip-compressed into the content store (zlib's default level, as Go's).
store::Digest gzip_blob(store::Store& store, const store::Digest& digest) {
  UniqueFd in = store.content().open(digest);
  store::ContentStore::Writer writer = store.content().writer();
  z_stream z{};
  if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    throw Error(ErrorKind::internal, "deflateInit2 failed");
  }
  std::vector<unsigned char> input(1 << 16), output(1 << 16);
  int flush = Z_NO_FLUSH;
  try {
    while (flush != Z_FINISH) {
      ssize_t n;
      do {
        n = ::read(in.get(), input.data(), input.size());
      } while (n < 0 && errno == EINTR);
      if (n < 0) throw_errno("reading blob", digest.str());
      flush = n == 0 ? Z_FINISH : Z_NO_FLUSH;
      z.next_in = input.data();
      z.avail_in = static_cast<uInt>(n);
      do {
        z.next_out = output.data();
        z.avail_out = static_cast<uInt>(output.size());
        deflate(&z, flush);
        writer.write(output.data(), output.size() - z.avail_out);
      } while (z.avail_out == 0);
    }
  } catch (...) {
    deflateEnd(&z);
    throw;
  }
  deflateEnd(&z);
  return writer.commit();
}

class WriterSink : public ByteSink {
 public:
  explicit WriterSink(store::ContentStore::Writer& writer) : writer_(writer) {}
  void write(const void* data, size_t size) override { writer_.write(data, size); }

 private:
  store::ContentStore::Writer& writer_;
};

std::string layer_key(const store::Digest& diff_id) { return "layer:" + diff_id.str(); }

// SOURCE_DATE_EPOCH changes the tar's bytes, so layers made with it are remembered apart.
std::string epoch_suffix(std::optional<int64_t> epoch) { return epoch ? "@" + std::to_string(*epoch) : ""; }

UniqueFd open_diff(store::Store& store, const std::string& id) {
  std::string path = store.snapshots().diff_path(id);
  return UniqueFd(check(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC), "open", path));
}

LayerOptions uncompressed(std::optional<int64_t> epoch) {
  LayerOptions options;
  options.compression = Compression::none;
  options.source_date_epoch = epoch;
  return options;
}

}  // namespace

LayerJournals LayerJournalCache::usable(store::Store& store) {
  std::vector<std::pair<std::string, std::shared_ptr<const LayerHashJournal>>> recent;
  {
    std::lock_guard lock(mutex_);
    recent.assign(recent_.begin(), recent_.end());
  }
  LayerJournals journals;
  std::vector<std::string> gone;
  for (const auto& [snapshot_id, journal] : recent) {
    if (store.metadata().get_snapshot(snapshot_id)) {
      journals.push_back(journal);
    } else {
      gone.push_back(snapshot_id);
    }
  }
  std::lock_guard lock(mutex_);
  std::erase_if(recent_, [&](const auto& entry) { return std::ranges::find(gone, entry.first) != gone.end(); });
  return journals;
}

void LayerJournalCache::remember(const std::string& snapshot_id, std::shared_ptr<const LayerHashJournal> journal) {
  std::lock_guard lock(mutex_);
  std::erase_if(recent_, [&](const auto& entry) { return entry.first == snapshot_id; });
  recent_.emplace_front(snapshot_id, std::move(journal));
  if (recent_.size() > kKept) recent_.pop_back();
}

LayerRecord layer_for_snapshot(store::Store& store, const store::SnapshotRecord& snapshot,
                               std::optional<int64_t> source_date_epoch, LayerJournalCache* journals) {
  const std::string by_snapshot = "snapshot-layer:" + snapshot.id + epoch_suffix(source_date_epoch);
  if (auto known = store.metadata().get_cache(by_snapshot)) {
    nlohmann::json meta = nlohmann::json::parse(known->metadata);
    return LayerRecord{store::Digest::parse(meta.at("diff_id").get<std::string>()), meta.at("size").get<uint64_t>()};
  }
  UniqueFd dir = open_diff(store, snapshot.id);
  LayerDigests digests;
  if (journals) {
    LayerHash hashed = hash_layer(dir.get(), source_date_epoch, journals->usable(store));
    journals->remember(snapshot.id, hashed.journal);
    digests = hashed.digests;
  } else {
    NullSink sink;
    digests = write_layer(dir.get(), sink, uncompressed(source_date_epoch));
  }
  nlohmann::json meta = {{"diff_id", digests.diff_id.str()}, {"size", digests.tar_size},
                         {"epoch", source_date_epoch ? nlohmann::json(*source_date_epoch) : nlohmann::json(nullptr)}};
  store.metadata().put_cache(by_snapshot, store::CacheResult{snapshot.id, meta.dump()});
  store.metadata().put_cache(layer_key(digests.diff_id), store::CacheResult{snapshot.id, meta.dump()});
  if (!source_date_epoch) store.metadata().set_snapshot_diff_id(snapshot.id, digests.diff_id);
  return LayerRecord{digests.diff_id, digests.tar_size};
}

std::optional<Descriptor> compressed_layer(store::Store& store, const store::Digest& diff_id) {
  const std::string media_type = layer_media_type(Compression::gzip, true);
  auto describe = [&](const store::Digest& blob) {
    Descriptor d;
    d.media_type = media_type;
    d.digest = blob;
    d.size = static_cast<int64_t>(store.content().size(blob));
    return d;
  };
  if (auto blob = store.metadata().get_layer_blob(diff_id, media_type); blob && store.content().has(blob->blob)) {
    return describe(blob->blob);
  }
  auto layer = store.metadata().get_cache(layer_key(diff_id));
  if (!layer) {
    // A base image's layer that came uncompressed (a docker-archive's): its blob is the tar.
    if (!store.content().has(diff_id)) return std::nullopt;
    store::Digest blob = gzip_blob(store, diff_id);
    store.metadata().put_layer_blob(diff_id, store::LayerBlob{blob, media_type});
    return describe(blob);
  }
  nlohmann::json meta = nlohmann::json::parse(layer->metadata);
  LayerOptions options;
  options.compression = Compression::gzip;
  if (!meta.at("epoch").is_null()) options.source_date_epoch = meta.at("epoch").get<int64_t>();
  store::ContentStore::Writer writer = store.content().writer();
  WriterSink sink(writer);
  UniqueFd dir = open_diff(store, layer->snapshot_id);
  LayerDigests digests = write_layer(dir.get(), sink, options);
  if (digests.diff_id != diff_id) {
    throw Error(ErrorKind::internal, "layer " + diff_id.str() + " changed on disk (now " + digests.diff_id.str() + ")");
  }
  store::Digest blob = writer.commit(digests.blob_digest);
  store.metadata().put_layer_blob(diff_id, store::LayerBlob{blob, media_type});
  return describe(blob);
}

UniqueFd LazyBlobSource::open(const store::Digest& digest) {
  if (store_.content().has(digest)) return store_.content().open(digest);
  auto layer = store_.metadata().get_cache(layer_key(digest));
  if (!layer) return store_.content().open(digest);  // reports "blob ... not found"
  nlohmann::json meta = nlohmann::json::parse(layer->metadata);
  std::optional<int64_t> epoch;
  if (!meta.at("epoch").is_null()) epoch = meta.at("epoch").get<int64_t>();
  store::ContentStore::Writer writer = store_.content().writer();
  WriterSink sink(writer);
  UniqueFd dir = open_diff(store_, layer->snapshot_id);
  write_layer(dir.get(), sink, uncompressed(epoch));
  writer.commit(digest);
  return store_.content().open(digest);
}

}  // namespace kbuild::image
