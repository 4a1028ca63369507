#include "cli/cache_layout.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "common/fd_io.h"
#include "common/syscall.h"
#include "engine/remotecache/layout_protocol.h"
#include "engine/store/digest.h"

namespace kbuild::cli {
namespace {

using nlohmann::ordered_json;
using remotecache::layout::FieldReader;
using remotecache::layout::FieldWriter;
using remotecache::layout::Frame;
using remotecache::layout::FrameStream;
using remotecache::layout::FrameType;
namespace layout = remotecache::layout;

constexpr const char* kPeer = "kbuildd";
constexpr const char* kRefName = "org.opencontainers.image.ref.name";
constexpr const char* kIndexMediaType = "application/vnd.oci.image.index.v1+json";
// index.json is the user's own file, but one that big is not an index anyone wrote.
constexpr std::size_t kIndexLimit = 64 << 20;

// --- The directory ---

// Makes `path` and its missing parents, as mkdir -p.
void make_directories(const std::string& path) {
  for (std::size_t slash = path.find('/', 1);; slash = path.find('/', slash + 1)) {
    const std::string prefix = path.substr(0, slash);
    if (!prefix.empty() && ::mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) throw_errno("mkdir", prefix);
    if (slash == std::string::npos) return;
  }
}

// `name` in `dir_fd`, a directory (made when `create`); symlinks are not followed where
// kbuildctl writes, so nobody else with access to the directory can redirect a write.
UniqueFd open_subdir(int dir_fd, const char* name, bool create, std::string_view path) {
  if (create && ::mkdirat(dir_fd, name, 0755) != 0 && errno != EEXIST) throw_errno("mkdir", path);
  const int flags = O_DIRECTORY | O_RDONLY | O_CLOEXEC | (create ? O_NOFOLLOW : 0);
  return UniqueFd(check(::openat(dir_fd, name, flags), "open", path));
}

// A string of random hex digits, for temp names nobody can guess ahead.
std::string random_suffix() {
  unsigned char bytes[8];
  if (::getrandom(bytes, sizeof bytes, 0) != sizeof bytes) throw_errno("getrandom");
  static constexpr char kHex[] = "0123456789abcdef";
  std::string text;
  for (unsigned char b : bytes) text += {kHex[b >> 4], kHex[b & 0xf]};
  return text;
}

// A file written under a temp name in `dir_fd` and renamed over `name` on commit(), so that
// readers see the old file or the whole new one; removed when not committed.
class AtomicFile {
 public:
  AtomicFile(int dir_fd, std::string name, std::string path)
      : dir_fd_(dir_fd), name_(std::move(name)), path_(std::move(path)) {
    for (int attempt = 0; !fd_; ++attempt) {
      temp_ = "." + name_ + ".tmp-" + random_suffix();
      fd_.reset(::openat(dir_fd_, temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
      if (!fd_ && (errno != EEXIST || attempt == 10)) throw_errno("create", path_);
    }
  }
  ~AtomicFile() {
    if (!temp_.empty()) ::unlinkat(dir_fd_, temp_.c_str(), 0);
  }
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(std::string_view data) { write_all(fd_.get(), data, path_); }
  void commit() {
    check(::close(fd_.release()), "close", path_);
    check(::renameat(dir_fd_, temp_.c_str(), dir_fd_, name_.c_str()), "rename", path_);
    temp_.clear();
  }

 private:
  int dir_fd_;
  std::string name_, path_, temp_;
  UniqueFd fd_;
};

// A blob written to blobs/sha256/<hex>, checked against its digest and size as it arrives.
class BlobWriter {
 public:
  BlobWriter(int blobs_fd, store::Digest digest, std::uint64_t size, const std::string& dir)
      : digest_(std::move(digest)),
        size_(size),
        file_(blobs_fd, std::string(digest_.hex()), dir + "/blobs/sha256/" + std::string(digest_.hex())) {}

  void write(std::string_view data) {
    written_ += data.size();
    if (written_ > size_)
      throw Error(ErrorKind::user, "blob " + digest_.str() + " is longer than its " + std::to_string(size_) + " bytes");
    hash_.update(data);
    file_.write(data);
  }
  void commit() {
    if (written_ != size_) {
      throw Error(ErrorKind::user, "blob " + digest_.str() + " has " + std::to_string(written_) + " bytes, expected " +
                                       std::to_string(size_));
    }
    if (const store::Digest got = hash_.finish(); got != digest_) {
      throw Error(ErrorKind::user, "blob " + digest_.str() + " has the digest " + got.str());
    }
    file_.commit();
  }

 private:
  store::Digest digest_;
  std::uint64_t size_;
  std::uint64_t written_ = 0;
  store::Sha256 hash_;
  AtomicFile file_;
};

// An index.json entry's manifest, as the root request answers it.
struct RootEntry {
  std::string media_type;
  store::Digest digest;
  std::uint64_t size = 0;
};

// The layout directory, opened when a request first needs it.
class LayoutDir {
 public:
  explicit LayoutDir(std::string path) : path_(std::move(path)) {}
  const std::string& path() const { return path_; }

  // The directory; made (with its parents) when `create`.
  int dir(bool create) {
    if (create && !created_) {
      make_directories(path_);
      dir_.reset();
      created_ = true;
    }
    if (!dir_) dir_.reset(check(::open(path_.c_str(), O_DIRECTORY | O_RDONLY | O_CLOEXEC), "open", path_));
    return dir_.get();
  }
  // blobs/sha256, made when `create`.
  UniqueFd blobs(bool create) {
    UniqueFd blobs = open_subdir(dir(create), "blobs", create, path_ + "/blobs");
    return open_subdir(blobs.get(), "sha256", create, path_ + "/blobs/sha256");
  }
  std::string blob_path(const store::Digest& digest) const {
    return path_ + "/blobs/sha256/" + std::string(digest.hex());
  }
  // A blob for reading, checked to be a regular file of `size` bytes.
  UniqueFd open_blob(const store::Digest& digest, std::uint64_t size) {
    const std::string path = blob_path(digest);
    UniqueFd blobs_fd = blobs(false);
    UniqueFd fd(::openat(blobs_fd.get(), std::string(digest.hex()).c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd && errno == ENOENT) throw Error(ErrorKind::not_found, "blob " + digest.str() + " not found in " + path_);
    if (!fd) throw_errno("open", path);
    struct stat st {};
    check(::fstat(fd.get(), &st), "fstat", path);
    if (!S_ISREG(st.st_mode)) throw Error(ErrorKind::user, path + " is not a regular file");
    if (static_cast<std::uint64_t>(st.st_size) != size) {
      throw Error(ErrorKind::user,
                  path + " has " + std::to_string(st.st_size) + " bytes, expected " + std::to_string(size));
    }
    return fd;
  }

 private:
  std::string path_;
  UniqueFd dir_;
  bool created_ = false;
};

// --- index.json ---

ordered_json parse_json(std::string_view text, const std::string& path) {
  try {
    return ordered_json::parse(text);
  } catch (const ordered_json::exception& e) {
    throw Error(ErrorKind::user, path + ": " + e.what());
  }
}

// index.json, or nullopt when there is none.
std::optional<ordered_json> read_index(int dir_fd, const std::string& dir) {
  const std::string path = dir + "/index.json";
  UniqueFd fd(::openat(dir_fd, "index.json", O_RDONLY | O_CLOEXEC));
  if (!fd && errno == ENOENT) return std::nullopt;
  if (!fd) throw_errno("open", path);
  struct stat st {};
  check(::fstat(fd.get(), &st), "fstat", path);
  if (!S_ISREG(st.st_mode) || static_cast<std::uint64_t>(st.st_size) > kIndexLimit) {
    throw Error(ErrorKind::user, path + " is not a regular file of at most " + std::to_string(kIndexLimit) + " bytes");
  }
  ordered_json index = parse_json(read_all(fd.get(), path), path);
  if (!index.is_object() || (index.contains("manifests") && !index["manifests"].is_array())) {
    throw Error(ErrorKind::user, path + " is not an OCI image index");
  }
  return index;
}

// The manifest entry annotated with `tag`, the first as BuildKit's ociindex takes it.
const ordered_json* find_tag(const ordered_json& index, const std::string& tag) {
  if (!index.contains("manifests")) return nullptr;
  for (const ordered_json& entry : index["manifests"]) {
    if (!entry.is_object() || !entry.contains("annotations") || !entry["annotations"].is_object()) continue;
    const ordered_json& annotations = entry["annotations"];
    if (annotations.contains(kRefName) && annotations[kRefName] == tag) return &entry;
  }
  return nullptr;
}

RootEntry root_entry(const ordered_json& entry, const std::string& tag) {
  try {
    RootEntry root;
    root.media_type = entry.value("mediaType", "");
    root.digest = store::Digest::parse(entry.at("digest").get<std::string>());
    const std::int64_t size = entry.at("size").get<std::int64_t>();
    if (size < 0 || static_cast<std::uint64_t>(size) > layout::kRootLimit) {
      throw Error(ErrorKind::user,
                  "its size " + std::to_string(size) + " is not within 0 and " + std::to_string(layout::kRootLimit));
    }
    root.size = static_cast<std::uint64_t>(size);
    return root;
  } catch (const ordered_json::exception& e) {
    throw Error(ErrorKind::user, "index.json's entry for tag " + tag + ": " + e.what());
  } catch (const Error& e) {
    throw e.with_context("index.json's entry for tag " + tag);
  }
}

// BuildKit's ociindex insertDesc: the entry named `tag` is replaced where it stands, else added.
void put_tag(ordered_json& index, ordered_json entry) {
  if (!index.contains("schemaVersion")) index["schemaVersion"] = 2;
  if (!index.contains("mediaType")) index["mediaType"] = kIndexMediaType;
  ordered_json& manifests = index["manifests"];
  if (!manifests.is_array()) manifests = ordered_json::array();
  const ordered_json& tag = entry["annotations"][kRefName];
  for (ordered_json& existing : manifests) {
    if (existing.is_object() && existing.contains("annotations") && existing["annotations"].is_object() &&
        existing["annotations"].contains(kRefName) && existing["annotations"][kRefName] == tag) {
      existing = std::move(entry);
      return;
    }
  }
  manifests.push_back(std::move(entry));
}

// The media type a root document names itself, for a put_root that left it out.
std::string media_type_of(const std::string& bytes) {
  const ordered_json document = parse_json(bytes, "the cache's root document");
  if (document.is_object() && document.contains("mediaType") && document["mediaType"].is_string()) {
    return document["mediaType"].get<std::string>();
  }
  throw Error(ErrorKind::user, "the cache's root document has no media type");
}

// An exclusive flock, released (with the fd) on destruction.
class FileLock {
 public:
  FileLock(int dir_fd, const char* name, const std::string& path)
      : fd_(check(::openat(dir_fd, name, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644), "open", path)) {
    while (::flock(fd_.get(), LOCK_EX) != 0) {
      if (errno != EINTR) throw_errno("flock", path);
    }
  }

 private:
  UniqueFd fd_;
};

// --- Serving ---

class LayoutServer {
 public:
  LayoutServer(int socket, std::string dir, int stop_fd) : stream_(socket, stop_fd, kPeer), dir_(std::move(dir)) {}

  // Serves requests until kbuildd hangs up between two of them.
  void run() {
    Frame request;
    while (stream_.receive_next(request, layout::kFrameLimit)) serve(request);
  }

 private:
  void serve(const Frame& request);
  // Sends `ok` with what `body` returns, or `error` with what it throws. Errors of the stream
  // itself are not caught: they end serving.
  template <typename Body>
  void answer(Body&& body);

  std::string root(const std::string& tag);
  std::string has_blob(const std::string& digest);
  std::string put_root(const std::string& tag, std::string media_type, const std::string& bytes);
  void send_blob(const std::string& digest, std::uint64_t size);
  void receive_blob(const std::string& digest, std::uint64_t size);
  void write_blob(int blobs_fd, const store::Digest& digest, const std::string& bytes);
  void write_oci_layout(int dir_fd);

  FrameStream stream_;
  LayoutDir dir_;
};

template <typename Body>
void LayoutServer::answer(Body&& body) {
  std::string payload;
  try {
    payload = body();
  } catch (const Error& e) {
    stream_.send(FrameType::error, FrameStream::error_payload(e));
    return;
  } catch (const std::exception& e) {
    stream_.send(FrameType::error, FrameStream::error_payload(Error(ErrorKind::internal, e.what())));
    return;
  }
  stream_.send(FrameType::ok, payload);
}

void LayoutServer::serve(const Frame& request) {
  FieldReader fields(request.payload, kPeer);
  switch (request.type) {
    case FrameType::root: {
      std::string tag = fields.string();
      fields.finish();
      return answer([&] { return root(tag); });
    }
    case FrameType::has_blob: {
      std::string digest = fields.string();
      fields.finish();
      return answer([&] { return has_blob(digest); });
    }
    case FrameType::blob: {
      std::string digest = fields.string();
      std::uint64_t size = fields.u64();
      fields.finish();
      return send_blob(digest, size);
    }
    case FrameType::put_blob: {
      std::string digest = fields.string();
      std::uint64_t size = fields.u64();
      fields.finish();
      return receive_blob(digest, size);
    }
    case FrameType::put_root: {
      std::string tag = fields.string(), media_type = fields.string(), bytes = fields.string(layout::kRootLimit);
      fields.finish();
      return answer([&] { return put_root(tag, std::move(media_type), bytes); });
    }
    default:
      layout::throw_malformed(kPeer, "a request of type " + std::to_string(static_cast<int>(request.type)));
  }
}

std::string LayoutServer::root(const std::string& tag) {
  const int dir_fd = dir_.dir(false);
  std::optional<ordered_json> index = read_index(dir_fd, dir_.path());
  if (!index) throw Error(ErrorKind::not_found, dir_.path() + "/index.json not found");
  const ordered_json* entry = find_tag(*index, tag);
  if (!entry) throw Error(ErrorKind::not_found, "no cache tagged " + tag + " in " + dir_.path() + "/index.json");
  const RootEntry root = root_entry(*entry, tag);
  UniqueFd fd = dir_.open_blob(root.digest, root.size);
  std::string bytes = read_all(fd.get(), dir_.blob_path(root.digest));
  if (bytes.size() != root.size) throw Error(ErrorKind::user, dir_.blob_path(root.digest) + " changed while read");
  return FieldWriter().string(root.media_type).string(root.digest.str()).string(bytes).payload();
}

std::string LayoutServer::has_blob(const std::string& digest_text) {
  const store::Digest digest = store::Digest::parse(digest_text);
  struct stat st {};
  bool has = false;
  try {
    UniqueFd blobs = dir_.blobs(false);
    has =
        ::fstatat(blobs.get(), std::string(digest.hex()).c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::not_found) throw;
  }
  return FieldWriter().u64(has ? 1 : 0).payload();
}

void LayoutServer::send_blob(const std::string& digest_text, std::uint64_t size) {
  UniqueFd fd;
  answer([&] {
    fd = dir_.open_blob(store::Digest::parse(digest_text), size);
    return std::string();
  });
  if (!fd) return;
  const std::string path = dir_.path() + "/blobs/sha256/" + digest_text.substr(7);
  auto buffer = std::make_unique<char[]>(layout::kChunkLimit);
  for (;;) {
    std::size_t n = 0;
    try {
      n = read_some(fd.get(), buffer.get(), layout::kChunkLimit, path);
    } catch (const Error& e) {
      return stream_.send(FrameType::error, FrameStream::error_payload(e));
    }
    if (n == 0) return stream_.send(FrameType::end);
    stream_.send(FrameType::data, std::string_view(buffer.get(), n));
  }
}

void LayoutServer::receive_blob(const std::string& digest_text, std::uint64_t size) {
  // Every data frame is read whatever fails, so that the answer comes after the last of them.
  std::optional<Error> failed;
  UniqueFd blobs;  // outlives the writer, which removes its temp file through it
  std::unique_ptr<BlobWriter> writer;
  try {
    store::Digest digest = store::Digest::parse(digest_text);
    blobs = dir_.blobs(true);
    writer = std::make_unique<BlobWriter>(blobs.get(), std::move(digest), size, dir_.path());
  } catch (const Error& e) {
    failed = e;
  }
  Frame frame;
  for (;;) {
    stream_.receive(frame, layout::kChunkLimit);
    if (frame.type == FrameType::end) break;
    if (frame.type == FrameType::error) {
      failed = Error(ErrorKind::internal, "kbuildd gave up sending blob " + digest_text);
      break;
    }
    if (frame.type != FrameType::data)
      layout::throw_malformed(kPeer, "a blob's frame of type " + std::to_string(static_cast<int>(frame.type)));
    if (failed) continue;
    try {
      writer->write(frame.payload);
    } catch (const Error& e) {
      failed = e;
    }
  }
  answer([&] {
    if (failed) throw *failed;
    writer->commit();
    return std::string();
  });
}

void LayoutServer::write_blob(int blobs_fd, const store::Digest& digest, const std::string& bytes) {
  BlobWriter writer(blobs_fd, digest, bytes.size(), dir_.path());
  writer.write(bytes);
  writer.commit();
}

void LayoutServer::write_oci_layout(int dir_fd) {
  struct stat st {};
  if (::fstatat(dir_fd, "oci-layout", &st, AT_SYMLINK_NOFOLLOW) == 0) return;
  AtomicFile file(dir_fd, "oci-layout", dir_.path() + "/oci-layout");
  file.write(R"({"imageLayoutVersion":"1.0.0"})");
  file.commit();
}

std::string LayoutServer::put_root(const std::string& tag, std::string media_type, const std::string& bytes) {
  if (media_type.empty()) media_type = media_type_of(bytes);
  const int dir_fd = dir_.dir(true);
  const store::Digest digest = store::Digest::of(bytes);
  write_blob(dir_.blobs(true).get(), digest, bytes);

  ordered_json entry = {
      {"mediaType", media_type}, {"digest", digest.str()}, {"size", bytes.size()}, {"annotations", {{kRefName, tag}}}};
  const std::string path = dir_.path() + "/index.json";
  FileLock lock(dir_fd, "index.json.lock", path + ".lock");
  write_oci_layout(dir_fd);
  ordered_json index = read_index(dir_fd, dir_.path()).value_or(ordered_json::object());
  put_tag(index, std::move(entry));
  std::string text;
  try {
    text = index.dump();
  } catch (const ordered_json::exception& e) {
    throw Error(ErrorKind::user, path + ": " + e.what());
  }
  AtomicFile file(dir_fd, "index.json", path);
  file.write(text);
  file.commit();
  return std::string();
}

}  // namespace

void serve_cache_layout(int socket, const std::string& dir, int stop_fd) {
  LayoutServer(socket, dir, stop_fd).run();
}

CacheLayoutServer::CacheLayoutServer(UniqueFd socket, std::string dir)
    : socket_(std::move(socket)), dir_(std::move(dir)) {
  thread_ = std::thread([this] {
    try {
      serve_cache_layout(socket_.get(), dir_, stop_.fd());
    } catch (...) {
      error_ = std::current_exception();
    }
  });
}

CacheLayoutServer::~CacheLayoutServer() {
  stop();
}

void CacheLayoutServer::stop() noexcept {
  stop_.cancel();
  if (thread_.joinable()) thread_.join();
}

void CacheLayoutServer::finish() {
  stop();
  if (!error_) return;
  try {
    std::rethrow_exception(std::exchange(error_, nullptr));
  } catch (const Error& e) {
    // Only our own stop says canceled: it is how serving is meant to end.
    if (e.kind() == ErrorKind::canceled) return;
    throw e.with_context("local cache " + dir_);
  }
}

}  // namespace kbuild::cli
