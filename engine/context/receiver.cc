#include "engine/context/receiver.h"

#include <fcntl.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <exception>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/error.h"
#include "engine/context/fs.h"
#include "engine/context/tree_writer.h"
#include "engine/context/wire.h"

namespace kbuild::context {
namespace {

constexpr std::size_t kContentChunk = 1 << 20;
// From this size on a file is hashed on a second thread while it is written, in chunks of
// kHashChunk: SHA-256 and the write each cost about as much per byte.
constexpr std::uint64_t kParallelHashAt = 8 << 20;
constexpr std::size_t kHashChunk = 4 << 20;
// Updating a tree in place, files copied from another path of it are opened before anything
// changes; past this many, the rest are read from the client again.
constexpr std::size_t kMaxHeldCopies = 256;
// A fresh tree with at least this many files to receive creates them on a second thread.
constexpr std::size_t kCreateAheadFrom = 64;

// Racy git: a file changed again within the same timestamp tick as the stat we recorded would
// look unchanged. A key is remembered only when its timestamps are older than the time its
// content was asked for by more than the file system's timestamp granularity: kernel ticks
// (≤ 10 ms) where timestamps have nanoseconds, whole seconds (or two, FAT) where they do not.
constexpr std::int64_t kFineMargin = 50'000'000;
constexpr std::int64_t kCoarseMargin = 2'000'000'000;

bool settled(const StatKey& key, std::int64_t asked_at_ns) {
  const bool coarse = key.mtime_ns % 1'000'000'000 == 0 && key.ctime_ns % 1'000'000'000 == 0;
  return std::max(key.mtime_ns, key.ctime_ns) < asked_at_ns - (coarse ? kCoarseMargin : kFineMargin);
}

[[noreturn]] void bad(const std::string& what) { throw Error(ErrorKind::internal, "invalid context stream: " + what); }

[[noreturn]] void reader_failed(std::string_view payload) {
  auto [kind, message] = wire::parse_error(payload);
  throw Error(kind, "failed to read context: " + message);
}

std::string read_payload(wire::StreamReader& in, std::uint32_t length, std::uint32_t max) {
  if (length > max) bad("frame too large");
  std::string payload(length, '\0');
  in.read_exact(payload.data(), payload.size());
  return payload;
}

wire::FrameHeader read_frame_header(wire::StreamReader& in) {
  char raw[wire::kFrameHeaderSize];
  in.read_exact(raw, sizeof(raw));
  return wire::parse_frame_header(raw);
}

// Phase one: every entry the walk kept, in walk order, each one's parent sent before it.
std::vector<wire::EntryHeader> read_entries(wire::StreamReader& in, std::uint64_t max_entries) {
  std::vector<wire::EntryHeader> out;
  std::unordered_map<std::string, EntryType> seen;
  while (true) {
    const wire::FrameHeader h = read_frame_header(in);
    switch (h.kind) {
      case wire::FrameKind::entry: {
        wire::EntryHeader e = wire::parse_entry(read_payload(in, h.length, wire::kMaxEntryPayload));
        const std::string_view parent = parent_of(e.path);
        if (!parent.empty()) {
          auto it = seen.find(std::string(parent));
          if (it == seen.end() || it->second != EntryType::directory) bad("\"" + e.path + "\": parent directory not sent first");
        }
        if (!seen.emplace(e.path, e.type).second) bad("\"" + e.path + "\" sent twice");
        if (out.size() >= max_entries) bad("more than " + std::to_string(max_entries) + " entries");
        out.push_back(std::move(e));
        break;
      }
      case wire::FrameKind::end:
        if (wire::parse_end(read_payload(in, h.length, 8)) != out.size()) bad("entry count mismatch");
        return out;
      case wire::FrameKind::error:
        reader_failed(read_payload(in, h.length, 8 + wire::kMaxErrorText));
      default:
        bad("unexpected frame " + std::to_string(static_cast<std::uint32_t>(h.kind)));
    }
  }
}

Entry entry_of(const wire::EntryHeader& h, std::uint32_t scope) {
  Entry e;
  e.path = h.path;
  e.type = h.type;
  e.mode = h.type == EntryType::symlink ? 0777 : h.mode;
  // The client's owners are left out (uid and gid stay 0), as BuildKit's client resets them
  // (resetUIDAndGID, client/solve.go): they are the caller's, not the build's, so they must
  // not enter cache keys, and a RUN bind mount of the context sees root's files.
  e.mtime_ns = h.mtime_ns;
  e.link_target = h.link_target;
  if (h.type == EntryType::regular) {
    e.size = h.size;
    e.source = StatKey{scope, h.dev, h.ino, h.size, h.mtime_ns, h.ctime_ns};
  }
  return e;
}

bool same_metadata(const Entry& a, const Entry& b) {
  return a.type == b.type && a.mode == b.mode && a.uid == b.uid && a.gid == b.gid && a.mtime_ns == b.mtime_ns &&
         a.size == b.size && a.link_target == b.link_target && a.hardlink_to == b.hardlink_to;
}

// The same file as last time: same metadata and stat data, and the stat data was trusted then.
bool same_file(const Entry& now, const Entry& before) {
  if (!same_metadata(now, before)) return false;
  return now.type != EntryType::regular || (!before.source.empty() && before.source == now.source);
}

// Writes the next `size` bytes of the stream to `fd` and returns their digest.
store::Digest write_content(wire::StreamReader& in, int fd, std::uint64_t size, const std::string& path) {
  store::Sha256 hasher;
  if (size < kParallelHashAt) {
    while (size > 0) {
      const auto max = static_cast<std::size_t>(std::min<std::uint64_t>(size, kContentChunk));
      const std::string_view chunk = in.next_chunk(max);
      hasher.update(chunk.data(), chunk.size());
      write_all(fd, chunk.data(), chunk.size(), path);
      size -= chunk.size();
    }
    return hasher.finish();
  }
  // Chunk k is hashed while it is written and chunk k+1 read; a buffer is refilled only after
  // the hash of the chunk before it, which used the other buffer, was waited for.
  std::unique_ptr<char[]> buffers[2] = {std::make_unique_for_overwrite<char[]>(kHashChunk),
                                        std::make_unique_for_overwrite<char[]>(kHashChunk)};
  std::future<void> hashing;  // destroyed before the buffers: an async future waits
  for (int i = 0; size > 0; i ^= 1) {
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(size, kHashChunk));
    char* data = buffers[i].get();
    in.read_direct(data, n);
    if (hashing.valid()) hashing.get();
    hashing = std::async(std::launch::async, [&hasher, data, n] { hasher.update(data, n); });
    write_all(fd, data, n, path);
    size -= n;
  }
  hashing.get();
  return hasher.finish();
}

// Creates the files of a fresh tree on a second thread, ahead of their contents in the stream:
// allocating an inode is the costliest part of a small file on ext4 (more so after many recent
// deletions), and so it overlaps with reading, hashing and writing the files before it.
class FileCreator {
 public:
  // `paths` were accepted by TreeWriter::reserve_file, their parents created.
  FileCreator(int root_fd, std::vector<std::string> paths)
      : root_fd_(root_fd), paths_(std::move(paths)), thread_([this] { run(); }) {}
  ~FileCreator() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    changed_.notify_all();
    thread_.join();
  }
  FileCreator(const FileCreator&) = delete;
  FileCreator& operator=(const FileCreator&) = delete;

