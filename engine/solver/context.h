// The build context inside the daemon: materialized once per build from the caller's
// directory fd (read with the caller's credentials) or tar stream, with content digests that
// make COPY's cache keys independent of mtimes.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/context/manifest.h"
#include "engine/solver/builder.h"
#include "engine/solver/worker.h"
#include "engine/store/local_sources.h"
#include "engine/store/store.h"

namespace kbuild::solver {

struct MaterializedContext {
  std::string path;  // a directory under the store root, removed with the object
  std::optional<std::string> dockerfile;  // a tar context's own Dockerfile, when one was asked for
  struct State;
  std::shared_ptr<State> state;
};

// The last materialization of each client directory (by caller and directory identity). The
// next read of the same directory writes only what changed into it when no build holds it any
// more, and otherwise hard-links unchanged files from it into a tree of its own. GC lists them
// (source.local) and removes those no build holds: take and remove decide under one lock, so a
// build either holds a tree before its removal is decided (and it stays) or finds none and
// reads the whole context again.
class ContextCache : public store::LocalSources {
 public:
  struct Previous {
    std::shared_ptr<MaterializedContext::State> state;  // null: none
    bool exclusive = false;  // taken out of the cache and held by no build: may be changed
  };
  Previous take(const std::string& key);
  // `state` is what a build read the directory `key` into (and uses): one use more.
  void remember(const std::string& key, std::shared_ptr<MaterializedContext::State> state);

  std::vector<Entry> list() override;
  bool remove(const std::string& id) override;

 private:
  std::mutex mutex_;
  std::map<std::string, std::shared_ptr<MaterializedContext::State>> latest_;
};

// A new empty tree for a materialization, under `parent` (<store root>/contexts).
std::shared_ptr<MaterializedContext::State> new_context_tree(const std::string& parent);

// Reads the context the request carries. `on_transfer` reports bytes moved so far; `cancel_fd`
// (readable: stop with kbuild::Error canceled) ends every wait on the client and the reader.
// `reader_program` is kbuild-context-reader.
MaterializedContext materialize_context(store::Store& store, ContextCache& cache, const BuildRequest& request,
                                        const std::string& reader_program, int cancel_fd,
                                        const std::function<void(int64_t bytes, bool done)>& on_transfer);

// What the materialized context holds, entry by entry.
const context::Manifest& context_manifest(const MaterializedContext& context);

// The part of a cache key that comes from the context: a digest of the files a selection
// picks (paths, types, modes, link targets and contents; not mtimes, and no owners: a
// context's are reset to 0 as it is read).
std::string context_selection_key(const MaterializedContext& context, const Selection& selection);

}  // namespace kbuild::solver
