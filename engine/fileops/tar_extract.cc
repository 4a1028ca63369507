// ADD's archive handling, mirroring moby/go-archive: compression.DecompressStream and
// tar.Reader.Next for detection (solver/llbsolver/file/unpack.go's isArchivePath), and
// chrootarchive.Untar -> archive.Unpack / createTarFile for extraction. libarchive reads the
// stream; every path is resolved by us inside the destination, which plays the chroot's "/".
#include "engine/fileops/tar_extract.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/go_path.h"
#include "common/layer_xattrs.h"
#include "common/syscall.h"
#include "engine/fileops/root_path.h"

namespace kbuild::fileops {
namespace {

constexpr std::size_t kBlock = 512;

struct ArchiveCloser {
  void operator()(struct archive* a) const { archive_read_free(a); }
};
using ArchivePtr = std::unique_ptr<struct archive, ArchiveCloser>;

// compression.Detect: bzip2, gzip, xz, then zstd (including skippable frames).
Compression detect_compression(const unsigned char* b, std::size_t n) {
  const auto has = [&](std::initializer_list<unsigned char> magic) {
    if (n < magic.size()) return false;
    return std::equal(magic.begin(), magic.end(), b);
  };
  if (has({0x42, 0x5A, 0x68})) return Compression::bzip2;
  if (has({0x1F, 0x8B, 0x08})) return Compression::gzip;
  if (has({0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00})) return Compression::xz;
  if (has({0x28, 0xB5, 0x2F, 0xFD})) return Compression::zstd;
  if (n >= 8) {
    const uint32_t magic = uint32_t(b[0]) | (uint32_t(b[1]) << 8) | (uint32_t(b[2]) << 16) | (uint32_t(b[3]) << 24);
    if ((magic & 0xFFFFFFF0u) == 0x184D2A50u) return Compression::zstd;
  }
  return Compression::none;
}

void add_filter(struct archive* a, Compression compression) {
  switch (compression) {
    case Compression::none: break;
    case Compression::gzip: archive_read_support_filter_gzip(a); break;
    case Compression::bzip2: archive_read_support_filter_bzip2(a); break;
    case Compression::xz: archive_read_support_filter_xz(a); break;
    case Compression::zstd: archive_read_support_filter_zstd(a); break;
  }
}

ssize_t pread_full(int fd, unsigned char* buffer, std::size_t size, off_t offset) {
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = ::pread(fd, buffer + done, size - done, offset + static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (n == 0) break;
    done += static_cast<std::size_t>(n);
  }
  return static_cast<ssize_t>(done);
}

// The first `want` bytes of the decompressed stream; fewer at its end, nullopt if it is broken.
std::optional<std::vector<unsigned char>> decompressed_prefix(int fd, Compression compression, std::size_t want) {
  std::vector<unsigned char> out(want);
  if (compression == Compression::none) {
    const ssize_t n = pread_full(fd, out.data(), want, 0);
    if (n < 0) return std::nullopt;
    out.resize(static_cast<std::size_t>(n));
    return out;
  }
  if (::lseek(fd, 0, SEEK_SET) < 0) return std::nullopt;
  ArchivePtr a(archive_read_new());
  if (!a) return std::nullopt;
  add_filter(a.get(), compression);
  archive_read_support_format_raw(a.get());
  if (archive_read_open_fd(a.get(), fd, 64 * 1024) != ARCHIVE_OK) return std::nullopt;
  struct archive_entry* entry = nullptr;
  if (archive_read_next_header(a.get(), &entry) != ARCHIVE_OK) return std::nullopt;
  std::size_t done = 0;
  while (done < want) {
    const la_ssize_t n = archive_read_data(a.get(), out.data() + done, want - done);
    if (n < 0) return std::nullopt;
    if (n == 0) break;
    done += static_cast<std::size_t>(n);
  }
  out.resize(done);
  return out;
}

// Go's archive/tar parser for one header block.
struct FieldParser {
  bool failed = false;

  // parseString: up to the first NUL.
  static std::string_view string(const unsigned char* b, std::size_t n) {
    const auto* end = static_cast<const unsigned char*>(std::memchr(b, 0, n));
    return std::string_view(reinterpret_cast<const char*>(b), end ? static_cast<std::size_t>(end - b) : n);
  }

