// The daemon's on-disk state under one root (default /var/lib/kbuild): blobs, metadata and
// snapshots, opened together under an exclusive lock so that two daemons never share a root.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "engine/store/content_store.h"
#include "engine/store/leases.h"
#include "engine/store/metadata.h"
#include "engine/store/snapshot_store.h"

namespace kbuild::store {

class Store {
 public:
  static constexpr const char* kDefaultRoot = "/var/lib/kbuild";

  // Creates <root> (0700) if needed, locks <root>/lock (throws "store <root> is in use by
  // another kbuildd (pid N)" if it is held, by this process too), opens the parts and sweeps
  // what a crash left behind: mounts below <root>/mounts and <root>/snapshots (in this mount
  // namespace; the daemon mounts nowhere else in the store), temp blobs, unfinished or
  // unrecorded snapshots, and records of what is not there (a snapshot without its
  // directory, a layer or image whose blob is missing).
  static std::unique_ptr<Store> open(const std::string& root);
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;
  ~Store();

  const std::string& root() const { return root_; }
  ContentStore& content() { return *content_; }
  MetadataStore& metadata() { return *metadata_; }
  SnapshotStore& snapshots() { return *snapshots_; }
  LeaseTable& leases() { return *leases_; }
  // What the start-up sweep had to drop that someone may miss (an image name whose blobs are
  // gone), one sentence each, for the daemon's log.
  const std::vector<std::string>& recovery_notes() const { return recovery_notes_; }

 private:
  Store(std::string root, UniqueFd lock);
  // Layer-blob mappings and image names that name a blob no longer stored.
  void drop_records_of_missing_blobs();

  // Declared first so that it is released last: another daemon may take over only a closed store.
  UniqueFd lock_;
  std::string root_;
  std::unique_ptr<MetadataStore> metadata_;
  std::unique_ptr<LeaseTable> leases_;
  std::unique_ptr<ContentStore> content_;
  std::unique_ptr<SnapshotStore> snapshots_;
  std::vector<std::string> recovery_notes_;
};

}  // namespace kbuild::store
