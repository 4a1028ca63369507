#include "engine/solver/scheduler.h"

#include <chrono>
#include <future>
#include <set>

#include <nlohmann/json.hpp>

namespace kbuild::solver {
namespace {

using nlohmann::json;
using graph::OpIndex;

const graph::SourceOp* local_source(const graph::Graph& graph, OpIndex index) {
  const auto* source = std::get_if<graph::SourceOp>(&graph.op(index).body);
  return source && source->kind == graph::SourceOp::Kind::local ? source : nullptr;
}

// The checksums of the local content an op reads, in the order it reads it.
json content_checksums(const graph::Graph& graph, const graph::Op& op,
                       const std::function<std::string(const graph::SourceOp&, const Selection&)>& checksum) {
  json out = json::array();
  auto add = [&](OpIndex input, Selection selection) {
    if (const graph::SourceOp* local = local_source(graph, input)) out.push_back(checksum(*local, selection));
  };
  const Selection whole{{"."}, {}};
  std::visit(
      [&](const auto& body) {
        using T = std::decay_t<decltype(body)>;
        if constexpr (std::is_same_v<T, graph::FileOp>) {
          add(body.base, whole);
          for (const graph::FileAction& action : body.actions) {
            if (const auto* copy = std::get_if<graph::CopyAction>(&action)) add(copy->source, {copy->paths, copy->excludes});
          }
        } else if constexpr (std::is_same_v<T, graph::ExecOp>) {
          add(body.rootfs, whole);
          for (const graph::ExecMount& mount : body.mounts) {
            if (mount.input) add(*mount.input, {{mount.selector.empty() ? "." : mount.selector}, {}});
          }
        } else if constexpr (std::is_same_v<T, graph::MergeOp>) {
          for (OpIndex input : body.inputs) add(input, whole);
        }
      },
      op.body);
  return out;
}

bool is_source(const graph::Op& op) { return std::holds_alternative<graph::SourceOp>(op.body); }

// An input's failure, passed through the ops that waited for it: not their own.
struct InputFailed {
  std::exception_ptr cause;
};

}  // namespace

std::optional<OpIndex> bottom_input(const graph::Op& op) {
  if (const auto* exec = std::get_if<graph::ExecOp>(&op.body)) return exec->rootfs;
  if (const auto* file = std::get_if<graph::FileOp>(&op.body)) return file->base;
  if (const auto* merge = std::get_if<graph::MergeOp>(&op.body)) return merge->inputs.at(0);
  return std::nullopt;
}

std::vector<std::string> cache_keys(const graph::Graph& graph, OpIndex root,
                                    const std::function<std::string(const graph::SourceOp&, const Selection&)>& checksum) {
  std::vector<std::string> keys(graph.size());
  for (OpIndex i : graph.closure(root)) {
    const graph::Op& op = graph.op(i);
    if (is_source(op)) {
      keys[i] = op.digest;  // an image source is pinned by its digest; a local one by what is read of it
      continue;
    }
    json definition = graph::describe_op(op, [&](OpIndex input) { return json(keys[input]); }, true);
    // "v" is the key format's version: any change to what enters a key (describe_op, the
    // context's entry_digest and selection_digest, this JSON) bumps it, so that keys made
    // before never match by accident. 3: context owners reset to 0 (engine/context/receiver.cc).
    json key = {{"v", kCacheKeyVersion}, {"op", definition}, {"content", content_checksums(graph, op, checksum)}};
    keys[i] = store::Digest::of(key.dump()).str();
  }
  return keys;
}

// An op running now for every build that needs its cache key, on a thread of its own with a
// cancel of its own, canceled only when the last build waiting for it has left, as
// BuildKit's shared vertices are: a build that is canceled detaches, the others keep it.
struct Scheduler::InFlight {
  std::promise<Ref> promise;
  std::shared_future<Ref> result = promise.get_future().share();
  CancelToken cancel;
  std::mutex mutex;
  std::map<uint64_t, LogSink> waiters;  // guarded by mutex: each waiting build's log
  uint64_t next_waiter = 0;

  void log(int stream, std::string_view data) {
    std::lock_guard lock(mutex);
    for (auto& [id, sink] : waiters) sink(stream, data);
  }
};

// One build's solve: its keys, the futures of the ops it started, what failed.
class Scheduler::Solve {
 public:
  Solve(Scheduler& scheduler, const graph::Graph& graph, OpIndex root, std::shared_ptr<Worker> worker,
        Progress& progress, const CancelToken& cancel)
      : scheduler_(scheduler), graph_(graph), root_(root), worker_(std::move(worker)), progress_(progress),
        cancel_(cancel), vertex_of_(graph.size()), lines_of_(graph.size()), own_errors_(graph.size()) {}

