#include "engine/remotecache/layout_channel.h"

#include <sys/stat.h>

#include <exception>
#include <memory>

#include "common/syscall.h"
#include "engine/remotecache/cache_config.h"

namespace kbuild::remotecache {

using layout::FieldReader;
using layout::FieldWriter;
using layout::Frame;
using layout::FrameStream;
using layout::FrameType;

static_assert(layout::kRootLimit == kCacheConfigLimit, "a local cache's root document has the limit of any other");

namespace {

constexpr const char* kPeer = "kbuildctl";
// An `ok` answer other than root's is a few fields; an `error` one a message.
constexpr std::size_t kAnswerLimit = layout::kFieldLimit + 64;

store::Digest parse_digest(const std::string& text) {
  try {
    return store::Digest::parse(text);
  } catch (const Error&) {
    layout::throw_malformed(kPeer, "not a digest: " + text.substr(0, 80));
  }
}

std::uint64_t size_of(const image::Descriptor& blob) {
  if (blob.size < 0) throw Error(ErrorKind::user, "blob " + blob.digest.str() + " has a negative size");
  return static_cast<std::uint64_t>(blob.size);
}

// The fd, checked to be a socket: a pipe or a file would be used in ways a socket is not
// (ClientStream reopens a pipe through /proc), and the caller chose what it is.
UniqueFd checked_socket(UniqueFd fd, const std::string& name) {
  struct stat st {};
  check(::fstat(fd.get(), &st), "fstat", name);
  if (!S_ISSOCK(st.st_mode)) throw Error(ErrorKind::user, name + ": the cache's fd is not a socket");
  return fd;
}

}  // namespace

LayoutChannel::LayoutChannel(UniqueFd socket, std::string tag, int cancel_fd, std::string name)
    : socket_(checked_socket(std::move(socket), name)),
      tag_(tag.empty() ? "latest" : std::move(tag)),
      name_(std::move(name)),
      stream_(socket_.get(), cancel_fd, kPeer) {}

template <typename Body>
auto LayoutChannel::exchange(Body&& body) {
  std::lock_guard lock(mutex_);
  if (broken_) throw Error(ErrorKind::internal, name_ + ": the connection to kbuildctl failed earlier");
  in_sync_ = false;
  try {
    return body();
  } catch (const Error& e) {
    broken_ = !in_sync_;
    throw e.with_context(name_);
  } catch (...) {
    broken_ = !in_sync_;
    throw;
  }
}

std::string LayoutChannel::receive_ok(std::size_t limit) {
  Frame frame = stream_.receive(limit);
  if (frame.type == FrameType::error) {
    in_sync_ = true;
    throw FrameStream::error_in(frame);
  }
  if (frame.type != FrameType::ok) {
    layout::throw_malformed(kPeer, "an answer of type " + std::to_string(static_cast<int>(frame.type)));
  }
  return std::move(frame.payload);
}

RootDocument LayoutChannel::root() {
  return exchange([this] {
    stream_.send(FrameType::root, FieldWriter().string(tag_).payload());
    std::string payload = receive_ok(layout::kFrameLimit);
    in_sync_ = true;
    FieldReader fields(payload, kPeer);
    RootDocument root;
    root.media_type = fields.string();
    const store::Digest digest = parse_digest(fields.string());
    root.bytes = fields.string(layout::kRootLimit);
    fields.finish();
    if (store::Digest::of(root.bytes) != digest) {
      throw Error(ErrorKind::user, "the manifest tagged " + tag_ + " does not match its digest " + digest.str());
    }
    return root;
  });
}

void LayoutChannel::blob(const image::Descriptor& blob, const std::function<void(std::string_view)>& sink) {
  exchange([&] {
    const std::uint64_t size = size_of(blob);
    stream_.send(FrameType::blob, FieldWriter().string(blob.digest.str()).u64(size).payload());
    FieldReader(receive_ok(kAnswerLimit), kPeer).finish();
    receive_blob(blob, sink);
  });
}

void LayoutChannel::receive_blob(const image::Descriptor& blob, const std::function<void(std::string_view)>& sink) {
  const auto size = static_cast<std::uint64_t>(blob.size);
  store::Sha256 hash;
  std::uint64_t received = 0;
  std::exception_ptr sink_failed;
  Frame frame;
  for (;;) {
    stream_.receive(frame, layout::kChunkLimit);
    if (frame.type == FrameType::end || frame.type == FrameType::error) break;
    if (frame.type != FrameType::data)
      layout::throw_malformed(kPeer, "a blob's frame of type " + std::to_string(static_cast<int>(frame.type)));
    received += frame.payload.size();
    if (received > size)
      layout::throw_malformed(kPeer,
                              "blob " + blob.digest.str() + " is longer than its " + std::to_string(size) + " bytes");
    hash.update(frame.payload);
    if (sink_failed) continue;  // drained, so that the next request finds the stream in step
    try {
      sink(frame.payload);
    } catch (...) {
      sink_failed = std::current_exception();
    }
  }
  in_sync_ = true;
  if (sink_failed) std::rethrow_exception(sink_failed);
  if (frame.type == FrameType::error) throw FrameStream::error_in(frame);
  if (received != size) {
    throw Error(ErrorKind::user, "blob " + blob.digest.str() + " has " + std::to_string(received) +
                                     " bytes, expected " + std::to_string(size));
  }
  if (const store::Digest got = hash.finish(); got != blob.digest) {
    throw Error(ErrorKind::user, "blob " + blob.digest.str() + " has the digest " + got.str());
  }
}

bool LayoutChannel::has_blob(const store::Digest& digest) {
  return exchange([&] {
    stream_.send(FrameType::has_blob, FieldWriter().string(digest.str()).payload());
    std::string payload = receive_ok(kAnswerLimit);
    in_sync_ = true;
    FieldReader fields(payload, kPeer);
    const std::uint64_t has = fields.u64();
    fields.finish();
    if (has > 1) layout::throw_malformed(kPeer, "has_blob answered " + std::to_string(has));
    return has == 1;
  });
}

void LayoutChannel::put_blob(const image::Descriptor& blob, const std::function<size_t(char*, size_t)>& read) {
  exchange([&] {
    stream_.send(FrameType::put_blob, FieldWriter().string(blob.digest.str()).u64(size_of(blob)).payload());
    send_blob(blob, read);
  });
}

void LayoutChannel::send_blob(const image::Descriptor& blob, const std::function<size_t(char*, size_t)>& read) {
  const auto size = static_cast<std::uint64_t>(blob.size);
  auto buffer = std::make_unique<char[]>(layout::kChunkLimit);
  std::uint64_t sent = 0;
  std::exception_ptr failed;
  try {
    for (std::size_t n; (n = read(buffer.get(), layout::kChunkLimit)) != 0;) {
      if (n > layout::kChunkLimit || sent + n > size) {
        throw Error(ErrorKind::internal,
                    "blob " + blob.digest.str() + " is longer than its " + std::to_string(size) + " bytes");
      }
      stream_.send(FrameType::data, std::string_view(buffer.get(), n));
      sent += n;
    }
    if (sent != size) {
      throw Error(ErrorKind::internal, "blob " + blob.digest.str() + " has " + std::to_string(sent) +
                                           " bytes, expected " + std::to_string(size));
    }
  } catch (...) {
    failed = std::current_exception();
  }
  if (!failed) {
    stream_.send(FrameType::end);
    FieldReader(receive_ok(kAnswerLimit), kPeer).finish();
    in_sync_ = true;
    return;
  }
  // Tell kbuildctl to drop what it has; its answer keeps the stream in step.
  stream_.send(FrameType::error, FrameStream::error_payload(Error(ErrorKind::internal, "the sender gave up")));
  try {
    receive_ok(kAnswerLimit);
  } catch (const Error&) {
    if (!in_sync_) throw;
  }
  in_sync_ = true;
  std::rethrow_exception(failed);
}

void LayoutChannel::put_root(const std::string& media_type, const std::string& bytes) {
  if (bytes.size() > layout::kRootLimit) {
    throw Error(ErrorKind::internal, name_ + ": the cache's root document has " + std::to_string(bytes.size()) +
                                         " bytes, more than " + std::to_string(layout::kRootLimit));
  }
  exchange([&] {
    stream_.send(FrameType::put_root, FieldWriter().string(tag_).string(media_type).string(bytes).payload());
    FieldReader(receive_ok(kAnswerLimit), kPeer).finish();
    in_sync_ = true;
  });
}

}  // namespace kbuild::remotecache
