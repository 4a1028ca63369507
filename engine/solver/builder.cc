#include "engine/solver/builder.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <future>

#include <nlohmann/json.hpp>

#include "common/syscall.h"
#include "common/temp_dir.h"
#include "common/unique_fd.h"
#include "engine/image/blob_io.h"
#include "engine/image/image_archive.h"
#include "engine/image/layer_tar.h"
#include "engine/image/oci.h"
#include "engine/solver/context.h"
#include "engine/image/layer_blobs.h"
#include "engine/solver/step_executor.h"
#include "engine/store/mount.h"

namespace kbuild::solver {
namespace {

using nlohmann::json;

constexpr int64_t kLogLimit = 2 << 20;

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string vertex_id(std::string_view seed) { return store::Digest::of(seed).str(); }

// A build's name among live ones, for its cgroup or slice: random, so that no two collide.
std::string random_build_name() {
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

// Blobs are read from and written to the content store through the image module's interfaces.



image::Descriptor descriptor(std::string media_type, const store::Digest& digest, int64_t size) {
  image::Descriptor d;
  d.media_type = std::move(media_type);
  d.digest = digest;
  d.size = size;
  return d;
}

image::ContainerConfig to_container_config(const graph::ImageConfig& c) {
  image::ContainerConfig out;
  out.user = c.user;
  out.exposed_ports = c.exposed_ports;
  out.env = c.env;
  if (c.entrypoint) out.entrypoint = *c.entrypoint;
  if (c.cmd) out.cmd = *c.cmd;
  out.volumes = c.volumes;
  out.working_dir = c.working_dir;
  out.labels = c.labels;
  out.stop_signal = c.stop_signal;
  out.args_escaped = c.args_escaped;
  if (c.healthcheck) {
    out.healthcheck = image::HealthConfig{c.healthcheck->test,          c.healthcheck->interval_ns,
                                          c.healthcheck->timeout_ns,    c.healthcheck->start_period_ns,
                                          c.healthcheck->start_interval_ns, c.healthcheck->retries};
  }
  out.on_build = c.onbuild;
  out.shell = c.shell;
  return out;
}

graph::ImageConfig from_image_config(const image::ImageConfig& config) {
  graph::ImageConfig out;
  const image::ContainerConfig& c = config.config;
  out.author = config.author;
  out.os = config.os;
  out.architecture = config.architecture;
  out.variant = config.variant;
  out.env = c.env;
  out.user = c.user;
  out.working_dir = c.working_dir;
  if (!c.entrypoint.empty()) out.entrypoint = c.entrypoint;
  if (!c.cmd.empty()) out.cmd = c.cmd;
  out.shell = c.shell;
  out.labels = c.labels;
  out.exposed_ports = c.exposed_ports;
  out.volumes = c.volumes;
  if (c.healthcheck) {
    const auto& h = *c.healthcheck;
    out.healthcheck = graph::Healthcheck{h.test, h.interval, h.timeout, h.start_period, h.start_interval,
                                         static_cast<int>(h.retries)};
  }
  out.onbuild = c.on_build;
  out.stop_signal = c.stop_signal;
  out.args_escaped = c.args_escaped;
  for (const auto& h : config.history) out.history.push_back({h.created_by, h.comment, h.empty_layer});
  return out;
}

}  // namespace

void CancelToken::check() const {
  if (canceled_) throw Error(ErrorKind::canceled, "build canceled");
}

// A step running now for every build that needs its cache key. It runs on a thread of its own
// with a cancel of its own, canceled only when the last build waiting for it has left, as
// BuildKit's shared vertices are: a build that is canceled detaches, the others keep it.
struct Builder::InFlight {
  using LogSink = std::function<void(int stream, std::string_view data)>;
  std::promise<std::string> promise;
  std::shared_future<std::string> snapshot = promise.get_future().share();  // the snapshot id made
  CancelToken cancel;
  std::mutex mutex;
  std::map<uint64_t, LogSink> waiters;  // guarded by mutex: each waiting build's progress log
  uint64_t next_waiter = 0;

