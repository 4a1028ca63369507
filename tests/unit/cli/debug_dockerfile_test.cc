#include "cli/debug_dockerfile.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "cli/kbuildctl.h"
#include "common/error.h"

namespace kbuild::cli {
namespace {

TEST(DebugDockerfile, DescribesStagesAfterExpansion) {
  DebugDockerfileRequest request;
  request.dockerfile_text = "ARG IMG=alpine\nFROM $IMG AS build\nARG DIR=/src\nWORKDIR $DIR\nFROM scratch\nCOPY --from=build $DIR /\n";
  request.build_args = {{"DIR", "/work"}};
  nlohmann::json out = describe_dockerfile(request);
  ASSERT_EQ(out["stages"].size(), 2u);
  EXPECT_EQ(out["stages"][0]["base"], "alpine");
  EXPECT_EQ(out["stages"][0]["name"], "build");
  EXPECT_EQ(out["stages"][0]["instructions"][1]["path"], "/work");
  EXPECT_EQ(out["stages"][1]["instructions"][0]["sources"][0], "");  // DIR is not declared in stage 2
  EXPECT_EQ(out["stages"][1]["depends_on"][0], 0);
  EXPECT_EQ(out["target"], "stage-1");
}

TEST(DebugDockerfile, BareBuildArgTakesTheCallersEnvironment) {
  auto getenv = [](const std::string& name) -> std::optional<std::string> {
    if (name == "SET") return "from-env";
    return std::nullopt;
  };
  auto args = parse_build_args({"A=1", "B=", "SET", "UNSET", "C=x=y"}, getenv);
  EXPECT_EQ(args.at("A"), "1");
  EXPECT_EQ(args.at("B"), "");
  EXPECT_EQ(args.at("SET"), "from-env");
  EXPECT_EQ(args.count("UNSET"), 0u);
  EXPECT_EQ(args.at("C"), "x=y");
}

int run(std::vector<const char*> args, std::string stdin_text, std::string& out, std::string& err) {
  args.insert(args.begin(), "kbuildctl");
  std::istringstream in(stdin_text);
  std::ostringstream o, e;
  int code = run_kbuildctl(static_cast<int>(args.size()), args.data(), in, o, e);
  out = o.str();
  err = e.str();
  return code;
}

TEST(DebugDockerfile, CommandReadsStdinAndPrintsJson) {
  std::string out, err;
  EXPECT_EQ(run({"debug", "dockerfile", "-f", "-", "--build-arg", "V=2"}, "FROM a\nARG V\nENV X=$V\n", out, err), 0) << err;
  nlohmann::json json = nlohmann::json::parse(out);
  EXPECT_EQ(json["stages"][0]["instructions"][1]["env"][0]["value"], "2");
}

TEST(DebugPlan, PrintsTheOpsTheTargetNeedsInputsFirstAndTheSameTextEachTime) {
  std::string dockerfile = "FROM scratch AS a\nCOPY x /x\nFROM scratch AS unused\nCOPY y /y\nFROM scratch\n"
                           "ARG V\nCOPY --from=a /x /x\nRUN --network=none echo $V\nLABEL k=v\n";
  std::string out, again, err;
  ASSERT_EQ(run({"debug", "plan", "-f", "-", "--build-arg", "V=1"}, dockerfile, out, err), 0) << err;
  ASSERT_EQ(run({"debug", "plan", "-f", "-", "--build-arg", "V=1"}, dockerfile, again, err), 0) << err;
  EXPECT_EQ(out, again);
  nlohmann::json plan = nlohmann::json::parse(out);
  std::vector<std::string> names, digests;
  for (const auto& op : plan["ops"]) {
    for (const std::string& input : {op["op"].value("base", ""), op["op"].value("rootfs", "")}) {
      if (!input.empty()) {
        EXPECT_NE(std::find(digests.begin(), digests.end(), input), digests.end()) << op;
      }
    }
    digests.push_back(op["digest"]);
    if (op.contains("name")) names.push_back(op["name"]);
  }
  EXPECT_EQ(names, (std::vector<std::string>{"[a 1/1] COPY x /x", "[stage-2 1/2] COPY --from=a /x /x",
                                             "[stage-2 2/2] RUN --network=none echo 1"}));
  EXPECT_EQ(plan["root"], digests.back());
  EXPECT_EQ(plan["ops"].back()["op"]["network"], "none");
  EXPECT_EQ(plan["ops"].back()["op"]["env"].back(), "V=1");
  EXPECT_EQ(plan["config"]["labels"]["k"], "v");

  std::string changed;
  ASSERT_EQ(run({"debug", "plan", "-f", "-", "--build-arg", "V=2"}, dockerfile, changed, err), 0) << err;
  EXPECT_NE(nlohmann::json::parse(changed)["root"], plan["root"]);
}

TEST(DebugDockerfile, CommandReportsParseErrorsWithTheLine) {
  std::string out, err;
  EXPECT_EQ(run({"debug", "dockerfile", "-f", "-"}, "FROM a\n\nRNU x\n", out, err), 1);
  EXPECT_EQ(err,
            "Dockerfile:3\n"
            "--------------------\n"
            "   1 |     FROM a\n"
            "   2 |     \n"
            "   3 | >>> RNU x\n"
            "   4 |     \n"
            "--------------------\n"
            "ERROR: dockerfile parse error on line 3: unknown instruction: RNU (did you mean RUN?)\n");
  EXPECT_EQ(out, "");
}

TEST(DebugDockerfile, MissingDockerfileIsOneClearError) {
  std::string out, err;
  EXPECT_EQ(run({"debug", "dockerfile", "/nonexistent-context"}, "", out, err), 1);
  EXPECT_EQ(err, "ERROR: failed to read dockerfile: open /nonexistent-context/Dockerfile: no such file or directory\n");
}

TEST(DebugDockerfile, UnknownFlagIsRejected) {
  std::string out, err;
  EXPECT_NE(run({"debug", "dockerfile", "--no-such-flag"}, "", out, err), 0);
  EXPECT_NE(err.find("--no-such-flag"), std::string::npos);
}

}  // namespace
}  // namespace kbuild::cli
