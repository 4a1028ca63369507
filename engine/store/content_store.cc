#include "engine/store/content_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "common/error.h"
#include "common/fd_io.h"
#include "common/syscall.h"
#include "common/temp_dir.h"
#include "engine/store/fs.h"
#include "engine/store/random_id.h"

namespace kbuild::store {
namespace {

// Small writes are gathered into one write(2); larger ones go straight through.
constexpr size_t kWriteBuffer = 128 * 1024;

// The file name of a blob: only the validated hex of a parsed Digest ever becomes a path.
std::string blob_name(const Digest& digest) {
  if (digest.empty()) throw Error(ErrorKind::internal, "content store: empty digest");
  return std::string(digest.hex());
}

Error blob_not_found(const Digest& digest) {
  return Error(ErrorKind::not_found, "blob " + digest.str() + " not found");
}

}  // namespace

ContentStore::ContentStore(std::string root, LeaseTable* leases)
    : root_(std::move(root)), leases_(leases), blobs_path_(root_ + "/blobs/sha256"), temp_path_(root_ + "/blobs/tmp") {
  fs::make_dirs(blobs_path_, 0755);
  fs::make_dirs(temp_path_, 0700);
  blobs_dir_ = fs::open_dir(blobs_path_);
  temp_dir_ = fs::open_dir(temp_path_);
}

std::string ContentStore::path(const Digest& digest) const { return blobs_path_ + "/" + blob_name(digest); }

bool ContentStore::has(const Digest& digest) const {
  struct stat st {};
  if (::fstatat(blobs_dir_.get(), blob_name(digest).c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) return true;
  if (errno == ENOENT) return false;
  throw_errno("stat", path(digest));
}

uint64_t ContentStore::size(const Digest& digest) const {
  struct stat st {};
  if (::fstatat(blobs_dir_.get(), blob_name(digest).c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) throw blob_not_found(digest);
    throw_errno("stat", path(digest));
  }
  return static_cast<uint64_t>(st.st_size);
}

UniqueFd ContentStore::open(const Digest& digest) const {
  int fd = ::openat(blobs_dir_.get(), blob_name(digest).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ENOENT) throw blob_not_found(digest);
    throw_errno("open", path(digest));
  }
  return UniqueFd(fd);
}

std::string ContentStore::read_small(const Digest& digest, size_t limit) const {
  UniqueFd fd = open(digest);
  struct stat st {};
  check(::fstat(fd.get(), &st), "stat", path(digest));
  if (static_cast<uint64_t>(st.st_size) > limit) {
    throw Error(ErrorKind::user, "blob " + digest.str() + " is " + std::to_string(st.st_size) +
                                     " bytes, more than the limit of " + std::to_string(limit));
  }
  std::string bytes(static_cast<size_t>(st.st_size), '\0');
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t got = ::pread(fd.get(), bytes.data() + done, bytes.size() - done, static_cast<off_t>(done));
    if (got < 0) {
      if (errno == EINTR) continue;
      throw_errno("read", path(digest));
    }
    if (got == 0) break;
    done += static_cast<size_t>(got);
  }
  bytes.resize(done);
  // Cheap at this size, and it turns disk corruption into a clear error instead of a bad parse.
  if (Digest::of(bytes) != digest) throw Error(ErrorKind::internal, "blob " + digest.str() + " is corrupt");
  return bytes;
}

Digest ContentStore::put(std::string_view bytes) {
  Digest digest = Digest::of(bytes);
  if (leases_) leases_->made_blob(digest);  // held even when it was there already
  if (has(digest)) return digest;
  Writer out = writer();
  out.write(bytes);
  return out.commit(digest);
}

