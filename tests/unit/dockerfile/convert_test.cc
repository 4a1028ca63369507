#include "engine/dockerfile/convert.h"

#include <gtest/gtest.h>

#include <optional>

namespace kbuild::dockerfile {
namespace {

using graph::Definition;
using graph::OpIndex;

Definition convert(std::string_view text, ConvertOptions options = {}) { return convert_dockerfile(text, options); }

// The names of the vertices the root needs, in the graph's order.
std::vector<std::string> vertex_names(const Definition& d) {
  std::vector<std::string> names;
  for (OpIndex i : d.graph.closure(d.root)) {
    if (!d.graph.op(i).metadata.name.empty()) names.push_back(d.graph.op(i).metadata.name);
  }
  return names;
}

const graph::Op& named(const Definition& d, const std::string& name) {
  for (const graph::Op& op : d.graph.ops()) {
    if (op.metadata.name == name) return op;
  }
  throw std::runtime_error("no op named " + name);
}

const graph::SourceOp& source_of(const Definition& d, OpIndex index) {
  return std::get<graph::SourceOp>(d.graph.op(index).body);
}

TEST(Convert, RunMountsReadStagesImagesOrTheContext) {
  Definition d = convert(
      "FROM alpine AS tools\nRUN true\nFROM alpine\n"
      "RUN --mount=type=bind,from=TOOLS,target=/t --mount=type=bind,from=busybox,target=/b,source=/bin "
      "--mount=type=bind,target=c --mount=type=cache,target=/c2 true\n");
  const auto& exec = std::get<graph::ExecOp>(d.graph.op(d.root).body);
  ASSERT_EQ(exec.mounts.size(), 4u);
  EXPECT_EQ(d.graph.op(*exec.mounts[0].input).metadata.name, "[tools 2/2] RUN true");
  EXPECT_EQ(source_of(d, *exec.mounts[1].input).name, "docker.io/library/busybox:latest");
  EXPECT_EQ(exec.mounts[1].selector, "/bin");
  EXPECT_EQ(source_of(d, *exec.mounts[2].input).kind, graph::SourceOp::Kind::local);
  EXPECT_EQ(exec.mounts[2].target, "/c");  // relative to the working directory
  EXPECT_FALSE(exec.mounts[3].input);
  EXPECT_EQ(exec.mounts[3].type, graph::ExecMount::Type::cache);
}

TEST(Convert, StepsAreNamedAsBuildKitNamesVertices) {
  Definition d = convert("FROM alpine AS build\nCOPY a /a\nWORKDIR /w\nFROM scratch\nCOPY --from=build /a /a\n");
  EXPECT_EQ(vertex_names(d), (std::vector<std::string>{"[build 1/3] FROM docker.io/library/alpine:latest",
                                                       "[build 2/3] COPY a /a", "[build 3/3] WORKDIR /w",
                                                       "[stage-1 1/1] COPY --from=build /a /a"}));
  const auto& copy = std::get<graph::FileOp>(d.graph.op(d.root).body);
  const auto& action = std::get<graph::CopyAction>(copy.actions.at(0));
  EXPECT_EQ(d.graph.op(action.source).metadata.name, "[build 3/3] WORKDIR /w");
  EXPECT_EQ(source_of(d, copy.base).kind, graph::SourceOp::Kind::scratch);
}

TEST(Convert, SingleStageNamesCarryNoStageAndPadTheCounter) {
  std::string text = "FROM scratch\n";
  for (int i = 0; i < 10; ++i) text += "COPY f" + std::to_string(i) + " /\n";
  std::vector<std::string> names = vertex_names(convert(text));
  ASSERT_EQ(names.size(), 10u);
  EXPECT_EQ(names[0], "[ 1/10] COPY f0 /");
  EXPECT_EQ(names[9], "[10/10] COPY f9 /");
}

TEST(Convert, NamesShowExpandedVariables) {
  EXPECT_EQ(vertex_names(convert("FROM scratch\nARG SRC=file.txt\ncopy $SRC /dst/\n")),
            std::vector<std::string>{"[1/1] COPY file.txt /dst/"});
}

TEST(Convert, MetadataInstructionsSetTheConfigAndHistoryNotOps) {
  Definition d = convert(
      "FROM scratch\nENV A=1 B=2\nLABEL x=y\nUSER app\nEXPOSE 80 53/udp 8000-8001\nVOLUME /data\nSTOPSIGNAL SIGINT\n"
      "SHELL [\"/bin/bash\", \"-c\"]\nCMD echo hi\nENTRYPOINT [\"/init\"]\nHEALTHCHECK --interval=5s CMD true\n"
      "ONBUILD RUN make\nMAINTAINER me\n");
  EXPECT_EQ(d.graph.size(), 1u);  // scratch alone
  const graph::ImageConfig& c = d.config;
  EXPECT_EQ(c.env, (std::vector<std::string>{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "A=1", "B=2"}));
  EXPECT_EQ(c.labels.at("x"), "y");
  EXPECT_EQ(c.user, "app");
  EXPECT_EQ(c.exposed_ports, (std::set<std::string>{"80/tcp", "53/udp", "8000/tcp", "8001/tcp"}));
  EXPECT_EQ(c.volumes, (std::set<std::string>{"/data"}));
  EXPECT_EQ(c.stop_signal, "SIGINT");
  EXPECT_EQ(c.cmd, (std::vector<std::string>{"/bin/bash", "-c", "echo hi"}));  // SHELL applies to CMD's shell form
  EXPECT_EQ(c.entrypoint, (std::vector<std::string>{"/init"}));
  ASSERT_TRUE(c.healthcheck);
  EXPECT_EQ(c.healthcheck->interval_ns, 5'000'000'000);
  EXPECT_EQ(c.onbuild, (std::vector<std::string>{"RUN make"}));
  EXPECT_EQ(c.author, "me");
  EXPECT_EQ(c.history.front().created_by, "ENV A=1 B=2");
  EXPECT_EQ(c.history.front().comment, "buildkit.dockerfile.v0");
  EXPECT_TRUE(c.history.front().empty_layer);
  EXPECT_EQ(c.history[3].created_by, "EXPOSE [53/udp 80/tcp 8000/tcp 8001/tcp]");
  EXPECT_EQ(c.history[7].created_by, "CMD [\"/bin/bash\" \"-c\" \"echo hi\"]");
  EXPECT_EQ(c.history[9].created_by, "HEALTHCHECK {Test:[CMD-SHELL true] Interval:5s Timeout:0s StartPeriod:0s StartInterval:0s Retries:0}");
}

TEST(Convert, ABaseImageGivesItsConfigAndPinsItsSource) {
  ConvertOptions options;
  options.resolve_image = [](const std::string& reference, const std::string& platform) {
    EXPECT_EQ(reference, "busybox");
    EXPECT_EQ(platform, Platform::native().format());
    graph::ImageConfig base;
    base.cmd = std::vector<std::string>{"sh"};
    base.env = {"PATH=/bin"};
    return graph::ResolvedImage{base, "sha256:1111111111111111111111111111111111111111111111111111111111111111"};
  };
  Definition d = convert("FROM busybox\nENTRYPOINT [\"/x\"]\n", options);
  EXPECT_FALSE(d.config.cmd.has_value());  // ENTRYPOINT without CMD clears the inherited one
  EXPECT_EQ(d.config.env, (std::vector<std::string>{"PATH=/bin"}));  // the image's PATH is kept
  EXPECT_EQ(source_of(d, d.root).pinned, "sha256:1111111111111111111111111111111111111111111111111111111111111111");
}

TEST(Convert, WorkdirIsAMkdirRelativeToThePreviousOneAndRootMakesNoLayer) {
  Definition d = convert("FROM scratch\nUSER app\nWORKDIR /a\nWORKDIR b/../c\nWORKDIR /\n");
  const auto& file = std::get<graph::FileOp>(d.graph.op(d.root).body);
  const auto& mkdir = std::get<graph::MkdirAction>(file.actions.at(0));
  EXPECT_EQ(mkdir.path, "/a/c");
  EXPECT_EQ(mkdir.chown, "app");
  EXPECT_EQ(mkdir.mode, 0755u);
  EXPECT_EQ(d.config.working_dir, "/");
  EXPECT_EQ(d.config.history[2].created_by, "WORKDIR /a/c");
  EXPECT_FALSE(d.config.history[2].empty_layer);
  EXPECT_TRUE(d.config.history[3].empty_layer);
}

TEST(Convert, CopyCarriesItsOptionsAndHeredocsBecomeFiles) {
  Definition d = convert("FROM scratch\nWORKDIR /w\nCOPY --chown=1:1 --chmod=644 --exclude=*.o a b d/\n"
                         "ADD <<EOF /x\nhi\nEOF\n");
  EXPECT_EQ(d.config.history[1].created_by, "COPY --chown=1:1 --chmod=644 a b d/ # buildkit");
  EXPECT_EQ(d.config.history[2].created_by, "ADD <<EOF /x # buildkit");
  const graph::Op& copy_op = named(d, "[2/3] COPY --chown=1:1 --chmod=644 --exclude=*.o a b d/");
  const auto& copy = std::get<graph::CopyAction>(std::get<graph::FileOp>(copy_op.body).actions.at(0));
  EXPECT_EQ(copy.paths, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(copy.dest, "d/");
  EXPECT_EQ(copy.cwd, "/w");
  EXPECT_EQ(copy.chown, "1:1");
  EXPECT_EQ(copy.chmod, "644");
  EXPECT_EQ(copy.excludes, std::vector<std::string>{"*.o"});
  EXPECT_FALSE(copy.unpack);
  const auto& add = std::get<graph::CopyAction>(std::get<graph::FileOp>(d.graph.op(d.root).body).actions.at(0));
  EXPECT_EQ(add.verb, "ADD");
  EXPECT_FALSE(add.unpack);  // a heredoc is never an archive
  const auto& heredoc = std::get<graph::FileOp>(d.graph.op(add.source).body);
  EXPECT_EQ(std::get<graph::MkfileAction>(heredoc.actions.at(0)).path, "/EOF");
  EXPECT_EQ(std::get<graph::MkfileAction>(heredoc.actions.at(0)).data, "hi\n");
  EXPECT_TRUE(d.graph.op(add.source).metadata.name.empty());  // part of the ADD's vertex
}

TEST(Convert, LinkedCopyIsMadeOnNothingAndMerged) {
  Definition d = convert("FROM scratch\nCOPY a /a\nCOPY --link --chown=app b /b\n");
  const auto& merge = std::get<graph::MergeOp>(d.graph.op(d.root).body);
  EXPECT_EQ(d.graph.op(d.root).metadata.name, "[2/2] COPY --link --chown=app b /b");
  ASSERT_EQ(merge.inputs.size(), 2u);
  EXPECT_EQ(d.graph.op(merge.inputs[0]).metadata.name, "[1/2] COPY a /a");
  const auto& layer = std::get<graph::FileOp>(d.graph.op(merge.inputs[1]).body);
  EXPECT_EQ(source_of(d, layer.base).kind, graph::SourceOp::Kind::scratch);
  EXPECT_EQ(std::get<graph::CopyAction>(layer.actions.at(0)).names, merge.inputs[0]);
}

TEST(Convert, RunCarriesItsEnvironmentAndHeredocScripts) {
  Definition d = convert("FROM scratch AS base\nENV A=1\nARG V=2\nONBUILD ENV B=3\nFROM base\nWORKDIR /src\n"
                         "RUN --network=none <<EOF\n#!/bin/sh\necho $V\nEOF\n");
  EXPECT_EQ(d.config.env.back(), "B=3");  // the trigger ran first
  EXPECT_TRUE(d.config.onbuild.empty());
  const auto& exec = std::get<graph::ExecOp>(d.graph.op(d.root).body);
  EXPECT_EQ(exec.env.back(), "B=3");
  EXPECT_NE(std::find(exec.env.begin(), exec.env.end(), "V=2"), exec.env.end());
  EXPECT_EQ(exec.cwd, "/src");
  EXPECT_EQ(exec.network, graph::ExecOp::Network::none);
  EXPECT_EQ(exec.argv.back(), "/dev/pipes/EOF");
  ASSERT_EQ(exec.mounts.size(), 1u);
  EXPECT_EQ(exec.mounts[0].target, "/dev/pipes");
  const auto& script = std::get<graph::FileOp>(d.graph.op(*exec.mounts[0].input).body);
  EXPECT_EQ(std::get<graph::MkfileAction>(script.actions.at(0)).mode, 0755u);
}

TEST(Convert, NoCacheMarksTheStepsOfTheStagesItNames) {
  ConvertOptions options;
  options.no_cache_filter = {"b"};
  Definition d = convert("FROM scratch AS a\nCOPY x /x\nFROM a AS b\nCOPY y /y\n", options);
  EXPECT_FALSE(named(d, "[a 1/1] COPY x /x").metadata.ignore_cache);
  EXPECT_TRUE(named(d, "[b 1/1] COPY y /y").metadata.ignore_cache);
}

TEST(Convert, OnlyStagesTheTargetNeedsAreConverted) {
  ConvertOptions options;
  options.resolve.target = "a";
  Definition d = convert("FROM scratch AS a\nCOPY x /\nFROM scratch AS b\nCOPY y /\n", options);
  EXPECT_EQ(vertex_names(d), std::vector<std::string>{"[a 1/1] COPY x /"});
}

TEST(Convert, IdenticalStepsOnTheSameTreeAreOneOp) {
  Definition d = convert("FROM scratch AS a\nCOPY x /x\nFROM scratch AS b\nCOPY x /x\nFROM scratch\n"
                         "COPY --from=a /x /a\nCOPY --from=b /x /b\n");
  size_t copies_of_x = 0;
  for (OpIndex i : d.graph.closure(d.root)) {
    const auto* file = std::get_if<graph::FileOp>(&d.graph.op(i).body);
    if (file && std::get<graph::CopyAction>(file->actions.at(0)).paths == std::vector<std::string>{"x"}) ++copies_of_x;
  }
  EXPECT_EQ(copies_of_x, 1u);
}

TEST(Convert, TheSameTextGivesTheSameDigests) {
  std::string text = "FROM scratch\nCOPY a /a\nRUN --mount=type=cache,target=/c make\n";
  Definition a = convert(text), b = convert(text);
  EXPECT_EQ(a.graph.op(a.root).digest, b.graph.op(b.root).digest);
  Definition c = convert("FROM scratch\nCOPY a /a\nRUN --mount=type=cache,target=/c make all\n");
  EXPECT_NE(a.graph.op(a.root).digest, c.graph.op(c.root).digest);
}

TEST(Convert, RefusalsCarryTheirLine) {
  try {
    convert("FROM scratch\nADD --checksum=sha256:0123 a /a\n");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "ADD --checksum needs a URL source, which is not supported yet");
    ASSERT_TRUE(e.where());
    EXPECT_EQ(e.where()->start_line, 2);
  }
  EXPECT_THROW(convert("FROM scratch\nRUN --mount=type=cache,from=x,target=/c true\n"), Error);
}

// FROM, COPY --from and RUN --mount from= name images by the same grammar, refused in
// BuildKit's words at conversion, in every stage (reachable or not), where BuildKit has a line.
TEST(Convert, InvalidImageNamesAreRefusedAsBuildKitRefusesThem) {
  struct Case {
    const char* dockerfile;
    const char* message;
    std::optional<int> line;
  };
  const Case cases[] = {
      {"FROM Alpine\n",
       "failed to parse stage name \"Alpine\": invalid reference format: repository name (library/Alpine) must be lowercase", 1},
      {"FROM scratch\nCOPY --from=bad!/x /a /a\n",
       "failed to parse stage name \"bad!/x\": invalid reference format", 2},
      {"FROM scratch\nCOPY --from=me/App /a /a\n",
       "failed to parse stage name \"me/App\": invalid reference format: repository name (me/App) must be lowercase", 2},
      {"FROM scratch\nRUN --mount=from=a//b,target=/m true\n", "failed to parse stage name \"a//b\": invalid reference format",
       std::nullopt},
      {"FROM a:b:c AS unused\nFROM scratch\n", "failed to parse stage name \"a:b:c\": invalid reference format", 1},
      {"FROM scratch AS unused\nCOPY --from=x@sha256:abc / /\nFROM scratch\n",
       "failed to parse stage name \"x@sha256:abc\": invalid reference format", 2},
  };
  for (const Case& c : cases) {
    try {
      convert(c.dockerfile);
      ADD_FAILURE() << c.dockerfile;
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()), c.message) << c.dockerfile;
      EXPECT_EQ(e.where() ? std::optional<int>(e.where()->start_line) : std::nullopt, c.line) << c.dockerfile;
    }
  }
  // A name that only reads as an image when no stage has it; an upper-case first component is a registry.
  EXPECT_NO_THROW(convert("FROM scratch AS Build\nFROM scratch\nCOPY --from=build / /\n"));
  EXPECT_NO_THROW(convert("FROM scratch\nCOPY --from=UPPER/x:1 /a /a\n"));
}

TEST(Convert, EmptyDockerfileIsRefused) { EXPECT_THROW(convert(""), Error); }

}  // namespace
}  // namespace kbuild::dockerfile
