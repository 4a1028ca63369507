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

std::string refusal(std::string_view text) {
  try {
    classic(text);
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

TEST(ClassicBuilder, AHeredocBodyReadsAsAnUnknownInstruction) {
  EXPECT_EQ(refusal("FROM scratch\nRUN <<EOF\ntrue\nEOF\n"), "dockerfile parse error line 3: unknown instruction: TRUE");
  EXPECT_EQ(refusal("FROM scratch\nCOPY <<EOF /x\nhi there\nEOF\n"), "dockerfile parse error line 3: unknown instruction: HI");
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

TEST(ClassicBuilder, ReportsBuildArgsNoArgDeclares) {
  ConvertOptions options;
  options.classic = true;
  options.resolve.build_args = {{"UNUSED", "1"}, {"V", "2"}};
  graph::Definition d = convert_dockerfile("FROM scratch\nARG V\n", options);
  EXPECT_EQ(d.unused_build_args, std::vector<std::string>{"UNUSED"});
}

}  // namespace
}  // namespace kbuild::dockerfile
