#include "engine/solver/context.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <thread>

#include "common/syscall.h"
#include "common/temp_dir.h"
#include "common/unique_fd.h"
#include "engine/context/context_digest.h"
#include "engine/context/context_reader.h"
#include "engine/context/tar_context.h"
#include "engine/dockerfile/dockerignore.h"
#include "engine/fileops/fileops.h"
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

// A materialized context: immutable once read, removed (off the build's path) when the last
// build using it and the cache have let go of it.
struct MaterializedContext::State {
  std::string path;
  context::Manifest manifest;
  explicit State(const std::string& parent) : path(TempDir(parent, "context-").release()) {}
  ~State() {
    std::thread([path = path] {
      try {
        remove_tree(path);
      } catch (...) {
        // What cannot be removed now is swept when the daemon starts again.
      }
    }).detach();
  }
  State(const State&) = delete;
  State& operator=(const State&) = delete;
};

std::shared_ptr<MaterializedContext::State> ContextCache::previous(const std::string& key) {
  std::lock_guard lock(mutex_);
  auto it = latest_.find(key);
  return it == latest_.end() ? nullptr : it->second;
}

void ContextCache::remember(const std::string& key, std::shared_ptr<MaterializedContext::State> state) {
  std::lock_guard lock(mutex_);
  latest_[key] = std::move(state);
}

MaterializedContext materialize_context(store::Store& store, ContextCache& cache, const BuildRequest& request,
                                        const std::function<void(int64_t bytes, bool done)>& on_transfer) {
  make_dirs(store.root() + "/contexts");
  auto state = std::make_shared<MaterializedContext::State>(store.root() + "/contexts");
  UniqueFd dest(check(::open(state->path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC), "open", state->path));
  int64_t bytes = 0;
  std::optional<std::string> dockerfile;
  if (request.context_is_tar) {
    context::TarContextRequest tar;
    tar.tar_fd = request.context_fd;
    tar.dest_fd = dest.get();
    tar.dockerfile_path = request.dockerfile_name;
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
  } else {
    std::vector<dockerfile::IgnorePattern> patterns = dockerfile::parse_dockerignore(join_lines(request.dockerignore));
    dockerfile::IgnoreMatcher ignore(patterns);
    StoreHashCache hashes(store.metadata());
    context::ContextReadRequest read;
    read.context_fd = request.context_fd;
    read.caller = context::Credentials{request.caller.uid, request.caller.gid, request.caller.groups};
    read.ignore = &ignore;
    read.dest_fd = dest.get();
    read.hash_cache = &hashes;
    struct stat root;
    check(::fstat(request.context_fd, &root), "fstat", "context");
    const std::string key = std::to_string(request.caller.uid) + ":" + std::to_string(root.st_dev) + ":" +
                            std::to_string(root.st_ino);
    std::shared_ptr<MaterializedContext::State> previous = cache.previous(key);
    UniqueFd previous_fd;
    if (previous) {
      previous_fd.reset(check(::open(previous->path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC), "open", previous->path));
      read.previous = context::PreviousContext{previous_fd.get(), &previous->manifest};
    }
    context::ContextReadResult result = context::read_context(read);
    bytes = static_cast<int64_t>(result.stats.bytes_received + result.stats.bytes_copied);
    if (result.unchanged && previous) {
      state = previous;  // nothing changed: the previous tree is this context
    } else {
      state->manifest = std::move(result.manifest);
      cache.remember(key, state);
    }
  }
  on_transfer(bytes, true);
  MaterializedContext out;
  out.dockerfile = std::move(dockerfile);
  out.path = state->path;
  out.state = std::move(state);
  return out;
}

std::string context_selection_key(const MaterializedContext& context, const graph::Step& step) {
  const auto& copy = std::get<dockerfile::CopyInstruction>(step.instruction.body);
  context::Selection selection;
  for (const std::string& source : copy.sources) {
    std::string pattern = fileops::clean_path("/" + source);
    if (pattern == "/") {  // the whole context: no include pattern selects everything
      selection.include_patterns.clear();
      break;
    }
    selection.include_patterns.push_back(pattern.substr(1));
  }
  selection.exclude_patterns = copy.excludes;
  return context::selection_digest(context.state->manifest, selection).str();
}

}  // namespace kbuild::solver
