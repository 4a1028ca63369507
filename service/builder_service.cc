#include "service/builder_service.h"

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <stop_token>

#include "common/version.h"
#include "engine/dockerfile/classic_builder.h"
#include "engine/dockerfile/convert.h"
#include "engine/gc/collector.h"
#include "engine/image/blob_io.h"
#include "engine/image/export_format.h"
#include "engine/image/layer_blobs.h"
#include "engine/image/reference.h"
#include "engine/registry/transfer.h"
#include "engine/remotecache/cache_manifest.h"
#include "service/build_secrets.h"
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

// registry-auth and registry-identity-tokens: the caller's credentials by registry domain,
// never logged nor stored.
std::map<std::string, registry::Credentials> registry_auth(const dbus::Options& options) {
  return registry::credentials_by_domain(
      option<dbus::StringMap>(options, "registry-auth").value_or(dbus::StringMap{}),
      option<dbus::StringMap>(options, "registry-identity-tokens").value_or(dbus::StringMap{}));
}

// --secret: option "secrets" lists the ids, "secret-fd-N" holds the N-th one's fd.
std::map<std::string, std::string> build_secrets(const dbus::Options& options) {
  std::map<std::string, std::string> secrets;
  std::vector<std::string> ids = option<std::vector<std::string>>(options, "secrets").value_or(std::vector<std::string>{});
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::string& id = ids[i];
    if (id.empty()) throw Error(ErrorKind::user, "secret missing ID");
    const dbus::Fd* fd = dbus::find_option<dbus::Fd>(options, "secret-fd-" + std::to_string(i));
    if (!fd || fd->get() < 0) throw Error(ErrorKind::user, "secret " + id + ": no secret-fd-" + std::to_string(i) + " given");
    if (!secrets.emplace(id, read_secret_fd(fd->get(), id)).second) {
      throw Error(ErrorKind::user, "secret " + id + " is given twice");
    }
  }
  return secrets;
}

// --ssh: option "ssh" lists the ids, "ssh-fd-N" holds the N-th one's control socket, which
// must be an AF_UNIX stream socket. The fds stay the options' for the length of the build.
std::map<std::string, int> ssh_agents(const dbus::Options& options) {
  std::map<std::string, int> agents;
  std::vector<std::string> ids = option<std::vector<std::string>>(options, "ssh").value_or(std::vector<std::string>{});
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::string& id = ids[i];
    const dbus::Fd* fd = dbus::find_option<dbus::Fd>(options, "ssh-fd-" + std::to_string(i));
    if (!fd || fd->get() < 0) throw Error(ErrorKind::user, "ssh " + id + ": no ssh-fd-" + std::to_string(i) + " given");
    int domain = 0, type = 0;
    socklen_t size = sizeof domain;
    bool unix_socket = ::getsockopt(fd->get(), SOL_SOCKET, SO_DOMAIN, &domain, &size) == 0 && domain == AF_UNIX;
    size = sizeof type;
    if (!unix_socket || ::getsockopt(fd->get(), SOL_SOCKET, SO_TYPE, &type, &size) != 0 || type != SOCK_STREAM) {
      throw Error(ErrorKind::user, "ssh " + id + ": the fd is not an AF_UNIX stream socket");
    }
    if (!agents.emplace(id.empty() ? "default" : id, fd->get()).second) {
      throw Error(ErrorKind::user, "invalid duplicate ID " + id);
    }
  }
  return agents;
}

