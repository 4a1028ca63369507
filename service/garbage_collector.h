// daemon.json's builder.gc applied as BuildKit applies it: a pass of the policies in order after
// builds and periodically, each a prune with its own filters, keep-storage and --all. Passes run
// on a thread of their own, one at a time; a request during a pass asks for one more after it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "engine/gc/prune_policy.h"
#include "engine/store/local_sources.h"
#include "engine/store/store.h"
#include "service/daemon_config.h"
#include "service/live_config.h"

namespace kbuild::service {

// The prunes a GC pass runs for `config`, in order. Without policies, BuildKit's defaults for a
// keep-storage of defaultKeepStorage (or, unset, `default_keep` bytes): cache mounts unused for
// 48 hours beyond 512 MB, then anything unused for 60 days, then the build cache beyond the
// limit, then with --all. Throws a user error for a setting it cannot read.
std::vector<gc::PruneOptions> gc_policies(const DaemonConfig& config, uint64_t default_keep);

// BuildKit's default cap: a tenth of the file system the store is on.
uint64_t default_keep_storage(const std::string& root);

class GarbageCollector {
 public:
  // Passes read the configuration in use from `config` when they start; they also remove the
  // context directories `sources` remembers (source.local), when given.
  GarbageCollector(store::Store& store, const LiveConfig& config, store::LocalSources* sources = nullptr,
                   std::chrono::seconds interval = std::chrono::minutes(5));
  GarbageCollector(const GarbageCollector&) = delete;
  GarbageCollector& operator=(const GarbageCollector&) = delete;
  ~GarbageCollector();

  // Asks for a pass soon (a build ended).
  void request();
  // Runs one pass now on the caller's thread; returns the bytes it freed.
  uint64_t run_pass();

 private:
  void loop(std::stop_token stop);

  store::Store& store_;
  const LiveConfig& config_;
  store::LocalSources* const sources_;
  const std::chrono::seconds interval_;
  const uint64_t default_keep_;
  std::mutex pass_mutex_;  // one pass at a time
  std::mutex mutex_;
  std::condition_variable_any wake_;
  bool requested_ = false;  // guarded by mutex_
  std::jthread thread_;     // last: started once the rest is made, stopped first
};

}  // namespace kbuild::service
