// The daemon's worker: sources from the store and the build's context, results recorded in
// the store's cache, ops run on snapshots and in the build's sandbox.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "engine/remotecache/imported_cache.h"
#include "engine/remotecache/materialize.h"
#include "engine/solver/context.h"
#include "engine/solver/run_step.h"
#include "engine/solver/worker.h"
#include "engine/store/store.h"

namespace kbuild::solver {

// Base images a build resolved in their registries (manifest and config only), pulled the
// first time an op reads one; each once, however many ops ask at the same time.
class PendingImages {
 public:
  // Pulls the image named `name` for `platform` (its layers unpacked, its name set) and returns
  // its chain's top. It may run after the build that resolved the image has gone (an op shared
  // with another build), so it holds nothing of that build but what it was given.
  // `config` is the digest the build resolved: a pull that gets another image (the tag moved, or
  // a registry answers differently) must fail, not run steps keyed for one image on another.
  using Pull = std::function<std::optional<std::string>(const std::string& name, const std::string& platform,
                                                        const std::string& config, const CancelToken& cancel,
                                                        const LogSink& log)>;
  explicit PendingImages(Pull pull) : pull_(std::move(pull)) {}

  // The key of the image `name` resolved for `platform`: what Ref::pending_image holds.
  static std::string key(const std::string& name, const std::string& platform) {
    return platform.empty() ? name : name + " (" + platform + ")";
  }
  void add(const std::string& name, const std::string& platform, const std::string& config,
           const std::string& manifest) {
    std::lock_guard lock(mutex_);
    Image& image = images_[key(name, platform)];
    image.name = name;
    image.platform = platform;
    image.config = config;
    image.manifest = manifest;
  }
  // The config and manifest digests of a pending image, if `name` is one for `platform`.
  std::optional<std::pair<std::string, std::string>> find(const std::string& name, const std::string& platform) const {
    std::lock_guard lock(mutex_);
    auto it = images_.find(key(name, platform));
    if (it == images_.end()) return std::nullopt;
    return std::pair{it->second.config, it->second.manifest};
  }
  // Pulls the image of `key` (see key()) once; its chain's top.
  std::optional<std::string> materialize(const std::string& key, const CancelToken& cancel, const LogSink& log);

 private:
  struct Image {
    std::string name, platform, config, manifest;
    std::shared_ptr<std::once_flag> pulled = std::make_shared<std::once_flag>();
    std::optional<std::string> top;
  };
  Pull pull_;
  mutable std::mutex mutex_;
  std::map<std::string, Image> images_;
};

class StoreWorker : public Worker {
 public:
  // `lease` holds what the build uses (see store/leases.h); the worker keeps it as long as an
  // op of the build runs.
  StoreWorker(store::Store& store, std::optional<MaterializedContext> context, std::shared_ptr<BuildSandbox> sandbox,
              std::shared_ptr<store::LeaseTable::Lease> lease)
      : store_(store), context_(std::move(context)), sandbox_(std::move(sandbox)), lease_(std::move(lease)) {}

  // Caches imported for the build (--cache-from), asked in order after the store's own: a hit
  // there is made local (its layers fetched and extracted) and recorded in the store's cache.
  // A hit that cannot be made local is a miss, reported through `warn`.
  // The manifests of the base images the build found in the store, by config digest: an image
  // op pinned to a config reads that image, whatever its name holds now (another platform's
  // image, or an index).
  void set_resolved_images(std::map<std::string, std::string> manifests_by_config) {
    resolved_images_ = std::move(manifests_by_config);
  }

  void import_caches(std::vector<std::shared_ptr<const remotecache::ImportedCache>> imports,
                     remotecache::MaterializeOptions options, std::function<void(const std::string&)> warn) {
    imports_ = std::move(imports);
    materialize_options_ = std::move(options);
    warn_ = std::move(warn);
  }
  // Base images the build resolved but did not pull: pulled when an op reads them.
  void set_pending_images(std::shared_ptr<PendingImages> pending) { pending_ = std::move(pending); }
  // `ref`, pulled first if it is a pending image (the pull's lines go to `log`).
  Ref materialize(const Ref& ref, const CancelToken& cancel, const LogSink& log);
  // The store's own result for `key`, never an import's.
  std::optional<Ref> cached_locally(const std::string& key);
  // The chain an imported cache records for `key`, and that cache, without fetching anything.
  struct ImportedResult {
    std::vector<remotecache::CacheLayer> chain;
    std::shared_ptr<const remotecache::ImportedCache> cache;
  };
  std::optional<ImportedResult> find_imported(const std::string& key) const;

  Ref source(const graph::SourceOp& op, BaseImage& base) override;
  std::string checksum(const graph::SourceOp& local, const Selection& selection) override;
  std::optional<Ref> cached(const std::string& key) override;
  void remember(const std::string& key, const Ref& result) override;
  Ref execute(const graph::Op& op, const std::map<graph::OpIndex, Ref>& inputs, const CancelToken& cancel,
              const LogSink& log) override;

 private:
  const MaterializedContext& local(const graph::SourceOp& op) const;

  store::Store& store_;
  std::optional<MaterializedContext> context_;  // held: an op may outlive the build
  std::shared_ptr<BuildSandbox> sandbox_;
  std::vector<std::shared_ptr<const remotecache::ImportedCache>> imports_;
  remotecache::MaterializeOptions materialize_options_;
  std::function<void(const std::string&)> warn_;
  std::shared_ptr<PendingImages> pending_;
  std::shared_ptr<store::LeaseTable::Lease> lease_;
  std::map<std::string, std::string> resolved_images_;  // config -> manifest
};

}  // namespace kbuild::solver