// --cache-from (`key` "cache-from") or --cache-to entries, checked as BuildKit checks them
// before anything runs: a known type, a ref for a registry, a format it would take.
std::vector<solver::CacheEntry> cache_entries(const dbus::Options& options, const std::string& key) {
  const bool to = key == "cache-to";
  std::vector<solver::CacheEntry> entries;
  for (const auto& map : option<std::vector<dbus::StringMap>>(options, key).value_or(std::vector<dbus::StringMap>{})) {
    solver::CacheEntry entry;
    for (const auto& [k, v] : map) {
      if (k == "type") {
        entry.type = v;
      } else {
        entry.attributes[k] = v;
      }
    }
    bool known = entry.type == "registry" || entry.type == "local" || (to && entry.type == "inline");
    if (!known) {
      throw Error(ErrorKind::user, std::string(to ? "unknown cache exporter: " : "unknown cache importer: ") + "\"" +
                                       entry.type + "\"");
    }
    if (entry.type == "registry") {
      auto ref = entry.attributes.find("ref");
      if (ref == entry.attributes.end() || ref->second.empty()) throw Error(ErrorKind::user, key + ": ref is required");
      try {
        image::parse_reference(ref->second);
      } catch (const Error& e) {
        throw e.with_context(key + ": invalid ref \"" + ref->second + "\"");
      }
    }
    if (entry.type == "local") {
      // The client serves its directory on a socket of its own (cli/cache_layout.h).
      auto fd = entry.attributes.find("fd");
      const dbus::Fd* socket = fd == entry.attributes.end() ? nullptr
                                                            : dbus::find_option<dbus::Fd>(options, "cache-fd-" + fd->second);
      if (!socket || socket->get() < 0) throw Error(ErrorKind::user, key + ": a local cache needs its cache-fd-N socket");
      entry.fd = socket->get();
      entry.attributes.erase("fd");
    }
    if (to) remotecache::parse_cache_format(entry.attributes);
    entries.push_back(std::move(entry));
  }
  return entries;
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
  for (const std::string& tag : request.tags) image::check_build_tag(tag);  // buildx's words, before anything runs
  request.pull = option<bool>(options, "pull").value_or(false);
  request.push = option<bool>(options, "push").value_or(false);
  request.registry_auth = registry_auth(options);
  request.no_cache = option<bool>(options, "no-cache").value_or(false);
  request.no_cache_filter = option<std::vector<std::string>>(options, "no-cache-filter").value_or(std::vector<std::string>{});
  for (const auto& platform : dockerfile::parse_platform_list(option<std::string>(options, "platform").value_or(""))) {
    request.platforms.push_back(platform.format());
  }
  for (const auto& entry : option<std::vector<dbus::StringMap>>(options, "outputs").value_or(std::vector<dbus::StringMap>{})) {
    solver::Output output;
    auto type = entry.find("type");
    if (type == entry.end() || type->second.empty()) throw Error(ErrorKind::user, "each output needs a type");
    output.type = type->second;
    for (const auto& [k, v] : entry) {
      if (k != "type") output.attributes[k] = v;
    }
    if (output.type != "tar" && output.type != "local") {
      // Before anything runs: a format BuildKit would refuse ("compression=lz4").
      image::parse_export_format(output.attributes, image::default_oci_media_types(output.type));
    }
    if (auto name = output.attributes.find("name"); name != output.attributes.end()) {
      for (const std::string& one : image::output_image_names(output.type, name->second)) image::check_build_tag(one);
    }
    request.outputs.push_back(std::move(output));
  }
  request.secrets = build_secrets(options);
  request.ssh_agents = ssh_agents(options);
  request.cache_from = cache_entries(options, "cache-from");
  request.cache_to = cache_entries(options, "cache-to");
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

// The classic builder has none of these: refused before anything runs, in its words.
void refuse_buildkit_only_options(const solver::BuildRequest& request) {
  auto refuse = [](const std::string& option) { throw Error(ErrorKind::user, dockerfile::requires_buildkit(option)); };
  if (!request.secrets.empty()) refuse("secret");
  if (!request.ssh_agents.empty()) refuse("ssh");
  if (!request.cache_to.empty()) refuse("cache-to");
  if (!request.cache_from.empty()) refuse("cache-from");
  if (!request.no_cache_filter.empty()) refuse("no-cache-filter");
  if (!request.allow.empty()) refuse("allow");
  if (request.push) refuse("push");
  for (const solver::Output& output : request.outputs) {
    if (output.type != "image") refuse("output");
  }
}

// The Dockerfile frontend, with the request's options.
graph::Definition convert_dockerfile(const solver::FrontendInput& input) {
  dockerfile::ConvertOptions options;
  options.resolve.target = input.request.target;
  options.resolve.build_args = input.request.build_args;
  if (!input.platform.empty()) options.resolve.target_platform = dockerfile::Platform::parse(input.platform);
  options.multi_platform = input.multi_platform;
  options.resolve_image = input.resolve_image;
  options.no_cache = input.request.no_cache;
  options.no_cache_filter = input.request.no_cache_filter;
  options.classic = input.request.classic;
  if (options.classic) options.labels = input.request.labels;
  return dockerfile::convert_dockerfile(input.text, options);
}

// A du record as DiskUsage and Prune return it: strings, times in Unix nanoseconds.
dbus::StringMap record_map(const gc::UsageRecord& record) {
  auto ns = [](gc::Clock::time_point time) {
    return std::to_string(std::chrono::duration_cast<std::chrono::nanoseconds>(time.time_since_epoch()).count());
  };
  std::string parents;
  for (const std::string& parent : record.parents) parents += (parents.empty() ? "" : ",") + parent;
  dbus::StringMap map{{"id", record.id},
                      {"parents", parents},
                      {"created", ns(record.created)},
                      {"mutable", record.mutable_ ? "true" : "false"},
                      {"in-use", record.in_use ? "true" : "false"},
                      {"shared", record.shared ? "true" : "false"},
                      {"size", std::to_string(record.size)},
                      {"description", record.description},
                      {"usage-count", std::to_string(record.usage_count)},
                      {"type", record.type}};
  if (record.last_used) map.emplace("last-used", ns(*record.last_used));
  return map;
}

// Info's platforms (those steps can run now) and platforms-unusable (those a handler or an
// emulator is there for, but that steps cannot run, with why).
void add_platforms(const sandbox::Emulation& emulation, bool install_allowed, dbus::Options& info) {
  std::vector<std::string> platforms;
  dbus::StringMap unusable;
  for (const sandbox::PlatformSupport& s : emulation.support(install_allowed)) {
    if (s.runnable()) platforms.push_back(s.platform);
    if (s.state == sandbox::PlatformSupport::State::unusable) unusable.emplace(s.platform, s.detail);
  }
  info.emplace("platforms", dbus::Value(std::move(platforms)));
  info.emplace("platforms-unusable", dbus::Value(std::move(unusable)));
}

}  // namespace

