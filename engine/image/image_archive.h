// Whole images as tar streams: `docker save`-style docker-archives and OCI image layout tars,
// written as BuildKit's docker and oci exporters write them, and read back (docker load, both
// the pre-25 layout and the OCI-based one of Docker 25+, or any OCI layout tar).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/image/blob_io.h"
#include "engine/image/oci.h"
#include "engine/image/reference.h"

namespace kbuild::image {

enum class ArchiveFormat {
  oci,     // oci-layout, index.json, blobs/sha256/...
  docker,  // the same plus manifest.json and repositories, for docker load
};

// One image to put in an archive: its manifest or index (stored in the BlobSource) and names.
struct ArchiveImage {
  Descriptor target;
  std::vector<std::string> names;  // references: "app", "alpine:3.20", "registry:5000/x/y:tag"
};

struct ArchiveWriteOptions {
  ArchiveFormat format = ArchiveFormat::docker;
  // docker format and an index target: the manifest for manifest.json (first one otherwise).
  std::optional<Platform> platform;
};

// Streams the archive: every blob the targets reach is read from `blobs` (and checked against
// its digest and size) straight into the tar. Entries are sorted by name, as containerd's
// exporter writes them; an index.json entry per name carries io.containerd.image.name (the
// normalized reference) and org.opencontainers.image.ref.name (its tag).
void write_image_archive(const std::vector<ArchiveImage>& images, BlobSource& blobs, ByteSink& out,
                         const ArchiveWriteOptions& options = {});

struct ImportedImage {
  std::vector<std::string> names;  // normalized references, or OCI ref names as the layout has them
  Descriptor target;               // a manifest or index, now in the BlobSink
};

struct ImportResult {
  ArchiveFormat format = ArchiveFormat::oci;  // docker: only a manifest.json was found
  std::vector<ImportedImage> images;
};

// Reads a docker-archive or OCI layout tar (possibly gzip or zstd compressed) from `fd` to its
// end, storing each file as a blob (a file named blobs/sha256/<hex> must have that digest). A
// docker-archive without index.json gets a Docker schema 2 manifest made for each image, as
// containerd's importer makes it, stored in the sink too. `fd` may be a client's pipe: waits
// on it are polls that `cancel_fd` (readable: stop, kbuild::Error canceled) also wakes.
ImportResult read_image_archive(int fd, BlobSink& blobs, int cancel_fd = -1);


}  // namespace kbuild::image
