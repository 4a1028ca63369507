#include "engine/image/layer_tar.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <deque>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "common/directory.h"
#include "common/syscall.h"
#include "engine/image/compressor.h"
#include "engine/image/go_tar.h"
#include "engine/image/oci.h"
#include "engine/image/pipelined_sink.h"

namespace kbuild::image {
namespace {

constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr std::string_view kOpaqueWhiteout = ".wh..wh..opq";


// The uncompressed tar goes in; diff_id is hashed, the blob is compressed (or not), hashed and
// handed to the sink.
class LayerStream : public ByteSink {
 public:
  LayerStream(ByteSink& out, const LayerOptions& options)
      : out_(out), blob_sink_(*this), hash_blob_(options.hash_blob) {
    if (options.compression != Compression::none) {
      CompressionConfig config{options.compression, options.level, options.compression_threads};
      compressor_ = make_compressor(blob_sink_, config);
    }
  }

  void write(const void* data, size_t size) override {
    diff_.update(data, size);
    tar_size_ += size;
    if (compressor_) {
      compressor_->write(data, size);
    } else {
      emit(data, size);
    }
  }

  // Goes on from the SHA-256 state after the first `offset` bytes of an uncompressed tar that
  // were not written here (an earlier layer's, the same up to there).
  void resume(const store::Sha256& state, uint64_t offset) {
    if (compressor_ || tar_size_ != 0) {
      throw Error(ErrorKind::internal, "layer tar: only a fresh uncompressed stream resumes");
    }
    diff_ = state.copy();
    tar_size_ = blob_size_ = offset;
  }
  store::Sha256 diff_state() const { return diff_.copy(); }

  LayerDigests finish() {
    if (compressor_) compressor_->finish();
    LayerDigests digests;
    digests.diff_id = diff_.finish();
    digests.tar_size = tar_size_;
    if (!compressor_) {
      digests.blob_digest = digests.diff_id;
    } else if (hash_blob_) {
      digests.blob_digest = blob_.finish();
    }
    digests.blob_size = blob_size_;
    return digests;
  }

 private:
  // What the compressor writes.
  class BlobSink : public ByteSink {
   public:
    explicit BlobSink(LayerStream& stream) : stream_(stream) {}
    void write(const void* data, size_t size) override { stream_.emit(data, size); }

   private:
    LayerStream& stream_;
  };

  void emit(const void* data, size_t size) {
    if (size == 0) return;
    // Uncompressed, the blob is the tar: its digest is diff_id, hashed once.
    if (compressor_ && hash_blob_) blob_.update(data, size);
    blob_size_ += size;
    out_.write(data, size);
  }

  ByteSink& out_;
  BlobSink blob_sink_;
  std::unique_ptr<Compressor> compressor_;
  store::Sha256 diff_;
  store::Sha256 blob_;
  const bool hash_blob_;
  uint64_t tar_size_ = 0;
  uint64_t blob_size_ = 0;
};

// Journal checkpoints come after at least kMinSegment tar bytes, or 1/1024 of the tar so far
// when that is more, up to kMaxSegment; a file at least that big ends a segment, so that hashing
// can skip it unread. A journal keeps few checkpoints (12,800 for a 100 GB layer), and catching
// up never holds more than two segments.
constexpr uint64_t kMinSegment = 64 << 10;
constexpr uint64_t kMaxSegment = 8 << 20;

// Where the walk's tar goes: into the pipeline (hashing, compressing), or — while hashing only
// and the tar so far is one an earlier journal saw — nowhere yet: just enough is kept to catch up
// from the last checkpoint they share once the two part ways. With a journal, it records the
// SHA-256 state at checkpoints and a digest of what the tar held up to each ("seen"), file
// contents standing in by inode, birth time, size and mtime.
class TarOutput : public ByteSink {
 public:
  TarOutput(LayerStream& stream, PipelinedSink& pipeline, const LayerJournals* earlier)
      : stream_(stream), pipeline_(pipeline), journaling_(earlier != nullptr) {
    if (earlier) {
      for (const auto& journal : *earlier) {
        if (journal && !journal->checkpoints.empty()) candidates_.push_back(journal.get());
      }
    }
    speculating_ = !candidates_.empty();
  }

  // Tar bytes other than file contents: headers, padding, the end.
  void write(const void* data, size_t size) override {
    if (journaling_) token('T', data, size);
    advance(size);
    if (speculating_) {
      pending_.append(static_cast<const char*>(data), size);
    } else {
      pipeline_.write(data, size);
    }
  }

