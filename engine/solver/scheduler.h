// The solver: cache keys for a graph's ops, then the ops the result needs, each as soon as its
// inputs are there, in parallel where the graph allows. One Scheduler serves every build of a
// daemon: an op with the same cache key that another build is running is joined, not run
// again, and it runs for as long as one build still waits for it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "engine/graph/op.h"
#include "engine/solver/cancel.h"
#include "engine/solver/progress.h"
#include "engine/solver/worker.h"

namespace kbuild::solver {

struct Solved {
  Ref result;
  BaseImage base;
  std::string key;                         // the root op's cache key
  std::vector<std::string> keys;           // every op's, by index (empty for ops the root does not need)
  std::map<graph::OpIndex, Ref> results;   // what each op this build ran or found cached gave
};

// The version of the cache key format ("v" in each key's JSON), and the scheme name exported
// caches record: caches of another scheme cannot hit.
inline constexpr int kCacheKeyVersion = 3;
inline constexpr const char* kCacheKeyScheme = "kbuild-key-v3";

// The input whose tree an op's result stands on: an exec's rootfs, a file op's base, a
// merge's first input; none for a source.
std::optional<graph::OpIndex> bottom_input(const graph::Op& op);

// Every op's cache key: the digest of its definition with inputs by their keys (not their
// digests, so an image pinned the same way keys the same), plus, for each local source it
// reads, the checksum of what it selects. `checksum` answers those.
std::vector<std::string> cache_keys(const graph::Graph& graph, graph::OpIndex root,
                                    const std::function<std::string(const graph::SourceOp&, const Selection&)>& checksum);

class Scheduler {
 public:
  Scheduler() = default;
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Makes `root`'s tree. Throws the error of the op that failed on its own (with its source
  // lines), not the cancellations it caused elsewhere.
  Solved solve(const graph::Graph& graph, graph::OpIndex root, std::shared_ptr<Worker> worker, Progress& progress,
               const CancelToken& cancel);

 private:
  class Solve;
  struct InFlight;
  friend class Solve;
  // Runs the op, or joins the same op another build runs, until `stopped` says this build
  // no longer waits. With `use_cache`, a result stored meanwhile is taken instead.
  Ref run_shared(const std::string& key, const graph::Op& op, std::map<graph::OpIndex, Ref> inputs,
                 const std::shared_ptr<Worker>& worker, const LogSink& log, const std::function<bool()>& stopped,
                 bool use_cache);
  // Drops `entry` from the in-flight ops if it is still the one there for `key`.
  void forget(const std::string& key, const std::shared_ptr<InFlight>& entry);
  void start_thread(std::function<void()> body);
  void leave(const std::string& key, const std::shared_ptr<InFlight>& entry, uint64_t waiter);

  std::mutex in_flight_mutex_;
  std::map<std::string, std::shared_ptr<InFlight>> in_flight_;  // cache key → the op running it
  // Shared ops run on threads of their own, joined once done (and all of them at the end).
  std::mutex threads_mutex_;
  std::map<uint64_t, std::thread> threads_;
  std::vector<uint64_t> finished_threads_;
  uint64_t next_thread_ = 0;
};

}  // namespace kbuild::solver
