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
#include "engine/solver/layer_blobs.h"
#include "engine/solver/step_executor.h"
#include "engine/solver/store_worker.h"
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
    // A tar context carries its own Dockerfile: it is read before anything else.
    if (request_.context_is_tar) {
      prepare_context();
      if (context_->dockerfile) dockerfile_ = *context_->dockerfile;
    }
    load_definition();
    if (!builder_.frontend_) throw Error(ErrorKind::internal, "the builder has no frontend");
    definition_ = builder_.frontend_(FrontendInput{dockerfile_, request_, [this](const std::string& reference,
                                                                                const std::string&) {
                                                      return resolve_image(reference);
                                                    }});
    if (!context_ && reads_context()) prepare_context();
    auto worker = std::make_shared<StoreWorker>(store_, context_, sandbox_);
    Solved solved = builder_.scheduler_.solve(definition_.graph, definition_.root, worker, progress_, cancel_);
    return export_target(solved);
  }

 private:
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

  std::optional<graph::ResolvedImage> resolve_image(const std::string& reference) {
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
    progress_.completed(id, "", false, "");
    return graph::ResolvedImage{from_image_config(image::parse_config(store_.content().read_small(record->config))),
                                record->config.str()};
  }

  bool reads_context() const {
    for (graph::OpIndex i : definition_.graph.closure(definition_.root)) {
      const auto* source = std::get_if<graph::SourceOp>(&definition_.graph.op(i).body);
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

  struct StageResult {
    std::optional<std::string> top;
    std::string key;
    std::vector<store::Digest> base_layers;
    std::optional<store::Digest> base_manifest;
  };

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
    LayerRecord layer = layer_for_snapshot(store_, snapshot, request_.source_date_epoch, builder_.layer_journals_.get());
    LayerInfo info;
    info.diff_id = layer.diff_id;
    // Layers stay uncompressed in the store: the blob's digest is the diff_id, and its tar is
    // written only when an export or docker save reads it.
    info.blob = descriptor(image::layer_media_type(image::Compression::none, true), layer.diff_id,
                           static_cast<int64_t>(layer.size));
    return info;
  }

  BuildResult export_target(const Solved& solved) {
    StageResult result{solved.result.top, solved.key, solved.base.diff_ids, solved.base.manifest};
    std::string id = vertex_id("export:" + result.key);
    progress_.started(id, "exporting to image");
    // What the image and its names refer to must be on disk before they are.
    store_.snapshots().sync();
    try {
      BuildResult out = write_image(result, id);
      progress_.completed(id, "", false, "");
      return out;
    } catch (const Error& e) {
      progress_.completed(id, "", false, e.what());
      throw;
    }
  }

  BuildResult write_image(const StageResult& result, const std::string& vertex) {
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
    graph::ImageConfig plan_config = definition_.config;
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
    size_t base_layer_snapshots = result.base_layers.size();
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

  void add_base_blobs(image::Manifest& manifest, const StageResult& result) {
    image::Manifest base = image::parse_manifest(store_.content().read_small(*result.base_manifest));
    manifest.layers.insert(manifest.layers.end(), base.layers.begin(), base.layers.end());
  }

  // Image archives carry gzip layers, as BuildKit's exporters write them by default; the
  // local store keeps its layers uncompressed.
  image::Descriptor export_manifest(image::Manifest manifest) {
    for (image::Descriptor& layer : manifest.layers) {
      if (layer.media_type != image::layer_media_type(image::Compression::none, true)) continue;
      if (auto compressed = compressed_layer(store_, layer.digest)) layer = *compressed;
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
        LazyBlobSource blobs(store_);
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
  graph::Definition definition_;
  std::optional<MaterializedContext> context_;
  // Shared: an op this build started may outlive it (see Scheduler).
  std::shared_ptr<BuildSandbox> sandbox_ =
      std::make_shared<BuildSandbox>(builder_.sandbox_, random_build_name(), request_.limits, request_.allow);
};

Builder::Builder(store::Store& store)
    : store_(store), contexts_(std::make_unique<ContextCache>()), layer_journals_(std::make_unique<LayerJournalCache>()) {
  make_dirs(store.root() + "/mounts");
  // Materialized contexts of an earlier run are not known to this one.
  remove_tree(store.root() + "/contexts");
}

Builder::~Builder() = default;

BuildResult Builder::build(const BuildRequest& request, Progress& progress, const CancelToken& cancel) {
  Run run(*this, request, progress, cancel);
  return run.run();
}

}  // namespace kbuild::solver