  // The file of the next path, in their order; throws what creating it threw.
  UniqueFd next() {
    std::unique_lock lock(mutex_);
    if (ready_.empty() && !error_ && !done_) {
      taker_waits_ = true;
      changed_.wait(lock, [&] { return !ready_.empty() || error_ || done_; });
      taker_waits_ = false;
    }
    if (ready_.empty()) {
      if (error_) std::rethrow_exception(error_);
      throw Error(ErrorKind::internal, "more context files taken than were created");
    }
    UniqueFd fd = std::move(ready_.front());
    ready_.pop_front();
    // The creator, once ahead by kAhead, sleeps until half of them were taken: one wake-up
    // per kAhead / 2 files, not one per file.
    if (creator_waits_ && ready_.size() == kAhead / 2) changed_.notify_all();
    return fd;
  }

 private:
  static constexpr std::size_t kAhead = 64;  // open fds waiting for their contents, at most

  void run() noexcept {
    std::unordered_map<std::string, UniqueFd> parents;
    for (const std::string& path : paths_) {
      UniqueFd fd;
      try {
        fd = TreeWriter::create_reserved(root_fd_, path, parents);
      } catch (...) {
        std::lock_guard lock(mutex_);
        error_ = std::current_exception();
        changed_.notify_all();
        return;
      }
      std::unique_lock lock(mutex_);
      if (ready_.size() >= kAhead) {
        creator_waits_ = true;
        changed_.wait(lock, [&] { return stop_ || ready_.size() <= kAhead / 2; });
        creator_waits_ = false;
      }
      if (stop_) return;
      ready_.push_back(std::move(fd));
      if (taker_waits_) changed_.notify_all();
    }
    std::lock_guard lock(mutex_);
    done_ = true;
    changed_.notify_all();
  }

