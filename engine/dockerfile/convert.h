// The Dockerfile frontend's last step: a Dockerfile to an op graph and the image config of its
// target, as BuildKit's dockerfile2llb builds them. Pure: what it needs of base images comes
// through a callback.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/dockerfile/platform.h"
#include "engine/dockerfile/resolve.h"
#include "engine/graph/definition.h"

namespace kbuild::dockerfile {

struct ConvertOptions {
  ResolveOptions resolve;
  graph::ImageResolver resolve_image;  // may be empty: every base is treated as empty
  bool no_cache = false;                      // every step runs again
  std::vector<std::string> no_cache_filter;  // the steps of these stages run again
  // The classic builder's build: every stage up to the target, BuildKit-only features refused
  // (classic_builder.h), and the definition's `steps` listed.
  bool classic = false;
  // One graph of a build for several platforms: step names start with their stage's platform
  // ("[linux/arm64 build 2/3] RUN make"), as BuildKit's do.
  bool multi_platform = false;
  // classic: the build's --label values, which the classic builder runs as LABEL steps at the
  // end of the target stage (in name order).
  std::map<std::string, std::string> labels;
};

// Throws kbuild::Error with the Dockerfile line where there is one.
graph::Definition convert_dockerfile(std::string_view dockerfile_text, const ConvertOptions& options);

}  // namespace kbuild::dockerfile
