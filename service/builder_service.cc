#include "service/builder_service.h"

#include <fcntl.h>
#include <unistd.h>

#include <map>
#include <mutex>
#include <set>
#include <stop_token>

#include "common/syscall.h"
#include "common/version.h"
#include "engine/image/blob_io.h"
#include "engine/image/image_archive.h"
#include "engine/image/layer_extract.h"
#include "engine/image/oci.h"
#include "engine/solver/layer_blobs.h"
#include "service/solve_progress.h"

namespace kbuild::service {
namespace {

template <typename T>
std::optional<T> option(const dbus::Options& options, const std::string& key) {
  auto it = options.find(key);
  if (it == options.end()) return std::nullopt;
  const T* value = it->second.template get_if<T>();
  if (!value) {
    throw Error(ErrorKind::user, "build option " + key + " has type " + it->second.signature() + ", expected " +
                                     dbus::Value(T{}).signature());
  }
  return *value;
}

solver::BuildRequest build_request(const dbus::CallContext& call, const dbus::Options& options) {
  solver::BuildRequest request;
  if (auto bytes = option<dbus::Bytes>(options, "dockerfile")) request.dockerfile.assign(bytes->begin(), bytes->end());
  request.dockerfile_name = option<std::string>(options, "dockerfile-name").value_or("Dockerfile");
  request.dockerignore = option<std::vector<std::string>>(options, "dockerignore").value_or(std::vector<std::string>{});
  std::string context_type = option<std::string>(options, "context-type").value_or("dir");
  if (context_type != "dir" && context_type != "tar") {
    throw Error(ErrorKind::user, "build option context-type must be dir or tar, not " + context_type);
  }
  request.context_is_tar = context_type == "tar";
  if (request.dockerfile.empty() && !request.context_is_tar) {
    throw Error(ErrorKind::user, "build option dockerfile is required unless the context is a tar");
  }
  request.caller = solver::Caller{call.caller.uid, call.caller.gid, call.caller.groups};
  request.target = option<std::string>(options, "target").value_or("");
  request.build_args = option<dbus::StringMap>(options, "build-args").value_or(dbus::StringMap{});
  request.labels = option<dbus::StringMap>(options, "labels").value_or(dbus::StringMap{});
  request.tags = option<std::vector<std::string>>(options, "tags").value_or(std::vector<std::string>{});
  for (const std::string& tag : request.tags) {
    try {
      image::parse_reference(tag);
    } catch (const Error& e) {
      throw e.with_context("invalid tag \"" + tag + "\"");  // buildx's words, before anything runs
    }
  }
  request.no_cache = option<bool>(options, "no-cache").value_or(false);
  request.no_cache_filter = option<std::vector<std::string>>(options, "no-cache-filter").value_or(std::vector<std::string>{});
  request.platform = option<std::string>(options, "platform").value_or("");
  for (const auto& entry : option<std::vector<dbus::StringMap>>(options, "outputs").value_or(std::vector<dbus::StringMap>{})) {
    solver::Output output;
    auto type = entry.find("type");
    if (type == entry.end() || type->second.empty()) throw Error(ErrorKind::user, "each output needs a type");
    output.type = type->second;
    for (const auto& [k, v] : entry) {
      if (k != "type") output.attributes[k] = v;
    }
    request.outputs.push_back(std::move(output));
  }
  for (const std::string& entitlement : option<std::vector<std::string>>(options, "allow").value_or(std::vector<std::string>{})) {
    if (entitlement != "network.host" && entitlement != "security.insecure") {
      throw Error(ErrorKind::user, "invalid entitlement: " + entitlement);
    }
    request.allow.insert(entitlement);
  }
  if (auto memory = option<uint64_t>(options, "memory"); memory && *memory) request.limits.memory_bytes = *memory;
  if (auto cpus = option<std::string>(options, "cpus"); cpus && !cpus->empty()) {
    char* end = nullptr;
    double value = std::strtod(cpus->c_str(), &end);
    if (*end != '\0' || !(value > 0) || value > 4096) throw Error(ErrorKind::user, "invalid cpus value: " + *cpus);
    request.limits.cpus = value;
  }
  if (auto pids = option<uint64_t>(options, "pids-limit"); pids && *pids) request.limits.pids = *pids;
  // As BuildKit's frontend takes it: the build arg SOURCE_DATE_EPOCH (buildx turns the client's
  // environment variable into that build arg only when none was given).
  std::optional<std::string> epoch = option<std::string>(options, "source-date-epoch");
  if (auto arg = request.build_args.find("SOURCE_DATE_EPOCH"); arg != request.build_args.end()) epoch = arg->second;
  if (epoch && !epoch->empty()) {
    try {
      size_t used = 0;
      request.source_date_epoch = std::stoll(*epoch, &used);
      if (used != epoch->size()) throw std::invalid_argument("trailing");
    } catch (const std::exception&) {
      throw Error(ErrorKind::user, "invalid SOURCE_DATE_EPOCH: " + *epoch);
    }
  }
  return request;
}

class StoreBlobWriter : public image::BlobWriter {
 public:
  explicit StoreBlobWriter(store::ContentStore::Writer writer) : writer_(std::move(writer)) {}
  void write(const void* data, size_t size) override { writer_.write(data, size); }
  store::Digest commit(std::optional<store::Digest> expected) override { return writer_.commit(expected); }

