// Snapshots for overlayfs: <root>/snapshots/<id>/diff is a layer's files in upper-dir form
// (whiteouts as 0:0 character devices, opaque directories by xattr) and <id>/work the overlay
// workdir beside it. A snapshot is written under tmp-<id>/ and renamed into place when
// committed, then recorded in the metadata with its parent, so a crash leaves either no
// snapshot or a complete one. Every method is safe to call from several threads at once.
#pragma once

#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/unique_fd.h"
#include "engine/store/digest.h"
#include "engine/store/leases.h"
#include "engine/store/metadata.h"

namespace kbuild::store {

class SnapshotStore {
 public:
  // A snapshot being written. Mount it as the upper layer (diff_path() as upperdir,
  // work_path() as workdir) over lower_chain(parent), unmount, then commit it. Removed with
  // everything in it when it goes out of scope uncommitted.
  class Prepared {
   public:
    Prepared(Prepared&& other) noexcept;
    Prepared& operator=(Prepared&&) = delete;
    Prepared(const Prepared&) = delete;
    Prepared& operator=(const Prepared&) = delete;
    ~Prepared();

    const std::string& id() const { return id_; }
    const std::optional<std::string>& parent() const { return parent_; }
    const std::string& kind() const { return kind_; }
    // <root>/snapshots/tmp-<id> until committed.
    const std::string& path() const { return path_; }
    std::string diff_path() const { return path_ + "/diff"; }
    std::string work_path() const { return path_ + "/work"; }

   private:
    friend class SnapshotStore;
    Prepared(SnapshotStore* store, std::string id, std::optional<std::string> parent, std::string kind,
             std::string path)
        : store_(store), id_(std::move(id)), parent_(std::move(parent)), kind_(std::move(kind)),
          path_(std::move(path)) {}

    SnapshotStore* store_;  // null once committed or moved from
    std::string id_;
    std::optional<std::string> parent_;
    std::string kind_;
    std::string path_;
    std::optional<Clock::time_point> created_;
  };

  // Opens the snapshots under <root>/snapshots (created as needed); `metadata` outlives it.
  // Every snapshot prepared is reported to `leases` (when given) before it can be recorded.
  SnapshotStore(std::string root, MetadataStore& metadata, LeaseTable* leases = nullptr);
  SnapshotStore(const SnapshotStore&) = delete;
  SnapshotStore& operator=(const SnapshotStore&) = delete;

  // Whether `id` has the form of a snapshot id (32 lower-case hex), and so is safe in a path.
  static bool is_valid_id(std::string_view id);

  // A new empty snapshot (diff/ 0755, since it becomes the mount's root directory) on top of
  // `parent`, which must be committed; kind is "layer", "context", ...
  Prepared prepare(std::optional<std::string> parent = {}, std::string kind = "layer");
  // Puts a snapshot prepared without a parent on top of `parent` (committed) before it is
  // committed: for one whose files do not depend on what is below them, such as an image layer
  // extracted while the layers under it are still being extracted.
  void set_parent(Prepared& snapshot, std::string parent);
  // Dates a snapshot made elsewhere first (a layer imported from a cache) with its first
  // making, so that images built on it are dated as the exporter's were.
  void set_created(Prepared& snapshot, Clock::time_point created);
  // Makes the snapshot permanent: fsyncs the file system, renames tmp-<id> to <id> and records
  // it with its size and, when known, its diff_id. Unmount it first. On failure nothing remains.
  SnapshotRecord commit(Prepared snapshot, std::optional<Digest> diff_id = {});
  // Commits without waiting for the disk: the snapshot is usable at once, and durable after
  // the next sync(). A crash before that loses it (the next start removes it with its cache
  // entries) but never leaves a snapshot whose files are half there.
  SnapshotRecord commit_deferred(Prepared snapshot, std::optional<Digest> diff_id = {});
  // One syncfs for every deferred commit so far. Call before anything durable refers to them.
  void sync();
  // Removes a committed snapshot: its record (and the cache entries pointing at it), then its
  // directory. Refused while it is the parent of another. Removing an unknown id is no error.
  void remove(std::string_view id);

  // <root>/snapshots. Mount options hold one page (4096 bytes), about 60 absolute lowerdirs;
  // a deeper chain fits twice as many as "<id>/diff" relative to this dir, as containerd does.
  const std::string& dir() const { return snapshots_path_; }
  // <root>/snapshots/<id>, and its diff/ (the layer's files).
  std::string path(std::string_view id) const;
  std::string diff_path(std::string_view id) const { return path(id) + "/diff"; }
  // The diff/ dirs of `id` and its ancestors, top first: overlayfs's lowerdir order.
  std::vector<std::string> lower_chain(std::string_view id);
  // The records of `top` and its ancestors, bottom first (none for no top): a chain's layers in
  // the order an image lists them.
  std::vector<SnapshotRecord> records_bottom_up(const std::optional<std::string>& top);

  // Whether overlayfs can be mounted with its upper dir on this store's file system (not on
  // overlayfs, not where whiteouts or trusted xattrs cannot be made). Probed once, by a real
  // mount; needs root (CAP_SYS_ADMIN).
  bool overlay_supported();
  // Why overlay_supported() is false, for the warning about falling back; empty when it is true.
  std::string overlay_unsupported_reason();

  // Removes leftovers of a crash: tmp-* directories (but not those of live Prepared
  // snapshots), snapshot directories that were never recorded, and records whose directory
  // is gone (with their descendants, and the cache entries that point at them).
  void sweep();

 private:
  struct Probe {
    bool supported = false;
    std::string reason;
  };
  Probe probe_overlay();
  void forget_prepared(const std::string& id);
  // Recorded snapshots whose diff/ is not there.
  std::vector<std::string> records_without_files();
  // Removes `ids` and every snapshot on top of them, children first.
  void remove_with_descendants(const std::vector<std::string>& ids);

  std::string root_;
  std::string snapshots_path_;  // <root>/snapshots
  UniqueFd snapshots_dir_;
  MetadataStore& metadata_;
  LeaseTable* leases_;
  std::mutex mutex_;
  std::set<std::string> prepared_;  // ids of live Prepared snapshots
  std::vector<std::string> unsynced_;  // deferred commits not covered by a sync() yet
  std::mutex sync_mutex_;
  SnapshotRecord commit(Prepared snapshot, std::optional<Digest> diff_id, bool deferred);
  std::once_flag probe_once_;
  Probe probe_;
};

}  // namespace kbuild::store
