#include "engine/solver/builder.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/random.h>
#include <unistd.h>

#include <span>
#include <utility>

#include "common/syscall.h"
#include "engine/image/blob_io.h"
#include "engine/image/exporter.h"
#include "engine/image/image_platform.h"
#include "engine/image/layer_blobs.h"
#include "engine/image/oci.h"
#include "engine/image/plan_config.h"
#include "engine/image/reference.h"
#include "engine/registry/registry_cache.h"
#include "engine/registry/transfer.h"
#include "engine/solver/classic_output.h"
#include "engine/remotecache/cache_export.h"
#include "engine/remotecache/layout_channel.h"
#include "engine/solver/context.h"
#include "engine/solver/step_executor.h"
#include "engine/solver/store_worker.h"
#include "engine/store/fs.h"

namespace kbuild::solver {
namespace {

std::string vertex_id(std::string_view seed) { return store::Digest::of(seed).str(); }

// The build's sandbox together with the settings it refers to, which live as long as it.
struct SandboxWithConfig {
  SandboxWithConfig(std::shared_ptr<const SandboxConfig> settings, const BuildRequest& request, std::string name)
      : config(std::move(settings)),
        sandbox(*config, name, sandbox::build_description(name, request.caller.uid), request.limits, request.allow,
                request.secrets, request.ssh_agents) {}
  std::shared_ptr<const SandboxConfig> config;
  BuildSandbox sandbox;
};

std::shared_ptr<BuildSandbox> make_build_sandbox(std::shared_ptr<const SandboxConfig> config,
                                                 const BuildRequest& request) {
  std::string name = request.build_name.empty() ? new_build_name() : request.build_name;
  auto holder = std::make_shared<SandboxWithConfig>(std::move(config), request, std::move(name));
  return std::shared_ptr<BuildSandbox>(holder, &holder->sandbox);
}

}  // namespace

// Random, so that no two collide.
std::string new_build_name() {
  unsigned char bytes[6];
  if (::getrandom(bytes, sizeof bytes, 0) != sizeof bytes) throw_errno("getrandom");
  static const char digits[] = "0123456789abcdef";
  std::string name;
  for (unsigned char b : bytes) {
    name += digits[b >> 4];
    name += digits[b & 15];
  }
  return name;
}

namespace {

// A token for work of the build that one failure stops early: canceled when the build is, and
// when cancel() is called on it.
class ChildCancel {
 public:
  explicit ChildCancel(const CancelToken& parent)
      : relay_([this, &parent] {
          struct pollfd fds[2] = {{parent.fd(), POLLIN, 0}, {done_.fd(), POLLIN, 0}};
          while (::poll(fds, 2, -1) < 0 && errno == EINTR) {
          }
          if (fds[0].revents) token_.cancel();
        }) {}
  ~ChildCancel() {
    done_.cancel();
    relay_.join();
  }
  ChildCancel(const ChildCancel&) = delete;
  ChildCancel& operator=(const ChildCancel&) = delete;

  CancelToken& token() { return token_; }

 private:
  CancelToken token_;
  CancelSignal done_;
  std::thread relay_;  // last: it reads the members above
};

// The progress of graphs solved side by side (one per platform): a vertex they share (the
// same op, run once) is told once, started by the first to reach it and completed by the
// first to finish with it.
class SharedSolveProgress : public Progress {
 public:
  explicit SharedSolveProgress(Progress& out) : out_(out) {}

  void announced(const std::string& vertex, const std::string& name) override {
    std::lock_guard lock(mutex_);
    if (announced_.insert(vertex).second) out_.announced(vertex, name);
  }
  void started(const std::string& vertex, const std::string& name) override {
    std::lock_guard lock(mutex_);
    if (started_.insert(vertex).second) out_.started(vertex, name);
  }
  void completed(const std::string& vertex, const std::string& name, bool cached, const std::string& error) override {
    std::lock_guard lock(mutex_);
    started_.insert(vertex);
    if (completed_.insert(vertex).second) out_.completed(vertex, name, cached, error);
  }
  void status(const std::string& vertex, const std::string& id, int64_t current, int64_t total, bool done) override {
    out_.status(vertex, id, current, total, done);
  }
  void log(const std::string& vertex, int stream, std::string_view data) override { out_.log(vertex, stream, data); }
  void warning(const std::string& vertex, const std::string& text) override { out_.warning(vertex, text); }

 private:
  Progress& out_;
  std::mutex mutex_;
  std::set<std::string> announced_, started_, completed_;
};


// A classic build's view of one step's solve: whether the step's own op was a cache hit, and
// its output as the classic builder prints a container's: " ---> Running in ID" before the
// first line (or at the end of a step that printed nothing), then the raw text. The solver may
// report from its op threads.
class ClassicStepProgress : public Progress {
 public:
  // `container`: the id shown for the step's container; empty when it runs in none (COPY).
  ClassicStepProgress(Progress& out, std::string vertex, std::string container)
      : out_(out), vertex_(std::move(vertex)), container_(std::move(container)) {}
  // Vertex events go on (a classic client stream ignores them; the daemon's log counts them);
  // the step's output becomes classic text.
  void announced(const std::string& vertex, const std::string& name) override { out_.announced(vertex, name); }
  void started(const std::string& vertex, const std::string& name) override { out_.started(vertex, name); }
  void completed(const std::string& vertex, const std::string& name, bool cached, const std::string& error) override {
    out_.completed(vertex, name, cached, error);
    if (vertex != vertex_) return;
    std::lock_guard lock(mutex_);
    cached_ = cached;
    if (!cached) enter();
  }
  void status(const std::string&, const std::string&, int64_t, int64_t, bool) override {}
  void log(const std::string& vertex, int, std::string_view data) override {
    if (vertex != vertex_) return;
    std::lock_guard lock(mutex_);
    enter();
    out_.classic_output(data);
  }
  bool cached() const {
    std::lock_guard lock(mutex_);
    return cached_;
  }
  // Whether " ---> Running in" was printed: the container "ran".
  bool entered() const {
    std::lock_guard lock(mutex_);
    return entered_;
  }