  Solved run() {
    std::vector<OpIndex> closure = graph_.closure(root_);
    assign_vertices(closure);
    for (OpIndex i : closure) {
      const graph::Op& op = graph_.op(i);
      if (!op.metadata.name.empty()) progress_.announced(op.digest, op.metadata.name);
    }
    std::vector<BaseImage> bases(graph_.size());
    for (OpIndex i : closure) {
      if (is_source(graph_.op(i))) sources_[i] = resolve_source(i, bases[i]);
    }
    keys_ = cache_keys(graph_, root_, [&](const graph::SourceOp& source, const Selection& selection) {
      return worker_->checksum(source, selection);
    });
    for (OpIndex i : closure) {
      if (auto bottom = bottom_input(graph_.op(i))) bases[i] = bases[*bottom];
    }

    std::exception_ptr failure;
    Ref result;
    try {
      result = future_of(root_).get();
    } catch (...) {
      failure = std::current_exception();
    }
    wait_for_all();
    if (failure) std::rethrow_exception(cause_of(failure));
    Solved solved{result, bases[root_], keys_[root_], keys_, {}};
    std::lock_guard lock(mutex_);
    for (const auto& [index, future] : futures_) solved.results.emplace(index, future.get());
    return solved;
  }

 private:
  // An op without a name of its own (a copy made to be merged, a heredoc's file) is part of
  // the vertex of the op that reads it.
  void assign_vertices(const std::vector<OpIndex>& closure) {
    for (auto it = closure.rbegin(); it != closure.rend(); ++it) {
      const graph::Op& op = graph_.op(*it);
      if (!op.metadata.name.empty()) {
        vertex_of_[*it] = op.digest;
        lines_of_[*it] = op.metadata.lines;
      }
      for (OpIndex input : op.inputs()) {
        const graph::Op& in = graph_.op(input);
        if (in.metadata.name.empty() && vertex_of_[input].empty()) {
          vertex_of_[input] = vertex_of_[*it];
          lines_of_[input] = in.metadata.lines ? in.metadata.lines : lines_of_[*it];
        }
      }
    }
  }

  Ref resolve_source(OpIndex i, BaseImage& base) {
    const graph::Op& op = graph_.op(i);
    const std::string& name = op.metadata.name;
    if (!name.empty()) progress_.started(op.digest, name);
    try {
      Ref ref = worker_->source(std::get<graph::SourceOp>(op.body), base);
      if (!name.empty()) progress_.completed(op.digest, name, true, "");
      return ref;
    } catch (const Error& e) {
      if (!name.empty()) progress_.completed(op.digest, name, false, e.what());
      throw lines_of_[i] ? e.at(*lines_of_[i]) : e;
    }
  }

  std::shared_future<Ref> future_of(OpIndex i) {
    std::lock_guard lock(mutex_);
    auto it = futures_.find(i);
    if (it != futures_.end()) return it->second;
    auto future = std::async(std::launch::async, [this, i] { return run_task(i); }).share();
    futures_.emplace(i, future);
    return future;
  }

  Ref run_task(OpIndex i) {
    try {
      return run_op(i);
    } catch (const InputFailed&) {
      throw;
    } catch (const Error& e) {
      Error located = lines_of_[i] ? e.at(*lines_of_[i]) : e;
      fail(i, std::make_exception_ptr(located), e.kind() != ErrorKind::canceled);
      throw InputFailed{std::make_exception_ptr(located)};
    } catch (...) {
      fail(i, std::current_exception(), true);
      throw InputFailed{std::current_exception()};
    }
  }

  void fail(OpIndex i, std::exception_ptr error, bool stops_the_build) {
    std::lock_guard lock(mutex_);
    own_errors_[i] = error;
    if (stops_the_build) failed_ = true;
  }

