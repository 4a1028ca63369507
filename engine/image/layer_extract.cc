#include "engine/image/layer_extract.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstring>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "common/directory.h"
#include "common/fd_io.h"
#include "common/go_path.h"
#include "common/layer_xattrs.h"
#include "common/syscall.h"
#include "common/unique_fd.h"

namespace kbuild::image {
namespace {

constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr std::string_view kWhiteoutMetaPrefix = ".wh..wh.";
constexpr std::string_view kOpaqueWhiteout = ".wh..wh..opq";
constexpr const char* kOpaqueXattr = "trusted.overlay.opaque";

struct ReadDeleter {
  void operator()(struct archive* a) const { archive_read_free(a); }
};
using Archive = std::unique_ptr<struct archive, ReadDeleter>;

std::string join(const std::vector<std::string>& parts, size_t count) {
  std::string out;
  for (size_t i = 0; i < count; ++i) {
    if (i) out += '/';
    out += parts[i];
  }
  return out;
}

std::string join(const std::vector<std::string>& parts) { return join(parts, parts.size()); }

// The components of an entry name with "." and empty ones dropped and ".." applied. A leading
// "/" is dropped (absolute names are taken relative to the root, as Docker and containerd do);
// a ".." above the root returns false.
bool go_clean_path(std::string_view name, std::vector<std::string>& parts) {
  parts.clear();
  size_t i = 0;
  while (i <= name.size()) {
    size_t slash = name.find('/', i);
    if (slash == std::string_view::npos) slash = name.size();
    std::string_view part = name.substr(i, slash - i);
    if (part == "..") {
      if (parts.empty()) return false;
      parts.pop_back();
    } else if (!part.empty() && part != ".") {
      parts.emplace_back(part);
    }
    i = slash + 1;
  }
  return true;
}

int open_in_root(int root_fd, const std::string& path, int flags) {
  struct open_how how {};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  for (;;) {
    long fd = ::syscall(SYS_openat2, root_fd, path.empty() ? "." : path.c_str(), &how, sizeof how);
    if (fd < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    return static_cast<int>(fd);
  }
}

// The target of the symlink `name` in `dir_fd`, or "" if it is none.
std::string link_target(int dir_fd, const std::string& name) {
  char buffer[PATH_MAX];
  ssize_t n = ::readlinkat(dir_fd, name.c_str(), buffer, sizeof buffer);
  return n <= 0 ? std::string() : std::string(buffer, static_cast<size_t>(n));
}

// Removes everything in the directory `dir_fd` for which `remove` says so, without following
// symlinks.
void remove_children(int dir_fd, const std::function<bool(const std::string&)>& remove, const std::string& path);

void remove_at(int dir_fd, const std::string& name, const std::string& path) {
  struct stat st {};
  if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) {
    if (errno == ENOENT) return;
    throw_errno("stat", path);
  }
  if (S_ISDIR(st.st_mode)) {
    UniqueFd fd(check(::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC), "open", path));
    remove_children(fd.get(), [](const std::string&) { return true; }, path);
    check(::unlinkat(dir_fd, name.c_str(), AT_REMOVEDIR), "rmdir", path);
  } else {
    check(::unlinkat(dir_fd, name.c_str(), 0), "unlink", path);
  }
}

void remove_children(int dir_fd, const std::function<bool(const std::string&)>& remove, const std::string& path) {
  for (const DirEntry& entry : list_directory(dir_fd, path)) {
    if (remove(entry.name)) remove_at(dir_fd, entry.name, path + "/" + entry.name);
  }
}

// What errors start with: "layer sha256:...: ".
std::string layer_prefix(const ExtractOptions& options) {
  return options.layer_name.empty() ? "layer: " : "layer " + options.layer_name + ": ";
}

// How often, in bytes of the uncompressed tar, the reader asks whether to stop.
constexpr uint64_t kCancelCheckBytes = 4 << 20;
// The most tar the reader takes in without giving an entry or data: what one entry's headers
// (pax records, GNU long names, both at most 1 MiB in libarchive, and a GNU sparse map, which
// libarchive keeps in memory at several times its size) may take. Go's archive/tar, which
// Docker uses, stops each of them at 1 MiB too.
constexpr uint64_t kHeaderLimit = 4 << 20;

// The reading of the whole layer stopped (canceled, or a header too large), its message already
// naming the layer: not an error of the entry being applied when it happened.
class LayerError : public Error {
 public:
  using Error::Error;
};

// The two readers: `blob` decompresses what is read from the fd (raw format: one data stream),
// `tar` reads entries from what `blob` produces. Everything crossing each boundary is hashed.
class LayerReader {
 public:
  LayerReader(int fd, std::string prefix, const std::function<bool()>& canceled)
      : fd_(fd), prefix_(std::move(prefix)), canceled_(canceled), buffer_(1 << 20) {}

