#include "engine/context/tar_context.h"

#include <archive.h>
#include <archive_entry.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <set>

#include "common/client_stream.h"
#include "common/error.h"
#include "common/syscall.h"
#include "engine/context/follow_links.h"
#include "engine/context/fs.h"
#include "engine/context/path_filter.h"
#include "engine/context/tree_writer.h"
#include "engine/patterns/dockerignore.h"

namespace kbuild::context {
namespace {

constexpr std::size_t kReadBlock = 1 << 20;
constexpr std::size_t kMaxCapture = 16 << 20;

[[noreturn]] void refuse(std::string_view name, std::string_view why) {
  std::string shown(name.substr(0, 256));
  for (char& c : shown) {
    if (static_cast<unsigned char>(c) < 0x20) c = '?';
  }
  throw Error(ErrorKind::user, "invalid tar context: \"" + shown + "\": " + std::string(why));
}

// A tar member name as a context path: "./" prefixes and empty or "." components dropped;
// absolute names and ".." refused. "" is the root.
std::string context_path_of(std::string_view name) {
  if (name.starts_with('/')) refuse(name, "absolute path");
  std::string out;
  std::size_t start = 0;
  while (start <= name.size()) {
    std::size_t slash = name.find('/', start);
    if (slash == std::string_view::npos) slash = name.size();
    const std::string_view part = name.substr(start, slash - start);
    if (part == "..") refuse(name, "path leaves the context");
    if (!part.empty() && part != ".") {
      if (!out.empty()) out.push_back('/');
      out.append(part);
    }
    start = slash + 1;
  }
  if (out.size() > 4096) refuse(name, "path too long");
  return out;
}

struct TarSource {
  TarSource(int fd, int cancel_fd) : stream(fd, ClientStream::Direction::read, cancel_fd, "context tar") {}
  ClientStream stream;  // the client's fd, read with waits that the cancel fd ends
  std::string buffer = std::string(kReadBlock, '\0');
  bool canceled = false;
};

// libarchive's read callback: no exception may cross it.
la_ssize_t read_block(struct archive* a, void* data, const void** block) {
  auto* source = static_cast<TarSource*>(data);
  try {
    const std::size_t n = source->stream.read_some(source->buffer.data(), source->buffer.size());
    *block = source->buffer.data();
    return static_cast<la_ssize_t>(n);
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::canceled) {
      source->canceled = true;
      archive_set_error(a, ECANCELED, "canceled");
    } else {
      archive_set_error(a, EIO, "%s", e.what());
    }
    return -1;
  }
}

struct ArchiveCloser {
  void operator()(struct archive* a) const { archive_read_free(a); }
};

class TarExtractor {
 public:
  TarExtractor(const TarContextRequest& request, TreeWriter& writer, std::set<std::string> capture)
      : request_(request), writer_(writer), capture_(std::move(capture)), source_{request.tar_fd, request.cancel_fd} {}

  std::map<std::string, std::string> run() {
    std::unique_ptr<struct archive, ArchiveCloser> a(archive_read_new());
    if (!a) throw Error(ErrorKind::internal, "libarchive: out of memory");
    archive_ = a.get();
    archive_read_support_format_tar(archive_);
    archive_read_support_filter_none(archive_);
    archive_read_support_filter_gzip(archive_);
    archive_read_support_filter_bzip2(archive_);
    archive_read_support_filter_xz(archive_);
    archive_read_support_filter_zstd(archive_);
    if (archive_read_open(archive_, &source_, nullptr, read_block, nullptr) != ARCHIVE_OK) fail("reading");
    while (true) {
      struct archive_entry* entry = nullptr;
      const int r = archive_read_next_header(archive_, &entry);
      if (r == ARCHIVE_EOF) break;
      if (r < ARCHIVE_WARN) fail("reading");
      extract(entry);
    }
    return std::move(captured_);
  }

 private:
  [[noreturn]] void fail(std::string_view doing) {
    if (source_.canceled) throw Error(ErrorKind::canceled, "reading the build context was canceled");
    const char* text = archive_error_string(archive_);
    throw Error(ErrorKind::user, "invalid tar context: " + std::string(doing) + ": " + (text ? text : "unknown error"));
  }

  void extract(struct archive_entry* entry) {
    const char* raw = archive_entry_pathname(entry);
    if (!raw) raw = archive_entry_pathname_utf8(entry);
    if (!raw) fail("entry without a name");
    Entry e;
    e.path = context_path_of(raw);
    if (e.path.empty()) return;  // the root itself ("./")
    e.mode = archive_entry_perm(entry) & 07777;
    // The tar's owners are left out (uid and gid stay 0), as for a context directory
    // (receiver.cc): whoever made the tar, the same files give the same cache keys.
    e.mtime_ns = static_cast<std::int64_t>(archive_entry_mtime(entry)) * 1'000'000'000 + archive_entry_mtime_nsec(entry);
    captured_.erase(e.path);  // a later member replaces an earlier one

    if (const char* link = archive_entry_hardlink(entry)) {
      e.hardlink_to = context_path_of(link);
      if (e.hardlink_to.empty()) refuse(raw, "hard link to the context root");
      writer_.add_hardlink(e);
      return;
    }
    switch (archive_entry_filetype(entry)) {
      case AE_IFDIR:
        e.type = EntryType::directory;
        writer_.add_directory(e);
        break;
      case AE_IFLNK: {
        const char* target = archive_entry_symlink(entry);
        if (!target || !*target) refuse(raw, "symlink without a target");
        e.type = EntryType::symlink;
        e.link_target = target;
        if (e.link_target.size() > 4096) refuse(raw, "symlink target too long");
        writer_.add_symlink(e);
        break;
      }
      case AE_IFIFO:
        e.type = EntryType::fifo;
        writer_.add_fifo(e);
        break;
      case AE_IFREG:
        e.type = EntryType::regular;
        extract_file(e, archive_entry_size_is_set(entry) ? archive_entry_size(entry) : 0);
        break;
      default:
        break;  // device nodes and sockets are not materialized in the daemon's store
    }
  }

