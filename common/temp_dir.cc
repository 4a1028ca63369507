#include "common/temp_dir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <utility>
#include <vector>

#include "common/syscall.h"

namespace kbuild {

TempDir::TempDir(const std::string& parent, const std::string& prefix) {
  std::string pattern = parent + "/" + prefix + "XXXXXX";
  std::vector<char> buffer(pattern.begin(), pattern.end());
  buffer.push_back('\0');
  if (!::mkdtemp(buffer.data())) throw_errno("mkdtemp", pattern);
  path_ = buffer.data();
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  try {
    remove_tree(path_);
  } catch (...) {
    // A destructor must not throw; what is left is found by the next start's sweep.
  }
}

std::string TempDir::release() { return std::exchange(path_, std::string()); }

void remove_tree(const std::string& path) {
  std::error_code ec;
  // std::filesystem::remove_all does not follow symlinks: it removes the link itself.
  std::filesystem::remove_all(path, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) {
    throw Error(ErrorKind::internal, "removing " + path + ": " + ec.message());
  }
}

}  // namespace kbuild
