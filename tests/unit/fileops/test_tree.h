// Throwaway directory trees for the fileops tests: a TempDir with an fd and small helpers that
// build and inspect it by relative path.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

#include "common/temp_dir.h"
#include "common/unique_fd.h"

namespace kbuild::fileops::testing {

class Tree {
 public:
  Tree() : dir_("/tmp", "kbuild-fileops-test-") {
    fd_.reset(::open(dir_.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd_) throw std::runtime_error("open " + dir_.path());
  }

  int fd() const { return fd_.get(); }
  std::string path(const std::string& rel = "") const { return rel.empty() ? dir_.path() : dir_.path() + "/" + rel; }

  void mkdir(const std::string& rel, mode_t mode = 0755) {
    make_parents(rel);
    if (::mkdir(path(rel).c_str(), mode) != 0 && errno != EEXIST) throw std::runtime_error("mkdir " + rel);
    ::chmod(path(rel).c_str(), mode);
  }
  void file(const std::string& rel, const std::string& content, mode_t mode = 0644) {
    make_parents(rel);
    ::unlink(path(rel).c_str());
    std::ofstream(path(rel), std::ios::binary) << content;
    ::chmod(path(rel).c_str(), mode);
  }
  void symlink(const std::string& target, const std::string& rel) {
    make_parents(rel);
    if (::symlink(target.c_str(), path(rel).c_str()) != 0) throw std::runtime_error("symlink " + rel);
  }
  void chown(const std::string& rel, uid_t uid, gid_t gid) {
    if (::lchown(path(rel).c_str(), uid, gid) != 0) throw std::runtime_error("chown " + rel);
  }
  void mtime(const std::string& rel, time_t seconds) {
    const struct timespec times[2] = {{seconds, 0}, {seconds, 0}};
    ::utimensat(AT_FDCWD, path(rel).c_str(), times, AT_SYMLINK_NOFOLLOW);
  }

  bool exists(const std::string& rel) const {
    struct stat st;
    return ::lstat(path(rel).c_str(), &st) == 0;
  }
  struct stat lstat(const std::string& rel) const {
    struct stat st;
    if (::lstat(path(rel).c_str(), &st) != 0) throw std::runtime_error("lstat " + rel);
    return st;
  }
  mode_t mode(const std::string& rel) const { return lstat(rel).st_mode & 07777; }
  bool is_dir(const std::string& rel) const { return exists(rel) && S_ISDIR(lstat(rel).st_mode); }
  bool is_file(const std::string& rel) const { return exists(rel) && S_ISREG(lstat(rel).st_mode); }
  bool is_symlink(const std::string& rel) const { return exists(rel) && S_ISLNK(lstat(rel).st_mode); }
  std::string read(const std::string& rel) const {
    std::ifstream in(path(rel), std::ios::binary);
    if (!in) throw std::runtime_error("read " + rel);
    std::stringstream buffer;
    buffer << in.rdbuf();
    return buffer.str();
  }
  std::string readlink(const std::string& rel) const {
    char buffer[4096];
    const ssize_t n = ::readlink(path(rel).c_str(), buffer, sizeof(buffer));
    if (n < 0) throw std::runtime_error("readlink " + rel);
    return std::string(buffer, static_cast<std::size_t>(n));
  }

 private:
  void make_parents(const std::string& rel) {
    for (std::size_t slash = rel.find('/'); slash != std::string::npos; slash = rel.find('/', slash + 1)) {
      ::mkdir(path(rel.substr(0, slash)).c_str(), 0755);
    }
  }

  TempDir dir_;
  UniqueFd fd_;
};

}  // namespace kbuild::fileops::testing
