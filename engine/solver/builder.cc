#include "engine/solver/builder.h"

#include <sys/random.h>

#include "common/syscall.h"
#include "engine/image/blob_io.h"
#include "engine/image/exporter.h"
#include "engine/image/layer_blobs.h"
#include "engine/image/oci.h"
#include "engine/image/plan_config.h"
#include "engine/image/reference.h"
#include "engine/solver/context.h"
#include "engine/solver/step_executor.h"
#include "engine/solver/store_worker.h"

namespace kbuild::solver {
namespace {

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
    return graph::ResolvedImage{image::to_plan_config(image::parse_config(store_.content().read_small(record->config))),
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
    image::BuiltImage built{solved.result.top, solved.base.diff_ids, solved.base.manifest, definition_.config,
                            request_.source_date_epoch};
    for (const auto& [key, value] : request_.labels) built.config.labels[key] = value;
    image::StoredImage stored =
        image::store_image(store_, built, request_.tags, builder_.layer_journals_.get(),
                           [&](const std::string& text, bool done) { progress_.status(vertex, text, 0, 0, done); });
    for (const Output& output : request_.outputs) {
      if (image::is_store_output(output.type)) continue;
      if (request_.output_fd < 0) throw Error(ErrorKind::user, "output type " + output.type + " needs a destination");
      image::FdSink sink(request_.output_fd, "output", cancel_.fd());
      image::make_exporter(store_, output.type, output.attributes)->write(stored, built, sink);
    }
    return BuildResult{stored.id(), stored.descriptor.digest, stored.names, stored.descriptor.size};
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
    : store_(store), contexts_(std::make_unique<ContextCache>()), layer_journals_(std::make_unique<image::LayerJournalCache>()) {
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
