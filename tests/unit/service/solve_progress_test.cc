#include "service/solve_progress.h"

#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

namespace kbuild::service {
namespace {

// Every event a SolveProgress wrote, once it is gone.
std::vector<progress::SolveStatus> events_of(const std::function<void(SolveProgress&)>& report, bool classic) {
  int fds[2];
  EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  progress::ProgressReader reader{UniqueFd(fds[0])};
  {
    SolveProgress progress(UniqueFd(fds[1]), -1, classic);
    report(progress);
  }
  std::vector<progress::SolveStatus> events;
  while (auto event = reader.next()) events.push_back(*event);
  return events;
}

void report_a_step(SolveProgress& progress) {
  progress.started("v1", "[1/2] RUN true");
  progress.log("v1", 1, "hi\n");
  progress.completed("v1", "[1/2] RUN true", false, "");
  progress.classic_output("Step 1/2 : RUN true\n");
}

TEST(SolveProgress, AClassicBuildSendsItsTextOnly) {
  auto events = events_of(report_a_step, true);
  ASSERT_EQ(events.size(), 1u);
  ASSERT_EQ(events[0].logs.size(), 1u);
  EXPECT_EQ(events[0].logs[0].vertex, progress::kClassicOutputVertex);
  EXPECT_EQ(events[0].logs[0].data, "Step 1/2 : RUN true\n");
  EXPECT_TRUE(events[0].vertexes.empty());
}

TEST(SolveProgress, ABuildKitBuildSendsNoClassicText) {
  auto events = events_of(report_a_step, false);
  ASSERT_EQ(events.size(), 3u);
  for (const auto& event : events) {
    for (const auto& log : event.logs) EXPECT_NE(log.vertex, progress::kClassicOutputVertex);
  }
}

}  // namespace
}  // namespace kbuild::service