  int64_t octal(const unsigned char* b, std::size_t n) {
    std::size_t start = 0, end = n;
    while (start < end && (b[start] == ' ' || b[start] == 0)) ++start;
    while (end > start && (b[end - 1] == ' ' || b[end - 1] == 0)) --end;
    if (start == end) return 0;
    const std::string_view text = string(b + start, end - start);
    if (text.empty()) {
      failed = true;
      return 0;
    }
    uint64_t value = 0;
    for (const char c : text) {
      if (c < '0' || c > '7' || value > (UINT64_MAX >> 3)) {
        failed = true;
        return 0;
      }
      value = value * 8 + static_cast<uint64_t>(c - '0');
    }
    return static_cast<int64_t>(value);
  }

  // parseNumeric: base-256 when the high bit is set, else octal.
  int64_t numeric(const unsigned char* b, std::size_t n) {
    if (n > 0 && (b[0] & 0x80) != 0) {
      const unsigned char inv = (b[0] & 0x40) != 0 ? 0xFF : 0x00;
      uint64_t x = 0;
      for (std::size_t i = 0; i < n; ++i) {
        unsigned char c = static_cast<unsigned char>(b[i] ^ inv);
        if (i == 0) c &= 0x7F;
        if ((x >> 56) > 0) {
          failed = true;
          return 0;
        }
        x = (x << 8) | c;
      }
      if ((x >> 63) > 0) {
        failed = true;
        return 0;
      }
      return inv == 0xFF ? ~static_cast<int64_t>(x) : static_cast<int64_t>(x);
    }
    return octal(b, n);
  }
};

// tar.Reader.readHeader plus the checks Next makes before returning the first entry.
bool first_header_is_valid(const std::vector<unsigned char>& data) {
  if (data.size() < kBlock) return false;
  const unsigned char* b = data.data();
  if (std::all_of(b, b + kBlock, [](unsigned char c) { return c == 0; })) {
    return false;  // end of archive (two zero blocks), or a zero block then garbage: no entry
  }
  FieldParser p;
  const int64_t recorded = p.octal(b + 148, 8);
  int64_t unsigned_sum = 0, signed_sum = 0;
  for (std::size_t i = 0; i < kBlock; ++i) {
    const unsigned char c = (i >= 148 && i < 156) ? ' ' : b[i];
    unsigned_sum += c;
    signed_sum += static_cast<signed char>(c);
  }
  if (p.failed || (recorded != unsigned_sum && recorded != signed_sum)) return false;

  const std::string_view magic(reinterpret_cast<const char*>(b + 257), 6);
  const std::string_view version(reinterpret_cast<const char*>(b + 263), 2);
  const std::string_view trailer(reinterpret_cast<const char*>(b + 508), 4);
  const bool ustar = magic == std::string_view("ustar\0", 6);
  const bool star = ustar && trailer == std::string_view("tar\0", 4);
  const bool gnu = magic == "ustar " && version == std::string_view(" \0", 2);

  const char type = static_cast<char>(b[156]);
  p.numeric(b + 100, 8);                 // mode
  p.numeric(b + 108, 8);                 // uid
  p.numeric(b + 116, 8);                 // gid
  const int64_t size = p.numeric(b + 124, 12);
  p.numeric(b + 136, 12);                // mtime
  if (ustar || gnu) {
    p.numeric(b + 329, 8);               // devmajor
    p.numeric(b + 337, 8);               // devminor
  }
  if (star) {
    p.numeric(b + 476, 12);              // atime
    p.numeric(b + 488, 12);              // ctime
  }
  if (p.failed) return false;
  // handleRegularFile: header-only types carry no data; others must not have a negative size.
  const bool header_only = type == '1' || type == '2' || type == '3' || type == '4' || type == '5' || type == '6';
  return header_only || size >= 0;
}

// ---------------------------------------------------------------------------------------------
// Extraction.

struct Timespec2 {
  struct timespec atime;
  struct timespec mtime;
};

// boundTime: a time before the epoch or after Go's largest UnixNano becomes the epoch.
struct timespec bound_time(int64_t sec, long nsec) {
  constexpr int64_t kMaxSec = 9223372036;  // time.Unix(0, math.MaxInt64)
  if (sec < 0 || sec > kMaxSec || (sec == kMaxSec && nsec > 854775807)) return {0, 0};
  return {static_cast<time_t>(sec), nsec};
}

Timespec2 entry_times(struct archive_entry* entry) {
  const int64_t msec = archive_entry_mtime(entry);
  const long mnsec = archive_entry_mtime_nsec(entry);
  int64_t asec = msec;
  long ansec = mnsec;
  // latestTime(AccessTime, ModTime): an archive's atime only counts when it is later.
  if (archive_entry_atime_is_set(entry)) {
    const int64_t s = archive_entry_atime(entry);
    const long ns = archive_entry_atime_nsec(entry);
    if (s > msec || (s == msec && ns > mnsec)) {
      asec = s;
      ansec = ns;
    }
  }
  return {bound_time(asec, ansec), bound_time(msec, mnsec)};
}

class Extractor {
 public:
  Extractor(struct archive* a, int root_fd, const std::optional<Owner>& owner, CopyStats& stats)
      : archive_(a), root_(root_fd), owner_(owner), stats_(stats) {}

