// The build graph: a few kinds of operation on filesystem trees, each known by the digest of
// its own definition and its inputs' digests. A frontend writes it; the solver, the cache and
// the exporters read it and nothing else. It knows nothing of Dockerfiles.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"

namespace kbuild::graph {

// An op's place in its graph; inputs always come before the ops that read them.
using OpIndex = size_t;

// A tree that comes from outside the graph.
struct SourceOp {
  enum class Kind { scratch, image, local };
  Kind kind = Kind::scratch;
  // image: the normalized reference ("docker.io/library/alpine:3.20"); local: the name of the
  // directory the caller sends ("context").
  std::string name;
  // image: the config digest the reference resolved to, so that a changed image is a new op.
  std::string pinned;
  std::string platform;  // image: "linux/amd64"
};

// A mount of an exec, other than its root filesystem.
struct ExecMount {
  enum class Type { bind, cache, tmpfs, secret, ssh };
  Type type = Type::bind;
  std::optional<OpIndex> input;  // bind: the tree mounted
  std::string selector;          // bind, cache: the path inside it that is mounted ("" for all)
  std::string target;            // absolute, clean
  bool read_only = true;
  int64_t tmpfs_size = 0;        // bytes; 0 = no limit
  std::string cache_id;          // cache: its identity ("" = the target)
  enum class Sharing { shared, private_, locked };
  Sharing sharing = Sharing::shared;
  std::optional<uint32_t> mode, uid, gid;
  // secret and ssh: `cache_id` is the secret's or agent's id; a missing one fails the step
  // only when required. secret: `env` also (or, with no target, only) sets that variable.
  bool required = false;
  std::optional<std::string> env;
  bool operator==(const ExecMount&) const = default;
};

// A command run on a root filesystem, whose changes to it are the op's result.
struct ExecOp {
  OpIndex rootfs = 0;
  std::vector<std::string> argv;
  std::vector<std::string> env;  // "K=V"
  std::string cwd = "/";
  std::string user;              // as written: "name", "uid:gid", ""; resolved in the rootfs
  std::vector<ExecMount> mounts;
  enum class Network { sandbox, none, host };
  Network network = Network::sandbox;
  bool insecure = false;         // all capabilities, devices, no seccomp
};

// Copies paths of a source tree into the tree being changed.
struct CopyAction {
  OpIndex source = 0;  // the tree copied from
  std::vector<std::string> paths;  // relative to the source root; wildcards allowed
  std::string dest;                // a trailing "/" makes it a directory; relative to `cwd`
  std::string cwd = "/";
  std::string chown;               // "" keeps owners; names resolve in `names` or the dest tree
  std::string chmod;
  bool parents = false;            // keep the source paths' directories ("/./" pivots)
  std::vector<std::string> excludes;
  bool unpack = false;             // extract local archives into dest
  std::string verb = "COPY";       // how errors name the copy
  // Where --chown names resolve when the tree being changed is not the one they belong to
  // (a copy made on nothing to be merged later). It does not enter the cache key: the
  // result is reused on a changed tree, as the merge it feeds is meant to be.
  std::optional<OpIndex> names;
  // The classic builder's checks (fileops::CopyRequest::legacy_builder). In the key only when
  // set, so that BuildKit's copies keep theirs.
  bool classic = false;
};
struct MkdirAction {
  std::string path;  // absolute
  uint32_t mode = 0755;
  std::string chown;  // owner of the directories made, resolved in the tree
  bool make_parents = true;
};
struct MkfileAction {
  std::string path;  // absolute
  std::string data;
  uint32_t mode = 0644;
};
using FileAction = std::variant<CopyAction, MkdirAction, MkfileAction>;

// File changes applied in order to a tree; the changes are the op's result.
struct FileOp {
  OpIndex base = 0;
  std::vector<FileAction> actions;
};

// The layers of its inputs stacked in order, the first at the bottom.
struct MergeOp {
  std::vector<OpIndex> inputs;
};

using OpBody = std::variant<SourceOp, ExecOp, FileOp, MergeOp>;

// What is said about an op that does not change what it makes: it never enters a digest.
struct OpMetadata {
  std::string name;                  // its progress vertex ("[2/3] RUN make"); "" for none
  std::optional<SourceRange> lines;  // where a frontend wrote it, for errors
  bool ignore_cache = false;         // run it even when the cache has its result
};

struct Op {
  OpBody body;
  OpMetadata metadata;
  std::string digest;  // "sha256:..." of the canonical definition, inputs by digest

  // The ops it reads, in a fixed order; `for_key` leaves out inputs that do not enter its
  // cache key (a copy's names tree).
  std::vector<OpIndex> inputs(bool for_key = false) const;
};

// A content-addressed graph: adding an op that is already there returns the one there.
class Graph {
 public:
  OpIndex add(OpBody body, OpMetadata metadata = {});
  const Op& op(OpIndex index) const { return ops_.at(index); }
  size_t size() const { return ops_.size(); }
  const std::vector<Op>& ops() const { return ops_; }
  // The ops `root` needs, inputs first, root last.
  std::vector<OpIndex> closure(OpIndex root) const;

 private:
  std::vector<Op> ops_;
  std::map<std::string, OpIndex> by_digest_;
};

// The canonical definition of an op, with each input written as `input_id(index)`; `for_key`
// leaves out what does not enter its cache key.
nlohmann::json describe_op(const Op& op, const std::function<nlohmann::json(OpIndex)>& input_id, bool for_key = false);

// The ops `root` needs as JSON, for `kbuildctl debug plan`: each op's digest, kind,
// definition (inputs by digest) and name, inputs first. The same graph gives the same text.
nlohmann::json graph_json(const Graph& graph, OpIndex root);

const char* op_kind(const OpBody& body);

}  // namespace kbuild::graph
