// Reading a directory's entries, one way for every module.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kbuild {

// A directory entry: its name and getdents' d_type (DT_UNKNOWN when the file system does not say).
struct DirEntry {
  std::string name;
  unsigned char type;
};

// Every entry of the directory open at `dir_fd` but "." and "..", sorted bytewise by name as
// Go's os.ReadDir sorts them. Reads through a descriptor of its own, so `dir_fd` (O_PATH too)
// is left as it was; errors name `path`.
std::vector<DirEntry> list_directory(int dir_fd, std::string_view path);

}  // namespace kbuild