  Ref run_op(OpIndex i) {
    const graph::Op& op = graph_.op(i);
    if (is_source(op)) return sources_.at(i);
    cancel_.check();
    if (failed_) throw Error(ErrorKind::canceled, "build canceled: another stage failed");
    const std::string& name = op.metadata.name;
    const std::string& vertex = vertex_of_[i];
    if (!op.metadata.ignore_cache) {
      if (std::optional<Ref> hit = worker_->cached(keys_[i])) {
        report_cached_inputs(i);
        if (!name.empty()) {
          progress_.started(vertex, name);
          progress_.completed(vertex, name, true, "");
        }
        return *hit;
      }
    }
    // Inputs with vertices of their own finish before this one starts; the rest belong to it.
    // Every input is started before any is waited for: independent ones run side by side.
    std::map<OpIndex, Ref> inputs;
    std::vector<std::pair<OpIndex, std::shared_future<Ref>>> own_vertices, part_of_this;
    for (OpIndex input : op.inputs()) {
      const graph::Op& in = graph_.op(input);
      bool has_vertex = is_source(in) || !in.metadata.name.empty();
      (has_vertex ? own_vertices : part_of_this).emplace_back(input, std::shared_future<Ref>());
    }
    for (auto& [input, future] : own_vertices) future = future_of(input);
    for (auto& [input, future] : own_vertices) inputs[input] = future.get();
    // A sibling may have failed while the inputs ran: nothing more starts then.
    if (failed_) throw Error(ErrorKind::canceled, "build canceled: another stage failed");
    if (!name.empty()) progress_.started(vertex, name);
    try {
      // The ops that are part of this vertex start once it has: their logs are its logs.
      for (auto& [input, future] : part_of_this) future = future_of(input);
      for (auto& [input, future] : part_of_this) inputs[input] = future.get();
      Progress& progress = progress_;
      Ref result = scheduler_.run_shared(
          keys_[i], op, std::move(inputs), worker_,
          [&progress, vertex](int stream, std::string_view data) { progress.log(vertex, stream, data); },
          [this] { return cancel_.canceled() || failed_; }, !op.metadata.ignore_cache);
      if (!name.empty()) progress_.completed(vertex, name, false, "");
      return result;
    } catch (const InputFailed& failed) {
      if (!name.empty()) progress_.completed(vertex, name, false, message_of(failed.cause));
      throw;
    } catch (const Error& e) {
      if (!name.empty()) progress_.completed(vertex, name, false, e.what());
      throw;
    }
  }

  // A result from the cache stands for the ops it was made from: as in BuildKit, their
  // vertices show as cached too, though none of them is needed now.
  void report_cached_inputs(OpIndex i) {
    std::set<OpIndex> reported;
    std::vector<OpIndex> pending = graph_.op(i).inputs();
    {
      std::lock_guard lock(mutex_);
      while (!pending.empty()) {
        OpIndex input = pending.back();
        pending.pop_back();
        if (is_source(graph_.op(input)) || futures_.count(input) || !reported_cached_.insert(input).second) continue;
        reported.insert(input);
        for (OpIndex next : graph_.op(input).inputs()) pending.push_back(next);
      }
    }
    for (OpIndex input : reported) {  // inputs first, as they would have run
      const std::string& name = graph_.op(input).metadata.name;
      if (name.empty()) continue;
      progress_.started(vertex_of_[input], name);
      progress_.completed(vertex_of_[input], name, true, "");
    }
  }

  static std::string message_of(const std::exception_ptr& error) {
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      return e.what();
    } catch (...) {
      return "unknown error";
    }
  }

  // Ops started for this build may still run (a sibling of the one that failed): each is
  // waited for, since they read this build's graph.
  void wait_for_all() {
    std::set<OpIndex> waited;
    for (;;) {
      std::vector<std::pair<OpIndex, std::shared_future<Ref>>> pending;
      {
        std::lock_guard lock(mutex_);
        for (const auto& [index, future] : futures_) {
          if (!waited.count(index)) pending.emplace_back(index, future);
        }
      }
      if (pending.empty()) return;
      for (auto& [index, future] : pending) {
        future.wait();
        waited.insert(index);
      }
    }
  }

  // The error of the op that failed on its own, the first in the graph's order; a
  // cancellation only when nothing else failed.
  std::exception_ptr cause_of(std::exception_ptr failure) {
    std::exception_ptr canceled;
    for (const std::exception_ptr& error : own_errors_) {
      if (!error) continue;
      try {
        std::rethrow_exception(error);
      } catch (const Error& e) {
        if (e.kind() != ErrorKind::canceled) return error;
        if (!canceled) canceled = error;
      } catch (...) {
        return error;
      }
    }
    if (canceled) return canceled;
    try {
      std::rethrow_exception(failure);
    } catch (const InputFailed& failed) {
      return failed.cause;
    } catch (...) {
      return failure;
    }
  }

  Scheduler& scheduler_;
  const graph::Graph& graph_;
  OpIndex root_;
  std::shared_ptr<Worker> worker_;
  Progress& progress_;
  const CancelToken& cancel_;
  std::vector<std::string> vertex_of_;
  std::vector<std::optional<SourceRange>> lines_of_;
  std::map<OpIndex, Ref> sources_;
  std::vector<std::string> keys_;
  std::mutex mutex_;
  std::map<OpIndex, std::shared_future<Ref>> futures_;
  std::set<OpIndex> reported_cached_;
  std::vector<std::exception_ptr> own_errors_;
  std::atomic<bool> failed_{false};
};