  void run() {
    struct archive_entry* entry = nullptr;
    for (;;) {
      const int r = archive_read_next_header(archive_, &entry);
      if (r == ARCHIVE_EOF) break;
      // ARCHIVE_RETRY (a damaged header libarchive would skip) is an error, as in Go's reader.
      if (r != ARCHIVE_OK && r != ARCHIVE_WARN) fail();
      extract(entry);
    }
    // Directory times last, so files created inside them do not change them.
    for (const auto& [path, times] : dirs_) {
      const RootedPath resolved = resolve_in_root(root_, path, true);
      if (!resolved.exists()) throw_path_error("chtimes", path, ENOENT);
      const Parent parent = open_parent(resolved.parts);
      const struct timespec ts[2] = {times.atime, times.mtime};
      check_path(::utimensat(parent.fd, parent.name.c_str(), ts, 0), "chtimes", path);
    }
  }

 private:
  struct Parent {
    int fd;
    std::string name;
    UniqueFd owned;
  };

  [[noreturn]] void fail() const {
    const char* why = archive_error_string(archive_);
    throw Error(ErrorKind::user, std::string("extracting archive: ") + (why ? why : "unknown error"));
  }

  Parent open_parent(const std::vector<std::string>& parts) {
    Parent out;
    if (parts.empty()) {
      out.owned = open_dir_parts(root_, parts, 0);
      out.fd = out.owned.get();
      out.name = ".";
      return out;
    }
    out.owned = open_dir_parts(root_, parts, parts.size() - 1);
    out.fd = out.owned.get();
    out.name = parts.back();
    return out;
  }

  // The directory that holds an entry, its parents resolved inside the root (the chroot's
  // kernel would follow symlinks there too). One directory is remembered between entries,
  // since archives list a directory's files together; a removal forgets it.
  int entry_dir(const std::vector<std::string>& parent_parts, const std::string& shown) {
    if (cached_dir_ && cached_parts_ == parent_parts) return cached_dir_.get();
    const RootedPath resolved = resolve_in_root(root_, join_parts(parent_parts), true);
    if (!resolved.exists()) throw_path_error("open", shown, ENOENT);
    cached_dir_ = open_dir_parts(root_, resolved.parts, resolved.parts.size());
    cached_parts_ = parent_parts;
    return cached_dir_.get();
  }

  // createImpliedDirectories: missing parents are made 0755 and owned by root, whatever --chown.
  void make_implied_dirs(const std::vector<std::string>& parent_parts) {
    if (parent_parts.empty()) return;
    if (cached_dir_ && cached_parts_ == parent_parts) return;
    const std::string parent = join_parts(parent_parts);
    if (resolve_in_root(root_, parent, false).exists()) return;
    const RootedPath resolved = resolve_in_root(root_, parent, true);
    const MadeDirs made = make_dirs(root_, resolved, resolved.parts.size(), 0755, Owner{});
    stats_.directories += made.created;
  }

