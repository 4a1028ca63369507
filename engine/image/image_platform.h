// Which image of a stored name serves a platform: a manifest whose config says that platform,
// or the matching manifest of an image index (what a multi-platform build stores).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "engine/image/oci.h"
#include "engine/store/store.h"

namespace kbuild::image {

// The platform an image config says it is for, normalized as --platform values are
// ("linux/arm64", "linux/arm/v7"); "" when it names no architecture.
std::string config_platform(const ImageConfig& config);
// The same for an index entry's platform.
std::string descriptor_platform(const Platform& platform);

// Whether a stored image is an index: the store records an index with its own digest as the
// image id (store_index, load), which no image's config digest can equal.
bool is_index(const store::ImageRecord& record);

struct PlatformImage {
  store::ImageRecord image;  // a manifest and its config
  std::string platform;      // normalized
};

// The images a record stands for: itself, or each manifest of its index that the store holds
// with its config, in the index's order.
std::vector<PlatformImage> platform_images(store::Store& store, const store::ImageRecord& record);

// The image of `record` for `platform` (normalized); nullopt when it has none, with the
// platforms it has in `found`.
std::optional<store::ImageRecord> image_for_platform(store::Store& store, const store::ImageRecord& record,
                                                     const std::string& platform, std::vector<std::string>* found = nullptr);

}  // namespace kbuild::image
