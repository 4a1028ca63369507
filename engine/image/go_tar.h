// Tar streams byte for byte as Go's archive/tar writes them (the writer containerd, BuildKit and
// Docker use), so a layer of the same tree has the same diff_id here as there. Only writing:
// reading untrusted tars is libarchive's job.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "engine/image/blob_io.h"

namespace kbuild::image {

// Go's tar.Header, the fields containerd sets.
struct TarHeader {
  enum Type : char {
    regular = '0',
    hardlink = '1',
    symlink = '2',
    char_device = '3',
    block_device = '4',
    directory = '5',
    fifo = '6',
  };
  std::string name;  // relative, directories ending in "/"
  Type type = regular;
  int64_t mode = 0;  // permission, set-id and sticky bits only
  int64_t uid = 0;
  int64_t gid = 0;
  int64_t size = 0;
  int64_t mtime = 0;  // whole seconds
  std::string linkname;
  int64_t devmajor = 0;
  int64_t devminor = 0;
  // Extra PAX records (e.g. "SCHILY.xattr.security.capability"); any make the entry PAX.
  std::vector<std::pair<std::string, std::string>> pax_records;
};

class GoTarWriter {
 public:
  explicit GoTarWriter(ByteSink& out) : out_(out) {}

  // Writes a USTAR header when every field fits one (as Go does for hdr.Format = FormatPAX
  // without sub-second times), otherwise a PAX extended header "<dir>/PaxHeaders.0/<base>"
  // first. The previous entry's data must be complete.
  void write_header(const TarHeader& header);
  // Data of the current regular file; no more than its header's size in total.
  void write(const void* data, size_t size);
  // Counts data of the current file that the caller put into the sink itself (without a copy).
  void wrote(size_t size);
  // Pads the last entry and writes the two zero blocks that end the archive.
  void close();

 private:
  void flush();

  ByteSink& out_;
  int64_t remaining_ = 0;
  int64_t padding_ = 0;
};

}  // namespace kbuild::image
