#include "engine/solver/context.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "common/go_path.h"
#include "common/syscall.h"
#include "common/temp_dir.h"
#include "common/unique_fd.h"
#include "engine/context/context_digest.h"
#include "engine/context/context_reader.h"
#include "engine/context/tar_context.h"
#include "engine/fileops/fileops.h"
#include "engine/patterns/dockerignore.h"
#include "engine/solver/step_executor.h"

namespace kbuild::solver {
namespace {

// Content hashes of context files, remembered in the store's metadata across builds.
class StoreHashCache : public context::HashCache {
 public:
  explicit StoreHashCache(store::MetadataStore& metadata) : metadata_(metadata) {}

  std::optional<store::Digest> get(const context::StatKey& key) override { return metadata_.get_file_hash(to_file_key(key)); }

  void put(const std::vector<std::pair<context::StatKey, store::Digest>>& entries) override {
    std::vector<store::FileHash> hashes;
    hashes.reserve(entries.size());
    for (const auto& [key, digest] : entries) hashes.push_back(store::FileHash{to_file_key(key), digest});
    metadata_.put_file_hashes(hashes);
  }

 private:
  static store::FileKey to_file_key(const context::StatKey& key) {
    return store::FileKey{key.dev, key.ino, static_cast<uint64_t>(key.size), key.mtime_ns, key.ctime_ns, key.scope};
  }
  store::MetadataStore& metadata_;
};

std::string join_lines(const std::vector<std::string>& lines) {
  std::string text;
  for (const auto& line : lines) text += line + "\n";
  return text;
}

}  // namespace

// A materialized context: unchanged while any build holds it (the next read of the same
// directory updates it in place only once the cache alone holds it, and never rewrites a file
// a layer may share), removed (off the build's path) when the builds and the cache let go of it,
// or by GC once the cache alone holds it.
struct MaterializedContext::State {
  std::string path;
  context::Manifest manifest;
  // du's record of it, guarded by the ContextCache's lock.
  std::chrono::system_clock::time_point created = std::chrono::system_clock::now();
  std::chrono::system_clock::time_point last_used = created;
  uint64_t usage_count = 0;

