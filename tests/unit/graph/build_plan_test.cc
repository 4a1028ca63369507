#include "engine/graph/build_plan.h"

#include <gtest/gtest.h>

namespace kbuild::graph {
namespace {

BuildPlan plan(std::string_view text, PlanOptions options = {}) { return plan_build(text, options); }

TEST(BuildPlan, RunMountsFromResolveToStagesOrImages) {
  BuildPlan p = plan(
      "FROM alpine AS tools\nFROM alpine\n"
      "RUN --mount=type=bind,from=TOOLS,target=/t --mount=type=bind,from=0,target=/z "
      "--mount=type=bind,from=busybox,target=/b --mount=type=cache,target=/c true\n");
  const Step& run = p.stages.back().steps.at(0);
  ASSERT_EQ(run.mount_sources.size(), 4u);
  EXPECT_EQ(run.mount_sources[0].kind, CopySource::Kind::stage);
  EXPECT_EQ(run.mount_sources[0].stage, 0u);
  EXPECT_EQ(run.mount_sources[1].kind, CopySource::Kind::stage);
  EXPECT_EQ(run.mount_sources[2].kind, CopySource::Kind::image);
  EXPECT_EQ(run.mount_sources[2].image, "busybox");
  EXPECT_EQ(run.mount_sources[3].kind, CopySource::Kind::context);
}

TEST(BuildPlan, StepsAreNamedAsBuildKitNamesVertices) {
  BuildPlan p = plan("FROM alpine AS build\nCOPY a /a\nWORKDIR /w\nFROM scratch\nCOPY --from=build /a /a\n");
  ASSERT_EQ(p.stages.size(), 2u);
  EXPECT_EQ(p.stages[0].from_vertex_name, "[build 1/3] FROM docker.io/library/alpine:latest");
  EXPECT_EQ(p.stages[0].steps[0].name, "[build 2/3] COPY a /a");
  EXPECT_EQ(p.stages[0].steps[1].name, "[build 3/3] WORKDIR /w");
  EXPECT_EQ(p.stages[1].steps[0].name, "[stage-1 1/1] COPY --from=build /a /a");
  EXPECT_EQ(p.stages[1].steps[0].source.kind, CopySource::Kind::stage);
  EXPECT_EQ(p.stages[1].steps[0].source.stage, 0u);
}

TEST(BuildPlan, SingleStageNamesCarryNoStageAndPadTheCounter) {
  std::string text = "FROM scratch\n";
  for (int i = 0; i < 10; ++i) text += "COPY f" + std::to_string(i) + " /\n";
  BuildPlan p = plan(text);
  EXPECT_EQ(p.stages[0].steps[0].name, "[ 1/10] COPY f0 /");
  EXPECT_EQ(p.stages[0].steps[9].name, "[10/10] COPY f9 /");
}

TEST(BuildPlan, NamesShowExpandedVariables) {
  BuildPlan p = plan("FROM scratch\nARG SRC=file.txt\ncopy $SRC /dst/\n");
  EXPECT_EQ(p.stages[0].steps[0].name, "[1/1] COPY file.txt /dst/");
}

TEST(BuildPlan, MetadataInstructionsSetTheConfigAndHistory) {
  BuildPlan p = plan(
      "FROM scratch\nENV A=1 B=2\nLABEL x=y\nUSER app\nEXPOSE 80 53/udp 8000-8001\nVOLUME /data\nSTOPSIGNAL SIGINT\n"
      "SHELL [\"/bin/bash\", \"-c\"]\nCMD echo hi\nENTRYPOINT [\"/init\"]\nHEALTHCHECK --interval=5s CMD true\n"
      "ONBUILD RUN make\nMAINTAINER me\n");
  const ImageConfig& c = p.stages[0].config;
  EXPECT_EQ(c.env, (std::vector<std::string>{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "A=1", "B=2"}));
  EXPECT_EQ(c.labels.at("x"), "y");
  EXPECT_EQ(c.user, "app");
  EXPECT_EQ(c.exposed_ports, (std::set<std::string>{"80/tcp", "53/udp", "8000/tcp", "8001/tcp"}));
  EXPECT_EQ(c.volumes, (std::set<std::string>{"/data"}));
  EXPECT_EQ(c.stop_signal, "SIGINT");
  EXPECT_EQ(c.cmd, (std::vector<std::string>{"/bin/bash", "-c", "echo hi"}));  // SHELL applies to CMD's shell form
  EXPECT_EQ(c.entrypoint, (std::vector<std::string>{"/init"}));
  EXPECT_TRUE(c.cmd.has_value());  // CMD came first, so ENTRYPOINT keeps it
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

TEST(BuildPlan, EntrypointWithoutCmdClearsTheInheritedCmd) {
  PlanOptions options;
  options.image_config = [](const std::string&, const dockerfile::Platform&) {
    ImageConfig base;
    base.cmd = std::vector<std::string>{"sh"};
    base.env = {"PATH=/bin"};
    return base;
  };
  BuildPlan p = plan("FROM busybox\nENTRYPOINT [\"/x\"]\n", options);
  EXPECT_FALSE(p.stages[0].config.cmd.has_value());
  EXPECT_EQ(p.stages[0].config.env, (std::vector<std::string>{"PATH=/bin"}));  // the image's PATH is kept
}

TEST(BuildPlan, WorkdirIsRelativeToThePreviousOneAndRootMakesNoLayer) {
  BuildPlan p = plan("FROM scratch\nWORKDIR /a\nWORKDIR b/../c\nWORKDIR /\n");
  EXPECT_EQ(p.stages[0].steps.size(), 2u);
  EXPECT_EQ(p.stages[0].steps[1].workdir, "/a/c");
  EXPECT_EQ(p.stages[0].config.working_dir, "/");
  EXPECT_EQ(p.stages[0].config.history[1].created_by, "WORKDIR /a/c");
  EXPECT_FALSE(p.stages[0].config.history[1].empty_layer);
  EXPECT_TRUE(p.stages[0].config.history[2].empty_layer);
}

TEST(BuildPlan, CopyHistoryNamesFlagsSourcesAndDestination) {
  BuildPlan p = plan("FROM scratch\nCOPY --chown=1:1 --chmod=644 a b /d/\nADD <<EOF /x\nhi\nEOF\n");
  EXPECT_EQ(p.stages[0].config.history[0].created_by, "COPY --chown=1:1 --chmod=644 a b /d/ # buildkit");
  EXPECT_EQ(p.stages[0].config.history[1].created_by, "ADD <<EOF /x # buildkit");
}

TEST(BuildPlan, ChildStageStartsFromItsParentsConfigWithoutOnbuild) {
  BuildPlan p = plan("FROM scratch AS base\nENV A=1\nARG V=2\nONBUILD ENV B=3\nFROM base\nCOPY x /\n");
  const StagePlan& child = p.stages[1];
  EXPECT_EQ(child.config.env.back(), "B=3");  // the trigger ran first
  EXPECT_TRUE(child.config.onbuild.empty());
  EXPECT_EQ(child.steps[0].env.back(), "B=3");
  EXPECT_NE(std::find(child.steps[0].env.begin(), child.steps[0].env.end(), "V=2"), child.steps[0].env.end());
  EXPECT_EQ(child.from_vertex_name, "");
}

TEST(BuildPlan, OnlyStagesTheTargetNeedsArePlanned) {
  PlanOptions options;
  options.resolve.target = "a";
  BuildPlan p = plan("FROM scratch AS a\nFROM scratch AS b\n", options);
  ASSERT_EQ(p.stages.size(), 1u);
  EXPECT_EQ(p.target, 0u);
}

TEST(BuildPlan, EmptyDockerfileIsRefused) { EXPECT_THROW(plan(""), Error); }


}  // namespace
}  // namespace kbuild::graph