  void open() {
    blob_.reset(archive_read_new());
    tar_.reset(archive_read_new());
    if (!blob_ || !tar_) throw Error(ErrorKind::internal, "libarchive: out of memory");
    // Only in-process decompressors: never an external program on untrusted input.
    archive_read_support_filter_gzip(blob_.get());
    archive_read_support_filter_zstd(blob_.get());
    archive_read_support_format_raw(blob_.get());
    check_read(blob_.get(), archive_read_open2(blob_.get(), this, nullptr, &LayerReader::read_fd, nullptr, nullptr));
    archive_entry* raw = nullptr;
    int rc = archive_read_next_header(blob_.get(), &raw);
    if (rc == ARCHIVE_EOF) throw Error(ErrorKind::user, prefix_ + "empty layer blob");
    check_read(blob_.get(), rc);
    archive_read_support_format_tar(tar_.get());
    check_read(tar_.get(), archive_read_open2(tar_.get(), this, nullptr, &LayerReader::read_tar, nullptr, nullptr));
  }

  Compression compression() {
    switch (archive_filter_code(blob_.get(), 0)) {
      case ARCHIVE_FILTER_GZIP:
        return Compression::gzip;
      case ARCHIVE_FILTER_ZSTD:
        return Compression::zstd;
      default:
        return Compression::none;
    }
  }

  // The next entry, or nullptr at the end of the tar.
  archive_entry* next() {
    check_canceled();
    archive_entry* entry = nullptr;
    int rc = archive_read_next_header(tar_.get(), &entry);
    if (rc == ARCHIVE_EOF) return nullptr;
    check_read(tar_.get(), rc);
    unread_ = 0;
    return entry;
  }

  // The next block of the current entry's data, at `offset` in the file (a sparse entry's
  // blocks skip its holes); false at the entry's end. Throws Error on a truncated or malformed
  // tar, with the tar reader's message and no prefix: the caller names the entry.
  bool data_block(const void** block, size_t* size, la_int64_t* offset) {
    int rc = archive_read_data_block(tar_.get(), block, size, offset);
    if (rc == ARCHIVE_EOF) return false;
    if (rc < ARCHIVE_WARN) {
      if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
      const char* message = archive_error_string(tar_.get());
      throw Error(ErrorKind::user, message ? message : "truncated tar");
    }
    unread_ = 0;
    return true;
  }

  // Reads the rest of the current entry's data, for an entry whose data is not applied: the
  // tar reader would skip it unseen, and the header limit would count it.
  void skip_data() {
    const void* block = nullptr;
    size_t size = 0;
    la_int64_t offset = 0;
    while (data_block(&block, &size, &offset)) {
    }
  }

  void check_canceled() const {
    if (canceled_ && canceled_()) throw LayerError(ErrorKind::canceled, prefix_ + "extraction canceled");
  }

  // Reads what is left after the tar's end (its zero blocks and padding), so the digests cover
  // every byte.
  void drain() {
    const void* block = nullptr;
    size_t size = 0;
    la_int64_t offset = 0;
    uint64_t since_check = 0;
    for (;;) {
      int rc = archive_read_data_block(blob_.get(), &block, &size, &offset);
      if (rc == ARCHIVE_EOF) break;
      check_read(blob_.get(), rc);
      diff_.update(block, size);
      tar_size_ += size;
      // After the tar's end there may be any amount of it, all of it hashed.
      if ((since_check += size) >= kCancelCheckBytes) {
        since_check = 0;
        check_canceled();
      }
    }
    for (;;) {
      size_t n = read_some(fd_, buffer_.data(), buffer_.size(), "layer");
      if (n == 0) break;
      blob_hash_.update(buffer_.data(), n);
      blob_size_ += n;
    }
  }