  void extract(struct archive_entry* entry) {
    const char* raw_name = archive_entry_pathname(entry);
    if (!raw_name) throw Error(ErrorKind::user, "extracting archive: an entry has no readable name");
    // hdr.Name = filepath.Clean(hdr.Name); the path is Join("/", name) inside the chroot.
    const std::string name = go_clean_path(raw_name);
    const std::vector<std::string> parts = split_path(go_clean_path("/" + name));
    const std::string shown = join_parts(parts);
    const char* hardlink = archive_entry_hardlink(entry);
    const mode_t type = archive_entry_filetype(entry);
    const bool is_dir = !hardlink && type == AE_IFDIR;

    if (parts.empty()) {
      // Unpack skips "." (it exists as a directory); "/" or "../" naming a directory re-applies
      // the entry's metadata to the root, as archive.Unpack does.
      if (name == ".") return;
      if (!is_dir) {
        throw Error(ErrorKind::user, "extracting archive: cannot replace the destination directory with \"" +
                                         std::string(raw_name) + "\"");
      }
      UniqueFd root_dir = open_dir_parts(root_, parts, 0);
      apply_metadata(entry, root_dir.get(), ".", shown, type, hardlink);
      dirs_.emplace_back(shown, entry_times(entry));
      return;
    }

    const std::vector<std::string> parent_parts(parts.begin(), parts.end() - 1);
    make_implied_dirs(parent_parts);
    const int dir = entry_dir(parent_parts, shown);
    UniqueFd holder;  // keeps `dir` open once the remembered directory is forgotten
    const std::string& leaf = parts.back();

    // Replace what is there, except a directory that meets a directory: they merge.
    const auto existing = lstat_at(dir, leaf, shown);
    const bool merge = existing && S_ISDIR(existing->st_mode) && is_dir;
    if (existing && !merge) {
      remove_all_at(dir, leaf, shown);
      // What was removed may have been on the remembered path.
      holder = std::move(cached_dir_);
      cached_parts_.clear();
    }
    if (!merge) create(entry, dir, leaf, shown, type, hardlink);
    apply_metadata(entry, dir, leaf, shown, type, hardlink);
    if (is_dir) dirs_.emplace_back(shown, entry_times(entry));
  }

  void create(struct archive_entry* entry, int dir, const std::string& leaf, const std::string& shown,
              mode_t type, const char* hardlink) {
    const mode_t perm = archive_entry_perm(entry) & 07777;
    if (hardlink) {
      // The target is resolved inside the root like any path; link(2) does not follow a final
      // symlink, and a directory target fails.
      const std::string target_shown = join_parts(split_path(go_clean_path(std::string("/") + hardlink)));
      const RootedPath target = resolve_in_root(root_, target_shown, false);
      if (!target.exists() || target.parts.empty()) {
        throw_path_error("link " + target_shown, shown, target.parts.empty() ? EPERM : ENOENT);
      }
      const Parent parent = open_parent(target.parts);
      if (::linkat(parent.fd, parent.name.c_str(), dir, leaf.c_str(), 0) != 0) {
        throw_path_error("link " + target_shown, shown);
      }
      ++stats_.hardlinks;
      return;
    }
    switch (type) {
      case AE_IFDIR:
        if (::mkdirat(dir, leaf.c_str(), perm) != 0 && errno != EEXIST) throw_path_error("mkdir", shown);
        ++stats_.directories;
        return;
      case AE_IFREG: write_file(entry, dir, leaf, shown, perm); return;
      case AE_IFLNK: {
        const char* target = archive_entry_symlink(entry);
        check_path(::symlinkat(target ? target : "", dir, leaf.c_str()), "symlink", shown);
        ++stats_.symlinks;
        return;
      }
      case AE_IFCHR:
      case AE_IFBLK:
      case AE_IFIFO: {
        const dev_t dev = type == AE_IFIFO ? 0 : makedev(archive_entry_rdevmajor(entry), archive_entry_rdevminor(entry));
        check_path(::mknodat(dir, leaf.c_str(), perm | type, dev), "mknod", shown);
        ++stats_.special;
        return;
      }
      default:
        throw Error(ErrorKind::user, "extracting archive: unhandled tar header type for " + shown);
    }
  }

  void write_file(struct archive_entry* entry, int dir, const std::string& leaf, const std::string& shown, mode_t perm) {
    UniqueFd file(::openat(dir, leaf.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, perm & 0777));
    if (!file) throw_path_error("open", shown);
    const void* block = nullptr;
    size_t size = 0;
    la_int64_t offset = 0;
    la_int64_t end = 0;
    for (;;) {
      const int r = archive_read_data_block(archive_, &block, &size, &offset);
      if (r == ARCHIVE_EOF) break;
      if (r != ARCHIVE_OK && r != ARCHIVE_WARN) fail();
      // Sparse archives hand out blocks at offsets: the gaps stay holes.
      std::size_t done = 0;
      while (done < size) {
        const ssize_t n = ::pwrite(file.get(), static_cast<const char*>(block) + done, size - done,
                                   static_cast<off_t>(offset) + static_cast<off_t>(done));
        if (n < 0) {
          if (errno == EINTR) continue;
          throw_path_error("write", shown);
        }
        done += static_cast<std::size_t>(n);
      }
      stats_.bytes += size;
      end = std::max<la_int64_t>(end, offset + static_cast<la_int64_t>(size));
    }
    if (archive_entry_size_is_set(entry) && archive_entry_size(entry) > end) {
      check_path(::ftruncate(file.get(), static_cast<off_t>(archive_entry_size(entry))), "truncate", shown);
    }
    ++stats_.files;
  }

