// Hand-made tar archives for the fileops tests: every header byte under the test's control, so
// hostile names and links can be written; compressed with libarchive's writers.
#pragma once

#include <archive.h>
#include <archive_entry.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>

#include "engine/fileops/tar_extract.h"

namespace kbuild::fileops::testing {

// A hand-made ustar archive, so tests control every byte (hostile names included).
class TarBuilder {
 public:
  TarBuilder& file(const std::string& name, const std::string& data, unsigned mode = 0644, unsigned uid = 0,
                   unsigned gid = 0, long mtime = 1500000000) {
    header(name, '0', data.size(), mode, "", uid, gid, mtime);
    out_ += data;
    out_.append((512 - data.size() % 512) % 512, '\0');
    return *this;
  }
  TarBuilder& dir(const std::string& name, unsigned mode = 0755, long mtime = 1500000000) {
    header(name, '5', 0, mode, "", 0, 0, mtime);
    return *this;
  }
  TarBuilder& symlink(const std::string& name, const std::string& target) {
    header(name, '2', 0, 0777, target, 0, 0, 1500000000);
    return *this;
  }
  TarBuilder& hardlink(const std::string& name, const std::string& target) {
    header(name, '1', 0, 0644, target, 0, 0, 1500000000);
    return *this;
  }
  std::string finish() const { return out_ + std::string(1024, '\0'); }

  void header(const std::string& name, char type, std::size_t size, unsigned mode, const std::string& link,
              unsigned uid, unsigned gid, long mtime) {
    char h[512] = {};
    std::memcpy(h, name.data(), std::min<std::size_t>(name.size(), 100));
    std::snprintf(h + 100, 8, "%07o", mode);
    std::snprintf(h + 108, 8, "%07o", uid);
    std::snprintf(h + 116, 8, "%07o", gid);
    std::snprintf(h + 124, 12, "%011lo", static_cast<unsigned long>(size));
    std::snprintf(h + 136, 12, "%011lo", static_cast<unsigned long>(mtime));
    std::memset(h + 148, ' ', 8);
    h[156] = type;
    std::memcpy(h + 157, link.data(), std::min<std::size_t>(link.size(), 100));
    std::memcpy(h + 257, "ustar\0" "00", 8);
    unsigned sum = 0;
    for (unsigned char c : h) sum += c;
    std::snprintf(h + 148, 8, "%06o", sum);
    out_.append(h, 512);
  }

 private:
  std::string out_;
};

// Compresses with libarchive's writers ("raw" format: the bytes as they are).
inline std::string compress(const std::string& data, Compression compression) {
  if (compression == Compression::none) return data;
  struct archive* a = archive_write_new();
  switch (compression) {
    case Compression::gzip: archive_write_add_filter_gzip(a); break;
    case Compression::bzip2: archive_write_add_filter_bzip2(a); break;
    case Compression::xz: archive_write_add_filter_xz(a); break;
    case Compression::zstd: archive_write_add_filter_zstd(a); break;
    case Compression::none: break;
  }
  archive_write_set_format_raw(a);
  std::string out(data.size() + 65536, '\0');
  size_t used = 0;
  archive_write_open_memory(a, out.data(), out.size(), &used);
  struct archive_entry* entry = archive_entry_new();
  archive_entry_set_pathname(entry, "data");
  archive_entry_set_filetype(entry, AE_IFREG);
  archive_entry_set_size(entry, static_cast<la_int64_t>(data.size()));
  archive_write_header(a, entry);
  archive_write_data(a, data.data(), data.size());
  archive_entry_free(entry);
  archive_write_close(a);
  archive_write_free(a);
  out.resize(used);
  return out;
}

}  // namespace kbuild::fileops::testing
