#include "engine/dockerfile/classic_builder.h"

#include <gtest/gtest.h>

#include "engine/dockerfile/convert.h"

namespace kbuild::dockerfile {
namespace {

using graph::Step;

graph::Definition classic(std::string_view text, std::string target = "") {
  ConvertOptions options;
  options.classic = true;
  options.resolve.target = std::move(target);
  return convert_dockerfile(text, options);
}

std::string refusal(std::string_view text, std::string target = "") {
  try {
    classic(text, std::move(target));
  } catch (const Error& e) {
    return e.what();
  }
  return "(built)";
}

const std::string kRefer =
    " option requires BuildKit. Refer to https://docs.docker.com/go/buildkit/ to learn how to build images with "
    "BuildKit enabled";

TEST(ClassicBuilder, RefusesRunMountInTheClassicBuildersWords) {
  EXPECT_EQ(refusal("FROM scratch\nRUN --mount=type=cache,target=/c true\n"), "the --mount" + kRefer);
}

TEST(ClassicBuilder, RefusesCopyAndAddChmod) {
  EXPECT_EQ(refusal("FROM scratch\nCOPY --chmod=644 f /f\n"), "the --chmod" + kRefer);
  EXPECT_EQ(refusal("FROM scratch\nADD --chmod=644 f /f\n"), "the --chmod" + kRefer);
}

TEST(ClassicBuilder, FlagsItDoesNotKnowAreParseErrors) {
  EXPECT_EQ(refusal("FROM scratch\nCOPY --link f /f\n"), "dockerfile parse error line 2: Unknown flag: link");
  EXPECT_EQ(refusal("FROM scratch\n\nRUN --network=none true\n"), "dockerfile parse error line 3: Unknown flag: network");
  EXPECT_EQ(refusal("FROM scratch\nCOPY --parents f /f\n"), "dockerfile parse error line 2: Unknown flag: parents");
}

TEST(ClassicBuilder, ItsParserRefusesUnknownSyntaxInStagesItWouldNotBuild) {
  EXPECT_EQ(refusal("FROM scratch AS t\nFROM scratch\nCOPY --link f /f\n", "t"),
            "dockerfile parse error line 3: Unknown flag: link");
  EXPECT_EQ(refusal("FROM scratch AS t\nFROM scratch\nRUN --mount=type=cache,target=/c true\n", "t"), "(built)");
}

TEST(ClassicBuilder, AHeredocBodyReadsAsAnUnknownInstruction) {
  EXPECT_EQ(refusal("FROM scratch\nRUN <<EOF\ntrue\nEOF\n"), "dockerfile parse error line 3: unknown instruction: TRUE");
  EXPECT_EQ(refusal("FROM scratch\nCOPY <<EOF /x\nhi there\nEOF\n"), "dockerfile parse error line 3: unknown instruction: HI");
}

TEST(ClassicBuilder, ATargetIsAStageNameInAnyCase) {
  EXPECT_NO_THROW(classic("FROM scratch AS a\nCOPY a /a\nFROM scratch\n", "A"));
  try {
    classic("FROM scratch AS a\nCOPY a /a\nFROM scratch\n", "0");  // BuildKit would take the index
    ADD_FAILURE() << "an index is no target for the classic builder";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "failed to reach build target 0 in Dockerfile");
  }
}

TEST(ClassicBuilder, BuildKitConvertsWhatClassicRefuses) {
  ConvertOptions options;
  EXPECT_NO_THROW(convert_dockerfile("FROM scratch\nCOPY --chmod=644 f /f\n", options));
}

TEST(ClassicBuilder, ListsGlobalArgsStagesAndEveryStepInOrder) {
  graph::Definition d = classic("ARG V=1\nFROM scratch AS a\nCOPY x /x\nFROM scratch AS b\nENV A=$V\nCOPY --from=a /x /y\n");
  ASSERT_EQ(d.steps.size(), 6u);
  std::vector<std::string> texts;
  for (const Step& s : d.steps) texts.push_back(s.text);
  EXPECT_EQ(texts, (std::vector<std::string>{"ARG V=1", "FROM scratch AS a", "COPY x /x", "FROM scratch AS b", "ENV A=$V",
                                             "COPY --from=a /x /y"}));
  EXPECT_EQ(d.steps[0].kind, Step::Kind::global_arg);
  EXPECT_EQ(d.steps[1].kind, Step::Kind::from);
  EXPECT_EQ(d.steps[2].kind, Step::Kind::op);
  EXPECT_EQ(d.steps[4].kind, Step::Kind::metadata);
  EXPECT_EQ(d.steps[4].state, d.steps[3].state);  // ENV changes no tree
  EXPECT_EQ(d.steps.back().state, d.root);
}

TEST(ClassicBuilder, BuildsStagesTheTargetDoesNotNeedUpToIt) {
  graph::Definition d = classic("FROM scratch AS unused\nCOPY a /a\nFROM scratch AS t\nCOPY b /b\nFROM scratch\nCOPY c /c\n", "t");
  ASSERT_EQ(d.steps.size(), 4u);
  EXPECT_EQ(d.steps[1].text, "COPY a /a");
  EXPECT_EQ(d.steps.back().text, "COPY b /b");
  EXPECT_EQ(d.steps.back().state, d.root);
}

TEST(ClassicBuilder, FromAnEarlierStagePointsAtItsLastStep) {
  graph::Definition d = classic("FROM scratch AS a\nCOPY a /a\nFROM a\nCOPY b /b\n");
  ASSERT_EQ(d.steps.size(), 4u);
  EXPECT_EQ(d.steps[2].base_step, std::optional<size_t>(1));
}

TEST(ClassicBuilder, BaseStageTriggersBelongToTheFromStep) {
  graph::Definition d = classic("FROM scratch AS base\nONBUILD COPY t /t\nFROM base\nCOPY u /u\n");
  ASSERT_EQ(d.steps.size(), 4u);  // FROM, ONBUILD, FROM, COPY: the trigger is no step of its own
  ASSERT_EQ(d.steps[2].triggers.size(), 1u);
  EXPECT_EQ(d.steps[2].triggers[0].kind, Step::Kind::op);
  EXPECT_EQ(d.steps[2].state, d.steps[2].triggers[0].state);  // the stage goes on from the trigger's tree
}

TEST(ClassicBuilder, LabelsBecomeLabelStepsOfTheTargetInNameOrder) {
  ConvertOptions options;
  options.classic = true;
  options.labels = {{"zeta", "1"}, {"alpha", "2"}};
  graph::Definition d = convert_dockerfile("FROM scratch\nCOPY a /a\n", options);
  ASSERT_EQ(d.steps.size(), 4u);
  EXPECT_EQ(d.steps[2].text, "LABEL alpha=2");
  EXPECT_EQ(d.steps[3].text, "LABEL zeta=1");
  EXPECT_EQ(d.steps[3].kind, Step::Kind::metadata);
  EXPECT_EQ(d.config.labels.at("alpha"), "2");
}

TEST(ClassicBuilder, CopiesAskForTheClassicChecks) {
  graph::Definition d = classic("FROM scratch\nCOPY a b /dest/\n");
  const auto& file = std::get<graph::FileOp>(d.graph.op(d.root).body);
  EXPECT_TRUE(std::get<graph::CopyAction>(file.actions.at(0)).classic);
  ConvertOptions buildkit;
  graph::Definition b = convert_dockerfile("FROM scratch\nCOPY a b /dest/\n", buildkit);
  EXPECT_FALSE(std::get<graph::CopyAction>(std::get<graph::FileOp>(b.graph.op(b.root).body).actions.at(0)).classic);
}

TEST(ClassicBuilder, ReportsBuildArgsNoArgDeclares) {
  ConvertOptions options;
  options.classic = true;
  options.resolve.build_args = {{"UNUSED", "1"}, {"V", "2"}};
  graph::Definition d = convert_dockerfile("FROM scratch\nARG V\n", options);
  EXPECT_EQ(d.unused_build_args, std::vector<std::string>{"UNUSED"});
}

}  // namespace
}  // namespace kbuild::dockerfile