 private:
  void enter() {
    if (entered_ || container_.empty()) return;
    entered_ = true;
    out_.classic_output(" ---> Running in " + container_ + "\n");
  }

  Progress& out_;
  const std::string vertex_;
  const std::string container_;
  mutable std::mutex mutex_;
  bool cached_ = false;   // guarded by mutex_
  bool entered_ = false;  // guarded by mutex_
};

// The classic builder runs no container for these: it copies into the step's layer.
bool copies_files(std::string_view text) {
  std::string keyword(text.substr(0, text.find_first_of(" \t")));
  for (char& c : keyword) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return keyword == "COPY" || keyword == "ADD";
}

}  // namespace

// One build: its definition, its context, its progress.
class Builder::Run {
 public:
  Run(Builder& builder, const BuildRequest& request, Progress& progress, const CancelToken& cancel)
      : builder_(builder),
        store_(builder.store_),
        request_(request),
        progress_(progress),
        cancel_(cancel),
        dockerfile_(request.dockerfile) {}

  BuildResult run() {
    if (request_.classic) return run_classic();
    // A tar context carries its own Dockerfile: it is read before anything else.
    if (request_.context_is_tar) {
      prepare_context();
      if (context_->dockerfile) dockerfile_ = *context_->dockerfile;
    }
    load_definition();
    if (request_.platforms.size() > 1) return run_platforms();
    definition_ = convert_definition(request_.platforms.empty() ? "" : request_.platforms.front(), false);
    if (!context_ && reads_context(definition_)) prepare_context();
    make_worker();
    import_caches();
    Solved solved = builder_.scheduler_.solve(definition_.graph, definition_.root, worker_, progress_, cancel_);
    BuildResult result = export_target(solved);
    export_caches({&definition_}, std::span<const Solved>(&solved, 1));
    return result;
  }

 private:
  // The frontend's graph of the Dockerfile for one target platform ("" for the daemon's own).
  graph::Definition convert_definition(const std::string& platform, bool multi_platform) {
    if (!builder_.frontend_) throw Error(ErrorKind::internal, "the builder has no frontend");
    auto resolve = [this](const std::string& reference, const std::string& image_platform) {
      return resolve_image(reference, image_platform);
    };
    return builder_.frontend_(FrontendInput{dockerfile_, request_, resolve, platform, multi_platform});
  }

  void make_worker() {
    worker_ = std::make_shared<StoreWorker>(store_, context_, sandbox_, lease_);
    worker_->set_pending_images(pending_);
    std::lock_guard lock(resolved_mutex_);
    worker_->set_resolved_images(resolved_images_);
  }

  // --- several platforms ------------------------------------------------------------------

  // One graph per platform, solved side by side (ops they share, such as a stage FROM
  // --platform=$BUILDPLATFORM, run once: the scheduler shares identical work), then one image
  // per platform under an index.
  BuildResult run_platforms() {
    refuse_for_platforms();
    std::vector<graph::Definition> definitions;
    for (const std::string& platform : request_.platforms) definitions.push_back(convert_definition(platform, true));
    bool reads = std::ranges::any_of(definitions, [this](const graph::Definition& d) { return reads_context(d); });
    if (!context_ && reads) prepare_context();
    make_worker();
    import_caches();
    std::vector<Solved> solved(definitions.size());
    std::vector<std::exception_ptr> failures(definitions.size());
    SharedSolveProgress shared(progress_);
    {
      // The first platform to fail stops the others, as a failing step stops its own graph.
      ChildCancel platforms(cancel_);
      std::vector<std::jthread> solvers;
      for (size_t i = 0; i < definitions.size(); ++i) {
        solvers.emplace_back([&, i] {
          try {
            solved[i] = builder_.scheduler_.solve(definitions[i].graph, definitions[i].root, worker_, shared,
                                                  platforms.token());
          } catch (...) {
            failures[i] = std::current_exception();
            platforms.token().cancel();
          }
        });
      }
    }
    rethrow_first_failure(failures);
    std::string id = vertex_id("export-platforms:" + solved.front().key);
    progress_.started(id, "exporting to image");
    BuildResult out;
    try {
      out = write_index(definitions, solved, id);
      progress_.completed(id, "", false, "");
    } catch (const Error& e) {
      progress_.completed(id, "", false, e.what());
      throw;
    }
    std::vector<const graph::Definition*> graphs;
    for (const graph::Definition& definition : definitions) graphs.push_back(&definition);
    export_caches(graphs, solved);
    return out;
  }