  int root_fd_;
  std::vector<std::string> paths_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<UniqueFd> ready_;
  std::exception_ptr error_;
  bool stop_ = false;
  bool done_ = false;
  bool creator_waits_ = false;
  bool taker_waits_ = false;
  std::thread thread_;  // last: it starts using the members above at once
};

bool unchanged_since(const std::vector<Entry>& entries, const Manifest& previous) {
  if (entries.size() != previous.size()) return false;
  for (const Entry& e : entries) {
    const Entry* p = previous.find(e.path);
    if (!p || !same_file(e, *p)) return false;
  }
  return true;
}

enum class Source { want, link, copy, hardlink };

bool both_or_neither_directories(const Entry& a, const Entry& b) {
  return (a.type == EntryType::directory) == (b.type == EntryType::directory);
}

class Receiver {
 public:
  Receiver(int data_fd, int request_fd, const ReceiveOptions& options)
      : in_(data_fd, options.cancel_fd), request_fd_(request_fd), options_(options) {
    if (options_.previous) previous_ = options_.previous->manifest;
  }

  ContextReadResult run() {
    {
      const std::vector<wire::EntryHeader> headers = read_entries(in_, options_.max_entries);
      entries_.reserve(headers.size());
      // Paths sharing an inode are sent as hard links of the first, as fsutil does.
      std::map<std::pair<std::uint64_t, std::uint64_t>, std::size_t> first_of_inode;
      for (const wire::EntryHeader& h : headers) {
        Entry e = entry_of(h, options_.cache_scope);
        if (h.type == EntryType::regular && h.nlink > 1) {
          auto [it, first] = first_of_inode.emplace(std::pair(h.dev, h.ino), entries_.size());
          if (!first) e.hardlink_to = entries_[it->second].path;
        }
        entries_.push_back(std::move(e));
      }
    }

    ContextReadResult result;
    if (previous_ && unchanged_since(entries_, *previous_)) {
      send_want({});
      expect_end_of_stream();
      result.unchanged = true;
      result.manifest = *previous_;
      count(result);
      return result;
    }
    if (options_.update_previous && previous_) {
      update_previous(result);
    } else {
      materialize(result);
    }
    return result;
  }

 private:
  // The reader ends by exiting; a failure after its last file arrives as one more frame.
  void expect_end_of_stream() {
    char raw[wire::kFrameHeaderSize];
    if (!in_.read_exact(raw, sizeof(raw), true)) return;
    const wire::FrameHeader h = wire::parse_frame_header(raw);
    if (h.kind == wire::FrameKind::error) reader_failed(read_payload(in_, h.length, 8 + wire::kMaxErrorText));
    bad("unexpected frame " + std::to_string(static_cast<std::uint32_t>(h.kind)) + " after the last file");
  }

  void materialize(ContextReadResult& result) {
    TreeWriter writer(options_.dest_fd);
    for (const Entry& e : entries_) {
      if (e.type == EntryType::directory) writer.add_directory(e);
    }
    std::vector<Source> plan(entries_.size(), Source::want);
    std::vector<const Entry*> origin(entries_.size(), nullptr);
    std::vector<std::uint32_t> wanted;
    for (std::size_t i = 0; i < entries_.size(); ++i) {
      Entry& e = entries_[i];
      if (e.type != EntryType::regular) continue;
      plan[i] = choose_source(e, origin[i]);
      if (plan[i] == Source::want) wanted.push_back(static_cast<std::uint32_t>(i));
    }
    const std::int64_t asked_at = realtime_ns();
    send_want(wanted);
    std::optional<FileCreator> creator;
    if (wanted.size() >= kCreateAheadFrom) {
      std::vector<std::string> paths;
      paths.reserve(wanted.size());
      for (std::uint32_t index : wanted) {
        writer.reserve_file(entries_[index]);
        paths.push_back(entries_[index].path);
      }
      creator.emplace(options_.dest_fd, std::move(paths));
    }

    // While the reader reads, put in place what it does not have to send.
    for (std::size_t i = 0; i < entries_.size(); ++i) {
      const Entry& e = entries_[i];
      if (e.type == EntryType::symlink) {
        writer.add_symlink(e);
      } else if (e.type == EntryType::fifo) {
        writer.add_fifo(e);
      } else if (plan[i] == Source::link || plan[i] == Source::copy) {
        const bool may_link = plan[i] == Source::link && options_.link_from_previous;
        const TreeWriter::Reused reused = writer.reuse_file(options_.previous->root_fd, origin[i]->path, e, may_link);
        if (reused.linked) {
          ++result.stats.files_linked;
        } else {
          ++result.stats.files_copied;
          result.stats.bytes_copied += reused.bytes_copied;
        }
      }
    }

    std::vector<std::pair<StatKey, store::Digest>> learned;
    for (std::uint32_t index : wanted) {
      receive_file(writer, creator ? &*creator : nullptr, index, asked_at, learned, result.stats);
    }
    creator.reset();
    expect_end_of_stream();

    for (std::size_t i = 0; i < entries_.size(); ++i) {
      if (plan[i] == Source::hardlink && entries_[i].type == EntryType::regular) writer.add_hardlink(entries_[i]);
    }
    writer.finish();
    if (options_.hash_cache && !learned.empty()) options_.hash_cache->put(learned);
    result.manifest = writer.manifest();
    count(result);
  }

