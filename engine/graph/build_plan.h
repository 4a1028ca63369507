// The build graph between the Dockerfile frontend and the solver: for each stage the build
// needs, its base, the steps that make layers (COPY/ADD, WORKDIR, RUN) and the image config
// the stage ends with, as BuildKit's dispatch computes them.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "engine/dockerfile/instructions.h"
#include "engine/graph/image_config.h"
#include "engine/dockerfile/platform.h"
#include "engine/dockerfile/resolve.h"

namespace kbuild::graph {

// Where a COPY reads from.
struct CopySource {
  enum class Kind { context, stage, image };
  Kind kind = Kind::context;
  size_t stage = 0;   // Kind::stage: index into BuildPlan::stages' source indexes
  std::string image;  // Kind::image
};

enum class StepKind { copy, workdir, run };

// One step that produces a layer (possibly empty).
struct Step {
  StepKind kind;
  std::string name;        // progress vertex name: "[build 2/3] COPY a /a"
  std::string created_by;  // history: "COPY a /a # buildkit"
  dockerfile::Instruction instruction;  // expanded
  CopySource source;                    // kind copy
  std::string workdir;                  // working directory when the step runs
  std::string user;                     // USER when the step runs
  std::vector<std::string> env;         // environment when the step runs (RUN)
  std::vector<std::string> shell;       // SHELL when the step runs (RUN shell form)
  bool from_onbuild = false;
  std::vector<CopySource> mount_sources;  // kind run: one per --mount, what its from= names
};

struct StagePlan {
  size_t index = 0;         // the stage's index in the Dockerfile
  std::string name;         // AS name or ""
  std::string display_name; // AS name, "stage-N", or "" for a single-stage file
  std::string base_image;   // FROM image reference ("scratch" for none)
  std::optional<size_t> base_stage;
  dockerfile::Platform platform;
  SourceRange lines;
  std::string from_vertex_name;  // "[1/3] FROM docker.io/library/alpine:3.20"
  std::vector<Step> steps;
  ImageConfig config;            // the config the stage ends with
  std::vector<size_t> depends_on;  // stages (Dockerfile indexes) this one reads
};

// The stages to build, each after the stages it reads, the target last.
struct BuildPlan {
  std::vector<StagePlan> stages;
  size_t target = 0;  // Dockerfile index of the target stage
  std::map<std::string, std::string> proxy_args;
  std::vector<std::string> unused_build_args;

  const StagePlan& stage(size_t dockerfile_index) const;
};

// What the plan needs to know about a base image: its config (nullopt for scratch or unknown).
using ImageConfigLookup = std::function<std::optional<ImageConfig>(const std::string& image,
                                                                   const dockerfile::Platform& platform)>;

struct PlanOptions {
  dockerfile::ResolveOptions resolve;
  ImageConfigLookup image_config;  // may be empty: every base is treated as empty
  std::optional<int64_t> source_date_epoch;
};

// Dockerfile text to plan. Throws kbuild::Error with the Dockerfile line where there is one.
BuildPlan plan_build(std::string_view dockerfile_text, const PlanOptions& options);

}  // namespace kbuild::graph