  // The error that stopped the platforms: one that is not the cancel it caused in the others,
  // unless the build itself was canceled.
  void rethrow_first_failure(const std::vector<std::exception_ptr>& failures) const {
    std::exception_ptr first;
    for (const std::exception_ptr& failure : failures) {
      if (!failure) continue;
      if (!first) first = failure;
      try {
        std::rethrow_exception(failure);
      } catch (const Error& e) {
        if (e.kind() != ErrorKind::canceled || cancel_.canceled()) throw;
      }
    }
    if (first) std::rethrow_exception(first);
  }

  // What a build for several platforms cannot do, refused before any step runs.
  void refuse_for_platforms() const {
    for (const Output& output : request_.outputs) {
      if (output.type == "docker") {
        throw Error(ErrorKind::user, "docker exporter does not currently support exporting manifest lists");
      }
    }
  }

  // Each platform's image stored, the index over them named with the tags, and the outputs.
  BuildResult write_index(const std::vector<graph::Definition>& definitions, const std::vector<Solved>& solved,
                          const std::string& vertex) {
    std::vector<image::PlatformExport> images;
    for (size_t i = 0; i < solved.size(); ++i) {
      Ref result = worker_->materialize(solved[i].result, cancel_, [&](int, std::string_view text) {
        progress_.status(vertex, std::string(text.substr(0, text.find('\n'))), 0, 0, true);
      });
      image::BuiltImage built{result.top, solved[i].base.diff_ids, solved[i].base.manifest, definitions[i].config,
                              request_.source_date_epoch, {}, ""};
      add_inline_cache(definitions[i], solved[i], built);
      for (const auto& [key, value] : request_.labels) built.config.labels[key] = value;
      image::StoredImage stored = image::store_image(store_, built, {}, builder_.layer_journals_.get(),
                                                     [&](const std::string& text, bool done) {
        progress_.status(vertex, text, 0, 0, done);
      });
      images.push_back(image::PlatformExport{std::move(built), std::move(stored), request_.platforms[i]});
    }
    image::StoredIndex index = image::store_index(store_, images, image_names(), [&](const std::string& text, bool done) {
      progress_.status(vertex, text, 0, 0, done);
    });
    store::ImageRecord record{index.descriptor.digest, index.descriptor.digest, std::chrono::system_clock::now()};
    std::optional<store::Digest> pushed = push(record, index.names, vertex);
    for (const Output& output : request_.outputs) {
      if (image::is_store_output(output.type) || output.type == "registry") continue;
      if (request_.output_fd < 0) throw Error(ErrorKind::user, "output type " + output.type + " needs a destination");
      image::FdSink sink(request_.output_fd, "output", cancel_.fd());
      image::make_exporter(store_, output.type, output.attributes)->write_platforms(index, images, sink);
    }
    if (pushed) {
      return BuildResult{index.descriptor.digest, *pushed, index.names, static_cast<int64_t>(store_.content().size(*pushed))};
    }
    return BuildResult{index.descriptor.digest, index.descriptor.digest, index.names, index.descriptor.size};
  }

  // --- the classic builder ----------------------------------------------------------------

  // As Docker's classic builder goes: the context first (its client sends it before anything),
  // then each step of each stage up to the target, alone and in order.
  BuildResult run_classic() {
    prepare_context();
    if (context_->dockerfile) dockerfile_ = *context_->dockerfile;
    progress_.classic_output(classic::sending_context(classic::context_tar_size(context_manifest(*context_))));
    if (request_.platforms.size() > 1) {
      throw Error(ErrorKind::user, "multi-platform builds need BuildKit: the legacy builder builds one platform");
    }
    definition_ = convert_definition(request_.platforms.empty() ? "" : request_.platforms.front(), false);
    make_worker();
    const std::vector<graph::Step>& steps = definition_.steps;
    std::vector<std::string> ids(steps.size());
    for (size_t i = 0; i < steps.size(); ++i) {
      progress_.classic_output(classic::step_line(i + 1, steps.size(), steps[i].text));
      ids[i] = run_classic_step(steps, ids, i);
      if (i + 1 < steps.size() && steps[i].kind != graph::Step::Kind::global_arg) {
        progress_.classic_output(" ---> " + ids[i] + "\n");
      }
    }
    NullProgress quiet;
    Solved solved = builder_.scheduler_.solve(definition_.graph, definition_.root, worker_, quiet, cancel_);
    BuildResult result = export_target(solved);
    std::string id = classic::short_id(result.config_digest.str());
    if (!steps.empty() && steps.back().kind != graph::Step::Kind::global_arg) {
      progress_.classic_output(" ---> " + id + "\n");
    }
    progress_.classic_output(classic::unused_build_args(definition_.unused_build_args));
    progress_.classic_output("Successfully built " + id + "\n");
    for (const std::string& tag : request_.tags) {
      progress_.classic_output("Successfully tagged " + image::familiar_reference(tag) + "\n");
    }
    return result;
  }

  // Runs step `i` (the ones before it are done, their ids in `ids`) and returns its id.
  std::string run_classic_step(const std::vector<graph::Step>& steps, const std::vector<std::string>& ids, size_t i) {
    const graph::Step& step = steps[i];
    switch (step.kind) {
      case graph::Step::Kind::global_arg:
        return "";
      case graph::Step::Kind::from:
        return run_classic_from(step, step.base_step ? ids[*step.base_step] : classic::short_id(step.base_image));
      case graph::Step::Kind::op:
      case graph::Step::Kind::metadata:
        break;
    }
    return run_classic_change(step, i > 0 ? ids[i - 1] : "");
  }

