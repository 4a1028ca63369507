// The daemon's worker: sources from the store and the build's context, results recorded in
// the store's cache, ops run on snapshots and in the build's sandbox.
#pragma once

#include <memory>
#include <optional>

#include "engine/solver/context.h"
#include "engine/solver/run_step.h"
#include "engine/solver/worker.h"
#include "engine/store/store.h"

namespace kbuild::solver {

class StoreWorker : public Worker {
 public:
  StoreWorker(store::Store& store, std::optional<MaterializedContext> context, std::shared_ptr<BuildSandbox> sandbox)
      : store_(store), context_(std::move(context)), sandbox_(std::move(sandbox)) {}

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
};

}  // namespace kbuild::solver