  void extract_file(Entry& e, std::int64_t declared_size) {
    UniqueFd fd = writer_.create_file(e);
    const bool capture = capture_.contains(e.path);
    std::string content;
    store::Sha256 hasher;
    std::uint64_t written = 0;
    static const std::string zeros(64 * 1024, '\0');
    while (true) {
      const void* block = nullptr;
      std::size_t size = 0;
      la_int64_t offset = 0;
      const int r = archive_read_data_block(archive_, &block, &size, &offset);
      if (r == ARCHIVE_EOF) break;
      if (r < ARCHIVE_WARN) fail("reading " + e.path);
      if (offset < 0 || static_cast<std::uint64_t>(offset) < written) fail("reading " + e.path);
      // A sparse member's hole: zeros in the content, a hole in the file.
      while (written < static_cast<std::uint64_t>(offset)) {
        const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(zeros.size(), offset - written));
        hasher.update(zeros.data(), n);
        if (capture && content.size() + n <= kMaxCapture) content.append(zeros.data(), n);
        written += n;
      }
      if (::lseek(fd.get(), static_cast<off_t>(written), SEEK_SET) < 0) throw_errno("lseek", e.path);
      hasher.update(block, size);
      write_all(fd.get(), block, size, e.path);
      if (capture && content.size() + size <= kMaxCapture) content.append(static_cast<const char*>(block), size);
      written += size;
    }
    // A sparse member may end in a hole.
    const std::int64_t total = std::max<std::int64_t>(static_cast<std::int64_t>(written), declared_size);
    if (::ftruncate(fd.get(), total) != 0) throw_errno("ftruncate", e.path);
    e.size = total;
    e.digest = hasher.finish();
    writer_.finish_file(fd.get(), e);
    if (capture) {
      if (written > kMaxCapture) refuse(e.path, "too large to read as a build file");
      captured_[e.path] = std::move(content);
    }
  }

  const TarContextRequest& request_;
  TreeWriter& writer_;
  std::set<std::string> capture_;
  TarSource source_;
  struct archive* archive_ = nullptr;
  std::map<std::string, std::string> captured_;
};

}  // namespace

TarContextResult read_tar_context(const TarContextRequest& request) {
  if (request.tar_fd < 0 || request.dest_fd < 0) throw Error(ErrorKind::internal, "read_tar_context: missing fd");
  // The ignore files that may apply are read while unpacking: no second pass over the stream.
  const std::string dockerfile_name =
      context_path_of(request.dockerfile_path.empty() ? "Dockerfile" : request.dockerfile_path);
  const std::string specific_ignore = dockerfile_name + ".dockerignore";
  std::set<std::string> capture{specific_ignore, ".dockerignore"};
  for (const std::string& c : request.capture) capture.insert(context_path_of(c));

  TreeWriter writer(request.dest_fd, TreeWriter::Options{.create_missing_parents = true, .replace_existing = true});
  TarContextResult result;
  std::map<std::string, std::string> captured = TarExtractor(request, writer, capture).run();

  const auto is_file = [&](std::string_view p) {
    const Entry* e = writer.find(p);
    return e && e->type == EntryType::regular && captured.contains(std::string(p));
  };
  std::optional<patterns::IgnoreMatcher> ignore;
  const std::string ignore_file = patterns::dockerignore_path_for(dockerfile_name, is_file);
  if (is_file(ignore_file)) {
    ignore.emplace(patterns::parse_dockerignore(captured.at(ignore_file), ignore_file));
    result.ignore_file = ignore_file;
  }

  // The tree is the daemon's own by now; resolving links in it stays inside it all the same.
  const PathFilter filter(include_patterns_for(request.dest_fd, request.include_patterns, request.follow_paths),
                          ignore ? &*ignore : nullptr);
  if (!filter.selects_everything()) {
    const Manifest all = writer.manifest();
    const std::vector<bool> kept = select_entries(all.entries(), filter, true);
    std::vector<std::string> dropped;
    for (std::size_t i = 0; i < kept.size(); ++i) {
      if (!kept[i]) dropped.push_back(all.entries()[i].path);
    }
    writer.remove(dropped);
  }
  writer.finish();
  result.manifest = writer.manifest();
  for (const std::string& c : request.capture) {
    const std::string p = context_path_of(c);
    if (auto it = captured.find(p); it != captured.end()) result.captured[c] = it->second;
  }
  return result;
}

}  // namespace kbuild::context