  // A stage's start: its base's id, after the base's ONBUILD triggers ran as part of it.
  std::string run_classic_from(const graph::Step& step, std::string id) {
    if (step.triggers.empty()) return id;
    progress_.classic_output("# Executing " + std::to_string(step.triggers.size()) + " build trigger" +
                             (step.triggers.size() > 1 ? "s" : "") + "\n");
    for (const graph::Step& trigger : step.triggers) id = run_classic_change(trigger, id);
    return id;
  }

  // A step that changes the tree or the config, on the image `parent`; returns its id.
  std::string run_classic_change(const graph::Step& step, const std::string& parent) {
    if (step.kind == graph::Step::Kind::op) return run_classic_op(step, parent);
    NullProgress quiet;
    Solved solved = builder_.scheduler_.solve(definition_.graph, step.state, worker_, quiet, cancel_);
    std::string id = classic::step_id(parent, step.text, solved.key);
    if (metadata_step_cached(id)) {
      progress_.classic_output(" ---> Using cache\n");
      return id;
    }
    // The classic builder commits a config change through a container it creates and removes.
    std::string container = classic::container_id(id);
    progress_.classic_output(" ---> Running in " + container + "\n");
    progress_.classic_output("Removing intermediate container " + container + "\n");
    store_.metadata().put_cache("classic-step:" + id, store::CacheResult{});
    return id;
  }

  // A step that makes an op: solved alone, its own op a hit or run now.
  std::string run_classic_op(const graph::Step& step, const std::string& parent) {
    const graph::Op& op = definition_.graph.op(step.state);
    const auto* exec = std::get_if<graph::ExecOp>(&op.body);
    std::string container = copies_files(step.text) ? "" : classic::container_id(classic::step_id(parent, step.text, op.digest));
    ClassicStepProgress watch(progress_, op.digest, container);
    Solved solved;
    try {
      solved = builder_.scheduler_.solve(definition_.graph, step.state, worker_, watch, cancel_);
    } catch (const Error& e) {
      if (exec) throw Error(e.kind(), classic::run_failure(e.what(), exec->argv));
      throw;
    }
    if (watch.cached()) {
      progress_.classic_output(" ---> Using cache\n");
    } else if (watch.entered()) {
      progress_.classic_output("Removing intermediate container " + container + "\n");
    }
    return classic::step_id(parent, step.text, solved.key);
  }

  // A step that changes only the config is a hit when a build made the same step before
  // (the same id: parent, instruction, key), unless the build asks for no cache.
  bool metadata_step_cached(const std::string& id) {
    if (request_.no_cache) return false;
    return store_.metadata().get_cache("classic-step:" + id).has_value();
  }

  // "[internal] load build definition from Dockerfile"
  void load_definition() {
    std::string id = vertex_id("dockerfile:" + dockerfile_);
    progress_.started(id, "[internal] load build definition from " + request_.dockerfile_name);
    progress_.status(id, "transferring dockerfile:", static_cast<int64_t>(dockerfile_.size()), 0, true);
    progress_.completed(id, "", false, "");
    std::string ignore_id = vertex_id("dockerignore");
    progress_.started(ignore_id, "[internal] load .dockerignore");
    int64_t size = 0;
    for (const auto& line : request_.dockerignore) size += static_cast<int64_t>(line.size()) + 1;
    progress_.status(ignore_id, "transferring context:", size, 0, true);
    progress_.completed(ignore_id, "", false, "");
  }

  // A base image: from the store, or (missing there, or with --pull) its manifest and config
  // from its registry, as BuildKit resolves it. Its layers are pulled only if an op reads it
  // (PendingImages): a build whose steps all hit downloads no base.
  std::optional<graph::ResolvedImage> resolve_image(const std::string& reference, const std::string& platform) {
    std::string name = image::normalize_reference(reference);
    std::string id = vertex_id("metadata:" + name + ":" + platform);
    progress_.started(id, "[internal] load metadata for " + name);
    store::Digest config;
    try {
      config = resolve_config(name, platform);
    } catch (const Error& e) {
      progress_.completed(id, "", false, e.what());
      throw;
    }
    progress_.completed(id, "", false, "");
    return graph::ResolvedImage{image::to_plan_config(image::parse_config(store_.content().read_small(config))),
                                config.str()};
  }

  // The config of the image `name` for `platform`: the store's when it holds that platform's
  // image unpacked, else its registry's. A stored image of another platform is never used: an
  // image's config must say what its binaries are. When the registry cannot give the platform
  // either, the error names both.
  store::Digest resolve_config(const std::string& name, const std::string& platform) {
    std::optional<store::ImageRecord> record;
    if (!request_.pull) record = store_.metadata().image_by_name(name);
    std::vector<std::string> found;
    std::optional<store::ImageRecord> local;
    if (record) local = image::image_for_platform(store_, *record, platform, &found);
    if (local && store_.metadata().get_cache(store::image_chain_key(local->config))) {
      std::lock_guard lock(resolved_mutex_);
      resolved_images_[local->config.str()] = local->manifest.str();
      return local->config;
    }
    try {
      return resolve_remote(name, platform);
    } catch (const Error& e) {
      if (found.empty() || e.kind() == ErrorKind::canceled) throw;
      std::string have;
      for (const std::string& p : found) have += (have.empty() ? "" : ", ") + p;
      throw Error(ErrorKind::user, "image " + image::familiar_reference(name) + " in the store is for " + have +
                                       ", not for " + platform + " as the build asks (and its registry has none: " +
                                       e.what() + ")");
    }
  }