BuilderService::BuilderService(store::Store& store, DaemonConfig config, solver::SandboxConfig sandbox,
                               std::string context_reader, std::string certs_dir)
    : store_(store),
      images_(store),
      builder_(store),
      sandbox_backend_(sandbox.cgroups ? std::string(sandbox.cgroups->name()) : "none"),
      emulation_(sandbox.emulation),
      config_(builder_, std::move(sandbox), std::move(certs_dir), std::move(config)),
      monitor_(make_log_sink(), [this] {
        image::StoreUsage usage = images_.usage();
        return usage.blobs_size + usage.cache_size;
      }),
      gc_(store, config_, &builder_.local_sources()) {
  builder_.set_context_reader(std::move(context_reader));
  builder_.set_frontend(convert_dockerfile);
}

dbus::Options BuilderService::build(const dbus::CallContext& call, const dbus::Options& options, UniqueFd context,
                                    UniqueFd progress_fd, UniqueFd output) {
  solver::BuildRequest request = build_request(call, options);
  // DOCKER_BUILDKIT from the caller, else daemon.json's features.buildkit.
  request.classic = !option<bool>(options, "buildkit").value_or(config_.current()->buildkit);
  if (request.classic) refuse_buildkit_only_options(request);
  request.context_fd = context.get();
  request.output_fd = output.get();
  solver::CancelToken cancel;
  std::stop_callback on_disconnect(call.stop, [&cancel] { cancel.cancel(); });
  SolveProgress progress(std::move(progress_fd), cancel.fd(), request.classic);
  request.build_name = solver::new_build_name();
  // A GC pass once it has ended, as BuildKit runs one after each build, however it ended.
  struct CollectAfter {
    GarbageCollector& gc;
    ~CollectAfter() { gc.request(); }
  } collect_after{gc_};
  BuildMonitor::Build monitored(monitor_, request, progress);
  solver::BuildResult result;
  try {
    result = builder_.build(request, monitored, cancel);
  } catch (...) {
    monitored.failed(std::current_exception());
    throw;
  }
  monitored.succeeded(result);
  std::string names;
  for (const auto& name : result.names) names += (names.empty() ? "" : ",") + name;
  return {{"image-id", dbus::Value(result.config_digest.str())},
          {"containerimage.digest", dbus::Value(result.manifest_digest.str())},
          {"containerimage.config.digest", dbus::Value(result.config_digest.str())},
          {"containerimage.descriptor.size", dbus::Value(result.manifest_size)},
          {"image.name", dbus::Value(names)}};
}

std::vector<dbus::Options> BuilderService::list_images(const dbus::CallContext&) {
  std::vector<dbus::Options> out;
  for (const image::ImageSummary& summary : images_.list()) {
    dbus::Options image{{"id", dbus::Value(summary.config.str())},
                   {"digest", dbus::Value(summary.manifest.str())},
                   {"created", dbus::Value(static_cast<int64_t>(std::chrono::duration_cast<std::chrono::seconds>(
                                                                     summary.created.time_since_epoch())
                                                                     .count()))},
                   {"names", dbus::Value(summary.names)},
                   {"size", dbus::Value(summary.size)}};
    if (!summary.platforms.empty()) image.emplace("platforms", dbus::Value(summary.platforms));
    out.push_back(std::move(image));
  }
  return out;
}

