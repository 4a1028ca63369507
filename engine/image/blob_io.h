// The byte-stream interfaces engine/image reads and writes through, so that layers and archives
// stream to and from the content store, a file or a pipe without being held in memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "common/client_stream.h"
#include "common/fd_io.h"
#include "common/unique_fd.h"
#include "engine/store/digest.h"

namespace kbuild::image {

// Where produced bytes go: a content-store writer, a file, a pipe, a string in tests.
class ByteSink {
 public:
  virtual ~ByteSink() = default;
  // Takes all `size` bytes or throws kbuild::Error.
  virtual void write(const void* data, size_t size) = 0;
};

// One blob being stored: bytes are written, then committed under their digest. Dropping it
// uncommitted discards what was written. Mirrors store::ContentStore::Writer.
class BlobWriter : public ByteSink {
 public:
  // Stores the bytes; throws if `expected` is given and is not their digest. Returns the digest.
  virtual store::Digest commit(std::optional<store::Digest> expected) = 0;
};

// A place to store blobs by digest (the content store, or a directory in tests).
class BlobSink {
 public:
  virtual ~BlobSink() = default;
  virtual std::unique_ptr<BlobWriter> writer() = 0;
};

// A place to read blobs by digest from.
class BlobSource {
 public:
  virtual ~BlobSource() = default;
  // A readable fd positioned at the blob's first byte; throws kbuild::Error (not_found) if absent.
  virtual UniqueFd open(const store::Digest& digest) = 0;
};

// Writes everything to an fd (a file, or a client's pipe or socket): every wait is a poll that
// `cancel_fd` (readable: stop, with kbuild::Error canceled) also wakes. See ClientStream.
class FdSink : public ByteSink {
 public:
  explicit FdSink(int fd, std::string name = {}, int cancel_fd = -1)
      : stream_(fd, ClientStream::Direction::write, cancel_fd, std::move(name)) {}
  void write(const void* data, size_t size) override { stream_.write_all(data, size); }

 private:
  ClientStream stream_;
};

// Drops what it is given: for hashing a stream that goes nowhere.
class NullSink : public ByteSink {
 public:
  void write(const void*, size_t) override {}
};

// Collects bytes in memory: for tests and small documents only.
class StringSink : public ByteSink {
 public:
  void write(const void* data, size_t size) override { bytes_.append(static_cast<const char*>(data), size); }
  const std::string& bytes() const { return bytes_; }

 private:
  std::string bytes_;
};

// Reads a whole small blob (a manifest, index or config) into memory; throws past `limit` bytes.
std::string read_small(int fd, size_t limit, std::string_view name = {});

}  // namespace kbuild::image
