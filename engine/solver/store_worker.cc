#include "engine/solver/store_worker.h"

#include "engine/image/oci.h"
#include "engine/image/reference.h"
#include "engine/solver/step_executor.h"

namespace kbuild::solver {

Ref StoreWorker::source(const graph::SourceOp& op, BaseImage& base) {
  switch (op.kind) {
    case graph::SourceOp::Kind::scratch:
      return Ref{};
    case graph::SourceOp::Kind::local:
      return Ref{std::nullopt, local(op).path};
    case graph::SourceOp::Kind::image:
      break;
  }
  std::optional<store::ImageRecord> record;
  if (auto it = resolved_images_.find(op.pinned); !op.pinned.empty() && it != resolved_images_.end()) {
    record = store::ImageRecord{store::Digest::parse(it->second), store::Digest::parse(op.pinned), {}};
  } else {
    record = store_.metadata().image_by_name(op.name);
  }
  bool unpacked = record && (op.pinned.empty() || record->config.str() == op.pinned) &&
                  store_.metadata().get_cache(store::image_chain_key(record->config));
  if (!unpacked && pending_) {
    if (auto pending = pending_->find(op.name, op.platform); pending && (op.pinned.empty() || pending->first == op.pinned)) {
      store::Digest config = store::Digest::parse(pending->first);
      base.diff_ids = image::parse_config(store_.content().read_small(config)).rootfs.diff_ids;
      base.manifest = store::Digest::parse(pending->second);
      return Ref{std::nullopt, "", PendingImages::key(op.name, op.platform)};
    }
  }
  if (!record) {
    throw Error(ErrorKind::not_found, op.name + ": not found in the local store (pulling from registries is not "
                                                "supported yet; build it or load it with kbuildctl load first)");
  }
  if (!op.pinned.empty() && record->config.str() != op.pinned) {
    throw Error(ErrorKind::user, "image " + op.name + " changed during the build (it was " + op.pinned + ")");
  }
  auto chain = store_.metadata().get_cache(store::image_chain_key(record->config));
  // Held from here on; an image pruned meanwhile has no chain left.
  if (!chain || (!chain->snapshot_id.empty() && !lease_->hold_snapshot(chain->snapshot_id))) {
    throw Error(ErrorKind::not_found, "image " + op.name + " has no unpacked layers in the store (was it removed?)");
  }
  base.diff_ids = image::parse_config(store_.content().read_small(record->config)).rootfs.diff_ids;
  base.manifest = record->manifest;
  Ref ref;
  if (!chain->snapshot_id.empty()) ref.top = chain->snapshot_id;
  return ref;
}

const MaterializedContext& StoreWorker::local(const graph::SourceOp& op) const {
  if (op.name != "context") throw Error(ErrorKind::user, "named contexts are not supported yet: " + op.name);
  if (!context_) throw Error(ErrorKind::internal, "the build reads its context, which was not loaded");
  return *context_;
}

std::string StoreWorker::checksum(const graph::SourceOp& op, const Selection& selection) {
  return context_selection_key(local(op), selection);
}

std::optional<Ref> StoreWorker::cached(const std::string& key) {
  if (std::optional<Ref> local = cached_locally(key)) return local;
  for (const auto& imported : imports_) {
    std::optional<std::vector<remotecache::CacheLayer>> chain = imported->find(key);
    if (!chain) continue;
    try {
      Ref ref{remotecache::materialize_chain(store_, imported->source(), *chain, materialize_options_), ""};
      // A chain extracted before is reused: held like a local hit.
      if (ref.top && !lease_->hold_snapshot(*ref.top)) continue;
      // Kept as the store's own, as BuildKit keeps what it imported: the next build hits locally.
      remember(key, ref);
      return ref;
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::canceled) throw;
      if (warn_) warn_(e.what());
    }
  }
  return std::nullopt;
}

std::optional<StoreWorker::ImportedResult> StoreWorker::find_imported(const std::string& key) const {
  for (const auto& imported : imports_) {
    if (auto chain = imported->find(key)) return ImportedResult{std::move(*chain), imported};
  }
  return std::nullopt;
}

std::optional<Ref> StoreWorker::cached_locally(const std::string& key) {
  std::optional<store::CacheResult> hit = store_.metadata().get_cache(key);
  if (!hit) return std::nullopt;
  if (hit->snapshot_id.empty()) return Ref{};
  // A record may outlive its snapshot (removed by a prune): then the op runs again. Held from
  // here on, so that no prune removes it while the build uses it.
  if (!lease_->hold_snapshot(hit->snapshot_id)) return std::nullopt;
  return Ref{hit->snapshot_id, ""};
}

void StoreWorker::remember(const std::string& key, const Ref& result) {
  store_.metadata().put_cache(key, store::CacheResult{result.top.value_or(""), ""});
}

std::optional<std::string> PendingImages::materialize(const std::string& key, const CancelToken& cancel,
                                                     const LogSink& log) {
  std::shared_ptr<std::once_flag> once;
  std::string name, platform, config;
  {
    std::lock_guard lock(mutex_);
    auto it = images_.find(key);
    if (it == images_.end()) throw Error(ErrorKind::internal, "image " + key + " was not resolved by this build");
    once = it->second.pulled;
    name = it->second.name;
    platform = it->second.platform;
    config = it->second.config;
  }
  // One pull per image; a failed one lets the next caller try again (call_once's rule).
  std::call_once(*once, [&] {
    std::optional<std::string> top = pull_(name, platform, config, cancel, log);
    std::lock_guard lock(mutex_);
    images_[key].top = std::move(top);
  });
  std::lock_guard lock(mutex_);
  return images_[key].top;
}

Ref StoreWorker::materialize(const Ref& ref, const CancelToken& cancel, const LogSink& log) {
  if (ref.pending_image.empty()) return ref;
  if (!pending_) throw Error(ErrorKind::internal, "a pending image without a way to pull it");
  std::optional<std::string> top = pending_->materialize(ref.pending_image, cancel, log);
  // Pulled by this build (held as made) or by another before: held either way.
  if (top && !lease_->hold_snapshot(*top)) {
    throw Error(ErrorKind::not_found, "image " + ref.pending_image + ": its layers were removed while it was pulled");
  }
  return Ref{std::move(top), ""};
}

Ref StoreWorker::execute(const graph::Op& op, const std::map<graph::OpIndex, Ref>& given, const CancelToken& cancel,
                         const LogSink& log) {
  std::map<graph::OpIndex, Ref> inputs;
  for (const auto& [index, ref] : given) inputs.emplace(index, materialize(ref, cancel, log));
  OpContext context{store_, inputs, cancel, log, sandbox_.get(), op.metadata.name};
  return std::visit(
      [&](const auto& body) -> Ref {
        using T = std::decay_t<decltype(body)>;
        if constexpr (std::is_same_v<T, graph::ExecOp>) {
          return execute_exec_op(context, body);
        } else if constexpr (std::is_same_v<T, graph::FileOp>) {
          return execute_file_op(context, body);
        } else if constexpr (std::is_same_v<T, graph::MergeOp>) {
          return execute_merge_op(context, body);
        } else {
          throw Error(ErrorKind::internal, "a source op is resolved, not executed");
        }
      },
      op.body);
}

}  // namespace kbuild::solver