  ExtractResult result() {
    ExtractResult r;
    r.compression = compression();
    r.diff_id = diff_.finish();
    r.tar_size = tar_size_;
    r.blob_digest = blob_hash_.finish();
    r.blob_size = blob_size_;
    return r;
  }

  void check_read(struct archive* a, int rc) {
    if (rc == ARCHIVE_OK || rc == ARCHIVE_WARN) return;
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
    const char* message = archive_error_string(a);
    throw Error(ErrorKind::user, prefix_ + "malformed layer: " + (message ? message : "unreadable"));
  }

 private:
  static la_ssize_t read_fd(struct archive* a, void* self, const void** data) {
    auto* reader = static_cast<LayerReader*>(self);
    try {
      size_t n = read_some(reader->fd_, reader->buffer_.data(), reader->buffer_.size(), "layer");
      reader->blob_hash_.update(reader->buffer_.data(), n);
      reader->blob_size_ += n;
      *data = reader->buffer_.data();
      return static_cast<la_ssize_t>(n);
    } catch (...) {
      reader->error_ = std::current_exception();
      archive_set_error(a, EIO, "read failed");
      return -1;
    }
  }

  static la_ssize_t read_tar(struct archive* a, void* self, const void** data) {
    auto* reader = static_cast<LayerReader*>(self);
    size_t size = 0;
    la_int64_t offset = 0;
    int rc = archive_read_data_block(reader->blob_.get(), data, &size, &offset);
    if (rc == ARCHIVE_EOF) return 0;
    if (rc < ARCHIVE_WARN) {
      const char* message = archive_error_string(reader->blob_.get());
      archive_set_error(a, EIO, "%s", message ? message : "decompression failed");
      return -1;
    }
    reader->diff_.update(*data, size);
    reader->tar_size_ += size;
    try {
      reader->took(size);
    } catch (...) {
      reader->error_ = std::current_exception();
      archive_set_error(a, ECANCELED, "stopped");
      return -1;
    }
    return static_cast<la_ssize_t>(size);
  }

  // Counts `size` bytes the tar reader took in; throws when it is time to stop.
  void took(size_t size) {
    unread_ += size;
    if (unread_ > kHeaderLimit) {
      throw LayerError(ErrorKind::user, prefix_ + "malformed layer: an entry's headers take more than " +
                                            std::to_string(kHeaderLimit >> 20) + " MiB");
    }
    if ((since_check_ += size) >= kCancelCheckBytes) {
      since_check_ = 0;
      check_canceled();
    }
  }

  int fd_;
  std::string prefix_;
  const std::function<bool()>& canceled_;
  std::vector<char> buffer_;
  Archive blob_;
  Archive tar_;
  store::Sha256 diff_;
  store::Sha256 blob_hash_;
  uint64_t tar_size_ = 0;
  uint64_t blob_size_ = 0;
  uint64_t unread_ = 0;       // tar taken in since the last entry or data block given out
  uint64_t since_check_ = 0;  // tar taken in since canceled_ was last asked
  std::exception_ptr error_;
};

// Blocks of the file system's usual size: data is cut at their boundaries, so that a block of
// zeros is never written, whatever the sizes of the pieces the data comes in.
constexpr size_t kHoleBlock = 4096;

void write_at(int fd, const char* data, size_t size, la_int64_t offset, const std::string& path) {
  while (size > 0) {
    ssize_t n = ::pwrite(fd, data, size, offset);
    if (n < 0 && errno == EINTR) continue;
    check(n, "write", path);
    data += n;
    offset += n;
    size -= static_cast<size_t>(n);
  }
}

// Writes `size` bytes at `offset` of a file created empty, but for its zeros: what is never
// written reads back as zeros, and a block only zeros fall in stays a hole. The caller sets
// the file's length.
void write_skipping_zeros(int fd, const char* data, size_t size, la_int64_t offset, const std::string& path) {
  static const char zeros[kHoleBlock] = {};
  size_t pending = 0;  // where the bytes not written yet begin
  for (size_t at = 0; at < size;) {
    auto position = static_cast<uint64_t>(offset) + at;
    size_t n = std::min<size_t>(size - at, kHoleBlock - position % kHoleBlock);
    if (std::memcmp(data + at, zeros, n) == 0) {
      write_at(fd, data + pending, at - pending, offset + static_cast<la_int64_t>(pending), path);
      pending = at + n;
    }
    at += n;
  }
  write_at(fd, data + pending, size - pending, offset + static_cast<la_int64_t>(pending), path);
}

// An entry the extractor will not apply; its message reads "entry <name> <why>".
class Refusal : public Error {
 public:
  explicit Refusal(const std::string& message) : Error(ErrorKind::user, message) {}
};

class Extractor {
 public:
  Extractor(int root_fd, const ExtractOptions& options, LayerReader& reader)
      : root_(root_fd), options_(options), reader_(reader) {}

