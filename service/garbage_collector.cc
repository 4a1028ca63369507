#include "service/garbage_collector.h"

#include <sys/statvfs.h>

#include <algorithm>
#include <cstdio>

#include "common/error.h"
#include "engine/dockerfile/go_values.h"
#include "engine/gc/collector.h"

namespace kbuild::service {
namespace {

using std::chrono::hours;

uint64_t size_of(const std::string& text, uint64_t fallback) {
  if (text.empty()) return fallback;
  std::optional<int64_t> bytes = dockerfile::parse_ram_in_bytes(text);
  if (!bytes || *bytes < 0) throw Error(ErrorKind::user, "invalid size: '" + text + "'");
  return static_cast<uint64_t>(*bytes);
}

}  // namespace

std::vector<gc::PruneOptions> gc_policies(const DaemonConfig& config, uint64_t default_keep) {
  const uint64_t keep = size_of(config.gc_default_keep_storage, default_keep);
  std::vector<gc::PruneOptions> policies;
  if (config.gc_policies.empty()) {
    gc::PruneOptions mounts;
    mounts.filter.types = {"source.local", "exec.cachemount", "source.git.checkout"};
    mounts.unused_for = hours(48);
    mounts.keep_storage = std::min<uint64_t>(keep, 512ull << 20);
    gc::PruneOptions old;
    old.unused_for = hours(24 * 60);
    old.keep_storage = keep;
    gc::PruneOptions cache;
    cache.keep_storage = keep;
    gc::PruneOptions all = cache;
    all.all = true;
    return {mounts, old, cache, all};
  }
  for (const GcPolicy& policy : config.gc_policies) {
    gc::PruneOptions options;
    options.all = policy.all;
    options.keep_storage = size_of(policy.keep_storage, keep);
    std::vector<std::string> filters = policy.filters;
    if (!policy.keep_duration.empty()) filters.push_back("until=" + policy.keep_duration);
    gc::parse_filters(filters, options);
    policies.push_back(std::move(options));
  }
  return policies;
}

uint64_t default_keep_storage(const std::string& root) {
  struct statvfs st {};
  if (::statvfs(root.c_str(), &st) != 0) return 10ull << 30;
  return static_cast<uint64_t>(st.f_blocks) * st.f_frsize / 10;
}

GarbageCollector::GarbageCollector(store::Store& store, const LiveConfig& config, store::LocalSources* sources,
                                   std::chrono::seconds interval)
    : store_(store), config_(config), sources_(sources), interval_(interval), default_keep_(default_keep_storage(store.root())),
      thread_([this](std::stop_token stop) { loop(stop); }) {}

GarbageCollector::~GarbageCollector() {
  thread_.request_stop();
  wake_.notify_all();
}

void GarbageCollector::request() {
  {
    std::lock_guard lock(mutex_);
    requested_ = true;
  }
  wake_.notify_all();
}

uint64_t GarbageCollector::run_pass() {
  std::shared_ptr<const DaemonConfig> config = config_.current();
  if (!config->gc_enabled) return 0;
  std::lock_guard pass(pass_mutex_);
  uint64_t freed = 0;
  for (const gc::PruneOptions& policy : gc_policies(*config, default_keep_)) {
    freed += gc::prune(store_, policy, sources_).reclaimed;
  }
  return freed;
}

void GarbageCollector::loop(std::stop_token stop) {
  while (!stop.stop_requested()) {
    {
      std::unique_lock lock(mutex_);
      wake_.wait_for(lock, stop, interval_, [this] { return requested_; });
      requested_ = false;
    }
    if (stop.stop_requested()) return;
    try {
      uint64_t freed = run_pass();
      if (freed) std::fprintf(stderr, "kbuildd: garbage collection freed %llu bytes\n", static_cast<unsigned long long>(freed));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "kbuildd: garbage collection: %s\n", e.what());
    }
  }
}

}  // namespace kbuild::service
