// Executing file and merge ops on snapshots: the layer an op makes is the upper dir of an
// overlay over its base's layers (or, on nothing, the layer's own directory).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/temp_dir.h"
#include "engine/graph/op.h"
#include "engine/solver/cancel.h"
#include "engine/solver/worker.h"
#include "engine/store/mount.h"
#include "engine/store/store.h"

namespace kbuild::solver {

class BuildSandbox;

// What an op runs with: its inputs' trees, the build's cancel, log and sandbox.
struct OpContext {
  store::Store& store;
  const std::map<graph::OpIndex, Ref>& inputs;
  const CancelToken& cancel;
  const LogSink& log;
  BuildSandbox* sandbox = nullptr;  // exec ops: the build's sandbox
  std::string_view name;            // the op's vertex name ("[2/3] RUN make"), if it has one
  const Ref& input(graph::OpIndex index) const { return inputs.at(index); }
};

// The layers an overlay over `top` stacks, top first (an empty directory for none).
std::vector<std::string> lowers_for(store::Store& store, const std::optional<std::string>& top);

// A read-only view of a snapshot chain (a copy's or a mount's source).
struct ChainView {
  TempDir dir;
  std::optional<store::Mount> mount;
  ChainView(store::Store& store, const std::optional<std::string>& top);
};

// Applies the actions on the base's tree and commits the changes as a layer.
Ref execute_file_op(OpContext& context, const graph::FileOp& op);

// The inputs' layers stacked in order: the first input's chain, then each other input's
// layers again on top of it (directories recreated, files hard-linked: layers are never
// written after their commit).
Ref execute_merge_op(OpContext& context, const graph::MergeOp& op);

// Creates `path` (recursively) under a directory.
void make_dirs(const std::string& path);

}  // namespace kbuild::solver
