// What the scheduler asks of whoever makes trees: sources resolved, content checksummed,
// results looked up and recorded by cache key, ops run. The daemon's worker does this on the
// store and the sandbox; tests give the scheduler a fake.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/graph/op.h"
#include "engine/solver/cancel.h"
#include "engine/store/digest.h"

namespace kbuild::solver {

// A tree the solver holds: a chain of snapshots (its top; none for an empty tree) or a
// directory a local source names; or a base image resolved in its registry but not pulled yet
// (`pending_image`, its name), which the worker pulls when an op first reads it: a build whose
// steps all hit never downloads the bases they were made on.
struct Ref {
  std::optional<std::string> top;
  std::string local_path;
  std::string pending_image = {};
  bool operator==(const Ref&) const = default;
};

// The image at the bottom of a result: its layers keep the blobs they came with.
struct BaseImage {
  std::vector<store::Digest> diff_ids;  // one snapshot each, at the bottom of the chain
  std::optional<store::Digest> manifest;
};

// Paths of a local source an op reads, as a copy names them.
struct Selection {
  std::vector<std::string> paths;
  std::vector<std::string> excludes;
};

using LogSink = std::function<void(int stream, std::string_view data)>;

class Worker {
 public:
  virtual ~Worker() = default;
  // A source op's tree; for an image, also its layers (into `base`).
  virtual Ref source(const graph::SourceOp& op, BaseImage& base) = 0;
  // The digest of what `selection` picks from a local source: paths, types, modes, link
  // targets and contents, never mtimes.
  virtual std::string checksum(const graph::SourceOp& local, const Selection& selection) = 0;
  // The result recorded under `key`, if it is still there.
  virtual std::optional<Ref> cached(const std::string& key) = 0;
  virtual void remember(const std::string& key, const Ref& result) = 0;
  // Runs `op` on its inputs' trees. May outlive the build that asked (another still waits).
  virtual Ref execute(const graph::Op& op, const std::map<graph::OpIndex, Ref>& inputs, const CancelToken& cancel,
                      const LogSink& log) = 0;
};

}  // namespace kbuild::solver
