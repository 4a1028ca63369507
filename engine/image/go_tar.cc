#include "engine/image/go_tar.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <map>

#include "common/error.h"

namespace kbuild::image {
namespace {

constexpr size_t kBlock = 512;
constexpr size_t kNameSize = 100;
constexpr size_t kPrefixSize = 155;

// Field offsets and sizes of a USTAR header block.
struct Field {
  size_t offset;
  size_t size;
};
constexpr Field kName{0, 100}, kMode{100, 8}, kUid{108, 8}, kGid{116, 8}, kSize{124, 12}, kMtime{136, 12},
    kChecksum{148, 8}, kLinkname{157, 100}, kMagic{257, 6}, kVersion{263, 2}, kUname{265, 32}, kGname{297, 32},
    kDevmajor{329, 8}, kDevminor{337, 8}, kPrefix{345, 155};
constexpr size_t kTypeflag = 156;

using Block = std::array<char, kBlock>;

bool is_ascii(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c != 0 && static_cast<unsigned char>(c) < 0x80; });
}

// Go's toASCII works on runes: every non-ASCII rune (or invalid byte) is dropped.
std::string to_ascii(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c != 0 && static_cast<unsigned char>(c) < 0x80) out += c;
  }
  return out;
}

bool fits_octal(size_t field, int64_t x) {
  unsigned bits = static_cast<unsigned>(field - 1) * 3;
  return x >= 0 && (field >= 22 || x < (int64_t{1} << bits));
}

// formatter.formatString: copied and truncated to the field, NUL-terminated when it fits. A
// truncated name that would end in "/" has the slash cut, as Go does for readers that would
// take a regular file for a directory.
void put_string(Block& b, Field f, std::string_view s) {
  size_t n = std::min(s.size(), f.size);
  std::memcpy(b.data() + f.offset, s.data(), n);
  if (s.size() < f.size) b[f.offset + s.size()] = 0;
  if (s.size() > f.size && b[f.offset + f.size - 1] == '/') {
    std::string_view kept = s.substr(0, f.size - 1);
    while (!kept.empty() && kept.back() == '/') kept.remove_suffix(1);
    b[f.offset + kept.size()] = 0;
  }
}

// formatter.formatOctal: zero-padded, leaving room for a terminating NUL.
void put_octal(Block& b, Field f, int64_t x) {
  std::string digits;
  uint64_t v = static_cast<uint64_t>(x);
  do {
    digits.insert(digits.begin(), static_cast<char>('0' + (v & 7)));
    v >>= 3;
  } while (v);
  if (x < 0) digits = "-" + digits;  // never written: Go's field checks route negatives to PAX
  if (f.size > digits.size() + 1) digits.insert(0, f.size - digits.size() - 1, '0');
  put_string(b, f, digits);
}

void set_magic_and_checksum(Block& b) {
  std::memcpy(b.data() + kMagic.offset, "ustar\0", 6);
  std::memcpy(b.data() + kVersion.offset, "00", 2);
  std::memset(b.data() + kChecksum.offset, ' ', kChecksum.size);
  int64_t sum = 0;
  for (char c : b) sum += static_cast<unsigned char>(c);
  put_octal(b, {kChecksum.offset, 7}, sum);
  b[kChecksum.offset + 7] = ' ';
}

// splitUSTARPath: a long ASCII name as prefix "/" name, if it fits.
bool split_ustar_path(std::string_view name, std::string& prefix, std::string& suffix) {
  size_t length = name.size();
  if (length <= kNameSize || !is_ascii(name)) return false;
  if (length > kPrefixSize + 1) {
    length = kPrefixSize + 1;
  } else if (name[length - 1] == '/') {
    --length;
  }
  size_t i = name.substr(0, length).rfind('/');
  if (i == std::string_view::npos || i == 0) return false;
  size_t suffix_length = name.size() - i - 1;
  if (suffix_length > kNameSize || suffix_length == 0 || i > kPrefixSize) return false;
  prefix = name.substr(0, i);
  suffix = name.substr(i + 1);
  return true;
}

std::string pax_record(const std::string& key, const std::string& value) {
  size_t size = key.size() + value.size() + 3;
  size += std::to_string(size).size();
  std::string record = std::to_string(size) + " " + key + "=" + value + "\n";
  if (record.size() != size) record = std::to_string(record.size()) + " " + key + "=" + value + "\n";
  return record;
}

// path.Join(dir, "PaxHeaders.0", file) for path.Split(name).
std::string pax_header_name(const std::string& name) {
  size_t slash = name.rfind('/');
  std::string dir = slash == std::string::npos ? "" : name.substr(0, slash);
  std::string file = slash == std::string::npos ? name : name.substr(slash + 1);
  std::string joined = dir.empty() ? "PaxHeaders.0" : dir + "/PaxHeaders.0";
  if (!file.empty()) joined += "/" + file;
  return joined;
}

}  // namespace

