#include "engine/image/layer_tar.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/syscall.h"
#include "engine/image/go_tar.h"
#include "engine/image/oci.h"
#include "engine/image/pipelined_sink.h"

namespace kbuild::image {
namespace {

constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr std::string_view kOpaqueWhiteout = ".wh..wh..opq";
constexpr size_t kCopyBuffer = 1 << 20;  // zlib output

// The uncompressed tar goes in; diff_id is hashed, the blob is compressed (or not), hashed and
// handed to the sink.
class LayerStream : public ByteSink {
 public:
  LayerStream(ByteSink& out, const LayerOptions& options) : out_(out), compression_(options.compression) {
    if (compression_ == Compression::zstd) {
      throw Error(ErrorKind::user, "writing zstd-compressed layers is not supported; use gzip");
    }
    if (compression_ == Compression::gzip) {
      int level = options.gzip_level < 0 ? Z_DEFAULT_COMPRESSION : options.gzip_level;
      // windowBits 15 + 16: a gzip wrapper. The header Go's compress/gzip writes: no name, mtime
      // 0, OS 255 (unknown).
      if (deflateInit2(&z_, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        throw Error(ErrorKind::internal, "gzip: cannot initialize zlib");
      }
      deflating_ = true;
      header_.os = 255;
      deflateSetHeader(&z_, &header_);
      buffer_.resize(kCopyBuffer);
    }
  }
  ~LayerStream() {
    if (deflating_) deflateEnd(&z_);
  }
  LayerStream(const LayerStream&) = delete;
  LayerStream& operator=(const LayerStream&) = delete;

  void write(const void* data, size_t size) override {
    diff_.update(data, size);
    tar_size_ += size;
    if (compression_ == Compression::none) {
      emit(data, size);
    } else {
      deflate_some(data, size, Z_NO_FLUSH);
    }
  }

  LayerDigests finish() {
    if (compression_ == Compression::gzip) deflate_some(nullptr, 0, Z_FINISH);
    LayerDigests digests;
    digests.diff_id = diff_.finish();
    digests.tar_size = tar_size_;
    digests.blob_digest = compression_ == Compression::none ? digests.diff_id : blob_.finish();
    digests.blob_size = blob_size_;
    return digests;
  }

 private:
  void emit(const void* data, size_t size) {
    if (size == 0) return;
    // Uncompressed, the blob is the tar: its digest is diff_id, hashed once.
    if (compression_ != Compression::none) blob_.update(data, size);
    blob_size_ += size;
    out_.write(data, size);
  }

  void deflate_some(const void* data, size_t size, int flush) {
    z_.next_in = static_cast<Bytef*>(const_cast<void*>(data));
    z_.avail_in = static_cast<uInt>(size);
    for (;;) {
      z_.next_out = reinterpret_cast<Bytef*>(buffer_.data());
      z_.avail_out = static_cast<uInt>(buffer_.size());
      int rc = deflate(&z_, flush);
      if (rc == Z_STREAM_ERROR) throw Error(ErrorKind::internal, "gzip: deflate failed");
      emit(buffer_.data(), buffer_.size() - z_.avail_out);
      if (flush == Z_FINISH ? rc == Z_STREAM_END : (z_.avail_in == 0 && z_.avail_out != 0)) return;
    }
  }

  ByteSink& out_;
  Compression compression_;
  store::Sha256 diff_;
  store::Sha256 blob_;
  uint64_t tar_size_ = 0;
  uint64_t blob_size_ = 0;
  z_stream z_{};
  gz_header header_{};
  bool deflating_ = false;
  std::vector<char> buffer_;
};

// Walks the upper dir in Go's filepath.Walk order and writes each entry as containerd's
// ChangeWriter writes it.
class LayerWriter {
 public:
  LayerWriter(PipelinedSink& out, const LayerOptions& options) : out_(out), tar_(out), options_(options) {}

  void write_tree(int dir_fd) {
    walk(dir_fd, "");
    tar_.close();
  }

 private:
  struct Link {
    std::string name;
    std::string capability;
  };

  static std::vector<std::string> sorted_names(int dir_fd, std::string_view path) {
    int fd = check(::openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC), "open", path);
    DIR* dir = ::fdopendir(fd);
    if (!dir) {
      int error = errno;
      ::close(fd);
      throw_errno("fdopendir", path, error);
    }
    std::vector<std::string> names;
    errno = 0;
    while (struct dirent* d = ::readdir(dir)) {
      std::string_view name = d->d_name;
      if (name != "." && name != "..") names.emplace_back(name);
      errno = 0;
    }
    int error = errno;
    ::closedir(dir);
    if (error) throw_errno("readdir", path, error);
    // Go's filepath.Walk order: byte-wise sorted names, each directory before its contents.
    std::sort(names.begin(), names.end());
    return names;
  }

