// The daemon's worker: sources from the store and the build's context, results recorded in
// the store's cache, ops run on snapshots and in the build's sandbox.
#pragma once

#include <functional>
#include <memory>
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

class StoreWorker : public Worker {
 public:
  StoreWorker(store::Store& store, std::optional<MaterializedContext> context, std::shared_ptr<BuildSandbox> sandbox)
      : store_(store), context_(std::move(context)), sandbox_(std::move(sandbox)) {}

  // Caches imported for the build (--cache-from), asked in order after the store's own: a hit
  // there is made local (its layers fetched and extracted) and recorded in the store's cache.
  // A hit that cannot be made local is a miss, reported through `warn`.
  void import_caches(std::vector<std::shared_ptr<const remotecache::ImportedCache>> imports,
                     remotecache::MaterializeOptions options, std::function<void(const std::string&)> warn) {
    imports_ = std::move(imports);
    materialize_options_ = std::move(options);
    warn_ = std::move(warn);
  }
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
};

}  // namespace kbuild::solver