  // After a regular file's header: true when its `st.st_size` bytes are to be read into space()
  // and commit(); false when an earlier journal covers them. A file stands for its content by
  // inode and birth time, which no later file can share even where inode numbers are reused
  // (tmpfs wraps them); without a birth time it is never recognised, nor anything after it.
  bool content_needed(const struct stat& st, const std::optional<struct timespec>& born) {
    if (!journaling_) return true;
    if (born) {
      const int64_t fields[] = {static_cast<int64_t>(st.st_dev), static_cast<int64_t>(st.st_ino), born->tv_sec,
                                born->tv_nsec, st.st_size, st.st_mtim.tv_sec, st.st_mtim.tv_nsec};
      token('F', fields, sizeof fields);
    } else {
      // Bytes no other hashing has: every checkpoint from here on is this tar's alone.
      if (!unrecognisable_) {
        unrecognisable_.emplace();
        if (::getrandom(unrecognisable_->data(), unrecognisable_->size(), 0) != 16) throw_errno("getrandom", "");
      }
      token('U', unrecognisable_->data(), unrecognisable_->size());
    }
    big_file_ = static_cast<uint64_t>(st.st_size) >= segment_limit();
    if (!speculating_ || !big_file_) return true;
    const uint64_t after = offset_ + static_cast<uint64_t>(st.st_size);
    if (!any_candidate_at(checkpoints_->size(), after, peek_seen())) {
      catch_up();
      return true;
    }
    advance(static_cast<uint64_t>(st.st_size));
    return false;
  }

  std::span<char> space() {
    if (!speculating_) return pipeline_.space();
    scratch_.resize(kMinSegment);
    return scratch_;
  }
  void commit(size_t size) {
    advance(size);
    if (speculating_) {
      pending_.append(scratch_.data(), size);
    } else {
      pipeline_.commit(size);
    }
  }

  // After each entry: a checkpoint when the segment is long enough, or held a big file.
  void entry_done() {
    if (!journaling_) return;
    if (big_file_ || segment_ >= segment_limit()) checkpoint();
    big_file_ = false;
  }

  // After the end of the tar: its digests, and the journal of this hashing (when journaling).
  LayerHash finish() {
    LayerHash result;
    if (journaling_) {
      token('E', "", 0);
      checkpoint();
    }
    if (speculating_) {
      // The whole tar is one an earlier journal saw.
      result.digests.diff_id = checkpoints_->back().state->copy().finish();
      result.digests.tar_size = result.digests.blob_size = offset_;
      result.digests.blob_digest = result.digests.diff_id;
    } else {
      pipeline_.finish();
      result.digests = stream_.finish();
    }
    if (journaling_) {
      auto journal = std::make_shared<LayerHashJournal>();
      journal->checkpoints.assign(checkpoints_->begin(), checkpoints_->end());
      result.journal = std::move(journal);
    }
    return result;
  }

 private:
  using Checkpoint = LayerHashJournal::Checkpoint;

  uint64_t segment_limit() const { return std::clamp(offset_ / 1024, kMinSegment, kMaxSegment); }

  void advance(uint64_t size) {
    offset_ += size;
    segment_ += size;
  }

  // Tokens are typed and sized, so that no two different tars read as the same stream.
  void token(char type, const void* data, size_t size) {
    const uint64_t length = size;
    identity_.update(&type, 1);
    identity_.update(&length, sizeof length);
    identity_.update(data, size);
  }

  store::Digest peek_seen() const { return identity_.copy().finish(); }

  bool any_candidate_at(size_t index, uint64_t offset, const store::Digest& seen) const {
    return std::any_of(candidates_.begin(), candidates_.end(), [&](const LayerHashJournal* j) {
      return index < j->checkpoints.size() && j->checkpoints[index].offset == offset && j->checkpoints[index].seen == seen;
    });
  }

  void checkpoint() {
    const store::Digest seen = identity_.finish();
    identity_ = store::Sha256();
    identity_.update(seen.str());
    segment_ = 0;
    const size_t index = checkpoints_->size();
    if (speculating_) {
      std::erase_if(candidates_, [&](const LayerHashJournal* j) {
        return index >= j->checkpoints.size() || j->checkpoints[index].offset != offset_ || j->checkpoints[index].seen != seen;
      });
      if (!candidates_.empty()) {
        checkpoints_->push_back(candidates_.front()->checkpoints[index]);
        pending_.clear();
        return;
      }
      catch_up();
    }
    checkpoints_->push_back(Checkpoint{offset_, seen, nullptr});
    // The state is the worker's to read, once it has hashed up to here. A deque's elements
    // stay where they are as it grows; the callback holds the deque, and the stream outlives
    // the pipeline, so a walk that throws leaves the worker nothing freed to write to.
    Checkpoint* slot = &checkpoints_->back();
    LayerStream& stream = stream_;
    pipeline_.mark([checkpoints = checkpoints_, slot, &stream] {
      slot->state = std::make_shared<const store::Sha256>(stream.diff_state());
    });
  }