  // materialize(), but into the previous tree: what is unchanged stays, the rest is replaced.
  void update_previous(ContextReadResult& result) {
    std::vector<Source> plan(entries_.size(), Source::want);
    std::vector<const Entry*> origin(entries_.size(), nullptr);
    std::vector<std::uint32_t> wanted;
    std::unordered_set<std::string_view> kept;  // regular files whose inode stays
    std::unordered_map<std::size_t, UniqueFd> held;
    const int root = options_.previous->root_fd;
    for (std::size_t i = 0; i < entries_.size(); ++i) {
      Entry& e = entries_[i];
      if (e.type != EntryType::regular) continue;
      plan[i] = choose_source(e, origin[i]);
      if (plan[i] == Source::link) kept.insert(e.path);
      if (plan[i] == Source::copy) {
        // The origin may be replaced or removed below: its inode, never written, stays readable.
        UniqueFd fd;
        if (held.size() < kMaxHeldCopies) fd.reset(open_beneath(root, origin[i]->path, O_RDONLY | O_NOFOLLOW));
        if (fd) {
          held.emplace(i, std::move(fd));
        } else {
          plan[i] = Source::want;
        }
      }
      if (plan[i] == Source::want) wanted.push_back(static_cast<std::uint32_t>(i));
    }
    // A hard link stays when it is the same as before and so is the file it shares an inode with.
    for (std::size_t i = 0; i < entries_.size(); ++i) {
      if (plan[i] != Source::hardlink) continue;
      const Entry* p = previous_->find(entries_[i].path);
      if (p && same_file(entries_[i], *p) && kept.contains(entries_[i].hardlink_to)) {
        entries_[i].digest = p->digest;
        plan[i] = Source::link;
      }
    }
    const std::int64_t asked_at = realtime_ns();
    send_want(wanted);

    // While the reader reads: remove what is gone, put in place what it does not have to send.
    if (options_.previous_touched) *options_.previous_touched = true;
    TreeWriter writer(root, TreeWriter::Options{.create_missing_parents = false, .replace_existing = true});
    writer.adopt(*previous_);
    std::unordered_map<std::string_view, const Entry*> now;
    now.reserve(entries_.size());
    for (const Entry& e : entries_) now.emplace(e.path, &e);
    std::vector<std::string> gone;
    for (const Entry& p : previous_->entries()) {
      auto it = now.find(p.path);
      if (it == now.end() || !both_or_neither_directories(*it->second, p)) gone.push_back(p.path);
    }
    writer.remove(gone);
    for (std::size_t i = 0; i < entries_.size(); ++i) {
      const Entry& e = entries_[i];
      const Entry* p = previous_->find(e.path);
      const bool same = p && same_metadata(e, *p) && writer.find(e.path);
      switch (e.type) {
        case EntryType::directory:
          writer.add_directory(e);
          break;
        case EntryType::symlink:
          same ? writer.keep(e) : writer.add_symlink(e);
          break;
        case EntryType::fifo:
          same ? writer.keep(e) : writer.add_fifo(e);
          break;
        case EntryType::regular:
          if (plan[i] == Source::link) {
            writer.keep(e);
            ++result.stats.files_kept;
          } else if (plan[i] == Source::copy) {
            result.stats.bytes_copied += writer.copy_file(held.at(i).get(), e);
            ++result.stats.files_copied;
          }
          break;
      }
    }
    held.clear();

    std::vector<std::pair<StatKey, store::Digest>> learned;
    for (std::uint32_t index : wanted) receive_file(writer, nullptr, index, asked_at, learned, result.stats);
    expect_end_of_stream();

    for (std::size_t i = 0; i < entries_.size(); ++i) {
      if (plan[i] == Source::hardlink && entries_[i].type == EntryType::regular) writer.add_hardlink(entries_[i]);
    }
    writer.finish();
    if (options_.hash_cache && !learned.empty()) options_.hash_cache->put(learned);
    result.manifest = writer.manifest();
    result.updated_previous = true;
    count(result);
  }

