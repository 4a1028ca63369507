#include "engine/gc/collector.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <map>
#include <set>
#include <utility>

#include "common/error.h"
#include "common/syscall.h"
#include "common/temp_dir.h"
#include "engine/image/image_platform.h"
#include "engine/image/oci.h"
#include "engine/image/reference.h"
#include "engine/store/fs.h"
#include "engine/store/random_id.h"

namespace kbuild::gc {
namespace {

constexpr std::string_view kImageChainPrefix = "image-chain:";
constexpr std::string_view kChainPrefix = "chain:";  // image::chain_key: layers an import may reuse

std::string blob_id(const store::Digest& digest) { return digest.str(); }

Clock::time_point mtime_of(const struct stat& st) {
  return Clock::time_point(std::chrono::duration_cast<Clock::duration>(std::chrono::seconds(st.st_mtim.tv_sec) +
                                                                      std::chrono::nanoseconds(st.st_mtim.tv_nsec)));
}

std::string describe_snapshot(const store::SnapshotRecord& snapshot) {
  std::string layer = snapshot.diff_id ? " " + snapshot.diff_id->str() : "";
  if (snapshot.kind == "extracted") return "image layer (pulled or loaded)" + layer;
  if (snapshot.kind == "imported") return "layer imported from a cache" + layer;
  if (snapshot.kind == "layer") return "layer of a build step" + layer;
  return snapshot.kind + " snapshot" + layer;
}

// <root>/cache: the directories of RUN --mount=type=cache, "<hex>" and "<hex>-N".
std::string cache_root(store::Store& store) { return store.root() + "/cache"; }

bool is_cache_mount_name(const std::string& name) {
  std::string_view hex = std::string_view(name).substr(0, 64);
  if (!store::is_hex_id(hex, 32)) return false;
  if (name.size() == 64) return true;
  return name[64] == '-' && name.size() > 65 && name.find_first_not_of("0123456789", 65) == std::string::npos;
}

// The files someone holds a flock on, by (device, inode), from /proc/locks: whether a step
// holds a cache mount, asked without taking a lock that a private mount's step would see.
std::set<std::pair<dev_t, ino_t>> flocked_files() {
  std::set<std::pair<dev_t, ino_t>> files;
  std::ifstream locks("/proc/locks");
  std::string line;
  while (std::getline(locks, line)) {
    // "1: FLOCK  ADVISORY  WRITE 2355 fd:01:131090 0 EOF"; a waiter's line has "->" after "1:".
    std::istringstream fields(line);
    std::string number, type, mode, access, pid, device;
    fields >> number >> type;
    if (type == "->") fields >> type;
    fields >> mode >> access >> pid >> device;
    unsigned major = 0, minor = 0;
    unsigned long inode = 0;
    if (type == "FLOCK" && std::sscanf(device.c_str(), "%x:%x:%lu", &major, &minor, &inode) == 3) {
      files.emplace(makedev(major, minor), inode);
    }
  }
  return files;
}

// A cache mount's directory opened, and whether a step holds it (every step that mounts one
// holds a flock on it, shared or exclusive, while it runs).
struct CacheMountDir {
  UniqueFd fd;
  bool in_use = false;
};

UniqueFd open_cache_dir(int root_fd, const std::string& name, const std::string& path) {
  return UniqueFd(check(::openat(root_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW), "open", path));
}

// Opened and locked for its removal; in_use when a step holds it.
CacheMountDir lock_cache_mount(int root_fd, const std::string& name, const std::string& path) {
  CacheMountDir dir;
  dir.fd = open_cache_dir(root_fd, name, path);
  if (::flock(dir.fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK) throw_errno("flock", path);
    dir.in_use = true;
  }
  return dir;
}

void add_cache_mounts(store::Store& store, std::vector<UsageRecord>& records) {
  std::string root = cache_root(store);
  if (::access(root.c_str(), F_OK) != 0) return;
  UniqueFd root_fd = store::fs::open_dir(root);
  const std::set<std::pair<dev_t, ino_t>> locked = flocked_files();
  for (const std::string& name : store::fs::entries(root_fd.get(), root)) {
    if (!is_cache_mount_name(name)) continue;  // "new-*": one being made
    std::string path = root + "/" + name;
    try {
      UniqueFd dir = open_cache_dir(root_fd.get(), name, path);
      struct stat st {};
      check(::fstat(dir.get(), &st), "stat", path);
      UsageRecord record;
      record.kind = UsageRecord::Kind::cache_mount;
      record.id = name;
      record.type = kTypeCacheMount;
      record.mutable_ = true;
      record.in_use = locked.contains({st.st_dev, st.st_ino});
      record.created = mtime_of(st);  // steps touch it: its last use, and no older date is kept
      record.last_used = record.created;
      record.size = store::fs::disk_usage(dir.get(), path);
      record.description = "cache mount " + name;
      records.push_back(std::move(record));
    } catch (const Error&) {
      // Removed by a concurrent prune while listed.
    }
  }
}

// The context directories a build may read again, as BuildKit's records of its local sources.
void add_local_sources(store::LocalSources& sources, std::vector<UsageRecord>& records) {
  for (const store::LocalSources::Entry& entry : sources.list()) {
    UsageRecord record;
    record.kind = UsageRecord::Kind::local_source;
    record.id = entry.id;
    record.type = kTypeLocalSource;
    record.mutable_ = true;  // as BuildKit's: the next read of the directory updates it
    record.in_use = entry.in_use;
    record.created = entry.created;
    record.last_used = entry.last_used;
    record.usage_count = entry.usage_count;
    record.description = "local source for " + entry.name;
    try {
      record.size = store::fs::disk_usage(store::fs::open_dir(entry.path).get(), entry.path);
    } catch (const Error&) {
      continue;  // removed by a concurrent prune while listed
    }
    records.push_back(std::move(record));
  }
}

// The snapshots' and blobs' records, with what needs what.
void add_snapshots_and_blobs(store::Store& store, std::vector<UsageRecord>& records) {
  std::map<store::Digest, std::vector<store::Digest>> blobs_of_layer;
  for (const auto& [diff_id, blob] : store.metadata().list_layer_blobs()) blobs_of_layer[diff_id].push_back(blob.blob);
  for (const store::SnapshotRecord& snapshot : store.metadata().list_snapshots()) {
    UsageRecord record;
    record.id = snapshot.id;
    if (snapshot.parent) {
      record.parents.push_back(*snapshot.parent);
      record.needs.push_back(*snapshot.parent);
    }
    if (snapshot.diff_id) {
      for (const store::Digest& blob : blobs_of_layer[*snapshot.diff_id]) record.needs.push_back(blob_id(blob));
    }
    record.created = snapshot.created;
    record.last_used = snapshot.last_used;
    record.usage_count = snapshot.usage_count;
    record.size = snapshot.size;
    record.description = describe_snapshot(snapshot);
    records.push_back(std::move(record));
  }
  for (const store::Digest& digest : store.content().list()) {
    struct stat st {};
    std::string path = store.content().path(digest);
    if (::stat(path.c_str(), &st) != 0) continue;  // removed while listed
    UsageRecord record;
    record.kind = UsageRecord::Kind::blob;
    record.id = blob_id(digest);
    record.created = mtime_of(st);
    record.size = static_cast<uint64_t>(st.st_blocks) * 512;
    record.description = "blob " + digest.str();
    records.push_back(std::move(record));
  }
}

using RecordIndex = std::map<std::string, size_t>;

// Sets `flag` on the record `id` and on everything it needs.
void mark(std::vector<UsageRecord>& records, const RecordIndex& index, const std::string& id,
          bool UsageRecord::*flag) {
  std::vector<std::string> pending{id};
  while (!pending.empty()) {
    auto it = index.find(pending.back());
    pending.pop_back();
    if (it == index.end() || records[it->second].*flag) continue;
    UsageRecord& record = records[it->second];
    record.*flag = true;
    pending.insert(pending.end(), record.needs.begin(), record.needs.end());
  }
}

// Tagged images share their chains, manifests, configs and layer blobs; images without a
// name (dangling) make their records `image`.
void mark_images(store::Store& store, std::vector<UsageRecord>& records, const RecordIndex& index) {
  std::map<store::Digest, std::vector<std::string>> names;
  std::map<store::Digest, store::Digest> manifests;  // config -> manifest
  for (const auto& [name, image] : store.metadata().list_image_names()) {
    std::vector<image::PlatformImage> images;
    try {
      if (image::is_index(image)) {
        // The index itself is a blob of the name; its images are tagged through it.
        mark(records, index, blob_id(image.manifest), &UsageRecord::shared);
        images = image::platform_images(store, image);
      }
    } catch (const Error&) {
      // An index that is missing or unreadable lists nothing to keep.
    }
    if (images.empty()) images.push_back(image::PlatformImage{image, ""});
    for (const image::PlatformImage& one : images) {
      names[one.image.config].push_back(image::familiar_reference(name));
      manifests[one.image.config] = one.image.manifest;
    }
  }
  for (const store::CacheRecord& entry : store.metadata().list_cache()) {
    if (!entry.key.starts_with(kImageChainPrefix) || entry.result.snapshot_id.empty()) continue;
    store::Digest config;
    try {
      config = store::Digest::parse(entry.key.substr(kImageChainPrefix.size()));
    } catch (const Error&) {
      continue;
    }
    const bool tagged = names.contains(config);
    mark(records, index, entry.result.snapshot_id, tagged ? &UsageRecord::shared : &UsageRecord::image);
    mark(records, index, blob_id(config), tagged ? &UsageRecord::shared : &UsageRecord::image);
  }
  // A blob of a tagged image says which images and what it is to them.
  auto describe = [&](const store::Digest& blob, const std::string& what, const std::string& image) {
    if (auto it = index.find(blob_id(blob)); it != index.end()) {
      std::string& description = records[it->second].description;
      if (description.starts_with("blob ")) description = what + " of";
      description += " " + image;
    }
  };
  for (const auto& [config, manifest_digest] : manifests) {
    std::string image_names;
    for (const std::string& name : names[config]) image_names += (image_names.empty() ? "" : ",") + name;
    mark(records, index, blob_id(config), &UsageRecord::shared);
    mark(records, index, blob_id(manifest_digest), &UsageRecord::shared);
    describe(config, "config", image_names);
    describe(manifest_digest, "manifest", image_names);
    try {
      image::Manifest manifest = image::parse_manifest(store.content().read_small(manifest_digest));
      for (const auto& layer : manifest.layers) {
        mark(records, index, blob_id(layer.digest), &UsageRecord::shared);
        describe(layer.digest, "layer blob", image_names);
      }
    } catch (const Error&) {
      // A manifest that is missing or unreadable lists nothing to keep.
    }
  }
  for (UsageRecord& record : records) {
    if (record.shared) record.image = false;
  }
}

void mark_in_use(store::Store& store, std::vector<UsageRecord>& records, const RecordIndex& index) {
  std::vector<std::string> held;
  {
    store::LeaseTable::Collection collection(store.leases());
    for (const UsageRecord& record : records) {
      bool holds = record.kind == UsageRecord::Kind::snapshot ? collection.holds_snapshot(record.id)
                   : record.kind == UsageRecord::Kind::blob   ? collection.holds_blob(store::Digest::parse(record.id))
                                                              : record.in_use;
      if (holds) held.push_back(record.id);
    }
  }
  for (UsageRecord& record : records) record.in_use = false;
  for (const std::string& id : held) mark(records, index, id, &UsageRecord::in_use);
}

// Removes one record unless something came to need it since it was listed, or a concurrent
// prune (a GC pass) removed it first; false then.
bool remove_record(store::Store& store, store::LocalSources* sources, const UsageRecord& record) {
  // The cache decides on its own directories under its lock; no lease holds them.
  if (record.kind == UsageRecord::Kind::local_source) return sources && sources->remove(record.id);
  store::LeaseTable::Collection collection(store.leases());
  switch (record.kind) {
    case UsageRecord::Kind::snapshot:
      if (!store.metadata().get_snapshot(record.id) || collection.holds_snapshot(record.id) ||
          !store.metadata().children_of(record.id).empty()) {
        return false;
      }
      store.snapshots().remove(record.id);
      return true;
    case UsageRecord::Kind::blob: {
      store::Digest digest = store::Digest::parse(record.id);
      if (!store.content().has(digest) || collection.holds_blob(digest) || store.metadata().blob_needed(digest)) {
        return false;
      }
      // The mapping first: a crash in between leaves an unmapped blob, which the next prune takes.
      store.metadata().remove_layer_blob(digest);
      store.content().remove(digest);
      return true;
    }
    case UsageRecord::Kind::cache_mount: {
      std::string root = cache_root(store);
      UniqueFd root_fd = store::fs::open_dir(root);
      std::string path = root + "/" + record.id;
      CacheMountDir dir = lock_cache_mount(root_fd.get(), record.id, path);
      if (dir.in_use) return false;
      // Held (flock) until it is gone: a step that opened it meanwhile finds it unlinked once
      // it gets the lock, and makes a new one.
      std::string gone = root + "/new-gone-" + store::random_hex(8);
      check(::rename(path.c_str(), gone.c_str()), "rename", path);
      remove_tree(gone);
      return true;
    }
    case UsageRecord::Kind::local_source:
      break;
  }
  return false;
}

}  // namespace

std::vector<UsageRecord> collect_usage(store::Store& store, store::LocalSources* sources) {
  std::vector<UsageRecord> records;
  add_snapshots_and_blobs(store, records);
  add_cache_mounts(store, records);
  if (sources) add_local_sources(*sources, records);
  std::sort(records.begin(), records.end(), [](const UsageRecord& a, const UsageRecord& b) { return a.id < b.id; });
  RecordIndex index;
  for (size_t i = 0; i < records.size(); ++i) index.emplace(records[i].id, i);
  mark_images(store, records, index);
  mark_in_use(store, records, index);
  return records;
}

PruneResult prune(store::Store& store, const PruneOptions& options, store::LocalSources* sources) {
  std::vector<UsageRecord> records = collect_usage(store, sources);
  PruneResult result;
  for (size_t i : select_for_prune(records, options, Clock::now())) {
    bool removed = false;
    try {
      removed = remove_record(store, sources, records[i]);
    } catch (const Error&) {
      // Gone already, or busy: the next prune tries again.
    }
    if (!removed) continue;
    result.reclaimed += records[i].size;
    result.removed.push_back(std::move(records[i]));
  }
  return result;
}

ImagePruneResult prune_images(store::Store& store, bool all) {
  std::map<store::Digest, std::vector<std::string>> names;
  for (const auto& [name, image] : store.metadata().list_image_names()) names[image.config].push_back(name);
  ImagePruneResult result;
  for (const store::CacheRecord& entry : store.metadata().list_cache()) {
    if (!entry.key.starts_with(kImageChainPrefix)) continue;
    store::Digest config;
    try {
      config = store::Digest::parse(entry.key.substr(kImageChainPrefix.size()));
    } catch (const Error&) {
      continue;
    }
    auto named = names.find(config);
    if (named != names.end() && !all) continue;
    store::LeaseTable::Collection collection(store.leases());
    // An image a build stands on or is making stays, names and all.
    if (collection.holds_blob(config) ||
        (!entry.result.snapshot_id.empty() && collection.holds_snapshot(entry.result.snapshot_id))) {
      continue;
    }
    if (named != names.end()) {
      for (const std::string& name : named->second) {
        store.metadata().remove_image_name(name);
        result.deleted.push_back("untagged: " + image::familiar_reference(name));
      }
    }
    store.metadata().remove_cache(entry.key);
    result.deleted.push_back("deleted: " + config.str());
  }
  if (result.deleted.empty()) return result;
  // Then what only images held: layers no build cache entry names, and blobs nothing needs.
  std::set<std::string> build_cache;
  for (const store::CacheRecord& entry : store.metadata().list_cache()) {
    if (entry.key.starts_with(kImageChainPrefix) || entry.key.starts_with(kChainPrefix)) continue;
    if (!entry.result.snapshot_id.empty()) build_cache.insert(entry.result.snapshot_id);
  }
  std::vector<UsageRecord> records = collect_usage(store);
  RecordIndex index;
  for (size_t i = 0; i < records.size(); ++i) index.emplace(records[i].id, i);
  for (const std::string& id : build_cache) mark(records, index, id, &UsageRecord::shared);  // kept
  PruneOptions options;
  options.all = true;
  for (size_t i : select_for_prune(records, options, Clock::now())) {
    try {
      if (remove_record(store, nullptr, records[i])) result.reclaimed += records[i].size;
    } catch (const Error&) {
      // Left for the next prune.
    }
  }
  return result;
}

}  // namespace kbuild::gc
