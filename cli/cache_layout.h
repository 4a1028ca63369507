// kbuildctl's end of a local cache (--cache-to type=local,dest=DIR, --cache-from
// type=local,src=DIR): the OCI layout directory is the user's, so kbuildctl reads and writes it
// with the user's permissions and serves kbuildd's requests for it over a socket, in the
// protocol of engine/remotecache/layout_protocol.h.
//
// The layout is BuildKit's: index.json names each cache by the annotation
// org.opencontainers.image.ref.name (its tag), blobs live in blobs/sha256/<hex>, and an export
// replaces the index entry of its tag under a flock on index.json.lock, as BuildKit's
// client/ociindex does, so two exports to one directory keep both tags.
#pragma once

#include <exception>
#include <string>
#include <thread>

#include "common/client_stream.h"
#include "common/unique_fd.h"

namespace kbuild::cli {

// Serves kbuildd's requests on `socket` against the layout at `dir` until kbuildd closes its
// end (returns) or `stop_fd` turns readable (throws canceled). A request that fails (a missing
// tag or blob, a full disk, a blob whose digest differs) is answered with its error and serving
// goes on; a broken connection or a malformed frame throws.
void serve_cache_layout(int socket, const std::string& dir, int stop_fd);

// serve_cache_layout on a thread of its own, while kbuildctl's Build call runs.
class CacheLayoutServer {
 public:
  // Starts serving `dir` on `socket`, kbuildctl's end of the socketpair whose other end is the
  // Build option cache-fd-N.
  CacheLayoutServer(UniqueFd socket, std::string dir);
  // Stops and waits, ignoring any error.
  ~CacheLayoutServer();
  CacheLayoutServer(const CacheLayoutServer&) = delete;
  CacheLayoutServer& operator=(const CacheLayoutServer&) = delete;

  // Stops serving (call it once Build returned: kbuildd asks nothing more) and waits for the
  // thread; throws the error that ended serving before, if one did.
  void finish();

 private:
  void stop() noexcept;

  UniqueFd socket_;
  std::string dir_;
  CancelSignal stop_;
  std::exception_ptr error_;  // written by the thread before it ends
  std::thread thread_;
};

}  // namespace kbuild::cli
