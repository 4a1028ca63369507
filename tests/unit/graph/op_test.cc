#include "engine/graph/op.h"

#include <algorithm>
#include <map>
#include <set>

#include <gtest/gtest.h>

namespace kbuild::graph {
namespace {

using nlohmann::json;

// The trees every op of these tests may read, added in the same order to every graph so that
// the same index means the same op.
struct Base {
  Graph graph;
  OpIndex scratch = graph.add(SourceOp{SourceOp::Kind::scratch, "", "", ""});
  OpIndex alpine = graph.add(SourceOp{SourceOp::Kind::image, "docker.io/library/alpine:3.20",
                                      "sha256:1111111111111111111111111111111111111111111111111111111111111111",
                                      "linux/amd64"});
  OpIndex context = graph.add(SourceOp{SourceOp::Kind::local, "context", "", ""});
};

std::string digest_of(const OpBody& body, OpMetadata metadata = {}) {
  Base base;
  return base.graph.op(base.graph.add(body, std::move(metadata))).digest;
}

ExecOp an_exec() {
  ExecOp exec;
  exec.rootfs = 1;  // alpine
  exec.argv = {"/bin/sh", "-c", "make"};
  exec.env = {"PATH=/bin"};
  ExecMount bind;
  bind.input = 2;  // the context
  bind.selector = "src";
  bind.target = "/src";
  exec.mounts.push_back(bind);
  return exec;
}

MkdirAction mkdir(const std::string& path) {
  MkdirAction action;
  action.path = path;
  return action;
}

CopyAction a_copy() {
  CopyAction copy;
  copy.source = 2;
  copy.paths = {"a"};
  copy.dest = "/a";
  return copy;
}

FileOp a_file_op() { return FileOp{1, {a_copy(), mkdir("/d"), MkfileAction{"/f", "x", 0644}}}; }

// An op body changed in one field, with what was changed, for the failure message.
struct Variant {
  std::string what;
  OpBody body;
};

template <typename T, typename Change>
void vary(std::vector<Variant>& out, const std::string& what, T body, Change change) {
  change(body);
  out.push_back({what, OpBody(std::move(body))});
}

std::vector<Variant> variants() {
  std::vector<Variant> out;
  const SourceOp image{SourceOp::Kind::image, "docker.io/library/busybox:1", "sha256:2222", "linux/amd64"};
  out.push_back({"source", image});
  vary(out, "source kind", image, [](SourceOp& s) { s.kind = SourceOp::Kind::local; });
  vary(out, "source name", image, [](SourceOp& s) { s.name = "docker.io/library/busybox:2"; });
  vary(out, "source pinned", image, [](SourceOp& s) { s.pinned = "sha256:3333"; });
  vary(out, "source platform", image, [](SourceOp& s) { s.platform = "linux/arm64"; });

  out.push_back({"exec", an_exec()});
  vary(out, "exec rootfs", an_exec(), [](ExecOp& e) { e.rootfs = 0; });
  vary(out, "exec argv", an_exec(), [](ExecOp& e) { e.argv.back() = "make all"; });
  vary(out, "exec env", an_exec(), [](ExecOp& e) { e.env.push_back("A=1"); });
  vary(out, "exec cwd", an_exec(), [](ExecOp& e) { e.cwd = "/src"; });
  vary(out, "exec user", an_exec(), [](ExecOp& e) { e.user = "1000:1000"; });
  vary(out, "exec network", an_exec(), [](ExecOp& e) { e.network = ExecOp::Network::none; });
  vary(out, "exec insecure", an_exec(), [](ExecOp& e) { e.insecure = true; });
  vary(out, "exec no mounts", an_exec(), [](ExecOp& e) { e.mounts.clear(); });
  vary(out, "mount type", an_exec(), [](ExecOp& e) { e.mounts[0].type = ExecMount::Type::cache; });
  vary(out, "mount input", an_exec(), [](ExecOp& e) { e.mounts[0].input = 0; });
  vary(out, "mount without input", an_exec(), [](ExecOp& e) { e.mounts[0].input.reset(); });
  vary(out, "mount selector", an_exec(), [](ExecOp& e) { e.mounts[0].selector = "lib"; });
  vary(out, "mount target", an_exec(), [](ExecOp& e) { e.mounts[0].target = "/lib"; });
  vary(out, "mount read_only", an_exec(), [](ExecOp& e) { e.mounts[0].read_only = false; });
  vary(out, "mount tmpfs_size", an_exec(), [](ExecOp& e) { e.mounts[0].tmpfs_size = 4096; });
  vary(out, "mount cache_id", an_exec(), [](ExecOp& e) { e.mounts[0].cache_id = "go"; });
  vary(out, "mount sharing", an_exec(), [](ExecOp& e) { e.mounts[0].sharing = ExecMount::Sharing::locked; });
  vary(out, "mount mode", an_exec(), [](ExecOp& e) { e.mounts[0].mode = 0700; });
  vary(out, "mount uid", an_exec(), [](ExecOp& e) { e.mounts[0].uid = 1; });
  vary(out, "mount gid", an_exec(), [](ExecOp& e) { e.mounts[0].gid = 1; });
  vary(out, "mount uid 0 is not unset", an_exec(), [](ExecOp& e) { e.mounts[0].uid = 0; });

  auto copy_of = [](FileOp& f) -> CopyAction& { return std::get<CopyAction>(f.actions[0]); };
  out.push_back({"file", a_file_op()});
  vary(out, "file base", a_file_op(), [](FileOp& f) { f.base = 0; });
  vary(out, "file action order", a_file_op(), [](FileOp& f) { std::swap(f.actions[1], f.actions[2]); });
  vary(out, "file one action less", a_file_op(), [](FileOp& f) { f.actions.pop_back(); });
  vary(out, "copy source", a_file_op(), [&](FileOp& f) { copy_of(f).source = 1; });
  vary(out, "copy paths", a_file_op(), [&](FileOp& f) { copy_of(f).paths.push_back("b"); });
  vary(out, "copy dest", a_file_op(), [&](FileOp& f) { copy_of(f).dest = "/b"; });
  vary(out, "copy cwd", a_file_op(), [&](FileOp& f) { copy_of(f).cwd = "/w"; });
  vary(out, "copy chown", a_file_op(), [&](FileOp& f) { copy_of(f).chown = "app"; });
  vary(out, "copy chmod", a_file_op(), [&](FileOp& f) { copy_of(f).chmod = "644"; });
  vary(out, "copy parents", a_file_op(), [&](FileOp& f) { copy_of(f).parents = true; });
  vary(out, "copy excludes", a_file_op(), [&](FileOp& f) { copy_of(f).excludes = {"*.o"}; });
  vary(out, "copy unpack", a_file_op(), [&](FileOp& f) { copy_of(f).unpack = true; });
  vary(out, "copy verb", a_file_op(), [&](FileOp& f) { copy_of(f).verb = "ADD"; });
  vary(out, "copy names", a_file_op(), [&](FileOp& f) { copy_of(f).names = 1; });
  vary(out, "mkdir path", a_file_op(), [](FileOp& f) { std::get<MkdirAction>(f.actions[1]).path = "/e"; });
  vary(out, "mkdir mode", a_file_op(), [](FileOp& f) { std::get<MkdirAction>(f.actions[1]).mode = 0700; });
  vary(out, "mkdir chown", a_file_op(), [](FileOp& f) { std::get<MkdirAction>(f.actions[1]).chown = "app"; });
  vary(out, "mkdir parents", a_file_op(), [](FileOp& f) { std::get<MkdirAction>(f.actions[1]).make_parents = false; });
  vary(out, "mkfile path", a_file_op(), [](FileOp& f) { std::get<MkfileAction>(f.actions[2]).path = "/g"; });
  vary(out, "mkfile data", a_file_op(), [](FileOp& f) { std::get<MkfileAction>(f.actions[2]).data = "y"; });
  vary(out, "mkfile mode", a_file_op(), [](FileOp& f) { std::get<MkfileAction>(f.actions[2]).mode = 0755; });

  out.push_back({"merge", MergeOp{{0, 1}}});
  out.push_back({"merge order", MergeOp{{1, 0}}});
  out.push_back({"merge one more input", MergeOp{{0, 1, 2}}});
  return out;
}

TEST(OpDigest, IsTheSameForTheSameDefinitionInAnotherGraph) {
  std::string a = digest_of(an_exec());
  EXPECT_EQ(a, digest_of(an_exec()));
  EXPECT_TRUE(a.starts_with("sha256:")) << a;
  EXPECT_EQ(a.size(), 7u + 64u);
}

TEST(OpDigest, ChangesWithEveryFieldOfTheDefinition) {
  std::map<std::string, std::string> seen;  // digest → the variant that made it
  for (const Variant& v : variants()) {
    std::string digest = digest_of(v.body);
    auto [it, inserted] = seen.emplace(digest, v.what);
    EXPECT_TRUE(inserted) << "\"" << v.what << "\" has the digest of \"" << it->second << "\"";
  }
}

TEST(OpDigest, ChangesWithAnInputsDefinitionEvenTwoOpsDown) {
  auto root_digest = [](const std::string& pinned) {
    Graph graph;
    OpIndex image = graph.add(SourceOp{SourceOp::Kind::image, "docker.io/library/alpine:3.20", pinned, "linux/amd64"});
    ExecOp exec;
    exec.rootfs = image;
    exec.argv = {"true"};
    OpIndex run = graph.add(exec);
    return graph.op(graph.add(FileOp{run, {mkdir("/d")}})).digest;
  };
  EXPECT_EQ(root_digest("sha256:aaaa"), root_digest("sha256:aaaa"));
  EXPECT_NE(root_digest("sha256:aaaa"), root_digest("sha256:bbbb"));
}

TEST(OpDigest, IgnoresMetadata) {
  std::string plain = digest_of(an_exec());
  EXPECT_EQ(plain, digest_of(an_exec(), OpMetadata{"[1/2] RUN make", SourceRange{3, 4}, false}));
  EXPECT_EQ(plain, digest_of(an_exec(), OpMetadata{"[2/2] RUN make", SourceRange{9, 9}, true}));
}

TEST(GraphAdd, AnIdenticalOpIsTheOneAlreadyThere) {
  Base base;
  size_t before = base.graph.size();
  OpIndex first = base.graph.add(an_exec(), OpMetadata{"[1/1] RUN make", SourceRange{2, 2}, false});
  OpIndex second = base.graph.add(an_exec(), OpMetadata{"[stage-1 1/1] RUN make", SourceRange{5, 5}, false});
  EXPECT_EQ(first, second);
  EXPECT_EQ(base.graph.size(), before + 1);
  // The first name stays: its vertex is already the one users see.
  EXPECT_EQ(base.graph.op(first).metadata.name, "[1/1] RUN make");
  EXPECT_EQ(base.graph.op(first).metadata.lines, (SourceRange{2, 2}));
  // Sources too: the scratch a second stage starts from is the first stage's.
  EXPECT_EQ(base.graph.add(SourceOp{SourceOp::Kind::scratch, "", "", ""}), base.scratch);
}

TEST(GraphAdd, AnUnnamedOpTakesTheNameOfANamedDuplicate) {
  Base base;
  OpIndex helper = base.graph.add(an_exec());
  OpIndex named = base.graph.add(an_exec(), OpMetadata{"[1/1] RUN make", SourceRange{2, 2}, false});
  EXPECT_EQ(helper, named);
  EXPECT_EQ(base.graph.op(named).metadata.name, "[1/1] RUN make");
  EXPECT_EQ(base.graph.op(named).metadata.lines, (SourceRange{2, 2}));
}

TEST(GraphAdd, IgnoreCacheOfDuplicatesIsOred) {
  {
    Base base;
    OpIndex i = base.graph.add(an_exec(), OpMetadata{"a", {}, false});
    base.graph.add(an_exec(), OpMetadata{"b", {}, true});
    EXPECT_TRUE(base.graph.op(i).metadata.ignore_cache) << "a later duplicate asks for a run";
  }
  {
    Base base;
    OpIndex i = base.graph.add(an_exec(), OpMetadata{"a", {}, true});
    base.graph.add(an_exec(), OpMetadata{"b", {}, false});
    EXPECT_TRUE(base.graph.op(i).metadata.ignore_cache) << "a later duplicate does not take it back";
  }
  {
    Base base;
    OpIndex i = base.graph.add(an_exec(), OpMetadata{"", {}, true});
    base.graph.add(an_exec(), OpMetadata{"named later", {}, false});
    EXPECT_EQ(base.graph.op(i).metadata.name, "named later");
    EXPECT_TRUE(base.graph.op(i).metadata.ignore_cache) << "taking a duplicate's name keeps the run asked for";
  }
}

TEST(GraphAdd, RefusesAnOpThatReadsAnIndexNotInTheGraphYet) {
  Base base;
  const OpIndex missing = base.graph.size();
  auto refused = [&](OpBody body) {
    size_t before = base.graph.size();
    try {
      base.graph.add(std::move(body));
      ADD_FAILURE() << "added";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::internal);
    }
    EXPECT_EQ(base.graph.size(), before);
  };
  ExecOp exec = an_exec();
  exec.rootfs = missing;
  refused(exec);
  exec = an_exec();
  exec.mounts[0].input = missing;
  refused(exec);
  refused(FileOp{missing, {}});
  CopyAction copy = a_copy();
  copy.source = missing;
  refused(FileOp{0, {copy}});
  copy = a_copy();
  copy.names = missing;
  refused(FileOp{0, {copy}});
  refused(MergeOp{{0, missing}});
  // Nor may an op read itself.
  refused(MergeOp{{missing}});
}

TEST(Closure, HoldsExactlyWhatTheRootNeedsInputsFirst) {
  Base base;
  Graph& g = base.graph;
  OpIndex unused = g.add(FileOp{base.scratch, {mkdir("/unused")}});
  OpIndex run = g.add(an_exec());  // reads alpine and the context
  CopyAction copy = a_copy();
  copy.source = run;
  copy.names = base.scratch;  // a copy's names tree is needed to run it
  OpIndex layer = g.add(FileOp{base.scratch, {copy}});
  OpIndex after = g.add(FileOp{layer, {mkdir("/after")}});  // reads the root: not needed by it
  OpIndex root = g.add(MergeOp{{base.alpine, layer}});

  std::vector<OpIndex> closure = g.closure(root);
  EXPECT_EQ(closure, (std::vector<OpIndex>{base.scratch, base.alpine, base.context, run, layer, root}));
  EXPECT_EQ(std::count(closure.begin(), closure.end(), unused), 0);
  EXPECT_EQ(std::count(closure.begin(), closure.end(), after), 0);
  // Inputs first: every op comes after everything it reads.
  for (size_t n = 0; n < closure.size(); ++n) {
    for (OpIndex input : g.op(closure[n]).inputs()) {
      auto at = std::find(closure.begin(), closure.end(), input);
      ASSERT_NE(at, closure.end());
      EXPECT_LT(static_cast<size_t>(at - closure.begin()), n);
    }
  }
  EXPECT_EQ(g.closure(base.context), std::vector<OpIndex>{base.context});
  EXPECT_EQ(g.closure(unused), (std::vector<OpIndex>{base.scratch, unused}));
}

// A small graph with names, an unnamed helper and an op the root does not need.
Graph a_build(OpIndex& root) {
  Base base;
  Graph g = std::move(base.graph);
  g.add(FileOp{base.scratch, {mkdir("/unused")}}, OpMetadata{"[x 1/1] WORKDIR /unused", {}, false});
  OpIndex run = g.add(an_exec(), OpMetadata{"[1/2] RUN make", SourceRange{2, 2}, true});
  OpIndex layer = g.add(FileOp{base.scratch, {a_copy()}});
  root = g.add(MergeOp{{run, layer}}, OpMetadata{"[2/2] COPY --link a /a", SourceRange{3, 3}, false});
  return g;
}

TEST(GraphJson, IsTheSameTextForTheSameGraph) {
  OpIndex root_a = 0, root_b = 0;
  Graph a = a_build(root_a), b = a_build(root_b);
  EXPECT_EQ(graph_json(a, root_a).dump(), graph_json(b, root_b).dump());
  EXPECT_EQ(graph_json(a, root_a).dump(2), graph_json(b, root_b).dump(2));
}

TEST(GraphJson, ListsTheRootsClosureByDigestWithNames) {
  OpIndex root = 0;
  Graph g = a_build(root);
  json out = graph_json(g, root);
  EXPECT_EQ(out.at("root"), g.op(root).digest);
  std::vector<OpIndex> closure = g.closure(root);
  ASSERT_EQ(out.at("ops").size(), closure.size());
  for (size_t n = 0; n < closure.size(); ++n) {
    const Op& op = g.op(closure[n]);
    const json& entry = out["ops"][n];
    EXPECT_EQ(entry.at("digest"), op.digest);
    EXPECT_EQ(entry.at("kind"), op_kind(op.body));
    if (op.metadata.name.empty()) {
      EXPECT_FALSE(entry.contains("name")) << entry.dump();
    } else {
      EXPECT_EQ(entry.at("name"), op.metadata.name);
    }
    EXPECT_EQ(entry.contains("ignore_cache"), op.metadata.ignore_cache) << entry.dump();
  }
  const json& merge = out["ops"].back();
  EXPECT_EQ(merge.at("name"), "[2/2] COPY --link a /a");
  // Inputs are written by digest, never by index.
  const auto& body = std::get<MergeOp>(g.op(root).body);
  EXPECT_EQ(merge.at("op").at("inputs"), (json{g.op(body.inputs[0]).digest, g.op(body.inputs[1]).digest}));
  EXPECT_EQ(out.dump().find("/unused"), std::string::npos);
}

TEST(CopyNames, AreReadButDoNotEnterTheKey) {
  Base base;
  CopyAction copy = a_copy();
  copy.names = base.alpine;
  Op op{FileOp{base.scratch, {copy}}, {}, ""};
  EXPECT_EQ(op.inputs(), (std::vector<OpIndex>{base.scratch, base.context, base.alpine}));
  EXPECT_EQ(op.inputs(true), (std::vector<OpIndex>{base.scratch, base.context}));

  std::set<OpIndex> asked;
  auto input_id = [&](OpIndex i) {
    asked.insert(i);
    return json("input-" + std::to_string(i));
  };
  json for_key = describe_op(op, input_id, true);
  EXPECT_FALSE(for_key["op"]["actions"][0].contains("names")) << for_key.dump();
  EXPECT_EQ(asked, (std::set<OpIndex>{base.scratch, base.context}));
  json full = describe_op(op, input_id, false);
  EXPECT_EQ(full["op"]["actions"][0].at("names"), "input-" + std::to_string(base.alpine));

  // Two copies that differ only in their names tree are two ops of the graph (they run
  // differently) with one definition for the key.
  CopyAction other = copy;
  other.names = base.scratch;
  Op op2{FileOp{base.scratch, {other}}, {}, ""};
  EXPECT_EQ(describe_op(op, input_id, true), describe_op(op2, input_id, true));
  EXPECT_NE(base.graph.add(op.body), base.graph.add(op2.body));
}

TEST(OpKind, NamesEachBody) {
  EXPECT_STREQ(op_kind(SourceOp{}), "source");
  EXPECT_STREQ(op_kind(ExecOp{}), "exec");
  EXPECT_STREQ(op_kind(FileOp{}), "file");
  EXPECT_STREQ(op_kind(MergeOp{}), "merge");
}

}  // namespace
}  // namespace kbuild::graph
