#include "engine/context/manifest.h"

#include <algorithm>

#include "common/error.h"
#include "engine/context/bytes.h"

namespace kbuild::context {
namespace {

constexpr std::string_view kMagic = "kbuild-context-manifest-1\n";
constexpr std::size_t kMaxPath = 4096;

bool valid_type(std::uint8_t type) { return type >= 1 && type <= 4; }

}  // namespace

const char* entry_type_name(EntryType type) {
  switch (type) {
    case EntryType::regular: return "file";
    case EntryType::directory: return "directory";
    case EntryType::symlink: return "symlink";
    case EntryType::fifo: return "fifo";
  }
  return "unknown";
}

bool is_valid_context_path(std::string_view path) {
  if (path.empty() || path.size() > kMaxPath) return false;
  std::size_t start = 0;
  while (true) {
    const std::size_t slash = path.find('/', start);
    const std::string_view name = path.substr(start, slash == std::string_view::npos ? path.npos : slash - start);
    if (name.empty() || name == "." || name == "..") return false;
    if (name.find('\0') != std::string_view::npos) return false;
    if (slash == std::string_view::npos) return true;
    start = slash + 1;
  }
}

bool path_less(std::string_view a, std::string_view b) {
  const std::size_t n = std::min(a.size(), b.size());
  for (std::size_t i = 0; i < n; ++i) {
    const unsigned x = a[i] == '/' ? 0u : static_cast<unsigned char>(a[i]) + 1u;
    const unsigned y = b[i] == '/' ? 0u : static_cast<unsigned char>(b[i]) + 1u;
    if (x != y) return x < y;
  }
  return a.size() < b.size();
}

Manifest::Manifest(std::vector<Entry> entries) : entries_(std::move(entries)) {
  std::sort(entries_.begin(), entries_.end(), [](const Entry& a, const Entry& b) { return path_less(a.path, b.path); });
  for (std::size_t i = 0; i < entries_.size(); ++i) {
    if (!is_valid_context_path(entries_[i].path)) {
      throw Error(ErrorKind::internal, "context manifest: invalid path \"" + entries_[i].path + "\"");
    }
    if (i > 0 && entries_[i - 1].path == entries_[i].path) {
      throw Error(ErrorKind::internal, "context manifest: \"" + entries_[i].path + "\" appears twice");
    }
  }
}

const Entry* Manifest::find(std::string_view path) const {
  auto it = std::lower_bound(entries_.begin(), entries_.end(), path,
                             [](const Entry& e, std::string_view p) { return path_less(e.path, p); });
  return it != entries_.end() && it->path == path ? &*it : nullptr;
}

std::span<const Entry> Manifest::below(std::string_view dir) const {
  if (dir.empty()) return entries_;
  const std::string prefix = std::string(dir) + "/";
  auto first = std::lower_bound(entries_.begin(), entries_.end(), prefix,
                                [](const Entry& e, const std::string& p) { return path_less(e.path, p); });
  auto last = std::partition_point(first, entries_.end(), [&](const Entry& e) { return e.path.starts_with(prefix); });
  return std::span<const Entry>(&*entries_.begin() + (first - entries_.begin()), static_cast<std::size_t>(last - first));
}

std::string Manifest::encode() const {
  std::string out(kMagic);
  ByteSink sink(out);
  sink.put(static_cast<std::uint64_t>(entries_.size()));
  for (const Entry& e : entries_) {
    sink.put(static_cast<std::uint8_t>(e.type));
    sink.put(e.mode);
    sink.put(e.uid);
    sink.put(e.gid);
    sink.put(e.size);
    sink.put(e.mtime_ns);
    sink.put_string(e.path);
    sink.put_string(e.link_target);
    sink.put_string(e.hardlink_to);
    sink.put_string(e.digest.empty() ? std::string_view() : e.digest.hex());
    sink.put(e.source.scope);
    sink.put(e.source.dev);
    sink.put(e.source.ino);
    sink.put(e.source.size);
    sink.put(e.source.mtime_ns);
    sink.put(e.source.ctime_ns);
  }
  return out;
}

Manifest Manifest::decode(std::string_view bytes) {
  if (!bytes.starts_with(kMagic)) throw Error(ErrorKind::internal, "context manifest: unknown format");
  ByteSource in(bytes.substr(kMagic.size()), "context manifest");
  const auto count = in.get<std::uint64_t>();
  if (count > bytes.size()) throw Error(ErrorKind::internal, "context manifest: truncated");
  std::vector<Entry> entries;
  entries.reserve(count);
  for (std::uint64_t i = 0; i < count; ++i) {
    Entry e;
    const auto type = in.get<std::uint8_t>();
    if (!valid_type(type)) throw Error(ErrorKind::internal, "context manifest: unknown entry type");
    e.type = static_cast<EntryType>(type);
    e.mode = in.get<std::uint32_t>();
    if (e.mode & ~07777u) throw Error(ErrorKind::internal, "context manifest: invalid mode");
    e.uid = in.get<std::uint32_t>();
    e.gid = in.get<std::uint32_t>();
    e.size = in.get<std::int64_t>();
    e.mtime_ns = in.get<std::int64_t>();
    e.path = in.get_string(kMaxPath);
    e.link_target = in.get_string(kMaxPath);
    e.hardlink_to = in.get_string(kMaxPath);
    const std::string_view hex = in.get_string(64);
    if (!hex.empty()) e.digest = store::Digest::from_hex(hex);
    e.source.scope = in.get<std::uint32_t>();
    e.source.dev = in.get<std::uint64_t>();
    e.source.ino = in.get<std::uint64_t>();
    e.source.size = in.get<std::int64_t>();
    e.source.mtime_ns = in.get<std::int64_t>();
    e.source.ctime_ns = in.get<std::int64_t>();
    entries.push_back(std::move(e));
  }
  in.expect_done();
  return Manifest(std::move(entries));
}

}  // namespace kbuild::context
