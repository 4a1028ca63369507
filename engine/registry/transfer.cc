#include "engine/registry/transfer.h"

#include <sys/utsname.h>
#include <unistd.h>

#include <chrono>
#include <mutex>
#include <thread>

#include "common/error.h"
#include "common/syscall.h"
#include "engine/image/blob_pipe.h"
#include "engine/image/export_format.h"
#include "engine/image/exporter.h"
#include "engine/image/image_store.h"
#include "engine/image/layer_blobs.h"
#include "engine/image/oci.h"
#include "engine/image/parallel.h"
#include "engine/store/added_blobs.h"

namespace kbuild::registry {
namespace {

std::string short_digest(const store::Digest& digest) { return std::string(digest.hex().substr(0, 12)); }

// Where a pulled blob came from ("domain/repository"), so that a push to another repository
// of the same registry can mount it instead of uploading it.
std::string blob_source_key(const store::Digest& digest) { return "blob-source:" + digest.str(); }

void remember_source(store::Store& store, const image::Reference& reference, const store::Digest& digest) {
  store.metadata().put_cache(blob_source_key(digest), store::CacheResult{"", reference.name()});
}

// The repository of `target`'s registry a blob was pulled from, if another than target's.
std::string mount_source(store::Store& store, const image::Reference& target, const store::Digest& digest) {
  std::optional<store::CacheResult> source = store.metadata().get_cache(blob_source_key(digest));
  if (!source) return "";
  std::string prefix = target.domain + "/";
  if (!source->metadata.starts_with(prefix)) return "";
  std::string repository = source->metadata.substr(prefix.size());
  return repository == target.path ? "" : repository;
}

// The index entry for the platform asked for: os and architecture must match; a variant
// only when asked for (else the first entry of that architecture, as containerd picks).
image::Descriptor pick_platform(const image::Index& index, const PullOptions& options) {
  for (const image::Descriptor& d : index.manifests) {
    if (!d.platform) continue;
    if (d.platform->os != options.os || d.platform->architecture != options.architecture) continue;
    if (!options.variant.empty() && d.platform->variant != options.variant) continue;
    return d;
  }
  std::string wanted = options.os + "/" + options.architecture + (options.variant.empty() ? "" : "/" + options.variant);
  throw Error(ErrorKind::not_found, "no match for platform " + wanted + " in the manifest list");
}

}  // namespace

namespace {

// A layer blob into the content store, verified by digest and size as it streams.
void download_layer(store::Store& store, RegistryClient& client, const image::Reference& reference,
                    const image::Descriptor& layer, const PullOptions& options, store::AddedBlobs& added) {
  std::string id = "pulling " + short_digest(layer.digest);
  store::ContentStore::Writer writer = store.content().writer();
  int64_t received = 0;
  auto last_report = std::chrono::steady_clock::now();
  client.blob(reference, layer.digest, layer.size, [&](std::string_view data) {
    writer.write(data);
    received += static_cast<int64_t>(data.size());
    auto now = std::chrono::steady_clock::now();
    if (options.progress && now - last_report > std::chrono::milliseconds(100)) {
      options.progress(id, received, layer.size, false);
      last_report = now;
    }
  });
  writer.commit(layer.digest);
  added.add(layer.digest);
  remember_source(store, reference, layer.digest);
  if (options.progress) options.progress(id, layer.size, layer.size, true);
}

ResolvedManifest resolve(store::Store& store, RegistryClient& client, const image::Reference& reference,
                         const PullOptions& options, store::AddedBlobs* added) {
  std::string wanted = reference.digest.empty() ? reference.tag : reference.digest;
  FetchedManifest fetched = client.manifest(reference, wanted);
  const store::Digest named = fetched.digest;
  if (fetched.media_type == image::media_type::oci_index || fetched.media_type == image::media_type::docker_manifest_list) {
    image::Index index = image::parse_index(fetched.bytes);
    image::Descriptor chosen = pick_platform(index, options);
    fetched = client.manifest(reference, chosen.digest.str());
  }
  if (fetched.media_type != image::media_type::oci_manifest && fetched.media_type != image::media_type::docker_manifest) {
    throw Error(ErrorKind::user, "unsupported manifest media type \"" + fetched.media_type + "\"");
  }
  image::Manifest manifest = image::parse_manifest(fetched.bytes);
  for (const image::Descriptor& layer : manifest.layers) {
    if (!image::is_layer_type(layer.media_type)) {
      throw Error(ErrorKind::user, "unsupported layer media type \"" + layer.media_type + "\"");
    }
    if (layer.size < 0) throw Error(ErrorKind::user, "a layer with a negative size");
  }
  // The config first: it is small, and the image is useless without it.
  // Claimed before it is looked for, so that neither a prune nor a failing concurrent pull
  // removes it while this one reads it.
  if (added) {
    added->use(manifest.config.digest);
  } else {
    store.leases().used_blob(manifest.config.digest);
  }
  if (!store.content().has(manifest.config.digest)) {
    if (manifest.config.size > static_cast<int64_t>(kManifestLimit)) {
      throw Error(ErrorKind::user, "the image config is larger than 4 MiB");
    }
    std::string config;
    client.blob(reference, manifest.config.digest, manifest.config.size, [&](std::string_view data) { config.append(data); });
    store.content().put(config);
    if (added) added->add(manifest.config.digest);
  }
  image::ImageConfig config = image::parse_config(store.content().read_small(manifest.config.digest));
  if (config.rootfs.diff_ids.size() != manifest.layers.size()) {
    throw Error(ErrorKind::user, "the image config lists " + std::to_string(config.rootfs.diff_ids.size()) +
                                     " layers, the manifest " + std::to_string(manifest.layers.size()));
  }
  return ResolvedManifest{std::move(fetched), std::move(manifest), named};
}

store::ImageRecord pull(store::Store& store, RegistryClient& client, const image::Reference& reference,
                        const PullOptions& options, store::Digest* named) {
  store::AddedBlobs added(store);
  ResolvedManifest resolved = resolve(store, client, reference, options, &added);
  if (named) *named = resolved.named;
  const FetchedManifest& fetched = resolved.fetched;
  const image::Manifest& manifest = resolved.manifest;
  image::ImageConfig config = image::parse_config(store.content().read_small(manifest.config.digest));
  image::ImageStore images(store);
  const bool unpacked = images.unpacked(manifest.config.digest);
  // Each layer is extracted as soon as it is in, while the others still download.
  std::vector<std::optional<store::SnapshotStore::Prepared>> extracted(manifest.layers.size());
  std::vector<std::function<void()>> jobs;
  for (size_t i = 0; i < manifest.layers.size(); ++i) {
    const image::Descriptor& layer = manifest.layers[i];
    // Claimed before it is looked for, as the config.
    added.use(layer.digest);
    const bool stored = store.content().has(layer.digest);
    if (stored) {
      if (options.progress) options.progress("pulling " + short_digest(layer.digest), layer.size, layer.size, true);
      remember_source(store, reference, layer.digest);
      if (unpacked) continue;
    }
    jobs.push_back([&, i, stored] {
      if (!stored) download_layer(store, client, reference, layer, options, added);
      if (!unpacked) extracted[i].emplace(images.extract(layer, config.rootfs.diff_ids[i], options.canceled));
    });
  }
  image::run_bounded(jobs, options.max_concurrent_downloads);
  added.use(fetched.digest);
  if (!store.content().has(fetched.digest)) added.add(fetched.digest);
  store::Digest manifest_digest = store.content().put(fetched.bytes);
  if (!unpacked) {
    std::vector<store::SnapshotStore::Prepared> layers;
    for (auto& layer : extracted) layers.push_back(std::move(*layer));
    images.commit_layers(manifest.config.digest, manifest.layers, config.rootfs.diff_ids, layers);
  }
  store::ImageRecord record{manifest_digest, manifest.config.digest, std::chrono::system_clock::now()};
  store.snapshots().sync();
  store.metadata().set_image_name(reference.str(), record);
  added.keep();
  return record;
}

// Sends a blob the store has, unless the registry has it or can mount it.
void push_stored_blob(store::Store& store, RegistryClient& client, const image::Reference& target,
                      const image::Descriptor& blob, const PushOptions& options) {
  std::string id = "pushing " + short_digest(blob.digest);
  if (client.has_blob(target, blob.digest)) {
    if (options.progress) options.progress(id, blob.size, blob.size, true);
    return;
  }
  image::LazyBlobSource source(store);
  UniqueFd fd = source.open(blob.digest);
  int64_t sent = 0;
  client.upload_blob(target, blob.digest, static_cast<uint64_t>(blob.size), [&](char* buffer, size_t room) {
    ssize_t n;
    do {
      n = ::read(fd.get(), buffer, room);
    } while (n < 0 && errno == EINTR);
    if (n < 0) throw_errno("reading blob", blob.digest.str());
    sent += n;
    if (options.progress) options.progress(id, sent, blob.size, false);
    return static_cast<size_t>(n);
  }, mount_source(store, target, blob.digest));
  if (options.progress) options.progress(id, blob.size, blob.size, true);
}

// Compresses a layer and uploads it at once, the compression on one thread (and its workers),
// the upload reading what it has made so far: the two overlap instead of adding up.
void push_new_layer(store::Store& store, RegistryClient& client, const image::Reference& target,
                    image::ExportLayer& layer, const PushOptions& options) {
  std::string id = "pushing " + short_digest(layer.diff_id);
  image::BlobPipe pipe;
  std::thread maker([&] {
    try {
      image::make_export_blob(store, options.format, layer, &pipe);
      pipe.close();
    } catch (...) {
      pipe.fail(std::current_exception());
    }
  });
  // The maker must not outlive this frame, whether the upload ends well or not.
  struct Joined {
    image::BlobPipe& pipe;
    std::thread& maker;
    ~Joined() {
      pipe.abandon();
      if (maker.joinable()) maker.join();
    }
  } joined{pipe, maker};
  int64_t sent = 0;
  client.upload_blob_streamed(target, [&](char* buffer, size_t room) {
    size_t n = pipe.read(buffer, room);
    sent += static_cast<int64_t>(n);
    if (options.progress) options.progress(id, sent, 0, false);
    return n;
  }, [&] {
    maker.join();
    return layer.blob->digest;
  });
  if (options.progress) options.progress(id, layer.blob->size, layer.blob->size, true);
}

// Sends the image's blobs the registry lacks; returns its manifest in the push's format,
// stored beside it.
image::Descriptor upload(store::Store& store, RegistryClient& client, const store::Digest& manifest_digest,
                         const image::Reference& target, const PushOptions& options) {
  image::Manifest ours = image::parse_manifest(store.content().read_small(manifest_digest));
  image::ExportPlan plan = image::plan_export(store, ours, options.format);
  std::vector<std::function<void()>> uploads;
  for (image::ExportLayer& layer : plan.layers) {
    uploads.push_back([&] {
      if (layer.blob) {
        push_stored_blob(store, client, target, *layer.blob, options);
      } else {
        push_new_layer(store, client, target, layer, options);
      }
    });
  }
  uploads.push_back([&] { push_stored_blob(store, client, target, ours.config, options); });
  image::run_bounded(uploads, options.max_concurrent_uploads);
  return image::store_export_manifest(store, plan);
}

store::Digest push(store::Store& store, RegistryClient& client, const store::ImageRecord& stored,
                   const image::Reference& target, const PushOptions& options) {
  std::string document = store.content().read_small(stored.manifest);
  std::string type = image::document_media_type(document);
  std::string reference = target.digest.empty() ? target.tag : target.digest;
  if (type != image::media_type::oci_index && type != image::media_type::docker_manifest_list) {
    image::Descriptor pushed = upload(store, client, stored.manifest, target, options);
    client.put_manifest(target, reference, pushed.media_type, store.content().read_small(pushed.digest));
    return pushed.digest;
  }
  // An index: each image by its digest, then the index (a Docker manifest list unless the
  // format is OCI's) under the tag.
  image::Index index = image::parse_index(document);
  index.media_type = options.format.oci_media_types ? image::media_type::oci_index
                                                    : image::media_type::docker_manifest_list;
  for (image::Descriptor& entry : index.manifests) {
    image::Descriptor pushed = upload(store, client, entry.digest, target, options);
    client.put_manifest(target, pushed.digest.str(), pushed.media_type, store.content().read_small(pushed.digest));
    pushed.platform = entry.platform;
    entry = std::move(pushed);
  }
  std::string bytes = image::serialize_index(index);
  store::Digest digest = store.content().put(bytes);
  client.put_manifest(target, reference, index.media_type, bytes);
  return digest;
}

}  // namespace

PullOptions pull_options_for(const std::string& platform) {
  PullOptions options;
  if (platform.empty()) {
    utsname machine{};
    ::uname(&machine);
    std::string arch = machine.machine;
    options.architecture = arch == "x86_64" ? "amd64" : arch == "aarch64" ? "arm64" : arch;
    if (arch.starts_with("armv7")) {
      options.architecture = "arm";
      options.variant = "v7";
    }
    return options;
  }
  std::vector<std::string> parts;
  for (size_t start = 0; start <= platform.size();) {
    size_t slash = platform.find('/', start);
    parts.push_back(platform.substr(start, slash == std::string::npos ? std::string::npos : slash - start));
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  options.os = parts[0];
  if (parts.size() > 1) options.architecture = parts[1];
  if (parts.size() > 2) options.variant = parts[2];
  if (options.os.empty() || options.architecture.empty() || parts.size() > 3) {
    throw Error(ErrorKind::user, "invalid platform \"" + platform + "\": expected os/arch[/variant]");
  }
  return options;
}

ResolvedManifest resolve_manifest(store::Store& store, RegistryClient& client, const image::Reference& reference,
                                  const PullOptions& options) {
  try {
    return resolve(store, client, reference, options, nullptr);
  } catch (const Error& e) {
    throw e.with_context("resolving " + reference.str());
  }
}

store::ImageRecord pull_image(store::Store& store, RegistryClient& client, const image::Reference& reference,
                              const PullOptions& options, store::Digest* named) {
  try {
    return pull(store, client, reference, options, named);
  } catch (const Error& e) {
    throw e.with_context("pulling " + reference.str());
  }
}

store::Digest push_image(store::Store& store, RegistryClient& client, const store::ImageRecord& image,
                         const image::Reference& target, const PushOptions& options) {
  try {
    return push(store, client, image, target, options);
  } catch (const Error& e) {
    throw e.with_context("pushing " + target.str());
  }
}

}  // namespace kbuild::registry