  explicit State(const std::string& parent) : path(TempDir(parent, "context-").release()) {}
  ~State() {
    if (path.empty()) return;  // removed already
    std::thread([path = path] {
      try {
        remove_tree(path);
      } catch (...) {
        // What cannot be removed now is swept when the daemon starts again.
      }
    }).detach();
  }
  // Removes the tree now (GC: its caller then reports it gone); only its last holder may.
  void remove_tree_now() {
    remove_tree(path);
    path.clear();
  }
  std::string id() const { return path.substr(path.rfind('/') + 1); }
  State(const State&) = delete;
  State& operator=(const State&) = delete;
};

std::shared_ptr<MaterializedContext::State> new_context_tree(const std::string& parent) {
  return std::make_shared<MaterializedContext::State>(parent);
}

ContextCache::Previous ContextCache::take(const std::string& key) {
  std::lock_guard lock(mutex_);
  auto it = latest_.find(key);
  if (it == latest_.end()) return {};
  // Copies of the pointer are made only here, under the lock: a count of one is the cache's own.
  if (it->second.use_count() == 1) {
    Previous out{std::move(it->second), true};
    latest_.erase(it);
    return out;
  }
  return {it->second, false};
}

void ContextCache::remember(const std::string& key, std::shared_ptr<MaterializedContext::State> state) {
  std::lock_guard lock(mutex_);
  state->last_used = std::chrono::system_clock::now();
  ++state->usage_count;
  latest_[key] = std::move(state);
}

std::vector<store::LocalSources::Entry> ContextCache::list() {
  std::lock_guard lock(mutex_);
  std::vector<Entry> out;
  for (const auto& [key, state] : latest_) {
    // BuildKit's local source for the Dockerfile frontend's main context is named "context".
    out.push_back(Entry{state->id(), state->path, "context", state->created, state->last_used, state->usage_count,
                        state.use_count() > 1});
  }
  return out;
}

bool ContextCache::remove(const std::string& id) {
  std::shared_ptr<MaterializedContext::State> gone;
  {
    std::lock_guard lock(mutex_);
    auto it = std::find_if(latest_.begin(), latest_.end(), [&](const auto& entry) { return entry.second->id() == id; });
    // A build that holds it keeps it; one that takes it after this finds nothing and reads the
    // whole context into a new tree.
    if (it == latest_.end() || it->second.use_count() != 1) return false;
    gone = std::move(it->second);
    latest_.erase(it);
  }
  gone->remove_tree_now();
  return true;
}

namespace {

std::shared_ptr<MaterializedContext::State> new_state(store::Store& store) {
  make_dirs(store.root() + "/contexts");
  return new_context_tree(store.root() + "/contexts");
}

UniqueFd open_tree(const std::string& path) {
  return UniqueFd(check(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC), "open", path));
}

// A tar stream is read whole into a new tree each time.
std::shared_ptr<MaterializedContext::State> read_tar(store::Store& store, const BuildRequest& request,
                                                     int cancel_fd, std::optional<std::string>& dockerfile) {
  auto state = new_state(store);
  UniqueFd dest = open_tree(state->path);
  context::TarContextRequest tar;
  tar.tar_fd = request.context_fd;
  tar.dest_fd = dest.get();
  tar.dockerfile_path = request.dockerfile_name;
  tar.cancel_fd = cancel_fd;
  if (request.dockerfile.empty()) tar.capture = {request.dockerfile_name};
  context::TarContextResult result = context::read_tar_context(tar);
  state->manifest = std::move(result.manifest);
  if (request.dockerfile.empty()) {
    auto it = result.captured.find(request.dockerfile_name);
    if (it == result.captured.end()) {
      throw Error(ErrorKind::not_found, "failed to read dockerfile: open " + request.dockerfile_name +
                                            ": no such file or directory in the context tar");
    }
    dockerfile = it->second;
  }
  return state;
}

// A client directory is read by a process running as the caller, into the tree of the last
// read of the same directory when no build uses that any more, else into a new tree.
std::shared_ptr<MaterializedContext::State> read_directory(store::Store& store, ContextCache& cache,
                                                           const BuildRequest& request,
                                                           const std::string& reader_program, int cancel_fd,
                                                           int64_t& bytes) {
  std::vector<patterns::IgnorePattern> patterns = patterns::parse_dockerignore(join_lines(request.dockerignore));
  patterns::IgnoreMatcher ignore(patterns);
  StoreHashCache hashes(store.metadata());
  context::ContextReadRequest read;
  read.context_fd = request.context_fd;
  read.caller = context::Credentials{request.caller.uid, request.caller.gid, request.caller.groups};
  read.ignore = &ignore;
  read.hash_cache = &hashes;
  read.cancel_fd = cancel_fd;
  read.reader_program = reader_program;
  struct stat root;
  check(::fstat(request.context_fd, &root), "fstat", "context");
  const std::string key = std::to_string(request.caller.uid) + ":" + std::to_string(root.st_dev) + ":" +
                          std::to_string(root.st_ino);
  ContextCache::Previous previous = cache.take(key);
  std::shared_ptr<MaterializedContext::State> state;
  UniqueFd previous_fd;
  UniqueFd dest;
  bool touched = false;
  if (previous.state) {
    previous_fd = open_tree(previous.state->path);
    read.previous = context::PreviousContext{previous_fd.get(), &previous.state->manifest};
  }
  if (previous.exclusive) {
    read.update_previous = true;
    read.previous_touched = &touched;
  } else {
    state = new_state(store);
    dest = open_tree(state->path);
    read.dest_fd = dest.get();
  }
  context::ContextReadResult result;
  try {
    result = context::read_context(read);
  } catch (...) {
    // A tree the read did not change yet is still what its manifest says.
    if (previous.exclusive && !touched) cache.remember(key, std::move(previous.state));
    throw;
  }
  bytes = static_cast<int64_t>(result.stats.bytes_received + result.stats.bytes_copied);
  if (result.unchanged || result.updated_previous) {
    state = std::move(previous.state);  // the previous tree is this context
    if (result.updated_previous) state->manifest = std::move(result.manifest);
  } else {
    state->manifest = std::move(result.manifest);
  }
  cache.remember(key, state);
  return state;
}

}  // namespace

MaterializedContext materialize_context(store::Store& store, ContextCache& cache, const BuildRequest& request,
                                        const std::string& reader_program, int cancel_fd,
                                        const std::function<void(int64_t bytes, bool done)>& on_transfer) {
  int64_t bytes = 0;
  MaterializedContext out;
  out.state = request.context_is_tar ? read_tar(store, request, cancel_fd, out.dockerfile)
                                     : read_directory(store, cache, request, reader_program, cancel_fd, bytes);
  on_transfer(bytes, true);
  out.path = out.state->path;
  return out;
}

const context::Manifest& context_manifest(const MaterializedContext& context) { return context.state->manifest; }

std::string context_selection_key(const MaterializedContext& context, const Selection& wanted) {
  context::Selection selection;
  for (const std::string& source : wanted.paths) {
    std::string pattern = go_clean_path("/" + source);
    if (pattern == "/") {  // the whole context: no include pattern selects everything
      selection.include_patterns.clear();
      break;
    }
    selection.include_patterns.push_back(pattern.substr(1));
  }
  selection.exclude_patterns = wanted.excludes;
  return context::selection_digest(context.state->manifest, selection).str();
}

}  // namespace kbuild::solver