  // createTarFile after the entry exists: Lchown, xattrs, chmod (not for symlinks, nor for a
  // hardlink to one), times.
  void apply_metadata(struct archive_entry* entry, int dir, const std::string& leaf, const std::string& shown,
                      mode_t type, const char* hardlink) {
    const uint32_t uid = owner_ ? owner_->uid : static_cast<uint32_t>(archive_entry_uid(entry));
    const uint32_t gid = owner_ ? owner_->gid : static_cast<uint32_t>(archive_entry_gid(entry));
    if (::fchownat(dir, leaf.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW) != 0) {
      const int error = errno;
      throw Error(error_kind_for_errno(error), "failed to Lchown \"" + shown + "\" for UID " + std::to_string(uid) +
                                                   ", GID " + std::to_string(gid) + ": " + go_errno_text(error));
    }
    apply_xattrs(entry, dir, leaf, shown);

    bool target_is_symlink = type == AE_IFLNK && !hardlink;
    if (hardlink) {
      const auto st = lstat_at(dir, leaf, shown);
      target_is_symlink = st && S_ISLNK(st->st_mode);
    }
    if (!target_is_symlink) {
      check_path(::fchmodat(dir, leaf.c_str(), archive_entry_perm(entry) & 07777, 0), "chmod", shown);
    }
    const Timespec2 times = entry_times(entry);
    const struct timespec ts[2] = {times.atime, times.mtime};
    if (type == AE_IFLNK && !hardlink) {
      check_path(::utimensat(dir, leaf.c_str(), ts, AT_SYMLINK_NOFOLLOW), "lchtimes", shown);
    } else if (!target_is_symlink) {
      check_path(::utimensat(dir, leaf.c_str(), ts, 0), "chtimes", shown);
    }
  }

  // SCHILY.xattr records that a layer may carry (never overlayfs' own); like
  // BestEffortXattrs, a file system that refuses them (ENOTSUP, EPERM) is not an error.
  void apply_xattrs(struct archive_entry* entry, int dir, const std::string& leaf, const std::string& shown) {
    if (archive_entry_xattr_reset(entry) == 0) return;
    const std::string path = "/proc/self/fd/" + std::to_string(dir) + "/" + leaf;
    const char* key = nullptr;
    const void* value = nullptr;
    size_t size = 0;
    while (archive_entry_xattr_next(entry, &key, &value, &size) == ARCHIVE_OK) {
      if (!key || !layer_may_carry_xattr(key)) continue;
      if (::lsetxattr(path.c_str(), key, value, size, 0) != 0) {
        if (errno == ENOTSUP || errno == EPERM) continue;
        throw_path_error(std::string("lsetxattr ") + key, shown);
      }
    }
  }

  struct archive* archive_;
  int root_;
  const std::optional<Owner>& owner_;
  CopyStats& stats_;
  std::vector<std::pair<std::string, Timespec2>> dirs_;
  UniqueFd cached_dir_;
  std::vector<std::string> cached_parts_;
};

}  // namespace

bool is_tar_archive(int fd, Compression* compression) {
  unsigned char magic[10];
  const ssize_t n = pread_full(fd, magic, sizeof(magic), 0);
  if (n < 0) return false;
  const Compression detected = detect_compression(magic, static_cast<std::size_t>(n));
  if (compression) *compression = detected;
  const auto prefix = decompressed_prefix(fd, detected, 2 * kBlock);
  return prefix && first_header_is_valid(*prefix);
}

void extract_tar(int fd, Compression compression, int dest_dir_fd, const std::optional<Owner>& owner,
                 CopyStats& stats) {
  check_path(::lseek(fd, 0, SEEK_SET), "seek", "archive");
  ArchivePtr a(archive_read_new());
  if (!a) throw Error(ErrorKind::internal, "archive_read_new failed");
  archive_read_support_format_tar(a.get());
  add_filter(a.get(), compression);
  if (archive_read_open_fd(a.get(), fd, 128 * 1024) != ARCHIVE_OK) {
    const char* why = archive_error_string(a.get());
    throw Error(ErrorKind::user, std::string("extracting archive: ") + (why ? why : "unknown error"));
  }
  Extractor(a.get(), dest_dir_fd, owner, stats).run();
  ++stats.archives;
}

}  // namespace kbuild::fileops