  static std::string get_xattr(int fd, const char* name, std::string_view path) {
    char buffer[4096];
    ssize_t n = ::fgetxattr(fd, name, buffer, sizeof buffer);
    if (n < 0) {
      if (errno == ENODATA || errno == ENOTSUP || errno == EOPNOTSUPP) return {};
      throw_errno("fgetxattr", path);
    }
    return std::string(buffer, static_cast<size_t>(n));
  }

  // tar.FileInfoHeader without user and group names, mtime clamped and truncated.
  TarHeader header_for(const std::string& name, const struct stat& st, TarHeader::Type type) const {
    TarHeader h;
    h.name = name;
    h.type = type;
    h.mode = st.st_mode & 07777;
    h.uid = st.st_uid;
    h.gid = st.st_gid;
    h.mtime = st.st_mtim.tv_sec;
    // containerd clamps before truncating: a time within the epoch's second clamps to it.
    if (options_.source_date_epoch && h.mtime >= *options_.source_date_epoch) h.mtime = *options_.source_date_epoch;
    return h;
  }

  // An empty regular file: whiteouts (".wh.<name>", ".wh..wh..opq").
  void write_marker(const std::string& name, int64_t mode, uid_t uid, gid_t gid) {
    TarHeader h;
    h.name = name;
    h.mode = mode;
    h.uid = uid;
    h.gid = gid;
    // containerd 2 writes whiteouts with the zero time, whatever SOURCE_DATE_EPOCH says.
    h.mtime = 0;
    tar_.write_header(h);
  }

  void walk(int dir_fd, const std::string& prefix) {
    for (const std::string& name : sorted_names(dir_fd, prefix.empty() ? "." : prefix)) {
      std::string path = prefix + name;
      struct stat st {};
      check(::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW), "stat", path);
      switch (st.st_mode & S_IFMT) {
        case S_IFDIR:
          write_directory(dir_fd, name, path, st);
          break;
        case S_IFREG:
          write_file(dir_fd, name, path, st);
          break;
        case S_IFLNK:
          write_symlink(dir_fd, name, path, st);
          break;
        case S_IFCHR:
          if (major(st.st_rdev) == 0 && minor(st.st_rdev) == 0) {
            // An overlayfs whiteout.
            write_marker(prefix + std::string(kWhiteoutPrefix) + name, 0, 0, 0);
            break;
          }
          [[fallthrough]];
        case S_IFBLK: {
          TarHeader h = header_for(path, st, S_ISCHR(st.st_mode) ? TarHeader::char_device : TarHeader::block_device);
          h.devmajor = major(st.st_rdev);
          h.devminor = minor(st.st_rdev);
          tar_.write_header(h);
          break;
        }
        case S_IFIFO:
          tar_.write_header(header_for(path, st, TarHeader::fifo));
          break;
        default:
          break;  // sockets are not part of a layer
      }
    }
  }

  void write_directory(int dir_fd, const std::string& name, const std::string& path, const struct stat& st) {
    UniqueFd fd(check(::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC), "open", path));
    std::string dir_name = path + "/";
    refuse_overlay_feature(fd.get(), "trusted.overlay.redirect", path);
    tar_.write_header(header_for(dir_name, st, TarHeader::directory));
    if (get_xattr(fd.get(), "trusted.overlay.opaque", path) == "y" ||
        get_xattr(fd.get(), "user.overlay.opaque", path) == "y") {
      // Docker's overlay2 writes the opaque marker right after its directory, with its owner and
      // permissions.
      write_marker(dir_name + std::string(kOpaqueWhiteout), st.st_mode & 0777, st.st_uid, st.st_gid);
    }
    walk(fd.get(), dir_name);
  }

  void write_symlink(int dir_fd, const std::string& name, const std::string& path, const struct stat& st) {
    std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
    for (;;) {
      ssize_t n = check(::readlinkat(dir_fd, name.c_str(), target.data(), target.size()), "readlink", path);
      if (static_cast<size_t>(n) < target.size()) {
        target.resize(static_cast<size_t>(n));
        break;
      }
      target.resize(target.size() * 2);
    }
    TarHeader h = header_for(path, st, TarHeader::symlink);
    h.linkname = target;
    tar_.write_header(h);
  }

