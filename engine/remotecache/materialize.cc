#include "engine/remotecache/materialize.h"

#include <cctype>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>

#include "common/error.h"
#include "engine/image/image_store.h"
#include "engine/image/oci.h"
#include "engine/image/parallel.h"
#include "engine/store/added_blobs.h"

namespace kbuild::remotecache {
namespace {

std::vector<store::Digest> diff_ids_of(const std::vector<CacheLayer>& chain, size_t count) {
  std::vector<store::Digest> out;
  for (size_t i = 0; i < count; ++i) out.push_back(chain[i].diff_id);
  return out;
}

void fetch_blob(store::Store& store, CacheSource& source, const image::Descriptor& blob,
                const MaterializeOptions& options, store::AddedBlobs& fetched) {
  std::string id = "pulling " + blob.digest.str();
  store::ContentStore::Writer writer = store.content().writer();
  int64_t received = 0;
  source.blob(blob, [&](std::string_view data) {
    writer.write(data);
    received += static_cast<int64_t>(data.size());
    if (options.progress) options.progress(id, received, blob.size, false);
  });
  writer.commit(blob.digest);
  fetched.add(blob.digest);
  if (options.progress) options.progress(id, blob.size, blob.size, true);
}

// An RFC 3339 time to the nanosecond, as the exporter wrote it (parse_time keeps seconds only).
store::Clock::time_point time_of(const std::string& text) {
  auto ns = std::chrono::seconds(image::parse_time(text));
  std::chrono::nanoseconds fraction(0);
  size_t dot = text.find('.');
  if (dot != std::string::npos) {
    int64_t value = 0;
    int digits = 0;
    for (size_t i = dot + 1; i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])) && digits < 9; ++i) {
      value = value * 10 + (text[i] - '0');
      ++digits;
    }
    for (; digits < 9; ++digits) value *= 10;
    fraction = std::chrono::nanoseconds(value);
  }
  return store::Clock::time_point(std::chrono::duration_cast<store::Clock::duration>(ns + fraction));
}

// One materialization of a chain at a time: two builds hitting the same chain extract it once,
// while builds hitting other chains go on.
std::mutex chains_mutex;
std::map<std::string, std::weak_ptr<std::mutex>> chain_locks;

std::shared_ptr<std::mutex> lock_for(const std::string& chain) {
  std::lock_guard lock(chains_mutex);
  std::erase_if(chain_locks, [](const auto& entry) { return entry.second.expired(); });
  std::shared_ptr<std::mutex> found = chain_locks[chain].lock();
  if (!found) chain_locks[chain] = found = std::make_shared<std::mutex>();
  return found;
}

}  // namespace

std::optional<std::string> materialize_chain(store::Store& store, CacheSource& source,
                                             const std::vector<CacheLayer>& chain, const MaterializeOptions& options) {
  if (chain.empty()) return std::nullopt;
  std::shared_ptr<std::mutex> chain_lock = lock_for(image::chain_key(diff_ids_of(chain, chain.size())));
  std::lock_guard lock(*chain_lock);
  image::ImageStore images(store);
  size_t have = chain.size();
  std::optional<std::string> parent;
  for (; have > 0; --have) {
    if ((parent = images.find_chain(diff_ids_of(chain, have)))) break;
  }
  if (have == chain.size()) return parent;
  store::AddedBlobs fetched(store);
  std::vector<std::optional<store::SnapshotStore::Prepared>> slots(chain.size() - have);
  std::vector<std::function<void()>> jobs;
  for (size_t i = have; i < chain.size(); ++i) {
    jobs.push_back([&, i] {
      const CacheLayer& layer = chain[i];
      fetched.use(layer.blob.digest);  // before it is looked for: see AddedBlobs
      if (!store.content().has(layer.blob.digest)) fetch_blob(store, source, layer.blob, options, fetched);
      slots[i - have].emplace(images.extract(layer.blob, layer.diff_id, options.canceled, image::kImportedKind));
      if (!layer.created.empty()) store.snapshots().set_created(*slots[i - have], time_of(layer.created));
    });
  }
  try {
    image::run_bounded(jobs, options.max_concurrent_downloads);
  } catch (const Error& e) {
    throw e.with_context("importing cache from " + source.name());
  }
  std::vector<image::Descriptor> blobs;
  std::vector<store::Digest> diff_ids;
  std::vector<store::SnapshotStore::Prepared> extracted;
  for (size_t i = have; i < chain.size(); ++i) {
    blobs.push_back(chain[i].blob);
    diff_ids.push_back(chain[i].diff_id);
    extracted.push_back(std::move(*slots[i - have]));
  }
  std::vector<std::string> committed = images.commit_chain(parent, blobs, diff_ids, extracted);
  for (size_t i = 0; i < committed.size(); ++i) images.remember_chain(diff_ids_of(chain, have + i + 1), committed[i]);
  fetched.keep();
  return committed.back();
}

}  // namespace kbuild::remotecache