  void log(int stream, std::string_view data) {
    std::lock_guard lock(mutex);
    for (auto& [id, sink] : waiters) sink(stream, data);
  }
};

// One build: its plan, the snapshots its stages reached, its progress.
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
    // A tar context carries its own Dockerfile: it is read before anything else.
    if (request_.context_is_tar) {
      prepare_context(true);
      if (context_->dockerfile) dockerfile_ = *context_->dockerfile;
    }
    load_definition();
    plan();
    announce_plan();
    if (!context_) prepare_context(false);
    build_stages();
    return export_target();
  }

 private:
  struct StageResult {
    std::optional<std::string> top;  // snapshot id of the stage's last layer; nullopt for scratch
    std::string key;                 // cache key of the stage's filesystem
    std::vector<store::Digest> base_layers;  // diff_ids of a base image's layers
    std::optional<store::Digest> base_manifest;  // the base image's manifest, which lists their blobs
  };

  // Every step's vertex, known from the plan before anything runs (as BuildKit's vertices are
  // the definition's, not cache keys): a step's is the digest of the vertex before it in its
  // stage, its definition, and the last vertices of the stages it reads.
  void announce_plan() {
    std::map<size_t, std::string> stage_last;
    for (const graph::StagePlan& stage : plan_.stages) {
      std::string previous = "scratch";
      if (stage.base_stage) {
        previous = stage_last.at(*stage.base_stage);
      } else if (stage.base_image != "scratch") {
        previous = vertex_id("from:" + base_images_.at(stage.base_image).config.str());
        progress_.announced(previous, stage.from_vertex_name);
      }
      for (const graph::Step& step : stage.steps) {
        json definition = {{"previous", previous}, {"kind", static_cast<int>(step.kind)}, {"step", describe_step(step)}};
        auto read_from = [&](const graph::CopySource& source) -> std::string {
          if (source.kind == graph::CopySource::Kind::stage) return stage_last.at(source.stage);
          return source.kind == graph::CopySource::Kind::image ? source.image : "";
        };
        if (step.kind == graph::StepKind::copy) definition["from"] = read_from(step.source);
        json mounts = json::array();
        for (const graph::CopySource& source : step.mount_sources) mounts.push_back(read_from(source));
        definition["mounts_from"] = mounts;
        std::string id = vertex_id("vertex:" + definition.dump());
        step_vertices_[&step] = id;
        progress_.announced(id, step.name);
        previous = id;
      }
      stage_last[stage.index] = previous;
    }
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

  void plan() {
    graph::PlanOptions options;
    options.resolve.target = request_.target;
    options.resolve.build_args = request_.build_args;
    if (!request_.platform.empty()) options.resolve.target_platform = dockerfile::Platform::parse(request_.platform);
    options.source_date_epoch = request_.source_date_epoch;
    options.image_config = [this](const std::string& reference, const dockerfile::Platform&) {
      return base_image_config(reference);
    };
    plan_ = graph::plan_build(dockerfile_, options);
  }

  std::optional<graph::ImageConfig> base_image_config(const std::string& reference) {
    std::string name = image::normalize_reference(reference);
    std::string id = vertex_id("metadata:" + name);
    progress_.started(id, "[internal] load metadata for " + name);
    auto record = store_.metadata().image_by_name(name);
    if (!record) {
      std::string error = name + ": not found in the local store (pulling from registries is not supported yet; "
                                 "build it or load it with kbuildctl load first)";
      progress_.completed(id, "", false, error);
      throw Error(ErrorKind::not_found, error);
    }
    base_images_[reference] = *record;
    progress_.completed(id, "", false, "");
    return from_image_config(image::parse_config(store_.content().read_small(record->config)));
  }

  void prepare_context(bool always) {
    bool needs_context = always;
    for (const auto& stage : plan_.stages) {
      for (const auto& step : stage.steps) {
        if (step.kind == graph::StepKind::copy && step.source.kind == graph::CopySource::Kind::context &&
            !std::get<dockerfile::CopyInstruction>(step.instruction.body).sources.empty()) {
          needs_context = true;
        }
        if (step.kind == graph::StepKind::run) {
          for (const auto& mount : std::get<dockerfile::RunInstruction>(step.instruction.body).mounts) {
            if (mount.type == dockerfile::MountType::bind && mount.from.empty()) needs_context = true;
          }
        }
      }
    }
    if (!needs_context) return;
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

  StageResult stage_result(size_t index) {
    std::lock_guard lock(stages_mutex_);
    return stages_.at(index);
  }

  // Every stage runs as soon as the stages it reads are done, independent ones in parallel.
  void build_stages() {
    std::map<size_t, std::shared_future<void>> done;
    for (const graph::StagePlan& stage : plan_.stages) {
      std::vector<std::shared_future<void>> needs;
      for (size_t dependency : stage.depends_on) needs.push_back(done.at(dependency));
      done[stage.index] = std::async(std::launch::async, [this, &stage, needs] {
                            for (const auto& need : needs) need.get();
                            try {
                              build_stage(stage);
                            } catch (...) {
                              failed_ = true;  // stop the other stages at their next step
                              throw;
                            }
                          }).share();
    }
    // Report the error of a stage that failed on its own, not the cancellations it caused.
    std::exception_ptr cause, canceled;
    for (auto& [index, future] : done) {
      try {
        future.get();
      } catch (const Error& e) {
        std::exception_ptr& slot = e.kind() == ErrorKind::canceled ? canceled : cause;
        if (!slot) slot = std::current_exception();
      } catch (...) {
        if (!cause) cause = std::current_exception();
      }
    }
    if (cause) std::rethrow_exception(cause);
    if (canceled) std::rethrow_exception(canceled);
  }

  void check_not_failed() const {
    if (failed_) throw Error(ErrorKind::canceled, "build canceled: another stage failed");
  }

  // Runs the step, or joins the same step a concurrent build started, and waits for its result
  // until this build is canceled.
  std::string run_shared(const std::string& key, StepContext& context, const std::string& vertex) {
    std::shared_ptr<InFlight> entry;
    uint64_t waiter = 0;
    bool owner = false;
    {
      std::lock_guard lock(builder_.in_flight_mutex_);
      auto it = builder_.in_flight_.find(key);
      if (it != builder_.in_flight_.end()) {
        entry = it->second;
      } else {
        entry = std::make_shared<InFlight>();
        builder_.in_flight_[key] = entry;
        owner = true;
      }
      std::lock_guard entry_lock(entry->mutex);
      waiter = entry->next_waiter++;
      entry->waiters[waiter] = [this, vertex](int stream, std::string_view data) { progress_.log(vertex, stream, data); };
    }
    if (owner) {
      try {
        start_shared_step(key, entry, context);
      } catch (...) {
        entry->promise.set_exception(std::current_exception());
        leave_shared_step(key, entry, waiter);
        std::lock_guard lock(builder_.in_flight_mutex_);
        if (auto it = builder_.in_flight_.find(key); it != builder_.in_flight_.end() && it->second == entry) {
          builder_.in_flight_.erase(it);
        }
        throw;
      }
    }
    for (;;) {
      if (entry->snapshot.wait_for(std::chrono::milliseconds(50)) == std::future_status::ready) {
        leave_shared_step(key, entry, waiter);
        return entry->snapshot.get();
      }
      if (cancel_.canceled()) {
        leave_shared_step(key, entry, waiter);
        throw Error(ErrorKind::canceled, "build canceled");
      }
    }
  }

  // Ends this build's wait; the step itself stops once no build waits for it any more.
  void leave_shared_step(const std::string& key, const std::shared_ptr<InFlight>& entry, uint64_t waiter) {
    std::lock_guard lock(builder_.in_flight_mutex_);
    std::lock_guard entry_lock(entry->mutex);
    entry->waiters.erase(waiter);
    if (!entry->waiters.empty() || entry->snapshot.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
      return;
    }
    entry->cancel.cancel();
    // A build that asks for the same step from now on starts it anew.
    auto it = builder_.in_flight_.find(key);
    if (it != builder_.in_flight_.end() && it->second == entry) builder_.in_flight_.erase(it);
  }

  // The step on a thread of its own, holding what it reads (the step, the context tree, the
  // build's sandbox) so that it may outlive the build that started it.
  void start_shared_step(const std::string& key, std::shared_ptr<InFlight> entry, const StepContext& context) {
    struct Job {
      graph::Step step;
      std::optional<std::string> parent, source;
      std::string context_dir;
      std::shared_ptr<MaterializedContext::State> context_state;
      std::shared_ptr<BuildSandbox> sandbox;
      std::vector<MountSource> mount_sources;
      bool linked;
    };
    auto job = std::make_shared<Job>(Job{context.step, context.parent, context.source, context.context_dir,
                                         context_ ? context_->state : nullptr, sandbox_, context.mount_sources,
                                         context.linked});
    Builder& builder = builder_;
    builder.start_step_thread([&builder, key, entry, job] {
      try {
        StepContext step{builder.store_, job->step, job->parent, job->source, job->context_dir, entry->cancel,
                         [&entry](int stream, std::string_view data) { entry->log(stream, data); },
                         job->sandbox.get(), job->mount_sources, job->linked};
        std::string snapshot = execute_step(step);
        builder.store_.metadata().put_cache(key, store::CacheResult{snapshot, ""});
        entry->promise.set_value(snapshot);
      } catch (...) {
        entry->promise.set_exception(std::current_exception());
      }
      std::lock_guard lock(builder.in_flight_mutex_);
      auto it = builder.in_flight_.find(key);
      if (it != builder.in_flight_.end() && it->second == entry) builder.in_flight_.erase(it);
    });
  }

  // An image in the local store as a source of files (COPY --from=image).
  StageResult image_source(const std::string& reference) {
    std::string name = image::normalize_reference(reference);
    auto record = store_.metadata().image_by_name(name);
    if (!record) {
      throw Error(ErrorKind::not_found, name + ": not found in the local store (pulling from registries is not "
                                               "supported yet; build it or load it with kbuildctl load first)");
    }
    auto chain = store_.metadata().get_cache(store::image_chain_key(record->config));
    if (!chain) throw Error(ErrorKind::internal, "image " + name + " has no unpacked layers in the store");
    StageResult result;
    result.key = "image:" + record->config.str();
    if (!chain->snapshot_id.empty()) result.top = chain->snapshot_id;
    return result;
  }

  StageResult base_of(const graph::StagePlan& stage) {
    if (stage.base_stage) return stage_result(*stage.base_stage);
    if (stage.base_image == "scratch") return StageResult{std::nullopt, "scratch", {}, std::nullopt};
    const store::ImageRecord& record = base_images_.at(stage.base_image);
    std::string id = vertex_id("from:" + record.config.str());
    progress_.started(id, stage.from_vertex_name);
    StageResult result;
    result.key = "image:" + record.config.str();
    auto chain = store_.metadata().get_cache(store::image_chain_key(record.config));
    if (!chain) {
      std::string error = "image " + stage.base_image + " has no unpacked layers in the store";
      progress_.completed(id, "", false, error);
      throw Error(ErrorKind::internal, error);
    }
    if (!chain->snapshot_id.empty()) result.top = chain->snapshot_id;
    image::ImageConfig config = image::parse_config(store_.content().read_small(record.config));
    result.base_layers = config.rootfs.diff_ids;
    result.base_manifest = record.manifest;
    progress_.completed(id, "", true, "");
    return result;
  }

  void build_stage(const graph::StagePlan& stage) {
    cancel_.check();
    StageResult state = base_of(stage);
    for (const graph::Step& step : stage.steps) {
      cancel_.check();
      check_not_failed();
      std::string source_key;
      std::optional<std::string> source_top;
      if (step.kind == graph::StepKind::copy) {
        switch (step.source.kind) {
          case graph::CopySource::Kind::context:
            // A COPY of heredocs only reads nothing from the context.
            if (!std::get<dockerfile::CopyInstruction>(step.instruction.body).sources.empty()) {
              source_key = context_selection_key(*context_, step);
            }
            break;
          case graph::CopySource::Kind::stage:
            source_key = stage_result(step.source.stage).key;
            source_top = stage_result(step.source.stage).top;
            break;
          case graph::CopySource::Kind::image: {
            StageResult image = image_source(step.source.image);
            source_key = image.key;
            source_top = image.top;
            break;
          }
        }
      }
      std::vector<MountSource> mount_sources;
      if (step.kind == graph::StepKind::run) source_key = run_mount_sources(step, mount_sources);
      std::string key = step_cache_key(state.key, step, source_key);
      std::string id = step_vertices_.at(&step);
      progress_.started(id, step.name);
      bool no_cache = request_.no_cache ||
                      std::find(request_.no_cache_filter.begin(), request_.no_cache_filter.end(), stage.name) !=
                          request_.no_cache_filter.end();
      std::optional<store::CacheResult> cached;
      if (!no_cache) cached = store_.metadata().get_cache(key);
      if (cached && store_.metadata().get_snapshot(cached->snapshot_id)) {
        progress_.completed(id, "", true, "");
        state.top = cached->snapshot_id;
        state.key = key;
        continue;
      }
      try {
        StepContext context{store_, step, state.top, source_top, context_ ? context_->path : std::string(),
                            cancel_, [&](int stream, std::string_view data) { progress_.log(id, stream, data); },
                            sandbox_.get(), std::move(mount_sources)};
        std::string snapshot = is_linked_copy(step) ? run_linked_copy(key, source_key, state, context, no_cache, id)
                                                    : run_shared(key, context, id);
        state.top = snapshot;
        state.key = key;
      } catch (const Error& e) {
        progress_.completed(id, "", false, e.what());
        throw e.at(step.instruction.lines);
      }
      progress_.completed(id, "", false, "");
    }
    std::lock_guard lock(stages_mutex_);
    stages_[stage.index] = std::move(state);
  }

  static bool is_linked_copy(const graph::Step& step) {
    return step.kind == graph::StepKind::copy && std::get<dockerfile::CopyInstruction>(step.instruction.body).link;
  }

  // COPY --link: the layer is made on nothing and cached apart from what is below it, then
  // stacked on the stage so far. A changed base reuses the layer (and its blob) as it is.
  std::string run_linked_copy(const std::string& key, const std::string& source_key, const StageResult& state,
                              StepContext& context, bool no_cache, const std::string& vertex) {
    std::string layer_key = step_cache_key("linked", context.step, source_key);
    std::optional<store::CacheResult> layer;
    if (!no_cache) layer = store_.metadata().get_cache(layer_key);
    std::string layer_id;
    if (layer && store_.metadata().get_snapshot(layer->snapshot_id)) {
      layer_id = layer->snapshot_id;
    } else {
      context.linked = true;
      layer_id = run_shared(layer_key, context, vertex);
    }
    if (!state.top) return layer_id;
    std::string stacked = restack_layer(store_, layer_id, state.top);
    store_.metadata().put_cache(key, store::CacheResult{stacked, ""});
    return stacked;
  }

  // What a RUN's mounts read enters its cache key: the files a context bind selects, the
  // stage or image a from= names. Cache and tmpfs mounts never do.
  std::string run_mount_sources(const graph::Step& step, std::vector<MountSource>& sources) {
    const auto& run = std::get<dockerfile::RunInstruction>(step.instruction.body);
    json keys = json::array();
    for (size_t i = 0; i < run.mounts.size(); ++i) {
      const auto& mount = run.mounts[i];
      const graph::CopySource& from = step.mount_sources.at(i);
      MountSource source;
      if (mount.type == dockerfile::MountType::bind && mount.from.empty()) {
        graph::Step selection = step;
        dockerfile::CopyInstruction copy;
        copy.sources = {mount.source.empty() ? "." : mount.source};
        selection.instruction.body = copy;
        keys.push_back(context_selection_key(*context_, selection));
      } else if (!mount.from.empty() && mount.type != dockerfile::MountType::cache) {
        StageResult result =
            from.kind == graph::CopySource::Kind::stage ? stage_result(from.stage) : image_source(from.image);
        source.top = result.top;
        keys.push_back(result.key);
      } else {
        keys.push_back(nullptr);
      }
      sources.push_back(std::move(source));
    }
    return keys.dump();
  }

  static std::string step_cache_key(const std::string& parent, const graph::Step& step, const std::string& source) {
    json def = {{"v", 1}, {"parent", parent}, {"source", source}, {"workdir", step.workdir}, {"user", step.user}};
    def["kind"] = static_cast<int>(step.kind);
    def["step"] = describe_step(step);
    return store::Digest::of(def.dump()).str();
  }

  // The snapshot ids of a chain, bottom first.
  std::vector<store::SnapshotRecord> chain_of(const std::optional<std::string>& top) {
    std::vector<store::SnapshotRecord> chain;
    std::optional<std::string> id = top;
    while (id) {
      auto record = store_.metadata().get_snapshot(*id);
      if (!record) throw Error(ErrorKind::internal, "snapshot " + *id + " is missing from the store");
      chain.push_back(*record);
      id = record->parent;
    }
    std::reverse(chain.begin(), chain.end());
    return chain;
  }

  struct LayerInfo {
    store::Digest diff_id;
    image::Descriptor blob;
  };

  LayerInfo layer_of(const store::SnapshotRecord& snapshot) {
    image::LayerRecord layer = image::layer_for_snapshot(store_, snapshot, request_.source_date_epoch, builder_.layer_journals_.get());
    LayerInfo info;
    info.diff_id = layer.diff_id;
    // Layers stay uncompressed in the store: the blob's digest is the diff_id, and its tar is
    // written only when an export or docker save reads it.
    info.blob = descriptor(image::layer_media_type(image::Compression::none, true), layer.diff_id,
                           static_cast<int64_t>(layer.size));
    return info;
  }

  BuildResult export_target() {
    const graph::StagePlan& target = plan_.stage(plan_.target);
    const StageResult& result = stage_result(plan_.target);
    std::string id = vertex_id("export:" + result.key);
    progress_.started(id, "exporting to image");
    // What the image and its names refer to must be on disk before they are.
    store_.snapshots().sync();
    try {
      BuildResult out = write_image(target, result, id);
      progress_.completed(id, "", false, "");
      return out;
    } catch (const Error& e) {
      progress_.completed(id, "", false, e.what());
      throw;
    }
  }

  BuildResult write_image(const graph::StagePlan& target, const StageResult& result, const std::string& vertex) {
    std::vector<store::SnapshotRecord> chain = chain_of(result.top);
    // The image's time is when its newest layer was made, so that a rebuild that hits the
    // cache everywhere gives the same image ID, as BuildKit's does.
    int64_t created_ns = now_ns();
    if (!chain.empty()) {
      created_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(chain.back().created.time_since_epoch()).count();
    }
    std::string created_text = request_.source_date_epoch
                                   ? image::format_time(*request_.source_date_epoch)
                                   : image::format_time(created_ns / 1000000000, static_cast<int32_t>(created_ns % 1000000000));
    graph::ImageConfig plan_config = target.config;
    for (const auto& [key, value] : request_.labels) plan_config.labels[key] = value;

    image::ImageConfig config;
    config.created = created_text;
    config.author = plan_config.author;
    config.architecture = plan_config.architecture;
    config.os = plan_config.os;
    config.variant = plan_config.variant;
    config.config = to_container_config(plan_config);
    config.rootfs.diff_ids = result.base_layers;

    image::Manifest manifest;
    manifest.media_type = "application/vnd.oci.image.manifest.v1+json";
    if (result.base_manifest) add_base_blobs(manifest, result);

    progress_.status(vertex, "exporting layers", 0, 0, false);
    size_t base_layer_snapshots = base_snapshot_count(target);
    for (size_t i = 0; i < chain.size(); ++i) {
      if (i < base_layer_snapshots) continue;  // the base image's layers, already listed
      LayerInfo layer = layer_of(chain[i]);
      // BuildKit keeps a layer whose diff is empty (a WORKDIR that existed): so do we.
      config.rootfs.diff_ids.push_back(layer.diff_id);
      manifest.layers.push_back(layer.blob);
    }
    progress_.status(vertex, "exporting layers", 0, 0, true);

    for (const graph::HistoryEntry& h : plan_config.history) {
      config.history.push_back(image::HistoryEntry{created_text, h.created_by, "", h.comment, h.empty_layer});
    }

    std::string config_bytes = image::serialize_config(config);
    store::Digest config_digest = store_.content().put(config_bytes);
    progress_.status(vertex, "writing image " + config_digest.str(), 0, 0, true);
    manifest.config = descriptor("application/vnd.oci.image.config.v1+json", config_digest,
                                        static_cast<int64_t>(config_bytes.size()));
    std::string manifest_bytes = image::serialize_manifest(manifest);
    store::Digest manifest_digest = store_.content().put(manifest_bytes);

    store_.metadata().put_cache(store::image_chain_key(config_digest), store::CacheResult{result.top.value_or(""), ""});

    BuildResult out{config_digest, manifest_digest, {}, static_cast<int64_t>(manifest_bytes.size())};
    store::ImageRecord record{manifest_digest, config_digest, std::chrono::system_clock::now()};
    for (const std::string& tag : request_.tags) {
      std::string name = image::normalize_reference(tag);
      store_.metadata().set_image_name(name, record);
      progress_.status(vertex, "naming to " + name, 0, 0, true);
      out.names.push_back(name);
    }
    write_outputs(manifest, out, result);
    return out;
  }

  size_t base_snapshot_count(const graph::StagePlan& target) const {
    // Layers of the base image sit at the bottom of the chain, one snapshot each.
    const graph::StagePlan* stage = &target;
    while (stage->base_stage) stage = &plan_.stage(*stage->base_stage);
    return stage->base_image == "scratch" ? 0 : stage_base_layers(*stage);
  }

  size_t stage_base_layers(const graph::StagePlan& stage) const {
    auto it = base_images_.find(stage.base_image);
    if (it == base_images_.end()) return 0;
    image::ImageConfig config = image::parse_config(store_.content().read_small(it->second.config));
    return config.rootfs.diff_ids.size();
  }

  void add_base_blobs(image::Manifest& manifest, const StageResult& result) {
    image::Manifest base = image::parse_manifest(store_.content().read_small(*result.base_manifest));
    manifest.layers.insert(manifest.layers.end(), base.layers.begin(), base.layers.end());
  }

  // Image archives carry gzip layers, as BuildKit's exporters write them by default; the
  // local store keeps its layers uncompressed.
  image::Descriptor export_manifest(image::Manifest manifest) {
    for (image::Descriptor& layer : manifest.layers) {
      if (layer.media_type != image::layer_media_type(image::Compression::none, true)) continue;
      if (auto compressed = image::compressed_layer(store_, layer.digest)) layer = *compressed;
    }
    std::string bytes = image::serialize_manifest(manifest);
    return descriptor("application/vnd.oci.image.manifest.v1+json", store_.content().put(bytes),
                      static_cast<int64_t>(bytes.size()));
  }

  void write_outputs(const image::Manifest& manifest, const BuildResult& result, const StageResult& stage) {
    for (const Output& output : request_.outputs) {
      if (output.type == "image" || output.type == "moby") continue;
      if (request_.output_fd < 0) throw Error(ErrorKind::user, "output type " + output.type + " needs a destination");
      image::FdSink sink(request_.output_fd, "output", cancel_.fd());
      if (output.type == "oci" || output.type == "docker") {
        image::LazyBlobSource blobs(store_);
        image::ArchiveImage archive_image{export_manifest(manifest), result.names};
        if (auto name = output.attributes.find("name"); name != output.attributes.end()) {
          archive_image.names.push_back(image::normalize_reference(name->second));
        }
        image::ArchiveWriteOptions options;
        options.format = output.type == "oci" ? image::ArchiveFormat::oci : image::ArchiveFormat::docker;
        image::write_image_archive({archive_image}, blobs, sink, options);
      } else if (output.type == "tar" || output.type == "local") {
        write_rootfs_tar(stage, sink);
      } else {
        throw Error(ErrorKind::user, "unsupported output type " + output.type);
      }
    }
  }

  void write_rootfs_tar(const StageResult& stage, image::ByteSink& sink) {
    TempDir view(store_.root() + "/mounts", "view-");
    std::vector<std::string> lowers;
    if (stage.top) lowers = store_.snapshots().lower_chain(*stage.top);
    std::optional<store::Mount> mount;
    if (!lowers.empty()) mount = store::Mount::overlay(lowers, "", "", view.path());
    UniqueFd dir(check(::open(view.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC), "open", view.path()));
    image::LayerOptions options;
    options.compression = image::Compression::none;
    options.source_date_epoch = request_.source_date_epoch;
    image::write_layer(dir.get(), sink, options);
  }

  Builder& builder_;
  store::Store& store_;
  const BuildRequest& request_;
  Progress& progress_;
  const CancelToken& cancel_;
  std::string dockerfile_;  // the request's, or the one in a tar context
  graph::BuildPlan plan_;
  std::optional<MaterializedContext> context_;
  std::map<std::string, store::ImageRecord> base_images_;
  std::map<const graph::Step*, std::string> step_vertices_;  // progress vertex of each step
  std::mutex stages_mutex_;
  std::map<size_t, StageResult> stages_;
  std::atomic<bool> failed_{false};
  // Shared: a step this build started may outlive it (see start_shared_step).
  std::shared_ptr<BuildSandbox> sandbox_ =
      std::make_shared<BuildSandbox>(builder_.sandbox_, random_build_name(), request_.limits, request_.allow);
};

Builder::Builder(store::Store& store)
    : store_(store), contexts_(std::make_unique<ContextCache>()), layer_journals_(std::make_unique<image::LayerJournalCache>()) {
  make_dirs(store.root() + "/mounts");
  // Materialized contexts of an earlier run are not known to this one.
  remove_tree(store.root() + "/contexts");
}

Builder::~Builder() {
  // Every build has returned, so no step has a waiter left: each is canceled and ends soon.
  std::map<uint64_t, std::thread> threads;
  {
    std::lock_guard lock(step_threads_mutex_);
    threads.swap(step_threads_);
  }
  for (auto& [id, thread] : threads) thread.join();
}

void Builder::start_step_thread(std::function<void()> body) {
  std::lock_guard lock(step_threads_mutex_);
  for (uint64_t id : finished_step_threads_) {
    auto it = step_threads_.find(id);
    if (it == step_threads_.end()) continue;
    it->second.join();  // it said it finished: a short wait at most
    step_threads_.erase(it);
  }
  finished_step_threads_.clear();
  const uint64_t id = next_step_thread_++;
  step_threads_.emplace(id, std::thread([this, id, body = std::move(body)] {
                          body();
                          std::lock_guard lock(step_threads_mutex_);
                          finished_step_threads_.push_back(id);
                        }));
}

BuildResult Builder::build(const BuildRequest& request, Progress& progress, const CancelToken& cancel) {
  Run run(*this, request, progress, cancel);
  return run.run();
}

std::optional<graph::ImageConfig> Builder::stored_image_config(const std::string& reference) {
  auto record = store_.metadata().image_by_name(image::normalize_reference(reference));
  if (!record) return std::nullopt;
  return from_image_config(image::parse_config(store_.content().read_small(record->config)));
}

}  // namespace kbuild::solver
