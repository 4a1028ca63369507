// Executing one step on snapshots: the layer a COPY, ADD or WORKDIR makes is the upper dir of
// an overlay over its parent's layers; the build context is materialized once per build.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/temp_dir.h"
#include "engine/graph/build_plan.h"
#include "engine/solver/builder.h"
#include "engine/solver/run_step.h"
#include "engine/store/mount.h"
#include "engine/store/store.h"

namespace kbuild::solver {

struct MaterializedContext;

struct StepContext {
  store::Store& store;
  const graph::Step& step;
  std::optional<std::string> parent;         // snapshot the step starts from
  std::optional<std::string> source;         // COPY --from: the source stage's snapshot
  std::string context_dir;                   // the materialized build context
  const CancelToken& cancel;
  std::function<void(int stream, std::string_view data)> log;
  BuildSandbox* sandbox = nullptr;           // RUN: the build's sandbox
  std::vector<MountSource> mount_sources;    // RUN: one per --mount, the from= snapshot
  bool linked = false;                       // COPY --link: make the layer on nothing
};

// The layers an overlay over `top` stacks, top first (an empty directory for none).
std::vector<std::string> lowers_for(store::Store& store, const std::optional<std::string>& top);

// A read-only view of a snapshot chain (the source stage of COPY --from or RUN --mount from=).
struct ChainView {
  TempDir dir;
  std::optional<store::Mount> mount;
  ChainView(store::Store& store, const std::optional<std::string>& top);
};

// Runs the step and commits its layer; returns the new snapshot's id.
std::string execute_step(StepContext& context);

// COPY --link: the copy made on nothing, so that its layer (and cache key) does not depend
// on what is below; `name_root` (the stage's view so far) only answers --chown names.
std::string execute_linked_copy(StepContext& context);

// The same layer again on top of `parent`: directories recreated, everything else
// hard-linked (layers are never written after their commit). Returns the new snapshot's id.
std::string restack_layer(store::Store& store, const std::string& layer, const std::optional<std::string>& parent);

// The canonical definition of a step for its cache key: every field that changes its result.
nlohmann::json describe_step(const graph::Step& step);

// Creates `path` (recursively) under a directory.
void make_dirs(const std::string& path);

}  // namespace kbuild::solver
