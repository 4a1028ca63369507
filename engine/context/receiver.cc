#include "engine/context/receiver.h"

#include <algorithm>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/error.h"
#include "engine/context/fs.h"
#include "engine/context/tree_writer.h"
#include "engine/context/wire.h"

namespace kbuild::context {
namespace {

constexpr std::size_t kContentChunk = 1 << 20;

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
  e.uid = h.uid;
  e.gid = h.gid;
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

bool unchanged_since(const std::vector<Entry>& entries, const Manifest& previous) {
  if (entries.size() != previous.size()) return false;
  for (const Entry& e : entries) {
    const Entry* p = previous.find(e.path);
    if (!p || !same_file(e, *p)) return false;
  }
  return true;
}

enum class Source { want, link, copy, hardlink };

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
    materialize(result);
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
    for (std::uint32_t index : wanted) receive_file(writer, index, asked_at, learned, result.stats);
    expect_end_of_stream();

    for (std::size_t i = 0; i < entries_.size(); ++i) {
      if (plan[i] == Source::hardlink && entries_[i].type == EntryType::regular) writer.add_hardlink(entries_[i]);
    }
    writer.finish();
    if (options_.hash_cache && !learned.empty()) options_.hash_cache->put(learned);
    result.manifest = writer.manifest();
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

  void receive_file(TreeWriter& writer, std::uint32_t index, std::int64_t asked_at,
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

    UniqueFd fd = writer.create_file(e);
    store::Sha256 hasher;
    auto remaining = static_cast<std::uint64_t>(c.size);
    while (remaining > 0) {
      const std::string_view chunk = in_.next_chunk(static_cast<std::size_t>(std::min<std::uint64_t>(remaining, kContentChunk)));
      hasher.update(chunk.data(), chunk.size());
      write_all(fd.get(), chunk.data(), chunk.size(), e.path);
      remaining -= chunk.size();
    }
    e.digest = hasher.finish();
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
