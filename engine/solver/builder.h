// Runs a build: the context read, the frontend's graph solved on overlay snapshots with a
// content-addressed cache, an image in the store and the requested outputs. One Builder
// serves every build of a daemon; identical ops requested by concurrent builds run once, for
// as long as one of them still waits for it (see Scheduler).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/client_stream.h"
#include "engine/graph/definition.h"
#include "engine/registry/auth.h"
#include "engine/registry/hosts.h"
#include "engine/registry/http.h"
#include "engine/sandbox/cgroup.h"
#include "engine/solver/cancel.h"
#include "engine/solver/progress.h"
#include "engine/solver/run_step.h"
#include "engine/solver/scheduler.h"
#include "engine/store/local_sources.h"
#include "engine/store/store.h"

namespace kbuild::image {
class LayerJournalCache;
}

namespace kbuild::solver {

class ContextCache;

struct Caller {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;
};

struct Output {
  std::string type;  // image (the default with -t), oci, docker, tar, local
  std::map<std::string, std::string> attributes;
};

// A --cache-from or --cache-to entry: type registry (ref=...), local (a client's directory,
// reached through `fd`) or inline (to only), with BuildKit's attributes.
struct CacheEntry {
  std::string type;
  std::map<std::string, std::string> attributes;
  int fd = -1;  // borrowed: local's socket to the client that serves the directory
};

struct BuildRequest {
  // Names the build among live ones: its slice or cgroup, its units' descriptions, the
  // daemon's log entries. Made of [A-Za-z0-9_-]; empty: new_build_name() gives one.
  std::string build_name;
  std::string dockerfile;
  std::string dockerfile_name = "Dockerfile";
  std::vector<std::string> dockerignore;  // lines of the .dockerignore that applies
  bool context_is_tar = false;
  int context_fd = -1;  // borrowed: a directory, or a tar stream
  Caller caller;
  std::string target;
  std::map<std::string, std::string> build_args;
  std::map<std::string, std::string> labels;
  std::vector<std::string> tags;
  bool no_cache = false;
  std::vector<std::string> no_cache_filter;
  // Target platforms, normalized ("linux/arm64"); none: the daemon's own. Several make an
  // image index of one image per platform.
  std::vector<std::string> platforms;
  std::vector<Output> outputs;
  int output_fd = -1;  // borrowed: where a stream output goes
  std::optional<int64_t> source_date_epoch;
  bool pull = false;  // base images come from their registry even when stored
  bool push = false;  // the tags go to their registries once stored
  std::vector<CacheEntry> cache_from, cache_to;
  // --secret values by id, read from the caller's fds: in memory only, never in a key, a
  // layer, a log or a file.
  std::map<std::string, std::string> secrets;
  // --ssh: each agent's control socket by id (borrowed, open for the build; see
  // engine/sandbox/ssh_forward_protocol.h).
  std::map<std::string, int> ssh_agents;
  std::map<std::string, registry::Credentials> registry_auth;  // by registry domain
  std::set<std::string> allow;     // entitlements the caller asks for: network.host, security.insecure
  sandbox::ResourceLimits limits;  // for the whole build (its RUN steps together)
  // Docker's classic builder (DOCKER_BUILDKIT=0): every stage up to the target, one step at a
  // time, told through Progress::classic_output.
  bool classic = false;
};

// A random name no live build has: 12 hex digits.
std::string new_build_name();

struct BuildResult {
  store::Digest config_digest;
  store::Digest manifest_digest;
  std::vector<std::string> names;
  int64_t manifest_size = 0;  // with manifest_digest, the image's descriptor
};

// What a frontend gets: the definition's text (a Dockerfile), the request's options, and a
// way to learn about the images it builds on.
struct FrontendInput {
  std::string_view text;
  const BuildRequest& request;
  graph::ImageResolver resolve_image;
  std::string platform;         // the target platform of this graph; empty: the daemon's own
  bool multi_platform = false;  // one of several: step names say their platform
};
using Frontend = std::function<graph::Definition(const FrontendInput& input)>;

// How the daemon reaches registries (daemon.json's settings).
struct RegistrySettings {
  registry::HostsConfig hosts;
  registry::ProxyConfig proxies;
  int max_concurrent_downloads = 3;
  int max_concurrent_uploads = 5;
};

class Builder {
 public:
  explicit Builder(store::Store& store);
  // How RUN steps run (without it they are refused) and how registries are reached. Safe to
  // call while builds run (a reload): each build keeps the settings it started with.
  void set_sandbox(SandboxConfig config);
  void set_registry(RegistrySettings settings);
  // Both at once: no build starts with one old and one new.
  void set_settings(SandboxConfig config, RegistrySettings settings);
  // The registry settings now, for work outside a build (pull, push, login).
  std::shared_ptr<const RegistrySettings> registry() const;
  // What turns the request's text into a graph. Set before the first build.
  void set_frontend(Frontend frontend) { frontend_ = std::move(frontend); }
  // The program that reads context directories as their caller (kbuild-context-reader).
  void set_context_reader(std::string program) { context_reader_ = std::move(program); }
  ~Builder();
  Builder(const Builder&) = delete;
  Builder& operator=(const Builder&) = delete;

  BuildResult build(const BuildRequest& request, Progress& progress, const CancelToken& cancel);
  // The context directories it remembers across builds, for du and GC.
  store::LocalSources& local_sources();

 private:
  class Run;
  store::Store& store_;
  // Immutable snapshots, swapped whole; a build reads each once, at its start.
  mutable std::mutex settings_mutex_;
  std::shared_ptr<const SandboxConfig> sandbox_;      // guarded by settings_mutex_
  std::shared_ptr<const RegistrySettings> registry_;  // guarded by settings_mutex_
  struct Settings {
    std::shared_ptr<const SandboxConfig> sandbox;
    std::shared_ptr<const RegistrySettings> registry;
  };
  Settings settings() const;
  std::string context_reader_ = KBUILD_CONTEXT_READER;
  std::unique_ptr<ContextCache> contexts_;
  std::unique_ptr<image::LayerJournalCache> layer_journals_;
  Frontend frontend_;
  Scheduler scheduler_;
};

}  // namespace kbuild::solver