void GoTarWriter::flush() {
  if (remaining_ > 0) throw Error(ErrorKind::internal, "tar: missed writing " + std::to_string(remaining_) + " bytes");
  static const char zeros[kBlock] = {};
  if (padding_ > 0) out_.write(zeros, static_cast<size_t>(padding_));
  padding_ = 0;
}

void GoTarWriter::write_header(const TarHeader& h) {
  flush();
  std::map<std::string, std::string> pax;  // sorted as Go sorts the keys
  bool ustar = true;
  auto check_string = [&](const std::string& s, size_t size, const char* key, bool splittable) {
    if (!is_ascii(s) || s.size() > size) {
      std::string prefix, suffix;
      if (!splittable || !split_ustar_path(s, prefix, suffix)) ustar = false;
      pax[key] = s;
    }
  };
  auto check_number = [&](int64_t n, size_t size, const char* key) {
    if (!fits_octal(size, n)) {
      ustar = false;
      if (key) pax[key] = std::to_string(n);
    }
  };
  check_string(h.name, kName.size, "path", true);
  check_string(h.linkname, kLinkname.size, "linkpath", false);
  check_number(h.mode, kMode.size, nullptr);
  check_number(h.uid, kUid.size, "uid");
  check_number(h.gid, kGid.size, "gid");
  check_number(h.size, kSize.size, "size");
  check_number(h.devmajor, kDevmajor.size, nullptr);
  check_number(h.devminor, kDevminor.size, nullptr);
  check_number(h.mtime, kMtime.size, "mtime");
  for (const auto& [key, value] : h.pax_records) {
    pax.emplace(key, value);
    ustar = false;
  }
  if (!fits_octal(kMode.size, h.mode) || !fits_octal(kDevmajor.size, h.devmajor) ||
      !fits_octal(kDevminor.size, h.devminor)) {
    throw Error(ErrorKind::internal, "tar: cannot encode the header of " + h.name);
  }

  std::string name = h.name;
  std::string linkname = h.linkname;
  std::string prefix;
  if (ustar) {
    std::string suffix;
    if (split_ustar_path(h.name, prefix, suffix)) name = suffix;
  } else {
    // writePAXHeader formats the main header's strings after toASCII.
    name = to_ascii(name);
    linkname = to_ascii(linkname);
    // The extended header: a minimal file of records, named after the entry.
    std::string records;
    for (const auto& [key, value] : pax) records += pax_record(key, value);
    std::string pax_name = to_ascii(pax_header_name(h.name));
    if (pax_name.size() > kNameSize) pax_name.resize(kNameSize);
    while (!pax_name.empty() && pax_name.back() == '/') pax_name.pop_back();
    Block x{};
    put_string(x, kName, pax_name);
    put_octal(x, kMode, 0);
    put_octal(x, kUid, 0);
    put_octal(x, kGid, 0);
    put_octal(x, kSize, static_cast<int64_t>(records.size()));
    put_octal(x, kMtime, 0);
    x[kTypeflag] = 'x';
    set_magic_and_checksum(x);
    out_.write(x.data(), x.size());
    out_.write(records.data(), records.size());
    remaining_ = 0;
    padding_ = static_cast<int64_t>((kBlock - records.size() % kBlock) % kBlock);
    flush();
  }

  Block b{};
  b[kTypeflag] = static_cast<char>(h.type);
  put_string(b, kName, name);
  put_string(b, kLinkname, linkname);
  put_octal(b, kMode, h.mode);
  put_octal(b, kUid, h.uid);
  put_octal(b, kGid, h.gid);
  put_octal(b, kSize, h.size);
  put_octal(b, kMtime, h.mtime);
  put_string(b, kUname, "");
  put_string(b, kGname, "");
  put_octal(b, kDevmajor, h.devmajor);
  put_octal(b, kDevminor, h.devminor);
  if (!prefix.empty()) put_string(b, kPrefix, prefix);
  set_magic_and_checksum(b);
  out_.write(b.data(), b.size());

  bool header_only = h.type != TarHeader::regular;
  int64_t size = header_only ? 0 : h.size;
  remaining_ = size;
  padding_ = static_cast<int64_t>((kBlock - static_cast<size_t>(size) % kBlock) % kBlock);
}

void GoTarWriter::write(const void* data, size_t size) {
  if (static_cast<int64_t>(size) > remaining_) throw Error(ErrorKind::internal, "tar: write too long");
  out_.write(data, size);
  remaining_ -= static_cast<int64_t>(size);
}

void GoTarWriter::wrote(size_t size) {
  if (static_cast<int64_t>(size) > remaining_) throw Error(ErrorKind::internal, "tar: write too long");
  remaining_ -= static_cast<int64_t>(size);
}

void GoTarWriter::close() {
  flush();
  static const char zeros[2 * kBlock] = {};
  out_.write(zeros, sizeof zeros);
}

}  // namespace kbuild::image
