#include "engine/dockerfile/resolve.h"

#include <gtest/gtest.h>

namespace kbuild::dockerfile {
namespace {

ResolvedDockerfile resolve(std::string_view text, ResolveOptions options = {}) {
  ParsedDockerfile parsed = parse_dockerfile(text);
  return resolve_dockerfile(parsed, parse_stages(parsed), options);
}

std::string error_of(std::string_view text, ResolveOptions options = {}) {
  try {
    resolve(text, std::move(options));
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

template <typename T>
const T& command(const ResolvedStage& stage, size_t i) {
  return std::get<T>(stage.commands.at(i).body);
}

TEST(Resolve, GlobalArgsExpandBaseNamesAndBuildArgsWin) {
  const char* text = "ARG TAG=3.20\nARG IMG=alpine:${TAG}\nFROM ${IMG}\n";
  EXPECT_EQ(resolve(text).stages[0].base_name, "alpine:3.20");
  ResolveOptions options;
  options.build_args = {{"TAG", "edge"}};
  EXPECT_EQ(resolve(text, options).stages[0].base_name, "alpine:edge");
}

TEST(Resolve, GlobalArgsAreNotVisibleInsideAStageUntilRedeclared) {
  ResolvedDockerfile r = resolve("ARG V=1\nFROM x\nRUN true\nENV A=${V}\nARG V\nENV B=${V}\n");
  const ResolvedStage& s = r.stages[0];
  EXPECT_EQ(command<EnvInstruction>(s, 1).env[0].value, "");
  EXPECT_EQ(command<EnvInstruction>(s, 3).env[0].value, "1");
}

TEST(Resolve, StageArgDefaultsExpandWithTheStageEnvironment) {
  ResolvedDockerfile r = resolve("FROM x\nENV BASE=/opt\nARG DIR=${BASE}/app\nWORKDIR $DIR\n");
  EXPECT_EQ(command<WorkdirInstruction>(r.stages[0], 2).path, "/opt/app");
}

TEST(Resolve, BuildArgOverridesAStageArgDefault) {
  ResolveOptions options;
  options.build_args = {{"DIR", "/given"}};
  ResolvedDockerfile r = resolve("FROM x\nARG DIR=/default\nWORKDIR $DIR\n", options);
  EXPECT_EQ(command<WorkdirInstruction>(r.stages[0], 1).path, "/given");
  EXPECT_TRUE(r.unused_build_args.empty());
}

TEST(Resolve, EnvTakesPrecedenceOverArgOfTheSameName) {
  ResolveOptions options;
  options.build_args = {{"V", "from-arg"}};
  ResolvedDockerfile r = resolve("FROM x\nARG V\nENV V=from-env\nUSER $V\n", options);
  EXPECT_EQ(command<UserInstruction>(r.stages[0], 2).user, "from-env");
}

TEST(Resolve, ChildStageInheritsEnvAndArgsOfItsParentStage) {
  ResolvedDockerfile r = resolve("FROM x AS base\nARG A=1\nENV E=2\nFROM base\nUSER ${A}:${E}\n");
  EXPECT_EQ(r.stages[1].base_stage, 0u);
  EXPECT_EQ(command<UserInstruction>(r.stages[1], 0).user, "1:2");
}

TEST(Resolve, EveryStageHasADefaultPath) {
  ResolvedDockerfile r = resolve("FROM scratch\nENV P=$PATH\n");
  EXPECT_EQ(command<EnvInstruction>(r.stages[0], 0).env[0].value, kDefaultPath);
}

TEST(Resolve, ImageEnvironmentIsUsedWhenKnown) {
  ResolveOptions options;
  options.image_env = [](const std::string& image, const Platform&) {
    return image == "golang" ? std::vector<std::string>{"GOPATH=/go", "PATH=/go/bin"} : std::vector<std::string>{};
  };
  ResolvedDockerfile r = resolve("FROM golang\nWORKDIR $GOPATH/src\nENV P=$PATH\n", options);
  EXPECT_EQ(command<WorkdirInstruction>(r.stages[0], 0).path, "/go/src");
  EXPECT_EQ(command<EnvInstruction>(r.stages[0], 1).env[0].value, "/go/bin");
}

TEST(Resolve, PlatformArgsDescribeTheBuildAndTarget) {
  ResolveOptions options;
  options.build_platform = Platform{"linux", "amd64", ""};
  options.target_platform = Platform{"linux", "arm", "v7"};
  ResolvedDockerfile r = resolve("FROM x\nARG TARGETPLATFORM\nARG TARGETARCH\nARG BUILDOS\nENV T=$TARGETPLATFORM A=$TARGETARCH B=$BUILDOS\n", options);
  auto& env = command<EnvInstruction>(r.stages[0], 3).env;
  EXPECT_EQ(env[0].value, "linux/arm/v7");
  EXPECT_EQ(env[1].value, "arm");
  EXPECT_EQ(env[2].value, "linux");
  EXPECT_EQ(r.stages[0].platform.format(), "linux/arm/v7");
}

TEST(Resolve, FromPlatformIsExpandedWithGlobalArgs) {
  ResolvedDockerfile r = resolve("FROM --platform=$BUILDPLATFORM x AS tools\nFROM --platform=linux/arm64 y\nCOPY --from=tools / /\n");
  EXPECT_EQ(r.stages[0].platform, Platform::native());
  EXPECT_TRUE(r.stages[0].platform_set);
  EXPECT_EQ(r.stages[1].platform.format(), "linux/arm64");
  EXPECT_EQ(error_of("FROM --platform=$NOPE x\n"), "empty platform value from expression $NOPE");
}

TEST(Resolve, StagesAreNamedAndTheDefaultTargetIsTheLast) {
  ResolvedDockerfile r = resolve("FROM a AS one\nFROM b\nFROM c AS three\n");
  EXPECT_EQ(r.stages[1].display_name, "stage-1");
  EXPECT_EQ(r.target, 2u);
  EXPECT_TRUE(r.stages[2].reachable);
  EXPECT_FALSE(r.stages[0].reachable);
  EXPECT_EQ(resolve("FROM a\n").stages[0].display_name, "");  // a single stage carries no name
}

TEST(Resolve, TargetSelectsAStageAndWhatItNeeds) {
  ResolveOptions options;
  options.target = "Test";
  ResolvedDockerfile r = resolve(
      "FROM a AS deps\nFROM a AS build\nCOPY --from=deps / /\nFROM build AS test\nRUN --mount=type=cache,from=cache,target=/c true\n"
      "FROM a AS cache\nFROM a AS unused\n",
      options);
  EXPECT_EQ(r.target, 2u);
  EXPECT_TRUE(r.stages[0].reachable);
  EXPECT_TRUE(r.stages[1].reachable);
  EXPECT_TRUE(r.stages[3].reachable);  // the cache mount reads it
  EXPECT_FALSE(r.stages[4].reachable);
}

TEST(Resolve, UnknownTargetIsReportedWithASuggestion) {
  ResolveOptions options;
  options.target = "buld";
  EXPECT_EQ(error_of("FROM a AS build\nFROM a AS test\n", options), "target stage \"buld\" could not be found (did you mean build?)");
}

TEST(Resolve, CopyFromByIndexByNameOrImage) {
  ResolvedDockerfile r = resolve("FROM a AS first\nFROM b\nCOPY --from=0 /x /x\nCOPY --from=FIRST /y /y\nCOPY --from=busybox:1.36 /bin/sh /sh\n");
  EXPECT_EQ(r.stages[1].dependencies, (std::vector<size_t>{0}));
  EXPECT_EQ(r.stages[1].image_sources, (std::vector<std::string>{"busybox:1.36"}));
  EXPECT_EQ(error_of("FROM a\nCOPY --from=4 / /\n"), "invalid stage index 4");
  EXPECT_EQ(error_of("FROM a\nCOPY --from=$X / /\n"),
            "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround");
}

TEST(Resolve, CopyFromALaterStageIsRefused) {
  EXPECT_EQ(error_of("FROM a AS one\nCOPY --from=two / /\nFROM b AS two\nCOPY --from=one / /\n"),
            "circular dependency detected on stage: one");
  EXPECT_EQ(error_of("FROM a AS one\nCOPY --from=two / /\nFROM b AS two\n", [] {
              ResolveOptions o;
              o.target = "one";
              return o;
            }()),
            "cannot copy from stage \"two\", it needs to be defined before current stage \"one\"");
}

TEST(Resolve, FromRefersOnlyToEarlierStages) {
  ResolvedDockerfile r = resolve("FROM later AS first\nFROM a AS later\n");
  EXPECT_FALSE(r.stages[0].base_stage.has_value());
  EXPECT_EQ(r.stages[0].base_name, "later");
}

TEST(Resolve, BlankBaseNameIsAnError) {
  EXPECT_EQ(error_of("ARG IMG\nFROM ${IMG}\n"), "base name (${IMG}) should not be blank");
}

TEST(Resolve, OnbuildTriggersOfAParentStageRunFirst) {
  ResolvedDockerfile r = resolve("FROM a AS base\nONBUILD ENV X=1\nONBUILD COPY --from=tools / /\nFROM a AS tools\nFROM base\nUSER $X\n");
  const ResolvedStage& child = r.stages[2];
  ASSERT_EQ(child.onbuild_count, 2u);
  EXPECT_EQ(command<EnvInstruction>(child, 0).env[0].key, "X");
  EXPECT_EQ(command<UserInstruction>(child, 2).user, "1");
  EXPECT_TRUE(r.stages[1].reachable);  // the trigger's COPY --from needs it
}

TEST(Resolve, UnusedBuildArgsAndProxyArgsAreSetApart) {
  ResolveOptions options;
  options.build_args = {{"USED", "1"}, {"UNUSED", "2"}, {"HTTP_PROXY", "http://p"}, {"BUILDKIT_INLINE_CACHE", "1"},
                        {"TARGETARCH", "arm64"}};
  ResolvedDockerfile r = resolve("ARG USED\nFROM a\n", options);
  EXPECT_EQ(r.unused_build_args, (std::vector<std::string>{"UNUSED"}));
  EXPECT_EQ(r.proxy_args.at("HTTP_PROXY"), "http://p");
}

TEST(Resolve, UnreachableStagesAreNotExpanded) {
  // ${X:?} would fail if the first stage were dispatched.
  ResolveOptions options;
  options.target = "good";
  ResolvedDockerfile r = resolve("FROM a AS bad\nUSER ${X:?unset}\nFROM a AS good\n", options);
  EXPECT_FALSE(r.stages[0].reachable);
  EXPECT_EQ(command<UserInstruction>(r.stages[0], 0).user, "${X:?unset}");
}

TEST(Resolve, BacktickEscapeAppliesToExpansion) {
  ResolvedDockerfile r = resolve("# escape=`\nFROM a\nENV A=x B=`$A\n");
  EXPECT_EQ(command<EnvInstruction>(r.stages[0], 0).env[1].value, "$A");
}

TEST(Resolve, EmptyDockerfileHasNoStages) {
  EXPECT_EQ(error_of("ARG A\n"), "dockerfile contains no stages to build");
}

}  // namespace
}  // namespace kbuild::dockerfile