  void apply(archive_entry* entry) {
    const char* raw = archive_entry_pathname_utf8(entry);
    if (!raw) raw = archive_entry_pathname(entry);
    name_ = raw ? raw : "";
    try {
      // No path or link that long resolves (PATH_MAX), and an error must not quote megabytes.
      if (name_.size() >= PATH_MAX) {
        name_ = shortened(name_);
        refuse("has a name longer than " + std::to_string(PATH_MAX - 1) + " bytes");
      }
      apply_entry(entry);
      reader_.skip_data();
    } catch (const LayerError&) {
      throw;
    } catch (const Refusal& e) {
      throw Error(ErrorKind::user, prefix() + e.what());
    } catch (const Error& e) {
      throw e.with_context(prefix() + "entry " + name_);
    }
  }

  // Directory times last: creating their contents changed them. Children first (a path sorts
  // after its parent's), though setting a directory's times does not change its parent's.
  void finish() {
    for (auto it = dir_times_.rbegin(); it != dir_times_.rend(); ++it) {
      UniqueFd fd(open_in_root(root_, it->first, O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
      if (!fd) continue;  // removed or replaced by a later entry
      check(::futimens(fd.get(), it->second.data()), "futimens", it->first);
    }
  }

  std::string prefix() const { return layer_prefix(options_); }

 private:
  [[noreturn]] void refuse(const std::string& why) { throw Refusal("entry " + name_ + " " + why); }

  static std::string shortened(const std::string& name) { return name.substr(0, 64) + "..."; }

  void apply_entry(archive_entry* entry) {
    if (!go_clean_path(name_, parts_)) refuse("escapes the root");
    if (parts_.empty()) return;  // the root itself: its metadata belongs to the snapshot, not the layer
    std::string base = parts_.back();
    std::vector<std::string> parent(parts_.begin(), parts_.end() - 1);

    if (std::string_view(base).starts_with(kWhiteoutPrefix)) {
      invalidate();
      if (base == kOpaqueWhiteout) {
        opaque(parent);
      } else if (!std::string_view(base).starts_with(kWhiteoutMetaPrefix)) {
        std::string target = base.substr(kWhiteoutPrefix.size());
        if (target.empty() || target == "." || target == "..") refuse("is not a valid whiteout");
        whiteout(parent, target, entry);
      }
      return;  // other .wh..wh. names are aufs bookkeeping, never content
    }

    std::string path = join(parts_);
    const char* link = archive_entry_hardlink_utf8(entry);
    if (!link) link = archive_entry_hardlink(entry);
    if (link) {
      if (std::strlen(link) >= PATH_MAX) refuse("links to " + shortened(link) + ", a name longer than PATH_MAX");
      hardlink(parent, base, path, link);
      return;
    }
    mode_t type = archive_entry_filetype(entry);
    switch (type) {
      case AE_IFREG:
        regular_file(entry, parent, base, path);
        break;
      case AE_IFDIR:
        invalidate();
        directory(entry, parent, base, path);
        break;
      case AE_IFLNK:
        invalidate();
        symlink(entry, parent, base, path);
        break;
      case AE_IFCHR:
      case AE_IFBLK:
        if (options_.devices == DeviceNodes::reject) refuse("is a device node, and device nodes are not allowed here");
        if (options_.devices == DeviceNodes::skip) return;
        special(entry, parent, base, path, makedev(archive_entry_rdevmajor(entry), archive_entry_rdevminor(entry)));
        break;
      case AE_IFIFO:
        special(entry, parent, base, path, 0);
        break;
      default:
        return;  // sockets and unknown types are not layer content
    }
    if (options_.whiteouts == WhiteoutMode::apply) unpacked_.insert(path);
  }

  void invalidate() {
    parent_fd_.reset();
    parent_path_.clear();
  }

  // The directory `parent` inside the root, created (0755) where missing. Symlinks on the way
  // resolve as if the root were "/".
  int parent_dir(const std::vector<std::string>& parent) {
    std::string path = join(parent);
    if (parent_fd_ && parent_path_ == path) return parent_fd_.get();
    invalidate();
    int fd = open_in_root(root_, path, O_PATH | O_DIRECTORY);
    if (fd < 0 && errno == ENOENT) {
      create_parents(parent);
      fd = open_in_root(root_, path, O_PATH | O_DIRECTORY);
    }
    if (fd < 0) throw_errno("opening parent directory", path);
    parent_fd_.reset(fd);
    parent_path_ = path;
    return fd;
  }

  void create_parents(const std::vector<std::string>& parent) {
    UniqueFd previous;
    for (size_t i = 0; i < parent.size(); ++i) {
      std::string prefix = join(parent, i + 1);
      UniqueFd fd(open_in_root(root_, prefix, O_PATH | O_DIRECTORY));
      if (!fd) {
        if (errno != ENOENT) throw_errno("opening parent directory", prefix);
        int at = previous ? previous.get() : root_;
        if (::mkdirat(at, parent[i].c_str(), 0755) < 0) {
          // It exists but does not resolve to a directory: a dangling or looping symlink.
          if (errno == EEXIST) {
            std::string link = link_target(at, parent[i]);
            refuse("has a parent, " + prefix + ", that is not a directory" +
                   (link.empty() ? "" : ": a symlink to " + link + ", which is no directory in this layer"));
          }
          throw_errno("mkdirat", prefix);
        }
        if (options_.whiteouts == WhiteoutMode::apply) unpacked_.insert(prefix);
        fd.reset(open_in_root(root_, prefix, O_PATH | O_DIRECTORY));
        if (!fd) throw_errno("opening parent directory", prefix);
      }
      previous = std::move(fd);
    }
  }

  // Makes room for a new entry: removes what is there, except a directory when `keep_dir`.
  // Returns whether a directory was kept.
  bool clear(int parent_fd, const std::string& base, const std::string& path, bool keep_dir) {
    struct stat st {};
    if (::fstatat(parent_fd, base.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) {
      if (errno == ENOENT) return false;
      throw_errno("stat", path);
    }
    if (S_ISDIR(st.st_mode)) {
      if (keep_dir) return true;
      remove_at(parent_fd, base, path);
    } else {
      check(::unlinkat(parent_fd, base.c_str(), 0), "unlink", path);
    }
    return false;
  }

  std::array<struct timespec, 2> times(archive_entry* entry) const {
    struct timespec mtime {archive_entry_mtime(entry), archive_entry_mtime_nsec(entry)};
    struct timespec atime = mtime;
    if (archive_entry_atime_is_set(entry)) atime = {archive_entry_atime(entry), archive_entry_atime_nsec(entry)};
    return {atime, mtime};
  }

  // Owner, then mode (chown clears set-id bits), then xattrs, on an open fd.
  void set_metadata(int fd, archive_entry* entry, const std::string& path) {
    if (options_.set_owners) {
      check(::fchown(fd, static_cast<uid_t>(archive_entry_uid(entry)), static_cast<gid_t>(archive_entry_gid(entry))),
            "fchown", path);
    }
    check(::fchmod(fd, archive_entry_perm(entry) & 07777), "fchmod", path);
    archive_entry_xattr_reset(entry);
    const char* name = nullptr;
    const void* value = nullptr;
    size_t size = 0;
    while (archive_entry_xattr_next(entry, &name, &value, &size) == ARCHIVE_OK) {
      if (!name || !layer_may_carry_xattr(name)) continue;
      if (::fsetxattr(fd, name, value, size, 0) < 0 && errno != ENOTSUP && errno != EOPNOTSUPP) {
        throw_errno(std::string("setting xattr ") + name + " on", path);
      }
    }
  }

  void regular_file(archive_entry* entry, const std::vector<std::string>& parent, const std::string& base,
                    const std::string& path) {
    int dir = parent_dir(parent);
    clear(dir, base, path, false);
    UniqueFd fd(check(::openat(dir, base.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600),
                      "create", path));
    const void* block = nullptr;
    size_t size = 0;
    la_int64_t offset = 0;
    la_int64_t end = 0;
    while (reader_.data_block(&block, &size, &offset)) {
      write_skipping_zeros(fd.get(), static_cast<const char*>(block), size, offset, path);
      end = std::max<la_int64_t>(end, offset + static_cast<la_int64_t>(size));
    }
    // The file may end in a hole: a sparse entry's, or zeros not written.
    la_int64_t length = archive_entry_size_is_set(entry) ? archive_entry_size(entry) : end;
    check(::ftruncate(fd.get(), length), "truncate", path);
    set_metadata(fd.get(), entry, path);
    auto ts = times(entry);
    check(::futimens(fd.get(), ts.data()), "futimens", path);
  }

  void directory(archive_entry* entry, const std::vector<std::string>& parent, const std::string& base,
                 const std::string& path) {
    int dir = parent_dir(parent);
    if (!clear(dir, base, path, true)) check(::mkdirat(dir, base.c_str(), 0700), "mkdirat", path);
    UniqueFd fd(check(::openat(dir, base.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC), "open", path));
    set_metadata(fd.get(), entry, path);
    dir_times_[path] = times(entry);
  }

  void symlink(archive_entry* entry, const std::vector<std::string>& parent, const std::string& base,
               const std::string& path) {
    const char* target = archive_entry_symlink_utf8(entry);
    if (!target) target = archive_entry_symlink(entry);
    if (!target || !*target) refuse("is a symlink without a target");
    int dir = parent_dir(parent);
    clear(dir, base, path, false);
    check(::symlinkat(target, dir, base.c_str()), "symlink", path);
    if (options_.set_owners) {
      check(::fchownat(dir, base.c_str(), static_cast<uid_t>(archive_entry_uid(entry)),
                       static_cast<gid_t>(archive_entry_gid(entry)), AT_SYMLINK_NOFOLLOW),
            "lchown", path);
    }
    auto ts = times(entry);
    check(::utimensat(dir, base.c_str(), ts.data(), AT_SYMLINK_NOFOLLOW), "utimensat", path);
  }

  void special(archive_entry* entry, const std::vector<std::string>& parent, const std::string& base,
               const std::string& path, dev_t device) {
    int dir = parent_dir(parent);
    clear(dir, base, path, false);
    mode_t type = archive_entry_filetype(entry);
    check(::mknodat(dir, base.c_str(), type | 0600, device), "mknod", path);
    // Opened as O_PATH so a fifo does not block and a device is not opened.
    UniqueFd fd(check(::openat(dir, base.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC), "open", path));
    struct stat st {};
    check(::fstat(fd.get(), &st), "stat", path);
    if ((st.st_mode & S_IFMT) != type) refuse("was replaced while being created");
    if (options_.set_owners) {
      check(::fchownat(fd.get(), "", static_cast<uid_t>(archive_entry_uid(entry)),
                       static_cast<gid_t>(archive_entry_gid(entry)), AT_EMPTY_PATH),
            "fchown", path);
    }
    // chmod and utimes have no AT_EMPTY_PATH on O_PATH fds everywhere; the node was just made
    // under a directory no one else writes to, and AT_SYMLINK_NOFOLLOW keeps a swapped-in link out.
    check(::fchmodat(dir, base.c_str(), archive_entry_perm(entry) & 07777, 0), "chmod", path);
    auto ts = times(entry);
    check(::utimensat(dir, base.c_str(), ts.data(), AT_SYMLINK_NOFOLLOW), "utimensat", path);
  }

  void hardlink(const std::vector<std::string>& parent, const std::string& base, const std::string& path,
                const char* link) {
    std::vector<std::string> target;
    if (!go_clean_path(link, target) || target.empty()) refuse("links to " + std::string(link) + ", outside the root");
    std::string target_path = join(target);
    if (target_path == path) return;
    std::string target_base = target.back();
    target.pop_back();
    UniqueFd target_dir(open_in_root(root_, join(target), O_PATH | O_DIRECTORY));
    if (!target_dir) throw_errno("hardlink target", target_path);
    struct stat st {};
    if (::fstatat(target_dir.get(), target_base.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) {
      throw_errno("hardlink target", target_path);
    }
    if (S_ISDIR(st.st_mode)) refuse("is a hardlink to the directory " + target_path);
    int dir = parent_dir(parent);
    clear(dir, base, path, false);
    // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself, never what it points to.
    check(::linkat(target_dir.get(), target_base.c_str(), dir, base.c_str(), 0), "link", path);
    if (options_.whiteouts == WhiteoutMode::apply) unpacked_.insert(path);
  }

  void whiteout(const std::vector<std::string>& parent, const std::string& target, archive_entry* entry) {
    std::string path = join(parent);
    path = path.empty() ? target : path + "/" + target;
    if (options_.whiteouts == WhiteoutMode::overlay) {
      int dir = parent_dir(parent);
      clear(dir, target, path, false);
      check(::mknodat(dir, target.c_str(), S_IFCHR, makedev(0, 0)), "mknod", path);
      if (options_.set_owners) {
        check(::fchownat(dir, target.c_str(), static_cast<uid_t>(archive_entry_uid(entry)),
                         static_cast<gid_t>(archive_entry_gid(entry)), AT_SYMLINK_NOFOLLOW),
              "lchown", path);
      }
      return;
    }
    // Whiteouts hide lower layers only: what this layer itself put there stays.
    if (unpacked_.count(path)) return;
    UniqueFd dir(open_in_root(root_, join(parent), O_PATH | O_DIRECTORY));
    if (!dir) {
      if (errno == ENOENT || errno == ENOTDIR) return;
      throw_errno("opening parent directory", join(parent));
    }
    remove_at(dir.get(), target, path);
  }

  void opaque(const std::vector<std::string>& parent) {
    std::string path = join(parent);
    int dir = parent_dir(parent);
    UniqueFd fd(check(::openat(dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC), "open", path.empty() ? "." : path));
    if (options_.whiteouts == WhiteoutMode::overlay) {
      check(::fsetxattr(fd.get(), kOpaqueXattr, "y", 1, 0), std::string("setting ") + kOpaqueXattr + " on",
            path.empty() ? "." : path);
      return;
    }
    std::string prefix = path.empty() ? "" : path + "/";
    remove_children(fd.get(), [&](const std::string& name) { return !unpacked_.count(prefix + name); }, path);
  }

  int root_;
  const ExtractOptions& options_;
  LayerReader& reader_;
  std::string name_;
  std::vector<std::string> parts_;
  UniqueFd parent_fd_;
  std::string parent_path_;
  // By path: a layer that names one directory a million times keeps one entry (the last, as
  // Docker applies them).
  std::map<std::string, std::array<struct timespec, 2>> dir_times_;
  std::unordered_set<std::string> unpacked_;
};

}  // namespace

ExtractResult extract_layer(int blob_fd, int root_fd, const ExtractOptions& options) {
  LayerReader reader(blob_fd, layer_prefix(options), options.canceled);
  Extractor extractor(root_fd, options, reader);
  reader.open();
  while (archive_entry* entry = reader.next()) extractor.apply(entry);
  extractor.finish();
  reader.drain();
  ExtractResult result = reader.result();
  if (options.expected_diff_id && *options.expected_diff_id != result.diff_id) {
    throw Error(ErrorKind::user, extractor.prefix() + "content does not match: expected diff_id " +
                                     options.expected_diff_id->str() + ", got " + result.diff_id.str());
  }
  return result;
}

}  // namespace kbuild::image