  Source choose_source(Entry& e, const Entry*& origin) {
    if (!e.hardlink_to.empty()) return Source::hardlink;
    if (previous_) {
      const Entry* p = previous_->find(e.path);
      if (p && p->hardlink_to.empty() && same_file(e, *p)) {
        e.digest = p->digest;
        origin = p;
        return Source::link;
      }
    }
    if (!options_.hash_cache) return Source::want;
    std::optional<store::Digest> cached = options_.hash_cache->get(e.source);
    if (!cached) return Source::want;
    ++hash_cache_hits_;
    if (const Entry* p = previous_with_digest(*cached)) {
      e.digest = *cached;
      origin = p;
      return Source::copy;
    }
    return Source::want;
  }

  const Entry* previous_with_digest(const store::Digest& digest) {
    if (!previous_) return nullptr;
    if (!by_digest_built_) {
      for (const Entry& p : previous_->entries()) {
        if (p.type == EntryType::regular && !p.digest.empty()) by_digest_.emplace(p.digest.str(), &p);
      }
      by_digest_built_ = true;
    }
    auto it = by_digest_.find(digest.str());
    return it == by_digest_.end() ? nullptr : it->second;
  }

  void send_want(const std::vector<std::uint32_t>& wanted) {
    std::string frame;
    wire::append_want(frame, wanted);
    wire::send_all(request_fd_, frame, options_.cancel_fd);
  }

  // `creator`: where the file was created already (reserved in `writer`); else `writer` creates it.
  void receive_file(TreeWriter& writer, FileCreator* creator, std::uint32_t index, std::int64_t asked_at,
                    std::vector<std::pair<StatKey, store::Digest>>& learned, TransferStats& stats) {
    const wire::FrameHeader h = read_frame_header(in_);
    if (h.kind == wire::FrameKind::error) reader_failed(read_payload(in_, h.length, 8 + wire::kMaxErrorText));
    if (h.kind != wire::FrameKind::content || h.length != wire::kContentPayload) bad("expected file content");
    const wire::ContentHeader c = wire::parse_content_header(read_payload(in_, h.length, wire::kContentPayload));
    if (c.index != index) bad("content of an entry that was not asked for");
    Entry& e = entries_[index];
    // The file as opened may be newer than what the walk saw: its own stat describes the bytes.
    e.size = c.size;
    e.mtime_ns = c.mtime_ns;
    e.source = StatKey{options_.cache_scope, c.dev, c.ino, c.size, c.mtime_ns, c.ctime_ns};

    UniqueFd fd = creator ? creator->next() : writer.create_file(e);
    e.digest = write_content(in_, fd.get(), static_cast<std::uint64_t>(c.size), e.path);
    if (settled(e.source, asked_at)) {
      learned.emplace_back(e.source, e.digest);
    } else {
      e.source = StatKey{};  // too recent to vouch for: the next read hashes it again
    }
    writer.finish_file(fd.get(), e);
    ++stats.files_received;
    stats.bytes_received += static_cast<std::uint64_t>(c.size);
  }

  void count(ContextReadResult& result) const {
    result.stats.entries = result.manifest.size();
    result.stats.files = static_cast<std::uint64_t>(std::count_if(
        result.manifest.entries().begin(), result.manifest.entries().end(),
        [](const Entry& e) { return e.type == EntryType::regular; }));
    result.stats.hash_cache_hits = hash_cache_hits_;
  }

  wire::StreamReader in_;
  int request_fd_;
  const ReceiveOptions& options_;
  const Manifest* previous_ = nullptr;
  std::vector<Entry> entries_;
  std::unordered_map<std::string, const Entry*> by_digest_;
  bool by_digest_built_ = false;
  std::uint64_t hash_cache_hits_ = 0;
};

}  // namespace

ContextReadResult receive_context(int data_fd, int request_fd, const ReceiveOptions& options) {
  if (options.previous && (!options.previous->manifest || options.previous->root_fd < 0)) {
    throw Error(ErrorKind::internal, "previous context without a manifest or directory");
  }
  return Receiver(data_fd, request_fd, options).run();
}

}  // namespace kbuild::context