  store::Digest resolve_remote(const std::string& name, const std::string& platform) {
    auto transport = registry::make_curl_transport([this] { return cancel_.canceled(); }, registry_->proxies);
    registry::RegistryClient client = registry_client(*transport);
    registry::ResolvedManifest resolved =
        registry::resolve_manifest(store_, client, image::parse_reference(name), registry::pull_options_for(platform));
    store::Digest manifest = store_.content().put(resolved.fetched.bytes);
    pending_->add(name, platform, resolved.manifest.config.digest.str(), manifest.str());
    return resolved.manifest.config.digest;
  }

  // How a pending base image is pulled when an op first reads it. It may run after this build
  // has gone (an op another build shares), so it holds copies of what it needs, never `this`.
  PendingImages::Pull pending_puller() {
    return [&store = store_, settings = registry_, auth = request_.registry_auth](
               const std::string& name, const std::string& platform, const std::string& config,
               const CancelToken& cancel, const LogSink& log) -> std::optional<std::string> {
      auto transport = registry::make_curl_transport([&cancel] { return cancel.canceled(); }, settings->proxies);
      registry::RegistryClient client(*transport, settings->hosts, [&auth](const std::string& domain) {
        auto it = auth.find(domain);
        return it == auth.end() ? std::nullopt : std::optional<registry::Credentials>(it->second);
      });
      registry::PullOptions options = registry::pull_options_for(platform);
      options.max_concurrent_downloads = settings->max_concurrent_downloads;
      options.canceled = [&cancel] { return cancel.canceled(); };
      if (log) log(1, "pulling " + name + "\n");
      store::ImageRecord record = registry::pull_image(store, client, image::parse_reference(name), options);
      if (record.config.str() != config) {
        throw Error(ErrorKind::user, "image " + name + " changed during the build (it was " + config + ", now " +
                                         record.config.str() + ")");
      }
      auto chain = store.metadata().get_cache(store::image_chain_key(record.config));
      if (!chain) throw Error(ErrorKind::internal, "image " + name + " has no unpacked layers after its pull");
      return chain->snapshot_id.empty() ? std::nullopt : std::optional<std::string>(chain->snapshot_id);
    };
  }

  // --- build caches -----------------------------------------------------------------------

  // The build's registry client for caches, made once: its tokens serve every cache entry.
  registry::RegistryClient& cache_registry() {
    std::lock_guard lock(cache_registry_mutex_);
    if (!cache_client_) {
      cache_transport_ =
          registry::make_curl_transport([this] { return cancel_.canceled(); }, registry_->proxies);
      cache_client_ = std::make_unique<registry::RegistryClient>(*cache_transport_, registry_->hosts,
                                                                 credential_lookup());
    }
    return *cache_client_;
  }

  static std::string attribute(const CacheEntry& entry, const std::string& name) {
    auto it = entry.attributes.find(name);
    return it == entry.attributes.end() ? "" : it->second;
  }

  // A registry entry's repository, or the client's directory behind a local entry's socket.
  std::shared_ptr<remotecache::CacheSource> cache_source(const CacheEntry& entry) {
    if (entry.type == "local") return local_cache(entry);
    return std::make_shared<registry::RegistryCache>(cache_registry(), image::parse_reference(attribute(entry, "ref")));
  }

  std::shared_ptr<remotecache::LayoutChannel> local_cache(const CacheEntry& entry) {
    UniqueFd socket(check(::fcntl(entry.fd, F_DUPFD_CLOEXEC, 3), "dup cache socket"));
    return std::make_shared<remotecache::LayoutChannel>(std::move(socket), attribute(entry, "tag"), cancel_.fd(),
                                                        "local " + target_name(entry));
  }

  // --cache-from: each cache's manifest and config read before the solve, as BuildKit's
  // "importing cache manifest from ..." vertices do. One that cannot be read is left out with
  // a warning; the build goes on without it.
  void import_caches() {
    std::vector<std::shared_ptr<const remotecache::ImportedCache>> imports;
    for (const CacheEntry& entry : request_.cache_from) {
      std::string shown = entry.type == "local" ? "local:" + attribute(entry, "src") : attribute(entry, "ref");
      std::string id = vertex_id("cache-import:" + entry.type + ":" + shown);
      progress_.started(id, "importing cache manifest from " + shown);
      try {
        std::vector<std::string> warnings;
        auto imported = std::make_shared<const remotecache::ImportedCache>(
            remotecache::import_cache(cache_source(entry), kCacheKeyScheme, warnings));
        progress_.status(id, "inferred cache manifest type: " + imported->media_type(), 0, 0, true);
        for (const std::string& warning : warnings) progress_.warning(id, "cache " + shown + ": " + warning);
        imports.push_back(std::move(imported));
      } catch (const Error& e) {
        if (e.kind() == ErrorKind::canceled) {
          progress_.completed(id, "", false, e.what());
          throw;
        }
        progress_.warning(id, "cache " + shown + " is not used: " + e.what());
      }
      progress_.completed(id, "", false, "");
    }
    if (imports.empty()) return;
    remotecache::MaterializeOptions options;
    options.max_concurrent_downloads = registry_->max_concurrent_downloads;
    options.canceled = [this] { return cancel_.canceled(); };
    std::string warn_vertex = vertex_id("cache-import-hits");
    worker_->import_caches(std::move(imports), options, [this, warn_vertex](const std::string& text) {
      progress_.warning(warn_vertex, "an imported cache hit is not used: " + text);
    });
  }

