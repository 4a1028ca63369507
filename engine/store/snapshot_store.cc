#include "engine/store/snapshot_store.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <unordered_set>
#include <utility>

#include "common/error.h"
#include "common/syscall.h"
#include "common/temp_dir.h"
#include "engine/store/fs.h"
#include "engine/store/mount.h"
#include "engine/store/random_id.h"

namespace kbuild::store {
namespace {

constexpr std::string_view kTempPrefix = "tmp-";
// Deeper than overlayfs can stack (500 lowers): a longer chain means a loop in the records.
constexpr size_t kMaxChain = 4096;

void check_id(std::string_view id) {
  if (!SnapshotStore::is_valid_id(id)) {
    throw Error(ErrorKind::internal, "invalid snapshot id \"" + std::string(id) + "\"");
  }
}

std::string filesystem_name(const std::string& path) {
  struct statfs st {};
  if (::statfs(path.c_str(), &st) != 0) return "an unknown file system";
  switch (static_cast<unsigned long>(st.f_type)) {
    case EXT4_SUPER_MAGIC: return "ext4";
    case XFS_SUPER_MAGIC: return "xfs";
    case BTRFS_SUPER_MAGIC: return "btrfs";
    case TMPFS_MAGIC: return "tmpfs";
    case OVERLAYFS_SUPER_MAGIC: return "overlayfs";
    case NFS_SUPER_MAGIC: return "nfs";
    default: {
      char hex[32];
      std::snprintf(hex, sizeof hex, "0x%lx", static_cast<unsigned long>(st.f_type));
      return std::string("file system type ") + hex;
    }
  }
}

}  // namespace

// ---- Prepared ----

SnapshotStore::Prepared::Prepared(Prepared&& other) noexcept
    : store_(std::exchange(other.store_, nullptr)),
      id_(std::move(other.id_)),
      parent_(std::move(other.parent_)),
      kind_(std::move(other.kind_)),
      path_(std::move(other.path_)),
      created_(other.created_) {}

SnapshotStore::Prepared::~Prepared() {
  if (!store_) return;
  try {
    remove_tree(path_);
  } catch (...) {
    // Left for the next sweep(), which no longer sees it as live.
  }
  store_->forget_prepared(id_);
}

// ---- SnapshotStore ----

SnapshotStore::SnapshotStore(std::string root, MetadataStore& metadata, LeaseTable* leases)
    : root_(std::move(root)), snapshots_path_(root_ + "/snapshots"), metadata_(metadata), leases_(leases) {
  fs::make_dirs(snapshots_path_, 0700);
  snapshots_dir_ = fs::open_dir(snapshots_path_);
}

bool SnapshotStore::is_valid_id(std::string_view id) { return is_hex_id(id, 16); }

std::string SnapshotStore::path(std::string_view id) const {
  check_id(id);
  return snapshots_path_ + "/" + std::string(id);
}

SnapshotStore::Prepared SnapshotStore::prepare(std::optional<std::string> parent, std::string kind) {
  if (parent) {
    check_id(*parent);
    if (!metadata_.get_snapshot(*parent)) {
      throw Error(ErrorKind::not_found, "snapshot " + *parent + " not found");
    }
  }
  std::string id;
  std::string temp;
  {
    std::lock_guard lock(mutex_);
    while (true) {
      id = random_hex(16);
      temp = snapshots_path_ + "/" + std::string(kTempPrefix) + id;
      if (::mkdir(temp.c_str(), 0700) == 0) break;
      if (errno != EEXIST) throw_errno("mkdir", temp);
    }
    prepared_.insert(id);
  }
  // Outside mutex_: collections take the lease table's lock first, then this store's.
  if (leases_) leases_->made_snapshot(id);
  // From here on the Prepared owns the directory and removes it if anything below fails.
  Prepared prepared(this, id, std::move(parent), std::move(kind), temp);
  // The upper dir's attributes become those of the mounted root: a rootfs's "/" is 0755.
  check(::mkdir(prepared.diff_path().c_str(), 0755), "mkdir", prepared.diff_path());
  check(::chmod(prepared.diff_path().c_str(), 0755), "chmod", prepared.diff_path());  // despite umask
  check(::mkdir(prepared.work_path().c_str(), 0700), "mkdir", prepared.work_path());
  return prepared;
}

void SnapshotStore::forget_prepared(const std::string& id) {
  std::lock_guard lock(mutex_);
  prepared_.erase(id);
}

SnapshotRecord SnapshotStore::commit(Prepared snapshot, std::optional<Digest> diff_id) {
  return commit(std::move(snapshot), std::move(diff_id), false);
}

void SnapshotStore::set_parent(Prepared& snapshot, std::string parent) {
  if (snapshot.store_ != this) throw Error(ErrorKind::internal, "snapshot store: a foreign snapshot");
  if (snapshot.parent_) throw Error(ErrorKind::internal, "snapshot " + snapshot.id_ + " has a parent already");
  check_id(parent);
  if (!metadata_.get_snapshot(parent)) throw Error(ErrorKind::not_found, "snapshot " + parent + " not found");
  snapshot.parent_ = std::move(parent);
}

void SnapshotStore::set_created(Prepared& snapshot, Clock::time_point created) {
  if (snapshot.store_ != this) throw Error(ErrorKind::internal, "snapshot store: a foreign snapshot");
  snapshot.created_ = created;
}

SnapshotRecord SnapshotStore::commit_deferred(Prepared snapshot, std::optional<Digest> diff_id) {
  return commit(std::move(snapshot), std::move(diff_id), true);
}

void SnapshotStore::sync() {
  std::lock_guard sync_lock(sync_mutex_);
  std::vector<std::string> covered;
  {
    std::lock_guard lock(mutex_);
    covered.swap(unsynced_);
  }
  if (covered.empty()) return;
  try {
    check(::syncfs(snapshots_dir_.get()), "syncfs", snapshots_path_);
    metadata_.mark_snapshots_synced(covered);
  } catch (...) {
    std::lock_guard lock(mutex_);
    unsynced_.insert(unsynced_.end(), covered.begin(), covered.end());
    throw;
  }
}

SnapshotRecord SnapshotStore::commit(Prepared snapshot, std::optional<Digest> diff_id, bool deferred) {
  if (snapshot.store_ != this) throw Error(ErrorKind::internal, "snapshot store: commit of a foreign snapshot");
  SnapshotRecord record{snapshot.id_, snapshot.parent_, snapshot.kind_, std::move(diff_id), 0,
                        snapshot.created_.value_or(Clock::now())};
  record.unsynced = deferred;
  {
    UniqueFd diff = fs::open_dir(snapshot.diff_path());
    record.size = fs::disk_usage(diff.get(), snapshot.diff_path());
    // One syncfs instead of an fsync per file: the layer's files are on disk before its name is.
    if (!deferred) check(::syncfs(diff.get()), "syncfs", snapshot.diff_path());
  }
  std::string temp_name = std::string(kTempPrefix) + snapshot.id_;
  std::lock_guard lock(mutex_);
  check(::renameat(snapshots_dir_.get(), temp_name.c_str(), snapshots_dir_.get(), snapshot.id_.c_str()),
        "rename", snapshot.path_);
  if (!deferred) fs::sync(snapshots_dir_.get(), snapshots_path_);
  try {
    metadata_.add_snapshot(record);
  } catch (...) {
    // Back to its temp name, where the Prepared's destructor removes it.
    ::renameat(snapshots_dir_.get(), snapshot.id_.c_str(), snapshots_dir_.get(), temp_name.c_str());
    throw;
  }
  prepared_.erase(snapshot.id_);
  if (deferred) unsynced_.push_back(snapshot.id_);
  snapshot.store_ = nullptr;
  return record;
}

void SnapshotStore::remove(std::string_view id) {
  check_id(id);
  std::string name(id);
  std::string temp_name = std::string(kTempPrefix) + name;
  std::lock_guard lock(mutex_);
  // Record first: a crash after it leaves an unrecorded directory, which sweep() removes.
  metadata_.remove_snapshot(id);
  metadata_.make_durable();
  if (::renameat(snapshots_dir_.get(), name.c_str(), snapshots_dir_.get(), temp_name.c_str()) != 0) {
    if (errno == ENOENT) return;
    throw_errno("rename", snapshots_path_ + "/" + name);
  }
  remove_tree(snapshots_path_ + "/" + temp_name);
}

std::vector<SnapshotRecord> SnapshotStore::records_bottom_up(const std::optional<std::string>& top) {
  std::vector<SnapshotRecord> chain;
  for (std::optional<std::string> id = top; id;) {
    if (chain.size() >= kMaxChain) throw Error(ErrorKind::internal, "snapshot " + *top + ": parent chain too long");
    auto record = metadata_.get_snapshot(*id);
    if (!record) throw Error(ErrorKind::internal, "snapshot " + *id + " is missing from the store");
    id = record->parent;
    chain.push_back(std::move(*record));
  }
  std::reverse(chain.begin(), chain.end());
  return chain;
}

std::vector<std::string> SnapshotStore::lower_chain(std::string_view id) {
  std::vector<std::string> chain;
  std::optional<std::string> current{std::string(id)};
  while (current) {
    if (chain.size() >= kMaxChain) {
      throw Error(ErrorKind::internal, "snapshot " + std::string(id) + ": parent chain longer than " +
                                           std::to_string(kMaxChain) + " (a loop?)");
    }
    auto record = metadata_.get_snapshot(*current);
    if (!record) throw Error(ErrorKind::not_found, "snapshot " + *current + " not found");
    chain.push_back(diff_path(record->id));
    current = record->parent;
  }
  return chain;
}

void SnapshotStore::sweep() {
  // A crash before sync() may have lost the files of deferred commits: they go. So do records
  // whose directory is gone (a power cut may roll back a removal's transaction, not its files).
  remove_with_descendants(metadata_.unsynced_snapshots());
  remove_with_descendants(records_without_files());
  std::lock_guard lock(mutex_);
  std::unordered_set<std::string> recorded;
  for (auto& record : metadata_.list_snapshots()) recorded.insert(std::move(record.id));
  for (const auto& name : fs::entries(snapshots_dir_.get(), snapshots_path_)) {
    std::string_view view = name;
    bool leftover = false;
    if (view.starts_with(kTempPrefix)) {
      // Live Prepared snapshots keep theirs. A probe's "tmp-probe-*" is a crash's leftover
      // here: a running probe holds the lock.
      leftover = !prepared_.contains(std::string(view.substr(kTempPrefix.size())));
    } else if (is_valid_id(name)) {
      leftover = !recorded.contains(name);  // renamed into place, then a crash before recording
    }
    if (leftover) remove_tree(snapshots_path_ + "/" + name);
  }
}

std::vector<std::string> SnapshotStore::records_without_files() {
  std::vector<std::string> missing;
  for (const auto& record : metadata_.list_snapshots()) {
    struct stat st {};
    if (::fstatat(snapshots_dir_.get(), (record.id + "/diff").c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) continue;
    if (errno != ENOENT) throw_errno("stat", diff_path(record.id));
    missing.push_back(record.id);
  }
  return missing;
}

void SnapshotStore::remove_with_descendants(const std::vector<std::string>& ids) {
  if (ids.empty()) return;
  std::map<std::string, std::vector<std::string>> children;
  for (const auto& record : metadata_.list_snapshots()) {
    if (record.parent) children[*record.parent].push_back(record.id);
  }
  // Children before their parents, whatever their dates say (an imported layer keeps its
  // exporter's, older than a local parent's); a descendant's lower chain is broken too.
  std::vector<std::string> order;
  std::set<std::string> seen;
  std::function<void(const std::string&)> visit = [&](const std::string& id) {
    if (!seen.insert(id).second) return;
    for (const std::string& child : children[id]) visit(child);
    order.push_back(id);
  };
  for (const std::string& id : ids) visit(id);
  for (const std::string& id : order) remove(id);
}

bool SnapshotStore::overlay_supported() {
  std::call_once(probe_once_, [this] { probe_ = probe_overlay(); });
  return probe_.supported;
}

std::string SnapshotStore::overlay_unsupported_reason() {
  overlay_supported();
  return probe_.reason;
}

SnapshotStore::Probe SnapshotStore::probe_overlay() {
  std::lock_guard lock(mutex_);  // keeps sweep() off the probe's temp dir
  std::string where = "overlayfs on " + filesystem_name(snapshots_path_) + " at " + snapshots_path_;
  try {
    TempDir dir(snapshots_path_, "tmp-probe-");
    std::string lower = dir.path() + "/lower";
    std::string upper = dir.path() + "/upper";
    std::string work = dir.path() + "/work";
    std::string merged = dir.path() + "/merged";
    for (const auto& path : {lower, upper, work, merged}) check(::mkdir(path.c_str(), 0700), "mkdir", path);
    UniqueFd file(check(::open((lower + "/gone").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600), "create", lower));
    file.reset();

    // The very code that mounts every step's rootfs, so that what the probe accepts, steps get.
    Mount mount;
    try {
      mount = Mount::overlay({lower}, upper, work, merged);
    } catch (const Error& error) {
      return {false, where + " cannot be mounted: " + error.what()};
    }

    // Deleting a lower file must leave a whiteout (a 0:0 character device) in the upper dir,
    // which is what a layer diff records.
    if (::unlink((merged + "/gone").c_str()) != 0) {
      return {false, where + " cannot delete a lower file: " + std::strerror(errno)};
    }
    struct stat st {};
    if (::lstat((upper + "/gone").c_str(), &st) != 0 || !S_ISCHR(st.st_mode) || st.st_rdev != makedev(0, 0)) {
      return {false, where + " does not record deletions as whiteouts"};
    }
    if (::mkdir((merged + "/made").c_str(), 0755) != 0 || ::lstat((upper + "/made").c_str(), &st) != 0) {
      return {false, where + " does not write to its upper dir"};
    }
    return {true, ""};
  } catch (const Error& error) {
    return {false, where + ": " + error.what()};
  }
}

}  // namespace kbuild::store