ContentStore::Writer ContentStore::writer() {
  std::lock_guard lock(mutex_);
  while (true) {
    std::string name = random_hex(16);
    // 0444: a stored blob is never written again.
    int fd = ::openat(temp_dir_.get(), name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
    if (fd < 0) {
      if (errno == EEXIST) continue;
      throw_errno("create", temp_path_ + "/" + name);
    }
    open_temps_.insert(name);
    return Writer(this, UniqueFd(fd), name);
  }
}

void ContentStore::forget_temp(const std::string& name) {
  std::lock_guard lock(mutex_);
  open_temps_.erase(name);
}

void ContentStore::remove(const Digest& digest) {
  if (::unlinkat(blobs_dir_.get(), blob_name(digest).c_str(), 0) != 0 && errno != ENOENT) {
    throw_errno("unlink", path(digest));
  }
}

std::vector<Digest> ContentStore::list() const {
  std::vector<Digest> digests;
  for (const auto& name : fs::entries(blobs_dir_.get(), blobs_path_)) {
    // Anything that is not a digest's hex (a stray file) is not a blob.
    if (is_hex_id(name, 32)) digests.push_back(Digest::from_hex(name));
  }
  std::sort(digests.begin(), digests.end());
  return digests;
}

void ContentStore::sweep_temp() {
  std::lock_guard lock(mutex_);
  for (const auto& name : fs::entries(temp_dir_.get(), temp_path_)) {
    if (open_temps_.contains(name)) continue;
    if (::unlinkat(temp_dir_.get(), name.c_str(), 0) == 0 || errno == ENOENT) continue;
    if (errno == EISDIR) {
      remove_tree(temp_path_ + "/" + name);
      continue;
    }
    throw_errno("unlink", temp_path_ + "/" + name);
  }
}

ContentStore::Writer::Writer(ContentStore* store, UniqueFd fd, std::string temp_name)
    : store_(store), fd_(std::move(fd)), temp_name_(std::move(temp_name)) {
  buffer_.reserve(kWriteBuffer);
}

ContentStore::Writer::Writer(Writer&& other) noexcept
    : store_(std::exchange(other.store_, nullptr)),
      fd_(std::move(other.fd_)),
      temp_name_(std::move(other.temp_name_)),
      hasher_(std::move(other.hasher_)),
      buffer_(std::move(other.buffer_)),
      size_(other.size_),
      found_stored_(other.found_stored_) {}

ContentStore::Writer& ContentStore::Writer::operator=(Writer&& other) noexcept {
  if (this != &other) {
    discard();
    store_ = std::exchange(other.store_, nullptr);
    fd_ = std::move(other.fd_);
    temp_name_ = std::move(other.temp_name_);
    hasher_ = std::move(other.hasher_);
    buffer_ = std::move(other.buffer_);
    size_ = other.size_;
    found_stored_ = other.found_stored_;
  }
  return *this;
}

ContentStore::Writer::~Writer() { discard(); }

void ContentStore::Writer::write(const void* data, size_t size) {
  if (!store_) throw Error(ErrorKind::internal, "content store: write after commit");
  if (size == 0) return;
  hasher_.update(data, size);
  size_ += size;
  if (buffer_.size() + size > kWriteBuffer) flush();
  if (size >= kWriteBuffer) {
    write_all(fd_.get(), data, size, store_->temp_path_ + "/" + temp_name_);
  } else {
    auto* bytes = static_cast<const char*>(data);
    buffer_.insert(buffer_.end(), bytes, bytes + size);
  }
}

void ContentStore::Writer::flush() {
  if (buffer_.empty()) return;
  write_all(fd_.get(), buffer_.data(), buffer_.size(), store_->temp_path_ + "/" + temp_name_);
  buffer_.clear();
}

Digest ContentStore::Writer::commit(std::optional<Digest> expected) {
  if (!store_) throw Error(ErrorKind::internal, "content store: commit of a finished writer");
  // Whatever happens below, this writer is finished: a failure discards the temp file.
  struct DiscardOnFailure {
    Writer* writer;
    ~DiscardOnFailure() {
      if (writer) writer->discard();
    }
  } guard{this};

  std::string temp = store_->temp_path_ + "/" + temp_name_;
  flush();
  Digest digest = hasher_.finish();
  if (expected && *expected != digest) {
    throw Error(ErrorKind::internal, "digest mismatch: expected " + expected->str() + ", got " + digest.str());
  }
  if (store_->leases_) store_->leases_->made_blob(digest);
  if (store_->has(digest)) {
    // Another writer got there first with the same bytes; its rename may not be durable yet.
    fs::sync(store_->blobs_dir_.get(), store_->blobs_path_);
    found_stored_ = true;
    return digest;
  }
  fs::sync(fd_.get(), temp);
  fd_.reset();
  // rename(2) replaces atomically, so concurrent writers of one blob both succeed.
  check(::renameat(store_->temp_dir_.get(), temp_name_.c_str(), store_->blobs_dir_.get(),
                   std::string(digest.hex()).c_str()),
        "rename", temp);
  ContentStore* store = std::exchange(store_, nullptr);
  store->forget_temp(temp_name_);
  guard.writer = nullptr;
  // The rename is durable before anyone (metadata, a manifest) refers to the blob.
  fs::sync(store->blobs_dir_.get(), store->blobs_path_);
  return digest;
}

void ContentStore::Writer::discard() noexcept {
  if (!store_) return;
  fd_.reset();
  ::unlinkat(store_->temp_dir_.get(), temp_name_.c_str(), 0);
  store_->forget_temp(temp_name_);
  store_ = nullptr;
}

}  // namespace kbuild::store
