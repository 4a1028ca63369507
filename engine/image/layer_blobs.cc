#include "engine/image/layer_blobs.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/syscall.h"
#include "engine/image/image_store.h"
#include "engine/image/layer_tar.h"

namespace kbuild::image {
namespace {

class WriterSink : public ByteSink {
 public:
  explicit WriterSink(store::ContentStore::Writer& writer) : writer_(writer) {}
  void write(const void* data, size_t size) override { writer_.write(data, size); }

 private:
  store::ContentStore::Writer& writer_;
};

Descriptor stored_blob(store::Store& store, const std::string& media_type, const store::Digest& digest) {
  return describe(media_type, digest, static_cast<int64_t>(store.content().size(digest)));
}

// Writes to a sink and, when given, a copy.
class TeeSink : public ByteSink {
 public:
  TeeSink(ByteSink& first, ByteSink* second) : first_(first), second_(second) {}
  void write(const void* data, size_t size) override {
    first_.write(data, size);
    if (second_) second_->write(data, size);
  }

 private:
  ByteSink& first_;
  ByteSink* second_;
};

struct ArchiveReadFree {
  void operator()(struct archive* a) const { archive_read_free(a); }
};

// A stored blob decompressed (gzip and zstd in process, as extraction reads them), checked
// against the layer's diff_id, and compressed again into `out`.
void recompress_blob(store::Store& store, const store::Digest& diff_id, const Descriptor& source,
                     const CompressionConfig& compression, ByteSink& out) {
  UniqueFd fd = store.content().open(source.digest);
  std::unique_ptr<struct archive, ArchiveReadFree> reader(archive_read_new());
  if (!reader) throw Error(ErrorKind::internal, "libarchive: out of memory");
  archive_read_support_filter_gzip(reader.get());
  archive_read_support_filter_zstd(reader.get());
  archive_read_support_format_raw(reader.get());
  auto fail = [&](const std::string& what) {
    const char* detail = archive_error_string(reader.get());
    return Error(ErrorKind::user, "decompressing layer " + source.digest.str() + ": " + what +
                                      (detail ? std::string(": ") + detail : std::string()));
  };
  if (archive_read_open_fd(reader.get(), fd.get(), 1 << 20) != ARCHIVE_OK) throw fail("cannot open");
  archive_entry* entry = nullptr;
  int rc = archive_read_next_header(reader.get(), &entry);
  if (rc != ARCHIVE_OK) throw fail("no data");
  std::unique_ptr<Compressor> compressor = make_compressor(out, compression);
  store::Sha256 tar;
  std::vector<char> buffer(1 << 20);
  for (;;) {
    la_ssize_t n = archive_read_data(reader.get(), buffer.data(), buffer.size());
    if (n < 0) throw fail("read failed");
    if (n == 0) break;
    tar.update(buffer.data(), static_cast<size_t>(n));
    compressor->write(buffer.data(), static_cast<size_t>(n));
  }
  compressor->finish();
  store::Digest found = tar.finish();
  if (found != diff_id) {
    throw Error(ErrorKind::user, "layer " + source.digest.str() + " holds " + found.str() + ", not its diff_id " +
                                     diff_id.str());
  }
}

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

ChainLayer chain_layer(store::Store& store, const store::SnapshotRecord& snapshot,
                       std::optional<int64_t> source_date_epoch, LayerJournalCache* journals) {
  if (is_extracted(snapshot) && snapshot.diff_id && !source_date_epoch) {
    auto blob = store.metadata().get_layer_blob(*snapshot.diff_id);
    if (blob && store.content().has(blob->blob)) {
      return ChainLayer{stored_blob(store, blob->media_type, blob->blob), *snapshot.diff_id};
    }
  }
  LayerRecord layer = layer_for_snapshot(store, snapshot, source_date_epoch, journals);
  return ChainLayer{describe(layer_media_type(Compression::none, true), layer.diff_id, static_cast<int64_t>(layer.size)),
                    layer.diff_id};
}

std::optional<Descriptor> remembered_layer_blob(store::Store& store, const store::Digest& diff_id,
                                                Compression compression) {
  const std::string media_type = layer_media_type(compression, true);
  auto blob = store.metadata().get_layer_blob(diff_id, media_type);
  if (!blob || !store.content().has(blob->blob)) return std::nullopt;
  return stored_blob(store, media_type, blob->blob);
}

Descriptor make_layer_blob(store::Store& store, const store::Digest& diff_id, const Descriptor& source,
                           const CompressionConfig& compression, ByteSink* copy) {
  store::ContentStore::Writer writer = store.content().writer();
  WriterSink to_store(writer);
  TeeSink sink(to_store, copy);
  store::Digest blob;
  if (auto layer = store.metadata().get_cache(layer_key(diff_id))) {
    nlohmann::json meta = nlohmann::json::parse(layer->metadata);
    LayerOptions options;
    options.compression = compression.type;
    options.level = compression.level;
    options.compression_threads = compression.threads;
    options.hash_blob = false;  // the content store's writer hashes it
    if (!meta.at("epoch").is_null()) options.source_date_epoch = meta.at("epoch").get<int64_t>();
    UniqueFd dir = open_diff(store, layer->snapshot_id);
    LayerDigests digests = write_layer(dir.get(), sink, options);
    if (digests.diff_id != diff_id) {
      throw Error(ErrorKind::internal, "layer " + diff_id.str() + " changed on disk (now " + digests.diff_id.str() + ")");
    }
    blob = writer.commit();
  } else {
    recompress_blob(store, diff_id, source, compression, sink);
    blob = writer.commit();
  }
  const std::string media_type = layer_media_type(compression.type, true);
  store.metadata().put_layer_blob(diff_id, store::LayerBlob{blob, media_type});
  return stored_blob(store, media_type, blob);
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
