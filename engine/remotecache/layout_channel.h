// kbuildd's end of a cache in a local OCI layout directory: the directory is the user's, so
// kbuildctl serves it (cli/cache_layout.h) and kbuildd asks over one socket in the protocol of
// layout_protocol.h. kbuildctl is treated as hostile: every length it sends is bounded before
// it is read, blobs are verified by digest and size, and whatever it does ends in one
// kbuild::Error naming the cache.
#pragma once

#include <mutex>
#include <string>

#include "common/unique_fd.h"
#include "engine/remotecache/cache_store.h"
#include "engine/remotecache/layout_protocol.h"

namespace kbuild::remotecache {

// Both directions of one local cache, one tag of one layout; import with the CacheSource side,
// export with the CacheTarget side. Safe to call from several threads: requests take turns.
class LayoutChannel final : public CacheSource, public CacheTarget {
 public:
  // `socket`: kbuildd's end of the socketpair (the Build option cache-fd-N), owned; closing it
  // (destruction) ends kbuildctl's server. `tag`: the index.json entry to read or write,
  // BuildKit's attribute tag ("" means its default, "latest"). `cancel_fd`: borrowed, turns
  // readable when the build is canceled, which ends any wait with a canceled error; -1 for none.
  // `name`: the cache as the user wrote it ("local /home/u/cache"), for errors. Throws a user
  // error when `socket` is not a socket.
  LayoutChannel(UniqueFd socket, std::string tag, int cancel_fd, std::string name);

  std::string name() const override { return name_; }
  const std::string& tag() const { return tag_; }

  RootDocument root() override;
  void blob(const image::Descriptor& blob, const std::function<void(std::string_view)>& sink) override;

  bool has_blob(const store::Digest& digest) override;
  void put_blob(const image::Descriptor& blob, const std::function<size_t(char*, size_t)>& read) override;
  void put_root(const std::string& media_type, const std::string& bytes) override;

 private:
  // Runs one request/answer exchange under the lock. Errors get the cache's name in front; one
  // that leaves the stream mid-exchange (a hang-up, a malformed frame) breaks the channel, and
  // every later call fails at once.
  template <typename Body>
  auto exchange(Body&& body);
  // The answer to the request just sent: an `ok` frame's payload, or the `error` frame's error.
  std::string receive_ok(std::size_t limit);
  // Receives a blob's data frames to `end`, for blob().
  void receive_blob(const image::Descriptor& blob, const std::function<void(std::string_view)>& sink);
  // Sends a blob's data frames, then `end` (or `error` when `read` fails or does not give
  // exactly the descriptor's size), for put_blob().
  void send_blob(const image::Descriptor& blob, const std::function<size_t(char*, size_t)>& read);

  UniqueFd socket_;
  std::string tag_;
  std::string name_;
  std::mutex mutex_;
  layout::FrameStream stream_;
  bool in_sync_ = true;  // between exchanges, or past an exchange's last frame
  bool broken_ = false;
};

}  // namespace kbuild::remotecache