std::vector<std::string> BuilderService::remove_image(const dbus::CallContext&, const std::string& reference,
                                                      bool force) {
  image::check_image_reference(reference);
  return images_.remove(reference, force);
}

void BuilderService::tag_image(const dbus::CallContext&, const std::string& source, const std::string& target) {
  image::check_tag_names(source, target);
  images_.tag(source, target);
}

void BuilderService::save_images(const dbus::CallContext& call, const std::vector<std::string>& references,
                                 UniqueFd output) {
  for (const std::string& reference : references) image::check_image_reference(reference);
  store::LeaseTable::Lease lease = store_.leases().acquire("save");  // layer blobs it makes
  CancelSignal cancel;
  std::stop_callback on_disconnect(call.stop, [&cancel] { cancel.cancel(); });
  image::LazyBlobSource blobs(store_);
  image::FdSink sink(output.get(), "output", cancel.fd());
  images_.save(references, blobs, sink);
}

std::vector<std::string> BuilderService::load_images(const dbus::CallContext& call, UniqueFd input) {
  store::LeaseTable::Lease lease = store_.leases().acquire("load");
  CancelSignal cancel;
  std::stop_callback on_disconnect(call.stop, [&cancel] { cancel.cancel(); });
  return images_.load(input.get(), cancel.fd());
}

namespace {

registry::RegistryClient client_for(const solver::RegistrySettings& settings, registry::HttpTransport& transport,
                                    std::map<std::string, registry::Credentials> auth) {
  return registry::RegistryClient(transport, settings.hosts, [auth = std::move(auth)](const std::string& domain) {
    auto it = auth.find(domain);
    return it == auth.end() ? std::nullopt : std::optional<registry::Credentials>(it->second);
  });
}

}  // namespace

std::vector<std::string> BuilderService::pull_image(const dbus::CallContext& call, const std::string& reference,
                                                    const dbus::Options& options) {
  image::Reference ref = image::parse_reference(reference);
  store::LeaseTable::Lease lease = store_.leases().acquire("pull " + ref.str());
  std::atomic<bool> canceled{false};
  std::stop_callback on_disconnect(call.stop, [&canceled] { canceled = true; });
  std::shared_ptr<const solver::RegistrySettings> settings = builder_.registry();
  auto transport = registry::make_curl_transport([&canceled] { return canceled.load(); }, settings->proxies);
  registry::RegistryClient client = client_for(*settings, *transport, registry_auth(options));
  registry::PullOptions pull = registry::pull_options_for(option<std::string>(options, "platform").value_or(""));
  pull.max_concurrent_downloads = settings->max_concurrent_downloads;
  pull.canceled = [&canceled] { return canceled.load(); };
  std::optional<store::ImageRecord> before = store_.metadata().image_by_name(ref.str());
  store::ImageRecord record;
  store::Digest named;
  record = registry::pull_image(store_, client, ref, pull, &named);
  std::vector<std::string> lines;
  lines.push_back((ref.tag.empty() ? ref.digest : ref.tag) + ": Pulling from " + ref.path);
  lines.push_back("Digest: " + named.str());
  bool same = before && before->manifest == record.manifest;
  lines.push_back(std::string("Status: ") + (same ? "Image is up to date for " : "Downloaded newer image for ") +
                  ref.familiar());
  lines.push_back(ref.str());
  return lines;
}

std::vector<std::string> BuilderService::push_image(const dbus::CallContext& call, const std::string& reference,
                                                    const dbus::Options& options) {
  image::Reference ref = image::parse_reference(reference);
  if (!ref.digest.empty()) throw Error(ErrorKind::user, "cannot push a digest reference");  // docker's client
  store::LeaseTable::Lease lease = store_.leases().acquire("push " + ref.str());  // layer blobs it makes
  store::ImageRecord record = images_.resolve(reference);
  std::atomic<bool> canceled{false};
  std::stop_callback on_disconnect(call.stop, [&canceled] { canceled = true; });
  std::shared_ptr<const solver::RegistrySettings> settings = builder_.registry();
  auto transport = registry::make_curl_transport([&canceled] { return canceled.load(); }, settings->proxies);
  registry::RegistryClient client = client_for(*settings, *transport, registry_auth(options));
  registry::PushOptions push;
  push.max_concurrent_uploads = settings->max_concurrent_uploads;
  store::Digest digest;
  digest = registry::push_image(store_, client, record, ref, push);
  return {"The push refers to repository [" + ref.name() + "]",
          (ref.tag.empty() ? ref.digest : ref.tag) + ": digest: " + digest.str() + " size: " +
              std::to_string(store_.content().size(digest))};
}

