#include "engine/image/image_platform.h"

#include "common/error.h"
#include "engine/dockerfile/platform.h"

namespace kbuild::image {
namespace {

std::string normalized(const std::string& os, const std::string& architecture, const std::string& variant) {
  if (architecture.empty()) return "";
  std::string spec = (os.empty() ? "linux" : os) + "/" + architecture + (variant.empty() ? "" : "/" + variant);
  try {
    return dockerfile::Platform::parse(spec).format();
  } catch (const Error&) {
    return spec;  // a platform we do not know matches only itself
  }
}

}  // namespace

std::string config_platform(const ImageConfig& config) {
  return normalized(config.os, config.architecture, config.variant);
}

std::string descriptor_platform(const Platform& platform) {
  return normalized(platform.os, platform.architecture, platform.variant);
}

bool is_index(const store::ImageRecord& record) { return record.manifest == record.config; }

std::vector<PlatformImage> platform_images(store::Store& store, const store::ImageRecord& record) {
  if (!is_index(record)) {
    ImageConfig config = parse_config(store.content().read_small(record.config));
    return {PlatformImage{record, config_platform(config)}};
  }
  std::vector<PlatformImage> out;
  for (const Descriptor& entry : parse_index(store.content().read_small(record.manifest)).manifests) {
    // Attestations ("unknown/unknown") are not images of a platform.
    if (!entry.platform || entry.platform->os == "unknown" || !store.content().has(entry.digest)) continue;
    Manifest manifest = parse_manifest(store.content().read_small(entry.digest));
    if (!store.content().has(manifest.config.digest)) continue;
    out.push_back(PlatformImage{store::ImageRecord{entry.digest, manifest.config.digest, record.created},
                                descriptor_platform(*entry.platform)});
  }
  return out;
}

std::optional<store::ImageRecord> image_for_platform(store::Store& store, const store::ImageRecord& record,
                                                     const std::string& platform, std::vector<std::string>* found) {
  for (const PlatformImage& image : platform_images(store, record)) {
    // An image that names no platform is taken for any, as Docker takes it.
    if (image.platform.empty() || image.platform == platform) return image.image;
    if (found) found->push_back(image.platform);
  }
  return std::nullopt;
}

}  // namespace kbuild::image
