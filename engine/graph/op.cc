#include "engine/graph/op.h"

#include <set>

#include "engine/store/digest.h"

namespace kbuild::graph {
namespace {

using nlohmann::json;

const char* source_kind(SourceOp::Kind kind) {
  switch (kind) {
    case SourceOp::Kind::scratch: return "scratch";
    case SourceOp::Kind::image: return "image";
    case SourceOp::Kind::local: return "local";
  }
  return "?";
}

const char* mount_type(ExecMount::Type type) {
  switch (type) {
    case ExecMount::Type::bind: return "bind";
    case ExecMount::Type::cache: return "cache";
    case ExecMount::Type::tmpfs: return "tmpfs";
    case ExecMount::Type::secret: return "secret";
    case ExecMount::Type::ssh: return "ssh";
  }
  return "?";
}

const char* sharing_name(ExecMount::Sharing sharing) {
  switch (sharing) {
    case ExecMount::Sharing::shared: return "shared";
    case ExecMount::Sharing::private_: return "private";
    case ExecMount::Sharing::locked: return "locked";
  }
  return "?";
}

const char* network_name(ExecOp::Network network) {
  switch (network) {
    case ExecOp::Network::sandbox: return "sandbox";
    case ExecOp::Network::none: return "none";
    case ExecOp::Network::host: return "host";
  }
  return "?";
}

json optional_number(const std::optional<uint32_t>& value) { return value ? json(*value) : json(nullptr); }

using InputId = std::function<json(OpIndex)>;

json describe(const SourceOp& op, const InputId&, bool) {
  return {{"source", source_kind(op.kind)}, {"name", op.name}, {"pinned", op.pinned}, {"platform", op.platform}};
}

json describe(const ExecOp& op, const InputId& input, bool) {
  json mounts = json::array();
  for (const ExecMount& m : op.mounts) {
    json mount = {{"type", mount_type(m.type)},
                  {"input", m.input ? input(*m.input) : json(nullptr)},
                  {"selector", m.selector},
                  {"target", m.target},
                  {"readonly", m.read_only},
                  {"tmpfs_size", m.tmpfs_size},
                  {"cache_id", m.cache_id},
                  {"sharing", sharing_name(m.sharing)},
                  {"mode", optional_number(m.mode)},
                  {"uid", optional_number(m.uid)},
                  {"gid", optional_number(m.gid)}};
    // Only where they mean something, so that other mounts keep the keys they had. A secret's
    // id and how it is exposed are part of the key; its value never is.
    if (m.type == ExecMount::Type::secret || m.type == ExecMount::Type::ssh) {
      mount["required"] = m.required;
      mount["env"] = m.env ? json(*m.env) : json(nullptr);
    }
    mounts.push_back(std::move(mount));
  }
  return {{"rootfs", input(op.rootfs)}, {"argv", op.argv},       {"env", op.env},
          {"cwd", op.cwd},              {"user", op.user},       {"mounts", mounts},
          {"network", network_name(op.network)}, {"insecure", op.insecure}};
}

json describe_action(const FileAction& action, const InputId& input, bool for_key) {
  return std::visit(
      [&](const auto& a) -> json {
        using T = std::decay_t<decltype(a)>;
        if constexpr (std::is_same_v<T, CopyAction>) {
          json out = {{"action", "copy"},        {"source", input(a.source)}, {"paths", a.paths},
                      {"dest", a.dest},          {"cwd", a.cwd},              {"chown", a.chown},
                      {"chmod", a.chmod},        {"parents", a.parents},      {"excludes", a.excludes},
                      {"unpack", a.unpack},      {"verb", a.verb}};
          if (a.names && !for_key) out["names"] = input(*a.names);
          if (a.classic) out["classic"] = true;
          return out;
        } else if constexpr (std::is_same_v<T, MkdirAction>) {
          return {{"action", "mkdir"}, {"path", a.path}, {"mode", a.mode}, {"chown", a.chown},
                  {"parents", a.make_parents}};
        } else {
          static_assert(std::is_same_v<T, MkfileAction>);
          return {{"action", "mkfile"}, {"path", a.path}, {"data", a.data}, {"mode", a.mode}};
        }
      },
      action);
}

json describe(const FileOp& op, const InputId& input, bool for_key) {
  json actions = json::array();
  for (const FileAction& action : op.actions) actions.push_back(describe_action(action, input, for_key));
  return {{"base", input(op.base)}, {"actions", actions}};
}

json describe(const MergeOp& op, const InputId& input, bool) {
  json inputs = json::array();
  for (OpIndex i : op.inputs) inputs.push_back(input(i));
  return {{"inputs", inputs}};
}

}  // namespace

const char* op_kind(const OpBody& body) {
  static const char* const kinds[] = {"source", "exec", "file", "merge"};
  return kinds[body.index()];
}

std::vector<OpIndex> Op::inputs(bool for_key) const {
  std::vector<OpIndex> out;
  std::visit(
      [&](const auto& op) {
        using T = std::decay_t<decltype(op)>;
        if constexpr (std::is_same_v<T, ExecOp>) {
          out.push_back(op.rootfs);
          for (const ExecMount& m : op.mounts) {
            if (m.input) out.push_back(*m.input);
          }
        } else if constexpr (std::is_same_v<T, FileOp>) {
          out.push_back(op.base);
          for (const FileAction& action : op.actions) {
            if (const auto* copy = std::get_if<CopyAction>(&action)) {
              out.push_back(copy->source);
              if (copy->names && !for_key) out.push_back(*copy->names);
            }
          }
        } else if constexpr (std::is_same_v<T, MergeOp>) {
          out = op.inputs;
        }
      },
      body);
  return out;
}

json describe_op(const Op& op, const InputId& input_id, bool for_key) {
  json definition = std::visit([&](const auto& body) { return describe(body, input_id, for_key); }, op.body);
  return {{"kind", op_kind(op.body)}, {"op", definition}};
}

OpIndex Graph::add(OpBody body, OpMetadata metadata) {
  Op op{std::move(body), std::move(metadata), ""};
  for (OpIndex input : op.inputs()) {
    if (input >= ops_.size()) throw Error(ErrorKind::internal, "an op reads an op that is not in the graph yet");
  }
  json definition = describe_op(op, [&](OpIndex i) { return json(ops_[i].digest); });
  op.digest = store::Digest::of(definition.dump()).str();
  if (auto it = by_digest_.find(op.digest); it != by_digest_.end()) {
    Op& existing = ops_[it->second];
    existing.metadata.ignore_cache = existing.metadata.ignore_cache || op.metadata.ignore_cache;
    if (existing.metadata.name.empty()) {
      existing.metadata = {op.metadata.name, op.metadata.lines, existing.metadata.ignore_cache};
    }
    return it->second;
  }
  ops_.push_back(std::move(op));
  by_digest_[ops_.back().digest] = ops_.size() - 1;
  return ops_.size() - 1;
}

std::vector<OpIndex> Graph::closure(OpIndex root) const {
  std::set<OpIndex> needed{root};
  // Inputs always have smaller indexes: one pass from the root down finds them all.
  for (OpIndex i = root + 1; i-- > 0;) {
    if (!needed.count(i)) continue;
    for (OpIndex input : ops_.at(i).inputs()) needed.insert(input);
  }
  return {needed.begin(), needed.end()};
}

json graph_json(const Graph& graph, OpIndex root) {
  json ops = json::array();
  for (OpIndex i : graph.closure(root)) {
    const Op& op = graph.op(i);
    json entry = describe_op(op, [&](OpIndex input) { return json(graph.op(input).digest); });
    entry["digest"] = op.digest;
    if (!op.metadata.name.empty()) entry["name"] = op.metadata.name;
    if (op.metadata.ignore_cache) entry["ignore_cache"] = true;
    ops.push_back(std::move(entry));
  }
  return {{"root", graph.op(root).digest}, {"ops", ops}};
}

}  // namespace kbuild::graph
