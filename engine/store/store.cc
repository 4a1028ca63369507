#include "engine/store/store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <utility>

#include "common/error.h"
#include "common/syscall.h"
#include "engine/store/fs.h"
#include "engine/store/mount.h"

namespace kbuild::store {
namespace {

// The pid a lock holder wrote into the lock file, or "unknown".
std::string holder_pid(int fd) {
  char buffer[32] = {};
  ssize_t got = ::pread(fd, buffer, sizeof buffer - 1, 0);
  std::string text = got > 0 ? std::string(buffer, static_cast<size_t>(got)) : std::string();
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text.empty() ? "unknown" : text;
}

// Its own open file description (a fresh open(), not a dup), so a second Store::open in this
// same process conflicts with the first: flock locks belong to open file descriptions.
UniqueFd lock_root(const std::string& root) {
  std::string path = root + "/lock";
  UniqueFd fd(check(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600), "open", path));
  while (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EINTR) continue;
    if (errno == EWOULDBLOCK) {
      throw Error(ErrorKind::internal,
                  "store " + root + " is in use by another kbuildd (pid " + holder_pid(fd.get()) + ")");
    }
    throw_errno("flock", path);
  }
  std::string pid = std::to_string(::getpid()) + "\n";
  check(::ftruncate(fd.get(), 0), "truncate", path);
  check(::pwrite(fd.get(), pid.data(), pid.size(), 0), "write", path);
  return fd;
}

}  // namespace

std::unique_ptr<Store> Store::open(const std::string& root) {
  if (root.empty() || root[0] != '/') {
    throw Error(ErrorKind::user, "store root must be an absolute path, not \"" + root + "\"");
  }
  std::string clean = root;
  while (clean.size() > 1 && clean.back() == '/') clean.pop_back();
  auto slash = clean.find_last_of('/');
  if (slash > 0) fs::make_dirs(clean.substr(0, slash), 0755);
  if (::mkdir(clean.c_str(), 0700) != 0 && errno != EEXIST) throw_errno("mkdir", clean);
  return std::unique_ptr<Store>(new Store(clean, lock_root(clean)));
}

Store::Store(std::string root, UniqueFd lock) : lock_(std::move(lock)), root_(std::move(root)) {
  // Before anything below the root is walked or removed: a sweep must not reach through a
  // leftover mount into what it shows. Only where the daemon mounts (views and steps' roots in
  // mounts/, the overlay probe in snapshots/tmp-probe-*): a file system an administrator
  // mounted at the root or at snapshots/ itself stays.
  for (const char* dir : {"/mounts", "/snapshots"}) detach_mounts_under(root_ + dir);
  metadata_ = std::make_unique<MetadataStore>(root_ + "/metadata.db");
  leases_ = std::make_unique<LeaseTable>(*metadata_);
  content_ = std::make_unique<ContentStore>(root_, leases_.get());
  snapshots_ = std::make_unique<SnapshotStore>(root_, *metadata_, leases_.get());
  content_->sweep_temp();
  snapshots_->sweep();
  drop_records_of_missing_blobs();
}

void Store::drop_records_of_missing_blobs() {
  // Blobs are stored (and fsynced) before anything names them, and records go before their
  // blobs; only a power cut that rolls back the last transactions leaves one of these.
  for (const auto& [diff_id, blob] : metadata_->list_layer_blobs()) {
    if (!content_->has(blob.blob)) metadata_->remove_layer_blob(blob.blob);
  }
  for (const auto& [name, image] : metadata_->list_image_names()) {
    for (const Digest& blob : {image.manifest, image.config}) {
      if (content_->has(blob)) continue;
      metadata_->remove_image_name(name);
      recovery_notes_.push_back("image " + name + " lost its blob " + blob.str() + "; its name is removed");
      break;
    }
  }
}

Store::~Store() = default;

}  // namespace kbuild::store