  // The result of op `i`: what this build made or found, else what the store still holds.
  std::optional<Ref> result_of(const Solved& solved, graph::OpIndex i) {
    if (auto it = solved.results.find(i); it != solved.results.end()) return it->second;
    return worker_->cached_locally(solved.keys[i]);
  }

  // mode=min: the final result and the steps under it, down to its base (the layers of the
  // final image); mode=max: every step of every stage the target needs.
  std::vector<remotecache::ExportRecord> cache_records(const graph::Definition& definition, const Solved& solved,
                                                       remotecache::CacheFormat::Mode mode) {
    const graph::Graph& graph = definition.graph;
    std::vector<graph::OpIndex> ops;
    if (mode == remotecache::CacheFormat::Mode::max) {
      ops = graph.closure(definition.root);
    } else {
      for (std::optional<graph::OpIndex> i = definition.root; i; i = bottom_input(graph.op(*i))) ops.push_back(*i);
    }
    std::vector<remotecache::ExportRecord> records;
    for (graph::OpIndex i : ops) {
      if (std::holds_alternative<graph::SourceOp>(graph.op(i).body)) continue;
      if (std::optional<Ref> ref = result_of(solved, i); ref && ref->local_path.empty()) {
        records.push_back(remotecache::ExportRecord{solved.keys[i], ref->top, std::nullopt, nullptr});
      } else if (auto imported = worker_->find_imported(solved.keys[i])) {
        // Under a hit, never needed here: passed on as imported, so --cache-from X --cache-to X
        // keeps what X had.
        exported_from_.push_back(imported->cache);
        records.push_back(remotecache::ExportRecord{solved.keys[i], std::nullopt, std::move(imported->chain),
                                                    &imported->cache->source()});
      }
    }
    return records;
  }

  // --cache-to registry and local, after the image: a cache never changes what was built.
  // Each platform's records, a key the platforms share once.
  std::vector<remotecache::ExportRecord> cache_records(const std::vector<const graph::Definition*>& definitions,
                                                       std::span<const Solved> solved,
                                                       remotecache::CacheFormat::Mode mode) {
    std::vector<remotecache::ExportRecord> records;
    std::set<std::string> keys;
    for (size_t i = 0; i < solved.size(); ++i) {
      for (remotecache::ExportRecord& record : cache_records(*definitions[i], solved[i], mode)) {
        if (keys.insert(record.key).second) records.push_back(std::move(record));
      }
    }
    return records;
  }

  void export_caches(const std::vector<const graph::Definition*>& definitions, std::span<const Solved> solved) {
    for (const CacheEntry& entry : request_.cache_to) {
      if (entry.type == "inline") continue;  // in the image's config (write_image)
      std::string id = vertex_id("cache-export:" + entry.type + ":" + attribute(entry, "ref"));
      std::string name = entry.type == "local" ? "exporting cache to client directory" : "exporting cache to registry";
      remotecache::CacheFormat format = remotecache::parse_cache_format(entry.attributes);
      progress_.started(id, name);
      try {
        std::shared_ptr<remotecache::CacheSource> source = cache_source(entry);
        auto* target = dynamic_cast<remotecache::CacheTarget*>(source.get());
        if (!target) throw Error(ErrorKind::internal, "cache type " + entry.type + " cannot be exported to");
        remotecache::export_cache(store_, cache_records(definitions, solved, format.mode), format, kCacheKeyScheme, *target,
                                  [&](const std::string& text, bool done) { progress_.status(id, text, 0, 0, done); });
        progress_.completed(id, "", false, "");
      } catch (const Error& e) {
        if (e.kind() == ErrorKind::canceled || !format.ignore_error) {
          progress_.completed(id, "", false, e.what());
          throw e.with_context("exporting cache to " + target_name(entry));
        }
        progress_.warning(id, "exporting cache to " + target_name(entry) + " failed (ignore-error): " + e.what());
        progress_.completed(id, "", false, "");
      }
    }
  }

  // What a user calls the cache: its ref, or a local one's directory.
  static std::string target_name(const CacheEntry& entry) {
    if (entry.type != "local") return attribute(entry, "ref");
    return attribute(entry, entry.attributes.count("dest") ? "dest" : "src");
  }

