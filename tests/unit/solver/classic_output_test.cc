#include "engine/solver/classic_output.h"

#include <fcntl.h>
#include <unistd.h>

#include <fstream>

#include <gtest/gtest.h>

#include "common/temp_dir.h"
#include "common/unique_fd.h"

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

// The sizes docker 20.10's client printed for these trees.
TEST(ClassicOutput, ContextTarSizeCountsAsDockersClient) {
  TempDir dir;
  auto write = [&](const std::string& name, size_t size) { std::ofstream(dir.path() + "/" + name) << std::string(size, 'x'); };
  write("Dockerfile", 23);
  UniqueFd fd(::open(dir.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  EXPECT_EQ(context_tar_size(fd.get()), 2048);
  ASSERT_EQ(::mkdir((dir.path() + "/d").c_str(), 0755), 0);
  write("d/big", 600);
  EXPECT_EQ(context_tar_size(fd.get()), 4096);
  ASSERT_EQ(::symlink("d", (dir.path() + "/l").c_str()), 0);
  EXPECT_EQ(context_tar_size(fd.get()), 4608);
  ASSERT_EQ(::link((dir.path() + "/d/big").c_str(), (dir.path() + "/hard").c_str()), 0);
  EXPECT_EQ(context_tar_size(fd.get()), 5120);  // a second name is a header alone
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
