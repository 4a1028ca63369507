// Fakes and builders shared by the engine/image tests: a directory-backed blob store, tars
// built entry by entry (hostile ones included), and small file helpers.
#pragma once

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/syscall.h"
#include "common/temp_dir.h"
#include "common/unique_fd.h"
#include "engine/image/blob_io.h"
#include "engine/store/digest.h"

namespace kbuild::image::testing {

inline void write_file(const std::string& path, const std::string& content, mode_t mode = 0644) {
  UniqueFd fd(check(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode), "open", path));
  FdSink(fd.get(), path).write(content.data(), content.size());
  check(::fchmod(fd.get(), mode), "fchmod", path);
}

inline std::string read_file(const std::string& path) {
  UniqueFd fd(check(::open(path.c_str(), O_RDONLY | O_CLOEXEC), "open", path));
  return read_small(fd.get(), 1 << 30, path);
}

inline UniqueFd open_dir(const std::string& path) {
  return UniqueFd(check(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC), "open", path));
}

inline UniqueFd open_read(const std::string& path) {
  return UniqueFd(check(::open(path.c_str(), O_RDONLY | O_CLOEXEC), "open", path));
}

// Runs a shell command; returns its exit status and what it printed on stdout.
inline int run(const std::string& command, std::string* output = nullptr) {
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) return -1;
  std::string out;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof buffer, pipe)) > 0) out.append(buffer, n);
  int status = ::pclose(pipe);
  if (output) *output = out;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

inline bool have_tool(const std::string& name) { return run("command -v " + name + " >/dev/null 2>&1") == 0; }

// Blobs as files named by their hex digest in a directory: the content store's two faces.
class DirBlobStore : public BlobSink, public BlobSource {
 public:
  explicit DirBlobStore(std::string dir) : dir_(std::move(dir)) {}

  class Writer : public BlobWriter {
   public:
    explicit Writer(std::string dir) : dir_(std::move(dir)), temp_(dir_ + "/.tmp-XXXXXX") {
      fd_.reset(check(::mkostemp(temp_.data(), O_CLOEXEC), "mkstemp", temp_));
    }
    ~Writer() override {
      if (!committed_) ::unlink(temp_.c_str());
    }
    void write(const void* data, size_t size) override {
      hash_.update(data, size);
      FdSink(fd_.get(), temp_).write(data, size);
    }
    store::Digest commit(std::optional<store::Digest> expected) override {
      store::Digest digest = hash_.finish();
      if (expected && *expected != digest) {
        throw Error(ErrorKind::user, "blob digest mismatch: expected " + expected->str() + ", got " + digest.str());
      }
      check(::rename(temp_.c_str(), (dir_ + "/" + std::string(digest.hex())).c_str()), "rename", temp_);
      committed_ = true;
      return digest;
    }

   private:
    std::string dir_;
    std::string temp_;
    UniqueFd fd_;
    store::Sha256 hash_;
    bool committed_ = false;
  };

  std::unique_ptr<BlobWriter> writer() override { return std::make_unique<Writer>(dir_); }
  UniqueFd open(const store::Digest& digest) override {
    std::string path = dir_ + "/" + std::string(digest.hex());
    return UniqueFd(check(::open(path.c_str(), O_RDONLY | O_CLOEXEC), "open", path));
  }
  store::Digest put(const std::string& bytes) {
    auto w = writer();
    w->write(bytes.data(), bytes.size());
    return w->commit(std::nullopt);
  }
  std::string path(const store::Digest& digest) const { return dir_ + "/" + std::string(digest.hex()); }

 private:
  std::string dir_;
};

// A tar built entry by entry in memory, for layers a test needs exactly (hostile ones too).
class TarBuilder {
 public:
  TarBuilder() : archive_(archive_write_new()), entry_(archive_entry_new()) {
    archive_write_set_format_pax_restricted(archive_.get());
    archive_write_set_bytes_per_block(archive_.get(), 0);
    archive_write_open2(archive_.get(), &bytes_, nullptr, &TarBuilder::on_write, nullptr, nullptr);
  }
  ~TarBuilder() {
    archive_write_free(archive_.release());
    archive_entry_free(entry_);
  }

  TarBuilder& dir(const std::string& name, mode_t mode = 0755) { return add(name, AE_IFDIR, mode); }
  TarBuilder& file(const std::string& name, const std::string& content, mode_t mode = 0644, uid_t uid = 0,
                   gid_t gid = 0) {
    return add(name, AE_IFREG, mode, content, {}, {}, uid, gid);
  }
  TarBuilder& symlink(const std::string& name, const std::string& target) {
    return add(name, AE_IFLNK, 0777, {}, target);
  }
  TarBuilder& hardlink(const std::string& name, const std::string& target) {
    return add(name, AE_IFREG, 0644, {}, {}, target);
  }
  TarBuilder& chardev(const std::string& name, unsigned major, unsigned minor) {
    archive_entry_clear(entry_);
    archive_entry_set_rdevmajor(entry_, major);
    archive_entry_set_rdevminor(entry_, minor);
    return add(name, AE_IFCHR, 0666, {}, {}, {}, 0, 0, false);
  }
  TarBuilder& fifo(const std::string& name) { return add(name, AE_IFIFO, 0644); }

  std::string finish() {
    archive_write_close(archive_.get());
    return bytes_;
  }

 private:
  static la_ssize_t on_write(struct archive*, void* self, const void* data, size_t size) {
    static_cast<std::string*>(self)->append(static_cast<const char*>(data), size);
    return static_cast<la_ssize_t>(size);
  }

  TarBuilder& add(const std::string& name, mode_t type, mode_t mode, const std::string& content = {},
                  const std::string& symlink = {}, const std::string& hardlink = {}, uid_t uid = 0, gid_t gid = 0,
                  bool clear = true) {
    if (clear) archive_entry_clear(entry_);
    archive_entry_copy_pathname(entry_, name.c_str());
    archive_entry_set_filetype(entry_, type);
    archive_entry_set_perm(entry_, mode);
    archive_entry_set_uid(entry_, uid);
    archive_entry_set_gid(entry_, gid);
    archive_entry_set_mtime(entry_, 1700000000, 0);
    if (!symlink.empty()) archive_entry_copy_symlink(entry_, symlink.c_str());
    if (!hardlink.empty()) archive_entry_copy_hardlink(entry_, hardlink.c_str());
    archive_entry_set_size(entry_, static_cast<la_int64_t>(content.size()));
    archive_write_header(archive_.get(), entry_);
    if (!content.empty()) archive_write_data(archive_.get(), content.data(), content.size());
    return *this;
  }

  struct Deleter {
    void operator()(struct archive* a) const { archive_write_free(a); }
  };
  std::string bytes_;
  std::unique_ptr<struct archive, Deleter> archive_;
  archive_entry* entry_;
};

}  // namespace kbuild::image::testing