  // The tar parts from the earlier ones: hashing goes on from the last shared checkpoint, with
  // the bytes kept since.
  void catch_up() {
    speculating_ = false;
    candidates_.clear();
    uint64_t from = 0;
    if (!checkpoints_->empty()) {
      from = checkpoints_->back().offset;
      stream_.resume(*checkpoints_->back().state, from);
    }
    // Nothing since the last shared checkpoint was skipped: a big file is skipped only when the
    // checkpoint right after it is shared.
    if (from + pending_.size() != offset_) throw Error(ErrorKind::internal, "layer tar: journal out of step");
    pipeline_.write(pending_.data(), pending_.size());
    pending_ = std::string();
    scratch_ = std::vector<char>();
  }

  LayerStream& stream_;
  PipelinedSink& pipeline_;
  const bool journaling_;
  bool speculating_ = false;
  std::vector<const LayerHashJournal*> candidates_;  // journals that saw this tar so far
  std::shared_ptr<std::deque<Checkpoint>> checkpoints_ = std::make_shared<std::deque<Checkpoint>>();
  store::Sha256 identity_;
  uint64_t offset_ = 0;   // tar bytes so far, skipped ones included
  uint64_t segment_ = 0;  // since the last checkpoint
  bool big_file_ = false;
  std::string pending_;   // tar bytes since the last shared checkpoint, while speculating
  std::vector<char> scratch_;
  std::optional<std::array<unsigned char, 16>> unrecognisable_;
};

// Walks the upper dir in Go's filepath.Walk order and writes each entry as containerd's
// ChangeWriter writes it.
class LayerWriter {
 public:
  LayerWriter(TarOutput& out, const LayerOptions& options) : out_(out), tar_(out), options_(options) {}

  void write_tree(int dir_fd) {
    walk(dir_fd, "");
    tar_.close();
  }

 private:
  struct Link {
    std::string name;
    std::string capability;
  };


  // The names of a file's extended attributes: one call tells that most files have none, where
  // asking for each attribute the tar needs would take one call each.
  class XattrNames {
   public:
    XattrNames(int fd, std::string_view path) {
      char buffer[1024];
      ssize_t n = ::flistxattr(fd, buffer, sizeof buffer);
      if (n >= 0) {
        names_.assign(buffer, static_cast<size_t>(n));
        return;
      }
      if (errno == ENOTSUP || errno == EOPNOTSUPP) return;
      if (errno != ERANGE) throw_errno("flistxattr", path);
      for (;;) {
        n = check(::flistxattr(fd, nullptr, 0), "flistxattr", path);
        names_.resize(static_cast<size_t>(n));
        n = ::flistxattr(fd, names_.data(), names_.size());
        if (n >= 0) break;
        if (errno != ERANGE) throw_errno("flistxattr", path);
      }
      names_.resize(static_cast<size_t>(n));
    }
    bool has(std::string_view name) const {
      for (size_t at = 0; at < names_.size();) {
        size_t end = names_.find('\0', at);
        if (end == std::string::npos) end = names_.size();
        if (std::string_view(names_).substr(at, end - at) == name) return true;
        at = end + 1;
      }
      return false;
    }

   private:
    std::string names_;  // NUL-separated
  };

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

  // lstat, and the birth time where the file system keeps one (statx gives both in one call).
  static std::optional<struct timespec> stat_entry(int dir_fd, const std::string& name, const std::string& path,
                                                   struct stat& st) {
    struct statx x {};
    check(::statx(dir_fd, name.c_str(), AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS | STATX_BTIME, &x), "stat", path);
    if ((x.stx_mask & STATX_BASIC_STATS) != STATX_BASIC_STATS) {
      throw Error(ErrorKind::internal, "writing layer: " + path + ": the file system gave no full stat");
    }
    auto time = [](const struct statx_timestamp& t) { return timespec{t.tv_sec, static_cast<long>(t.tv_nsec)}; };
    st = {};
    st.st_dev = makedev(x.stx_dev_major, x.stx_dev_minor);
    st.st_ino = x.stx_ino;
    st.st_mode = x.stx_mode;
    st.st_nlink = x.stx_nlink;
    st.st_uid = x.stx_uid;
    st.st_gid = x.stx_gid;
    st.st_rdev = makedev(x.stx_rdev_major, x.stx_rdev_minor);
    st.st_size = static_cast<off_t>(x.stx_size);
    st.st_blksize = x.stx_blksize;
    st.st_blocks = static_cast<blkcnt_t>(x.stx_blocks);
    st.st_atim = time(x.stx_atime);
    st.st_mtim = time(x.stx_mtime);
    st.st_ctim = time(x.stx_ctime);
    if (!(x.stx_mask & STATX_BTIME)) return std::nullopt;
    return time(x.stx_btime);
  }

