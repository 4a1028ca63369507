// The image config a build plan carries (graph::ImageConfig: what a Dockerfile's instructions
// set) in the terms of the OCI image config, and back: a built image's config is written from
// it, and a base image's config read into it for FROM.
#pragma once

#include "engine/graph/image_config.h"
#include "engine/image/oci.h"

namespace kbuild::image {

// The "config" object of the image a build writes.
ContainerConfig to_container_config(const graph::ImageConfig& config);

// What a stage starting FROM an image inherits: its config, platform and history.
graph::ImageConfig to_plan_config(const ImageConfig& config);

}  // namespace kbuild::image
