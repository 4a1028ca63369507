// Blobs by digest under <root>/blobs/sha256/<hex>: layers, configs, manifests. A blob appears
// only whole and verified (temp file in <root>/blobs/tmp/, fsync, rename), so a crash at any
// point leaves either no blob or the complete one. Every method is safe to call from several
// threads at once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/unique_fd.h"
#include "engine/store/digest.h"
#include "engine/store/leases.h"

namespace kbuild::store {

class ContentStore {
 public:
  // Streams one blob into the store, hashing while writing. Discarded unless committed.
  class Writer {
   public:
    Writer(Writer&& other) noexcept;
    Writer& operator=(Writer&& other) noexcept;
    Writer(const Writer&) = delete;
    Writer& operator=(const Writer&) = delete;
    ~Writer();

    void write(const void* data, size_t size);
    void write(std::string_view bytes) { write(bytes.data(), bytes.size()); }
    // Bytes written so far.
    uint64_t size() const { return size_; }
    // Makes the blob visible under its digest and returns it. With `expected`, a different
    // digest discards the data and throws "digest mismatch: expected X, got Y". The writer
    // cannot be used afterwards, whether commit succeeded or threw.
    Digest commit(std::optional<Digest> expected = {});
    // After commit: whether the store had the blob already (this writer's bytes were dropped).
    bool found_stored() const { return found_stored_; }

   private:
    friend class ContentStore;
    Writer(ContentStore* store, UniqueFd fd, std::string temp_name);
    void flush();
    void discard() noexcept;

    ContentStore* store_ = nullptr;
    UniqueFd fd_;
    std::string temp_name_;
    Sha256 hasher_;
    std::vector<char> buffer_;
    uint64_t size_ = 0;
    bool found_stored_ = false;
  };

  // Opens the store under `root`, creating <root>/blobs/sha256 and <root>/blobs/tmp as needed.
  // Every blob it is about to store is reported to `leases` (when given) before it is visible.
  explicit ContentStore(std::string root, LeaseTable* leases = nullptr);
  ContentStore(const ContentStore&) = delete;
  ContentStore& operator=(const ContentStore&) = delete;

  bool has(const Digest& digest) const;
  // The blob's size in bytes; throws not_found if it is not stored.
  uint64_t size(const Digest& digest) const;
  // The blob, opened O_RDONLY | O_CLOEXEC; throws not_found ("blob sha256:... not found").
  UniqueFd open(const Digest& digest) const;
  // The whole blob, verified against its digest, for small documents (configs, manifests);
  // throws if it is larger than `limit` bytes.
  std::string read_small(const Digest& digest, size_t limit = 4 << 20) const;
  // Stores `bytes` (no-op when already stored) and returns their digest.
  Digest put(std::string_view bytes);
  Writer writer();
  // Removes a blob; removing a blob that is not stored is not an error.
  void remove(const Digest& digest);
  // Every stored blob, sorted.
  std::vector<Digest> list() const;
  // Removes temp files of writes that never committed (a crashed daemon's); writers of this
  // store that are still open keep theirs.
  void sweep_temp();

  // <root>/blobs/sha256/<hex>, for logs and for tools; open() is the way to read a blob.
  std::string path(const Digest& digest) const;
  const std::string& root() const { return root_; }

 private:
  void forget_temp(const std::string& name);

  std::string root_;
  LeaseTable* leases_;
  std::string blobs_path_;  // <root>/blobs/sha256
  std::string temp_path_;   // <root>/blobs/tmp
  UniqueFd blobs_dir_;
  UniqueFd temp_dir_;
  mutable std::mutex mutex_;
  std::set<std::string> open_temps_;  // temp names of writers not yet committed or discarded
};

}  // namespace kbuild::store
