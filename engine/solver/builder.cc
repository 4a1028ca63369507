#include "engine/solver/builder.h"

#include <sys/random.h>

#include "common/syscall.h"
#include "engine/image/blob_io.h"
#include "engine/image/exporter.h"
#include "engine/image/layer_blobs.h"
#include "engine/image/oci.h"
#include "engine/image/plan_config.h"
#include "engine/image/reference.h"
#include "engine/registry/transfer.h"
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
                                                                                const std::string& platform) {
                                                      return resolve_image(reference, platform);
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

  // A base image: from the store, or (missing there, or with --pull) from its registry.
  std::optional<graph::ResolvedImage> resolve_image(const std::string& reference, const std::string& platform) {
    std::string name = image::normalize_reference(reference);
    std::string id = vertex_id("metadata:" + name);
    progress_.started(id, "[internal] load metadata for " + name);
    std::optional<store::ImageRecord> record;
    try {
      if (!request_.pull) record = store_.metadata().image_by_name(name);
      if (!record) record = pull(name, platform, id);
    } catch (const Error& e) {
      progress_.completed(id, "", false, e.what());
      throw;
    }
    progress_.completed(id, "", false, "");
    return graph::ResolvedImage{image::to_plan_config(image::parse_config(store_.content().read_small(record->config))),
                                record->config.str()};
  }

  registry::RegistryClient registry_client(registry::HttpTransport& transport) {
    return registry::RegistryClient(transport, builder_.registry_.hosts, [this](const std::string& domain) {
      auto it = request_.registry_auth.find(domain);
      return it == request_.registry_auth.end() ? std::nullopt : std::optional<registry::Credentials>(it->second);
    });
  }

  store::ImageRecord pull(const std::string& name, const std::string& platform, const std::string& vertex) {
    auto transport = registry::make_curl_transport([this] { return cancel_.canceled(); }, builder_.registry_.proxies);
    registry::RegistryClient client = registry_client(*transport);
    registry::PullOptions options = registry::pull_options_for(platform);
    options.max_concurrent_downloads = builder_.registry_.max_concurrent_downloads;
    options.canceled = [this] { return cancel_.canceled(); };
    options.progress = [&](const std::string& id, int64_t current, int64_t total, bool done) {
      progress_.status(vertex, id, current, total, done);
    };
    return registry::pull_image(store_, client, image::parse_reference(name), options);
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
    // -t names, and an image or registry output's name= (comma-separated), as buildx takes them.
    std::vector<std::string> names = request_.tags;
    for (const Output& output : request_.outputs) {
      auto name = output.attributes.find("name");
      if ((output.type != "image" && output.type != "registry") || name == output.attributes.end()) continue;
      for (size_t start = 0; start <= name->second.size();) {
        size_t comma = name->second.find(',', start);
        std::string one = name->second.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        if (!one.empty()) names.push_back(one);
        if (comma == std::string::npos) break;
        start = comma + 1;
      }
    }
    image::StoredImage stored =
        image::store_image(store_, built, names, builder_.layer_journals_.get(),
                           [&](const std::string& text, bool done) { progress_.status(vertex, text, 0, 0, done); });
    std::optional<store::Digest> pushed = push(stored, vertex);
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

  // --push, type=registry, or type=image,push=true: every name goes to its registry.
  // Returns the digest of the manifest pushed (its layers gzip), when something was pushed.
  std::optional<store::Digest> push(const image::StoredImage& stored, const std::string& vertex) {
    bool wanted = request_.push;
    registry::PushOptions options;
    for (const Output& output : request_.outputs) {
      auto attribute = output.attributes.find("push");
      if (output.type == "registry" || (attribute != output.attributes.end() && attribute->second == "true")) wanted = true;
      if (output.type == "registry" || output.type == "image") {
        options.format = image::parse_export_format(output.attributes, image::default_oci_media_types(output.type));
      }
    }
    if (!wanted) return std::nullopt;
    if (stored.names.empty()) throw Error(ErrorKind::user, "push needs a name: give the image one with -t or name=");
    auto transport = registry::make_curl_transport([this] { return cancel_.canceled(); }, builder_.registry_.proxies);
    registry::RegistryClient client = registry_client(*transport);
    store::ImageRecord record{stored.descriptor.digest, stored.id(), std::chrono::system_clock::now()};
    options.max_concurrent_uploads = builder_.registry_.max_concurrent_uploads;
    options.progress = [&](const std::string& id, int64_t current, int64_t total, bool done) {
      progress_.status(vertex, id, current, total, done);
    };
    std::optional<store::Digest> pushed;
    for (const std::string& name : stored.names) {
      progress_.status(vertex, "pushing layers", 0, 0, false);
      pushed = registry::push_image(store_, client, record, image::parse_reference(name), options);
      progress_.status(vertex, "pushing layers", 0, 0, true);
      progress_.status(vertex, "pushing manifest for " + name, 0, 0, true);
    }
    return pushed;
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
