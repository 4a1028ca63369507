#include "engine/solver/classic_output.h"

#include <gtest/gtest.h>


namespace kbuild::solver::classic {
namespace {

TEST(ClassicOutput, HumanSizeIsGosFourDigitDecimalUnits) {
  EXPECT_EQ(human_size(512), "512B");
  EXPECT_EQ(human_size(2048), "2.048kB");
  EXPECT_EQ(human_size(2560), "2.56kB");
  EXPECT_EQ(human_size(25600), "25.6kB");
  EXPECT_EQ(human_size(1234567), "1.235MB");
}

TEST(ClassicOutput, SendingContextRightAlignsTheSize) {
  EXPECT_EQ(sending_context(2048), "Sending build context to Docker daemon  2.048kB\r\r\n");
  EXPECT_EQ(sending_context(2560), "Sending build context to Docker daemon   2.56kB\r\r\n");
}

context::Entry entry(std::string path, context::EntryType type, int64_t size = 0) {
  context::Entry e;
  e.path = std::move(path);
  e.type = type;
  e.size = size;
  return e;
}

// The sizes docker 20.10's client printed for these trees.
TEST(ClassicOutput, ContextTarSizeCountsAsDockersClient) {
  using context::EntryType;
  std::vector<context::Entry> entries = {entry("Dockerfile", EntryType::regular, 23)};
  EXPECT_EQ(context_tar_size(context::Manifest(entries)), 2048);
  entries.push_back(entry("d", EntryType::directory));
  entries.push_back(entry("d/big", EntryType::regular, 600));
  EXPECT_EQ(context_tar_size(context::Manifest(entries)), 4096);
  entries.push_back(entry("l", EntryType::symlink));
  entries.back().link_target = "d";
  EXPECT_EQ(context_tar_size(context::Manifest(entries)), 4608);
  entries.push_back(entry("r", EntryType::regular, 20000));
  EXPECT_EQ(context_tar_size(context::Manifest(entries)), 25600);
  entries.push_back(entry(std::string(120, 'n'), EntryType::regular));  // a PAX header and its records
  EXPECT_EQ(context_tar_size(context::Manifest(entries)), 27136);
}

TEST(ClassicOutput, AHardLinkIsAHeaderAlone) {
  context::Entry first = entry("a", context::EntryType::regular, 600);
  context::Entry second = entry("b", context::EntryType::regular, 600);
  second.hardlink_to = "a";
  EXPECT_EQ(context_tar_size(context::Manifest({first, second})), (512 + 1024) + 512 + 1024);
}

TEST(ClassicOutput, ALongPathSplitsIntoUstarsPrefixWhenItCan) {
  std::string dir(90, 'd'), name(90, 'n');
  std::vector<context::Entry> entries = {entry(dir, context::EntryType::directory),
                                         entry(dir + "/" + name, context::EntryType::regular)};
  EXPECT_EQ(context_tar_size(context::Manifest(entries)), 1024 + 512 + 512);
  // A directory's trailing "/" is no place to split.
  entries = {entry(dir + "/" + name, context::EntryType::directory)};
  EXPECT_EQ(context_tar_size(context::Manifest(entries)), 1024 + 512);
  // Not ASCII: a PAX record however short.
  entries = {entry("caf\xc3\xa9", context::EntryType::regular)};
  EXPECT_EQ(context_tar_size(context::Manifest(entries)), 1024 + 512 + 512 + 512);
}

TEST(ClassicOutput, StepLineNumbersTheStep) {
  EXPECT_EQ(step_line(2, 10, "FROM $BASE AS first"), "Step 2/10 : FROM $BASE AS first\n");
}

TEST(ClassicOutput, IdsAreTwelveHexAndStable) {
  EXPECT_EQ(short_id("sha256:e981374f3aa85ba9e396f1d686f3058241cbe1d9697dc2dfe2409bd68bc23446"), "e981374f3aa8");
  std::string id = step_id("abedafaa8e8d", "RUN true", "sha256:1");
  EXPECT_EQ(id.size(), 12u);
  EXPECT_EQ(id, step_id("abedafaa8e8d", "RUN true", "sha256:1"));
  EXPECT_NE(id, step_id("abedafaa8e8d", "RUN true", "sha256:2"));
  EXPECT_NE(id, step_id("000000000000", "RUN true", "sha256:1"));
  EXPECT_NE(container_id(id), id);
}

TEST(ClassicOutput, UnusedBuildArgsAreSortedInOneWarning) {
  EXPECT_EQ(unused_build_args({}), "");
  EXPECT_EQ(unused_build_args({"B", "A"}), "[Warning] One or more build-args [A B] were not consumed\n");
}

TEST(ClassicOutput, RunFailureReadsAsTheClassicBuilders) {
  EXPECT_EQ(run_failure("process \"/bin/sh -c false\" did not complete successfully: exit code: 1", {"/bin/sh", "-c", "false"}),
            "The command '/bin/sh -c false' returned a non-zero code: 1");
  EXPECT_EQ(run_failure("something else", {"x"}), "something else");
}

}  // namespace
}  // namespace kbuild::solver::classic