  void write_file(int dir_fd, const std::string& name, const std::string& path, const struct stat& st) {
    UniqueFd fd = open_file(dir_fd, name, path);
    bool linked = st.st_nlink > 1;
    TarHeader h = header_for(path, st, TarHeader::regular);
    if (linked) {
      auto it = links_.find({st.st_dev, st.st_ino});
      if (it != links_.end()) {
        // Later names of an inode are hardlinks to the first one written, as containerd writes them
        // (with the capability, which containerd reads for every name).
        h.type = TarHeader::hardlink;
        h.linkname = it->second.name;
        add_capability(h, it->second.capability);
        tar_.write_header(h);
        return;
      }
    }
    refuse_overlay_feature(fd.get(), "trusted.overlay.metacopy", path);
    std::string capability = get_xattr(fd.get(), "security.capability", path);
    if (linked) links_[{st.st_dev, st.st_ino}] = Link{path, capability};
    h.size = st.st_size;
    add_capability(h, capability);
    tar_.write_header(h);
    copy_data(fd.get(), path, static_cast<uint64_t>(st.st_size));
  }

  // An upper dir made with overlayfs' metacopy or redirect_dir features holds references to
  // lower layers instead of content: its tar would be wrong, so it is refused.
  static void refuse_overlay_feature(int fd, const char* xattr, const std::string& path) {
    if (::fgetxattr(fd, xattr, nullptr, 0) >= 0) {
      throw Error(ErrorKind::internal, "writing layer: " + path + " has " + xattr +
                                           "; snapshots must be mounted with metacopy=off,redirect_dir=off");
    }
  }

  static void add_capability(TarHeader& h, const std::string& capability) {
    if (!capability.empty()) h.pax_records.emplace_back("SCHILY.xattr.security.capability", capability);
  }

  // O_NOATIME: reading a snapshot must not dirty its inodes (relatime would, once per file
  // whose ctime moved when it was hard-linked into the snapshot).
  static UniqueFd open_file(int dir_fd, const std::string& name, const std::string& path) {
    constexpr int kFlags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC;
    UniqueFd fd(::openat(dir_fd, name.c_str(), kFlags | O_NOATIME));
    if (!fd && errno == EPERM) fd.reset(::openat(dir_fd, name.c_str(), kFlags));
    if (!fd) throw_errno("open", path);
    return fd;
  }

  // Reads straight into the pipeline's buffer; a file longer than its stat said is cut short
  // there and reported, one shorter is reported.
  void copy_data(int fd, const std::string& path, uint64_t size) {
    uint64_t copied = 0;
    bool grew = false;
    while (copied < size) {
      std::span<char> room = out_.space();
      const size_t want = static_cast<size_t>(std::min<uint64_t>(room.size(), size - copied));
      const size_t n = read_some(fd, room.data(), want, path);
      if (n == 0) break;
      out_.commit(n);
      tar_.wrote(n);
      copied += n;
    }
    if (copied == size) {
      char probe;
      grew = read_some(fd, &probe, 1, path) != 0;
    }
    if (copied != size || grew) {
      throw Error(ErrorKind::internal, "writing layer: " + path + " changed while it was read");
    }
  }

  PipelinedSink& out_;
  GoTarWriter tar_;
  const LayerOptions& options_;
  std::map<std::pair<dev_t, ino_t>, Link> links_;
};

}  // namespace

std::string layer_media_type(Compression compression, bool oci) {
  switch (compression) {
    case Compression::none:
      return std::string(oci ? media_type::oci_layer : media_type::docker_layer);
    case Compression::gzip:
      return std::string(oci ? media_type::oci_layer_gzip : media_type::docker_layer_gzip);
    case Compression::zstd:
      return std::string(media_type::oci_layer_zstd);  // BuildKit uses the OCI type for zstd either way
  }
  return {};
}

LayerDigests write_layer(int dir_fd, ByteSink& out, const LayerOptions& options) {
  LayerStream stream(out, options);
  // The walk (syscalls, page-cache copies) on this thread, hashing and compressing on another.
  PipelinedSink pipeline(stream);
  LayerWriter writer(pipeline, options);
  writer.write_tree(dir_fd);
  pipeline.finish();
  return stream.finish();
}

}  // namespace kbuild::image
