// What a frontend hands the solver: the graph, the op whose tree is the result, and the image
// config that goes with it.
#pragma once

#include <functional>
#include <optional>
#include <string>

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

struct Definition {
  Graph graph;
  OpIndex root = 0;
  ImageConfig config;
};

}  // namespace kbuild::graph