  // --cache-to type=inline: the final image's own steps (mode=min), each by the index of its
  // result's top layer in the image.
  void add_inline_cache(const graph::Definition& definition, const Solved& solved, image::BuiltImage& built) {
    bool wanted = std::ranges::any_of(request_.cache_to, [](const CacheEntry& e) { return e.type == "inline"; });
    if (!wanted) return;
    std::map<std::string, int> layer_of_snapshot;
    int index = 0;
    for (const store::SnapshotRecord& snapshot : store_.snapshots().records_bottom_up(built.top)) {
      layer_of_snapshot[snapshot.id] = index++;
    }
    for (const remotecache::ExportRecord& record : cache_records(definition, solved, remotecache::CacheFormat::Mode::min)) {
      if (!record.top) {
        built.inline_cache.emplace_back(record.key, -1);
      } else if (auto it = layer_of_snapshot.find(*record.top); it != layer_of_snapshot.end()) {
        built.inline_cache.emplace_back(record.key, it->second);
      }
    }
    built.inline_cache_scheme = kCacheKeyScheme;
  }

  registry::CredentialLookup credential_lookup() {
    return [this](const std::string& domain) {
      auto it = request_.registry_auth.find(domain);
      return it == request_.registry_auth.end() ? std::nullopt : std::optional<registry::Credentials>(it->second);
    };
  }

  registry::RegistryClient registry_client(registry::HttpTransport& transport) {
    return registry::RegistryClient(transport, registry_->hosts, credential_lookup());
  }

  static bool reads_context(const graph::Definition& definition) {
    for (graph::OpIndex i : definition.graph.closure(definition.root)) {
      const auto* source = std::get_if<graph::SourceOp>(&definition.graph.op(i).body);
      if (source && source->kind == graph::SourceOp::Kind::local) return true;
    }
    return false;
  }

  void prepare_context() {
    std::string id = vertex_id("context");
    progress_.started(id, "[internal] load build context");
    try {
      context_ = materialize_context(store_, *builder_.contexts_, request_, builder_.context_reader_, cancel_.fd(),
                                     [&](int64_t bytes, bool done) {
        progress_.status(id, "transferring context:", bytes, 0, done);
      });
    } catch (const Error& e) {
      progress_.completed(id, "", false, e.what());
      throw;
    }
    progress_.completed(id, "", false, "");
  }

  BuildResult export_target(const Solved& solved) {
    std::string id = vertex_id("export:" + solved.key);
    progress_.started(id, "exporting to image");
    try {
      BuildResult out = write_image(solved, id);
      progress_.completed(id, "", false, "");
      return out;
    } catch (const Error& e) {
      progress_.completed(id, "", false, e.what());
      throw;
    }
  }

  BuildResult write_image(const Solved& solved, const std::string& vertex) {
    // FROM an image and nothing else: the image is the result, pulled now.
    Ref result = worker_->materialize(solved.result, cancel_, [&](int, std::string_view text) {
      progress_.status(vertex, std::string(text.substr(0, text.find('\n'))), 0, 0, true);
    });
    image::BuiltImage built{result.top, solved.base.diff_ids, solved.base.manifest, definition_.config,
                            request_.source_date_epoch, {}, ""};
    add_inline_cache(definition_, solved, built);
    for (const auto& [key, value] : request_.labels) built.config.labels[key] = value;
    image::StoredImage stored =
        image::store_image(store_, built, image_names(), builder_.layer_journals_.get(),
                           [&](const std::string& text, bool done) { progress_.status(vertex, text, 0, 0, done); });
    std::optional<store::Digest> pushed =
        push(store::ImageRecord{stored.descriptor.digest, stored.id(), std::chrono::system_clock::now()}, stored.names, vertex);
    for (const Output& output : request_.outputs) {
      if (image::is_store_output(output.type) || output.type == "registry") continue;
      if (request_.output_fd < 0) throw Error(ErrorKind::user, "output type " + output.type + " needs a destination");
      image::FdSink sink(request_.output_fd, "output", cancel_.fd());
      image::make_exporter(store_, output.type, output.attributes)->write(stored, built, sink);
    }
    // As BuildKit reports it: the manifest the registry holds when the image was pushed.
    if (pushed) return BuildResult{stored.id(), *pushed, stored.names, static_cast<int64_t>(store_.content().size(*pushed))};
    return BuildResult{stored.id(), stored.descriptor.digest, stored.names, stored.descriptor.size};
  }

  // -t names, and an image or registry output's name= (comma-separated), as buildx takes them.
  std::vector<std::string> image_names() const {
    std::vector<std::string> names = request_.tags;
    for (const Output& output : request_.outputs) {
      auto name = output.attributes.find("name");
      // An archive's name= names the image in the archive only.
      if ((output.type != "image" && output.type != "registry") || name == output.attributes.end()) continue;
      for (std::string& one : image::output_image_names(output.type, name->second)) names.push_back(std::move(one));
    }
    return names;
  }

  bool wants_push() const {
    if (request_.push) return true;
    return std::ranges::any_of(request_.outputs, [](const Output& output) {
      auto attribute = output.attributes.find("push");
      return output.type == "registry" || (attribute != output.attributes.end() && attribute->second == "true");
    });
  }

