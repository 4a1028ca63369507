// Pulling an image from a registry into the store, and pushing a stored image to one, as
// `docker pull` and `docker push` do.
#pragma once

#include <functional>
#include <string>

#include "engine/image/export_format.h"
#include "engine/image/reference.h"
#include "engine/registry/client.h"
#include "engine/store/store.h"

namespace kbuild::registry {

// Progress of one transfer: a status line ("pulling sha256:..."), bytes so far and in all.
using TransferProgress = std::function<void(const std::string& id, int64_t current, int64_t total, bool done)>;

struct PullOptions {
  std::string os = "linux";
  std::string architecture;  // "amd64"
  std::string variant;
  int max_concurrent_downloads = 3;
  TransferProgress progress;
  // The transport's own: true once the caller went away. Extraction asks it as it goes.
  std::function<bool()> canceled;
};

// Options for `platform` ("linux/arm64/v8", "linux/amd64"; empty: this machine's).
PullOptions pull_options_for(const std::string& platform);

// An image's manifest (the platform's, from an index) and its config, which is stored; no
// layer is fetched. What a build needs to plan on an image it may never unpack.
struct ResolvedManifest {
  FetchedManifest fetched;
  image::Manifest manifest;
  store::Digest named;  // what the reference names: the index's digest when it is one
};
ResolvedManifest resolve_manifest(store::Store& store, RegistryClient& client, const image::Reference& reference,
                                  const PullOptions& options);

// Fetches the manifest (the platform's, from an index), config and missing layer blobs, each
// verified by digest and size while it streams into the content store, then unpacks the
// layers into snapshots and names the image `reference`. A blob the store has is not fetched
// again. Returns the record stored under the name; `named`, when given, gets the digest the
// reference names (an index's, as `docker pull` prints it).
store::ImageRecord pull_image(store::Store& store, RegistryClient& client, const image::Reference& reference,
                              const PullOptions& options, store::Digest* named = nullptr);

struct PushOptions {
  int max_concurrent_uploads = 5;
  image::ExportFormat format;  // BuildKit's image exporter defaults: gzip, Docker media types
  TransferProgress progress;
};

// Sends a stored image's blobs the registry lacks, then its manifest under `target`'s tag. Our
// layers go in `format` (compressed once, then remembered; the first time, compressed as they
// are uploaded). An index's images go by digest, then the index (a Docker manifest list unless
// the format has OCI media types) under the tag. Returns the pushed manifest's or index's digest.
store::Digest push_image(store::Store& store, RegistryClient& client, const store::ImageRecord& image,
                         const image::Reference& target, const PushOptions& options);

}  // namespace kbuild::registry