 private:
  store::ContentStore::Writer writer_;
};

class StoreBlobs : public image::BlobSink, public image::BlobSource {
 public:
  explicit StoreBlobs(store::ContentStore& content) : content_(content) {}
  std::unique_ptr<image::BlobWriter> writer() override { return std::make_unique<StoreBlobWriter>(content_.writer()); }
  UniqueFd open(const store::Digest& digest) override { return content_.open(digest); }

 private:
  store::ContentStore& content_;
};

bool is_hex(std::string_view s) {
  return !s.empty() && s.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

}  // namespace

BuilderService::BuilderService(store::Store& store, DaemonConfig config, solver::SandboxConfig sandbox,
                               std::string context_reader)
    : store_(store), config_(std::move(config)), builder_(store) {
  builder_.set_context_reader(std::move(context_reader));
  sandbox.allow_insecure = config_.entitlement_security_insecure;
  sandbox.allow_network_host = config_.entitlement_network_host;
  sandbox_backend_ = sandbox.cgroups ? std::string(sandbox.cgroups->name()) : "none";
  builder_.set_sandbox(std::move(sandbox));
}

dbus::Options BuilderService::build(const dbus::CallContext& call, const dbus::Options& options, UniqueFd context,
                                    UniqueFd progress_fd, UniqueFd output) {
  solver::BuildRequest request = build_request(call, options);
  if (auto buildkit = option<bool>(options, "buildkit"); buildkit.value_or(config_.buildkit) == false) {
    throw Error(ErrorKind::user, "the legacy builder (DOCKER_BUILDKIT=0 or features.buildkit=false) is not supported yet");
  }
  request.context_fd = context.get();
  request.output_fd = output.get();
  solver::CancelToken cancel;
  std::stop_callback on_disconnect(call.stop, [&cancel] { cancel.cancel(); });
  SolveProgress progress(std::move(progress_fd), cancel.fd());
  solver::BuildResult result = builder_.build(request, progress, cancel);
  std::string names;
  for (const auto& name : result.names) names += (names.empty() ? "" : ",") + name;
  return {{"image-id", dbus::Value(result.config_digest.str())},
          {"containerimage.digest", dbus::Value(result.manifest_digest.str())},
          {"containerimage.config.digest", dbus::Value(result.config_digest.str())},
          {"containerimage.descriptor.size", dbus::Value(result.manifest_size)},
          {"image.name", dbus::Value(names)}};
}

std::vector<dbus::Options> BuilderService::list_images(const dbus::CallContext&) {
  std::map<store::Digest, dbus::Options> by_config;
  std::map<store::Digest, std::vector<std::string>> names;
  for (const auto& [name, record] : store_.metadata().list_image_names()) {
    names[record.config].push_back(name);
    auto& entry = by_config[record.config];
    entry["id"] = dbus::Value(record.config.str());
    entry["digest"] = dbus::Value(record.manifest.str());
    entry["created"] = dbus::Value(static_cast<int64_t>(
        std::chrono::duration_cast<std::chrono::seconds>(record.created.time_since_epoch()).count()));
  }
  std::vector<dbus::Options> out;
  for (auto& [config, entry] : by_config) {
    entry["names"] = dbus::Value(names[config]);
    uint64_t size = 0;
    image::Manifest manifest = image::parse_manifest(store_.content().read_small(
        store::Digest::parse(std::get<std::string>(entry["digest"].variant()))));
    for (const auto& layer : manifest.layers) size += static_cast<uint64_t>(layer.size);
    entry["size"] = dbus::Value(size);
    out.push_back(entry);
  }
  return out;
}

store::ImageRecord BuilderService::find_image(const std::string& reference) {
  if (auto record = store_.metadata().image_by_name(image::normalize_reference(reference))) return *record;
  std::string hex = reference.starts_with("sha256:") ? reference.substr(7) : reference;
  if (is_hex(hex)) {
    std::optional<store::ImageRecord> found;
    for (const auto& [name, record] : store_.metadata().list_image_names()) {
      if (std::string(record.config.hex()).starts_with(hex)) {
        if (found && found->config != record.config) {
          throw Error(ErrorKind::user, "image id " + reference + " is ambiguous");
        }
        found = record;
      }
    }
    if (found) return *found;
  }
  throw Error(ErrorKind::not_found, "No such image: " + reference);
}

std::vector<std::string> BuilderService::remove_image(const dbus::CallContext&, const std::string& reference,
                                                      bool force) {
  std::vector<std::string> removed;
  std::string name = image::normalize_reference(reference);
  if (auto record = store_.metadata().image_by_name(name)) {
    store_.metadata().remove_image_name(name);
    removed.push_back("Untagged: " + image::familiar_reference(name));
    if (store_.metadata().names_for_config(record->config).empty()) removed.push_back("Deleted: " + record->config.str());
    return removed;
  }
  store::ImageRecord record = find_image(reference);
  std::vector<std::string> names = store_.metadata().names_for_config(record.config);
  if (names.size() > 1 && !force) {
    throw Error(ErrorKind::user, "conflict: unable to delete " + std::string(record.config.hex().substr(0, 12)) +
                                     " (must be forced) - image is referenced in multiple repositories");
  }
  for (const auto& n : names) {
    store_.metadata().remove_image_name(n);
    removed.push_back("Untagged: " + image::familiar_reference(n));
  }
  removed.push_back("Deleted: " + record.config.str());
  return removed;
}

void BuilderService::tag_image(const dbus::CallContext&, const std::string& source, const std::string& target) {
  store::ImageRecord record = find_image(source);
  store_.metadata().set_image_name(image::normalize_reference(target), record);
}

void BuilderService::save_images(const dbus::CallContext& call, const std::vector<std::string>& references,
                                 UniqueFd output) {
  CancelSignal cancel;
  std::stop_callback on_disconnect(call.stop, [&cancel] { cancel.cancel(); });
  std::vector<image::ArchiveImage> images;
  for (const std::string& reference : references) {
    store::ImageRecord record = find_image(reference);
    image::Descriptor target;
    target.media_type = image::document_media_type(store_.content().read_small(record.manifest));
    target.digest = record.manifest;
    target.size = static_cast<int64_t>(store_.content().size(record.manifest));
    std::vector<std::string> names;
    if (store_.metadata().image_by_name(image::normalize_reference(reference))) {
      names.push_back(image::normalize_reference(reference));
    }
    images.push_back(image::ArchiveImage{target, names});
  }
  solver::LazyBlobSource blobs(store_);
  image::FdSink sink(output.get(), "output", cancel.fd());
  image::ArchiveWriteOptions options;
  options.format = image::ArchiveFormat::docker;
  image::write_image_archive(images, blobs, sink, options);
}

void BuilderService::unpack_layers(const store::Digest& manifest_digest) {
  image::Manifest manifest = image::parse_manifest(store_.content().read_small(manifest_digest));
  image::ImageConfig config = image::parse_config(store_.content().read_small(manifest.config.digest));
  if (config.rootfs.diff_ids.size() != manifest.layers.size()) {
    throw Error(ErrorKind::user, "image " + manifest_digest.str() + ": the config lists " +
                                     std::to_string(config.rootfs.diff_ids.size()) + " layers, the manifest " +
                                     std::to_string(manifest.layers.size()));
  }
  if (store_.metadata().get_cache(store::image_chain_key(manifest.config.digest))) return;
  std::optional<std::string> parent;
  for (size_t i = 0; i < manifest.layers.size(); ++i) {
    const image::Descriptor& layer = manifest.layers[i];
    store::SnapshotStore::Prepared prepared = store_.snapshots().prepare(parent, "layer");
    UniqueFd blob = store_.content().open(layer.digest);
    UniqueFd root(check(::open(prepared.diff_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC), "open",
                        prepared.diff_path()));
    image::ExtractOptions options;
    options.expected_diff_id = config.rootfs.diff_ids[i];
    options.devices = image::DeviceNodes::create;
    options.layer_name = layer.digest.str();
    image::extract_layer(blob.get(), root.get(), options);
    root.reset();
    store::SnapshotRecord record = store_.snapshots().commit(std::move(prepared), config.rootfs.diff_ids[i]);
    store_.metadata().put_layer_blob(config.rootfs.diff_ids[i], store::LayerBlob{layer.digest, layer.media_type});
    parent = record.id;
  }
  store_.metadata().put_cache(store::image_chain_key(manifest.config.digest), store::CacheResult{parent.value_or(""), ""});
}

std::vector<std::string> BuilderService::load_images(const dbus::CallContext& call, UniqueFd input) {
  CancelSignal cancel;
  std::stop_callback on_disconnect(call.stop, [&cancel] { cancel.cancel(); });
  StoreBlobs blobs(store_.content());
  image::ImportResult imported = image::read_image_archive(input.get(), blobs, cancel.fd());
  std::vector<std::string> loaded;
  for (const auto& image : imported.images) {
    store::Digest manifest_digest = image.target.digest;
    if (image::is_index_type(image.target.media_type)) {
      image::Index index = image::parse_index(store_.content().read_small(manifest_digest));
      if (index.manifests.empty()) throw Error(ErrorKind::user, "image index " + manifest_digest.str() + " is empty");
      manifest_digest = index.manifests.front().digest;
    }
    unpack_layers(manifest_digest);
    image::Manifest manifest = image::parse_manifest(store_.content().read_small(manifest_digest));
    store::ImageRecord record{manifest_digest, manifest.config.digest, std::chrono::system_clock::now()};
    if (image.names.empty()) {
      loaded.push_back("Loaded image ID: " + manifest.config.digest.str());
    }
    for (const std::string& name : image.names) {
      std::string normalized = image::normalize_reference(name);
      store_.metadata().set_image_name(normalized, record);
      loaded.push_back("Loaded image: " + image::familiar_reference(normalized));
    }
  }
  return loaded;
}

dbus::Options BuilderService::disk_usage(const dbus::CallContext&) {
  uint64_t blobs = 0;
  for (const auto& digest : store_.content().list()) blobs += store_.content().size(digest);
  uint64_t snapshots = 0;
  std::map<std::string, store::SnapshotRecord> by_id;
  for (auto& s : store_.metadata().list_snapshots()) {
    snapshots += s.size;
    by_id.emplace(s.id, std::move(s));
  }
  // The layers the tagged images stand on, each counted once however many images share it.
  std::map<store::Digest, bool> images;
  std::set<std::string> image_layers;
  for (const auto& [name, record] : store_.metadata().list_image_names()) {
    if (!images.emplace(record.config, true).second) continue;
    auto chain = store_.metadata().get_cache(store::image_chain_key(record.config));
    for (std::optional<std::string> id = chain ? std::optional(chain->snapshot_id) : std::nullopt;
         id && !id->empty() && image_layers.insert(*id).second;) {
      auto found = by_id.find(*id);
      id = found == by_id.end() ? std::nullopt : found->second.parent;
    }
  }
  uint64_t images_size = 0;
  for (const std::string& id : image_layers) {
    if (auto found = by_id.find(id); found != by_id.end()) images_size += found->second.size;
  }
  return {{"images", dbus::Value(static_cast<uint64_t>(images.size()))},
          {"images-size", dbus::Value(images_size)},
          {"blobs-size", dbus::Value(blobs)},
          {"cache-records", dbus::Value(static_cast<uint64_t>(store_.metadata().list_cache().size()))},
          {"cache-size", dbus::Value(snapshots)}};
}

dbus::Options BuilderService::info(const dbus::CallContext&) {
  return {{"version", dbus::Value(std::string(kVersion))},
          {"root", dbus::Value(store_.root())},
          {"snapshotter", dbus::Value(std::string(store_.snapshots().overlay_supported() ? "overlayfs" : "none"))},
          {"sandbox-backend", dbus::Value(sandbox_backend_)},
          {"buildkit", dbus::Value(config_.buildkit)}};
}

}  // namespace kbuild::service