Scheduler::~Scheduler() {
  // Every build has returned, so no op has a waiter left: each is canceled and ends soon.
  std::map<uint64_t, std::thread> threads;
  {
    std::lock_guard lock(threads_mutex_);
    threads.swap(threads_);
  }
  for (auto& [id, thread] : threads) thread.join();
}

Solved Scheduler::solve(const graph::Graph& graph, OpIndex root, std::shared_ptr<Worker> worker, Progress& progress,
                        const CancelToken& cancel) {
  Solve solve(*this, graph, root, std::move(worker), progress, cancel);
  return solve.run();
}

// Runs the op, or joins the same op a concurrent build started, and waits for its result
// until this build is canceled.
Ref Scheduler::run_shared(const std::string& key, const graph::Op& op, std::map<OpIndex, Ref> inputs,
                          const std::shared_ptr<Worker>& worker, const LogSink& log,
                          const std::function<bool()>& stopped, bool use_cache) {
  std::shared_ptr<InFlight> entry;
  uint64_t waiter = 0;
  bool owner = false;
  {
    std::lock_guard lock(in_flight_mutex_);
    auto it = in_flight_.find(key);
    if (it != in_flight_.end()) {
      entry = it->second;
    } else {
      entry = std::make_shared<InFlight>();
      in_flight_[key] = entry;
      owner = true;
    }
    std::lock_guard entry_lock(entry->mutex);
    waiter = entry->next_waiter++;
    entry->waiters[waiter] = log;
  }
  if (owner && use_cache) {
    // A build that ran this op may have finished it between our cache lookup and now.
    std::optional<Ref> hit;
    try {
      hit = worker->cached(key);
    } catch (...) {
      entry->promise.set_exception(std::current_exception());
      leave(key, entry, waiter);
      forget(key, entry);
      throw;
    }
    if (hit) {
      entry->promise.set_value(*hit);
      forget(key, entry);
      owner = false;
    }
  }
  if (owner) {
    // The op on a thread of its own, holding what it reads (the op, its inputs, the worker
    // and what that holds) so that it may outlive the build that started it.
    auto job = std::make_shared<std::pair<graph::Op, std::map<OpIndex, Ref>>>(op, std::move(inputs));
    try {
      start_thread([this, key, entry, job, worker] {
        try {
          Ref result = worker->execute(job->first, job->second, entry->cancel,
                                       [&entry](int stream, std::string_view data) { entry->log(stream, data); });
          worker->remember(key, result);
          entry->promise.set_value(result);
        } catch (...) {
          entry->promise.set_exception(std::current_exception());
        }
        std::lock_guard lock(in_flight_mutex_);
        auto it = in_flight_.find(key);
        if (it != in_flight_.end() && it->second == entry) in_flight_.erase(it);
      });
    } catch (...) {
      entry->promise.set_exception(std::current_exception());
      leave(key, entry, waiter);
      forget(key, entry);
      throw;
    }
  }
  for (;;) {
    if (entry->result.wait_for(std::chrono::milliseconds(50)) == std::future_status::ready) {
      leave(key, entry, waiter);
      return entry->result.get();
    }
    if (stopped()) {
      leave(key, entry, waiter);
      throw Error(ErrorKind::canceled, "build canceled");
    }
  }
}

void Scheduler::forget(const std::string& key, const std::shared_ptr<InFlight>& entry) {
  std::lock_guard lock(in_flight_mutex_);
  if (auto it = in_flight_.find(key); it != in_flight_.end() && it->second == entry) in_flight_.erase(it);
}

// Ends one build's wait; the op itself stops once no build waits for it any more.
void Scheduler::leave(const std::string& key, const std::shared_ptr<InFlight>& entry, uint64_t waiter) {
  std::lock_guard lock(in_flight_mutex_);
  std::lock_guard entry_lock(entry->mutex);
  entry->waiters.erase(waiter);
  if (!entry->waiters.empty() || entry->result.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
    return;
  }
  entry->cancel.cancel();
  // A build that asks for the same op from now on starts it anew.
  auto it = in_flight_.find(key);
  if (it != in_flight_.end() && it->second == entry) in_flight_.erase(it);
}

void Scheduler::start_thread(std::function<void()> body) {
  std::lock_guard lock(threads_mutex_);
  for (uint64_t id : finished_threads_) {
    auto it = threads_.find(id);
    if (it == threads_.end()) continue;
    it->second.join();  // it said it finished: a short wait at most
    threads_.erase(it);
  }
  finished_threads_.clear();
  const uint64_t id = next_thread_++;
  threads_.emplace(id, std::thread([this, id, body = std::move(body)] {
                     body();
                     std::lock_guard lock(threads_mutex_);
                     finished_threads_.push_back(id);
                   }));
}

}  // namespace kbuild::solver