  void walk(int dir_fd, const std::string& prefix) {
    // Go's filepath.Walk order: byte-wise sorted names, each directory before its contents.
    for (const DirEntry& entry : list_directory(dir_fd, prefix.empty() ? "." : prefix)) {
      const std::string& name = entry.name;
      std::string path = prefix + name;
      struct stat st {};
      const std::optional<struct timespec> born = stat_entry(dir_fd, name, path, st);
      switch (st.st_mode & S_IFMT) {
        case S_IFDIR:
          write_directory(dir_fd, name, path, st);
          break;
        case S_IFREG:
          write_file(dir_fd, name, path, st, born);
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
      out_.entry_done();
    }
  }

  void write_directory(int dir_fd, const std::string& name, const std::string& path, const struct stat& st) {
    UniqueFd fd(check(::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC), "open", path));
    std::string dir_name = path + "/";
    const XattrNames xattrs(fd.get(), path);
    refuse_overlay_feature(xattrs, "trusted.overlay.redirect", path);
    tar_.write_header(header_for(dir_name, st, TarHeader::directory));
    if ((xattrs.has("trusted.overlay.opaque") && get_xattr(fd.get(), "trusted.overlay.opaque", path) == "y") ||
        (xattrs.has("user.overlay.opaque") && get_xattr(fd.get(), "user.overlay.opaque", path) == "y")) {
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

  void write_file(int dir_fd, const std::string& name, const std::string& path, const struct stat& st,
                  const std::optional<struct timespec>& born) {
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
    const XattrNames xattrs(fd.get(), path);
    refuse_overlay_feature(xattrs, "trusted.overlay.metacopy", path);
    std::string capability =
        xattrs.has("security.capability") ? get_xattr(fd.get(), "security.capability", path) : std::string();
    if (linked) links_[{st.st_dev, st.st_ino}] = Link{path, capability};
    h.size = st.st_size;
    add_capability(h, capability);
    tar_.write_header(h);
    if (out_.content_needed(st, born)) {
      copy_data(fd.get(), path, static_cast<uint64_t>(st.st_size));
    } else {
      tar_.wrote(static_cast<size_t>(st.st_size));
    }
  }

  // An upper dir made with overlayfs' metacopy or redirect_dir features holds references to
  // lower layers instead of content: its tar would be wrong, so it is refused.
  static void refuse_overlay_feature(const XattrNames& xattrs, const char* xattr, const std::string& path) {
    if (xattrs.has(xattr)) {
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

  // Reads straight into the pipeline's buffer, as many bytes as stat said: snapshots do not
  // change once made. (One that did anyway would show when its blob is written and hashed
  // again, as the blob's bytes would not match the diff_id.)
  void copy_data(int fd, const std::string& path, uint64_t size) {
    uint64_t copied = 0;
    while (copied < size) {
      std::span<char> room = out_.space();
      const size_t want = static_cast<size_t>(std::min<uint64_t>(room.size(), size - copied));
      const size_t n = read_some(fd, room.data(), want, path);
      if (n == 0) break;
      out_.commit(n);
      tar_.wrote(n);
      copied += n;
    }
    if (copied != size) {
      throw Error(ErrorKind::internal, "writing layer: " + path + " changed while it was read");
    }
  }

  TarOutput& out_;
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
  TarOutput tar(stream, pipeline, nullptr);
  LayerWriter writer(tar, options);
  writer.write_tree(dir_fd);
  return tar.finish().digests;
}

LayerHash hash_layer(int dir_fd, std::optional<int64_t> source_date_epoch, const LayerJournals& earlier) {
  NullSink nowhere;
  LayerOptions options;
  options.compression = Compression::none;
  options.source_date_epoch = source_date_epoch;
  LayerStream stream(nowhere, options);
  PipelinedSink pipeline(stream);
  TarOutput tar(stream, pipeline, &earlier);
  LayerWriter writer(tar, options);
  writer.write_tree(dir_fd);
  return tar.finish();
}

}  // namespace kbuild::image
