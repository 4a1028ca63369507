// Where an exported cache lives: a registry repository, or an OCI layout directory on the
// client. An import reads the cache's root document (a manifest or an index) and then only the
// blobs a hit needs; an export sends the blobs the store lacks, then the root document.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "engine/image/oci.h"
#include "engine/store/digest.h"

namespace kbuild::remotecache {

// A cache's root document as its store gives it.
struct RootDocument {
  std::string media_type;  // as the store named it; may be empty (inferred from the bytes)
  std::string bytes;       // at most kCacheConfigLimit
};

class CacheSource {
 public:
  virtual ~CacheSource() = default;
  // What a user knows the cache by ("127.0.0.1:5000/app:buildcache", "local DIR"), for
  // progress and errors.
  virtual std::string name() const = 0;
  // The root document. Throws kbuild::Error (not_found when there is none).
  virtual RootDocument root() = 0;
  // One blob, streamed to `sink` as it arrives, verified against the descriptor's digest and
  // size before the last call returns. Throws kbuild::Error when it is missing or differs.
  virtual void blob(const image::Descriptor& blob, const std::function<void(std::string_view)>& sink) = 0;
};

class CacheTarget {
 public:
  virtual ~CacheTarget() = default;
  virtual std::string name() const = 0;
  virtual bool has_blob(const store::Digest& digest) = 0;
  // Sends a blob whose bytes `read` produces (returning 0 at the end).
  virtual void put_blob(const image::Descriptor& blob, const std::function<size_t(char*, size_t)>& read) = 0;
  // Sends the root document last, once every blob it names is there.
  virtual void put_root(const std::string& media_type, const std::string& bytes) = 0;
};

}  // namespace kbuild::remotecache
