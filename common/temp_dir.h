// A temporary directory removed with everything in it when it goes out of scope.
#pragma once

#include <string>

namespace kbuild {

class TempDir {
 public:
  // Creates "<parent>/<prefix>XXXXXX" (mode 0700).
  explicit TempDir(const std::string& parent = "/tmp", const std::string& prefix = "kbuild-");
  ~TempDir();
  TempDir(TempDir&& other) noexcept : path_(std::move(other.path_)) { other.path_.clear(); }
  TempDir& operator=(TempDir&&) = delete;
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // Keeps the directory: the caller takes it over (e.g. after renaming it into place).
  std::string release();

 private:
  std::string path_;
};

// Removes a path and everything below it without following symlinks; missing is fine.
void remove_tree(const std::string& path);

}  // namespace kbuild