  // --push, type=registry, or type=image,push=true: every name goes to its registry.
  // Returns the digest of the manifest pushed (its layers gzip), when something was pushed.
  std::optional<store::Digest> push(const store::ImageRecord& record, const std::vector<std::string>& names,
                                    const std::string& vertex) {
    bool wanted = wants_push();
    registry::PushOptions options;
    for (const Output& output : request_.outputs) {
      if (output.type == "registry" || output.type == "image") {
        options.format = image::parse_export_format(output.attributes, image::default_oci_media_types(output.type));
      }
    }
    if (!wanted) return std::nullopt;
    if (names.empty()) throw Error(ErrorKind::user, "push needs a name: give the image one with -t or name=");
    auto transport = registry::make_curl_transport([this] { return cancel_.canceled(); }, registry_->proxies);
    registry::RegistryClient client = registry_client(*transport);
    options.max_concurrent_uploads = registry_->max_concurrent_uploads;
    options.progress = [&](const std::string& id, int64_t current, int64_t total, bool done) {
      progress_.status(vertex, id, current, total, done);
    };
    std::optional<store::Digest> pushed;
    for (const std::string& name : names) {
      progress_.status(vertex, "pushing layers", 0, 0, false);
      pushed = registry::push_image(store_, client, record, image::parse_reference(name), options);
      progress_.status(vertex, "pushing layers", 0, 0, true);
      progress_.status(vertex, "pushing manifest for " + name, 0, 0, true);
    }
    return pushed;
  }

  Builder& builder_;
  store::Store& store_;
  // First: what the build makes and uses is held from its start (see store/leases.h).
  std::shared_ptr<store::LeaseTable::Lease> lease_ =
      std::make_shared<store::LeaseTable::Lease>(store_.leases().acquire("build"));
  const BuildRequest& request_;
  Progress& progress_;
  const CancelToken& cancel_;
  // The daemon's settings as this build started, kept for all of it however often they change.
  const Settings settings_ = builder_.settings();
  const std::shared_ptr<const RegistrySettings> registry_ = settings_.registry;
  std::string dockerfile_;  // the request's, or the one in a tar context
  graph::Definition definition_;
  std::optional<MaterializedContext> context_;
  std::shared_ptr<StoreWorker> worker_;
  // Shared: an op that pulls one may outlive the build (see Scheduler).
  std::shared_ptr<PendingImages> pending_ = std::make_shared<PendingImages>(pending_puller());
  // Base images found in the store, manifest by config (see StoreWorker::set_resolved_images);
  // resolved from the platforms' conversions, which may run side by side.
  std::mutex resolved_mutex_;
  std::map<std::string, std::string> resolved_images_;
  std::vector<std::shared_ptr<const remotecache::ImportedCache>> exported_from_;  // kept while exports read them
  std::mutex cache_registry_mutex_;
  std::unique_ptr<registry::HttpTransport> cache_transport_;
  std::unique_ptr<registry::RegistryClient> cache_client_;
  // Shared: an op this build started may outlive it (see Scheduler).
  std::shared_ptr<BuildSandbox> sandbox_ = make_build_sandbox(settings_.sandbox, request_);
};

void Builder::set_sandbox(SandboxConfig config) {
  auto snapshot = std::make_shared<const SandboxConfig>(std::move(config));
  std::lock_guard lock(settings_mutex_);
  sandbox_ = std::move(snapshot);
}

void Builder::set_registry(RegistrySettings settings) {
  auto snapshot = std::make_shared<const RegistrySettings>(std::move(settings));
  std::lock_guard lock(settings_mutex_);
  registry_ = std::move(snapshot);
}

void Builder::set_settings(SandboxConfig config, RegistrySettings settings) {
  auto sandbox = std::make_shared<const SandboxConfig>(std::move(config));
  auto registry = std::make_shared<const RegistrySettings>(std::move(settings));
  std::lock_guard lock(settings_mutex_);
  sandbox_ = std::move(sandbox);
  registry_ = std::move(registry);
}

Builder::Settings Builder::settings() const {
  std::lock_guard lock(settings_mutex_);
  return {sandbox_, registry_};
}

std::shared_ptr<const RegistrySettings> Builder::registry() const {
  std::lock_guard lock(settings_mutex_);
  return registry_;
}

namespace {

// What builds of an earlier run (a crashed daemon's) left in their working dirs: mount points,
// step scratch and secret dirs under mounts/, half-made cache mounts (cache/new-*, including
// ones a prune was removing), the hosts file's temp copies, and materialized contexts, which
// this run does not know. The store's open() has unmounted whatever was mounted below them.
void sweep_work_dirs(store::Store& store) {
  remove_tree(store.root() + "/mounts");
  make_dirs(store.root() + "/mounts");
  remove_tree(store.root() + "/contexts");
  for (const auto& [dir, leftover] : {std::pair<const char*, const char*>{"/cache", "new-"}, {"/sandbox", ".tmp"}}) {
    std::string path = store.root() + dir;
    if (::access(path.c_str(), F_OK) != 0) continue;
    UniqueFd fd = store::fs::open_dir(path);
    for (const std::string& name : store::fs::entries(fd.get(), path)) {
      if (name.find(leftover) != std::string::npos) remove_tree(path + "/" + name);
    }
  }
}

}  // namespace

Builder::Builder(store::Store& store)
    : store_(store),
      sandbox_(std::make_shared<const SandboxConfig>()),
      registry_(std::make_shared<const RegistrySettings>()),
      contexts_(std::make_unique<ContextCache>()), layer_journals_(std::make_unique<image::LayerJournalCache>()) {
  sweep_work_dirs(store);
}

Builder::~Builder() = default;

store::LocalSources& Builder::local_sources() { return *contexts_; }

BuildResult Builder::build(const BuildRequest& request, Progress& progress, const CancelToken& cancel) {
  Run run(*this, request, progress, cancel);
  return run.run();
}

}  // namespace kbuild::solver
