// What a frontend hands the solver: the graph, the op whose tree is the result, and the image
// config that goes with it.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "engine/graph/image_config.h"
#include "engine/graph/op.h"

namespace kbuild::graph {

// What a frontend learns of an image it builds on.
struct ResolvedImage {
  ImageConfig config;
  std::string digest;  // pins the image in its source op
};

// A base image by reference and platform ("linux/amd64"); nullopt: treated as empty.
using ImageResolver = std::function<std::optional<ResolvedImage>(const std::string& reference, const std::string& platform)>;

// One step of a build run the classic builder's way: in order, one at a time, each shown as
// the instruction it comes from.
struct Step {
  enum class Kind {
    global_arg,  // an ARG before the first FROM: nothing to run
    from,        // a stage's start: `state` is its base
    op,          // made `state`, a new op
    metadata,    // changed the image config only: `state` is the tree it had
  };
  Kind kind = Kind::metadata;
  std::string text;              // the instruction as written ("RUN echo hi")
  OpIndex state = 0;             // the stage's tree after the step
  std::string base_image;        // from an image: its config digest ("" for scratch)
  std::optional<size_t> base_step;  // from an earlier stage: the index of that stage's last step
  std::vector<Step> triggers;       // from: the base's ONBUILD triggers, run as part of it
};

struct Definition {
  Graph graph;
  OpIndex root = 0;
  ImageConfig config;
  // Empty unless the frontend was asked for a classic build: then every step of every stage
  // up to the target, in order; the last one's state is `root`.
  std::vector<Step> steps;
  std::vector<std::string> unused_build_args;  // --build-arg names no ARG declares
};

}  // namespace kbuild::graph