dbus::Options BuilderService::check_login(const dbus::CallContext& call, const std::string& server,
                                          const dbus::Options& options) {
  std::atomic<bool> canceled{false};
  std::stop_callback on_disconnect(call.stop, [&canceled] { canceled = true; });
  std::shared_ptr<const solver::RegistrySettings> settings = builder_.registry();
  auto transport = registry::make_curl_transport([&canceled] { return canceled.load(); }, settings->proxies);
  registry::RegistryClient client = client_for(*settings, *transport, registry_auth(options));
  std::string identity_token = client.check_login(server);
  if (identity_token.empty()) return {};
  return {{"identity-token", dbus::Value(identity_token)}};
}

dbus::Options BuilderService::disk_usage(const dbus::CallContext&, const dbus::Options& options) {
  image::StoreUsage usage = images_.usage();
  dbus::Options out{{"images", dbus::Value(usage.images)},
                    {"images-size", dbus::Value(usage.images_size)},
                    {"blobs-size", dbus::Value(usage.blobs_size)},
                    {"cache-records", dbus::Value(usage.cache_records)},
                    {"cache-size", dbus::Value(usage.cache_size)}};
  if (!option<bool>(options, "records").value_or(false)) return out;
  gc::PruneOptions filters;
  gc::parse_filters(option<std::vector<std::string>>(options, "filters").value_or(std::vector<std::string>{}), filters);
  std::vector<dbus::StringMap> records;
  const auto now = gc::Clock::now();
  for (const gc::UsageRecord& record : gc::collect_usage(store_, &builder_.local_sources())) {
    if (!filters.filter.matches(record)) continue;
    if (filters.unused_for && now - record.last_activity() < *filters.unused_for) continue;
    records.push_back(record_map(record));
  }
  out.emplace("records", dbus::Value(std::move(records)));
  return out;
}

dbus::Options BuilderService::prune(const dbus::CallContext&, const dbus::Options& options) {
  gc::PruneOptions prune;
  prune.all = option<bool>(options, "all").value_or(false);
  prune.keep_storage = option<uint64_t>(options, "keep-storage").value_or(0);
  gc::parse_filters(option<std::vector<std::string>>(options, "filters").value_or(std::vector<std::string>{}), prune);
  gc::PruneResult result = gc::prune(store_, prune, &builder_.local_sources());
  std::vector<dbus::StringMap> removed;
  for (const gc::UsageRecord& record : result.removed) removed.push_back(record_map(record));
  return {{"records", dbus::Value(std::move(removed))}, {"reclaimed", dbus::Value(result.reclaimed)}};
}

dbus::Options BuilderService::prune_images(const dbus::CallContext&, const dbus::Options& options) {
  gc::ImagePruneResult result = gc::prune_images(store_, option<bool>(options, "all").value_or(false));
  return {{"deleted", dbus::Value(std::move(result.deleted))}, {"reclaimed", dbus::Value(result.reclaimed)}};
}

dbus::Options BuilderService::info(const dbus::CallContext&) {
  std::shared_ptr<const DaemonConfig> config = config_.current();
  dbus::StringMap settings, sources;
  for (auto& [key, value] : describe_config(*config)) {
    sources.emplace(key, config_source(*config, key));
    settings.emplace(key, std::move(value));
  }
  dbus::Options info{{"version", dbus::Value(std::string(kVersion))},
                     {"root", dbus::Value(store_.root())},
                     {"snapshotter", dbus::Value(std::string(store_.snapshots().overlay_supported() ? "overlayfs" : "none"))},
                     {"sandbox-backend", dbus::Value(sandbox_backend_)},
                     {"buildkit", dbus::Value(config->buildkit)},
                     {"config-file", dbus::Value(config->path)},
                     {"config-file-found", dbus::Value(config->file_found)},
                     {"config", dbus::Value(std::move(settings))},
                     {"config-sources", dbus::Value(std::move(sources))}};
  if (emulation_) add_platforms(*emulation_, config->binfmt_install, info);
  return info;
}

dbus::Options BuilderService::reload(const dbus::CallContext&) {
  ReloadResult result = config_.reload();
  return {{"config-file", dbus::Value(result.path)}, {"changed", dbus::Value(result.changed)}};
}

}  // namespace kbuild::service
