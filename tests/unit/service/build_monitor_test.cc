// The daemon's view of its builds: the status line, and what each build logs as it goes.
#include "service/build_monitor.h"

#include <gtest/gtest.h>

#include <thread>

#include "common/error.h"

namespace kbuild::service {
namespace {

class FakeSink : public LogSink {
 public:
  void write(const LogEntry& entry) override { entries.push_back(entry); }
  std::vector<LogEntry> entries;
};

// What the client's progress received, as "started <name>" and "completed <vertex> cached|error".
class RecordingProgress : public solver::NullProgress {
 public:
  void started(const std::string&, const std::string& name) override { events.push_back("started " + name); }
  void completed(const std::string& vertex, const std::string&, bool cached, const std::string& error) override {
    events.push_back("completed " + vertex + (cached ? " cached" : "") + (error.empty() ? "" : " " + error));
  }
  void log(const std::string& vertex, int, std::string_view data) override {
    events.push_back("log " + vertex + " " + std::string(data));
  }
  std::vector<std::string> events;
};

struct Monitored : ::testing::Test {
  Monitored() {
    request.build_name = "1a2b3c";
    request.caller.uid = 1000;
    request.dockerfile = "FROM scratch\n";
    request.secrets = {{"token", "hunter2-s3cr3t"}};
  }

  FakeSink* sink = new FakeSink;
  uint64_t stored = 1200000000;
  BuildMonitor monitor{std::unique_ptr<LogSink>(sink), [this] { return stored; }};
  solver::BuildRequest request;
  RecordingProgress client;
};

TEST(StatusLine, CountsBuildsStepsAndTheStore) {
  EXPECT_EQ(format_status({2, 5, 14, 1200000000}), "2 builds running, 5 steps run, 14 steps cached, 1.2 GB stored");
  EXPECT_EQ(format_status({1, 1, 1, 999}), "1 build running, 1 step run, 1 step cached, 999 B stored");
  EXPECT_EQ(format_status({0, 0, 0, 0}), "0 builds running, 0 steps run, 0 steps cached, 0 B stored");
  EXPECT_EQ(format_status({0, 0, 0, 45300000}), "0 builds running, 0 steps run, 0 steps cached, 45.3 MB stored");
}

TEST_F(Monitored, StatusChangesAsBuildsStartStepsFinishAndBuildsEnd) {
  EXPECT_EQ(monitor.take_status(), "0 builds running, 0 steps run, 0 steps cached, 1.2 GB stored");
  EXPECT_EQ(monitor.take_status(), std::nullopt);  // nothing new
  {
    BuildMonitor::Build build(monitor, request, client);
    EXPECT_EQ(monitor.take_status(), "1 build running, 0 steps run, 0 steps cached, 1.2 GB stored");
    build.started("v1", "[1/2] FROM base");
    build.completed("v1", "[1/2] FROM base", true, "");
    build.started("v2", "[2/2] RUN make");
    build.completed("v2", "", false, "");
    EXPECT_EQ(monitor.status(), "1 build running, 1 step run, 1 step cached, 1.2 GB stored");
    stored = 1300000000;
    solver::BuildResult result;
    build.succeeded(result);
  }
  EXPECT_EQ(monitor.take_status(), "0 builds running, 1 step run, 1 step cached, 1.3 GB stored");
}

TEST_F(Monitored, ABuildLogsItsStepsAndOneSummary) {
  {
    BuildMonitor::Build build(monitor, request, client);
    build.started("v2", "[2/2] RUN make");
    build.log("v2", 1, "output");
    build.completed("v2", "", false, "");  // the solver may complete without the name
    solver::BuildResult result;
    result.config_digest = store::Digest::of("config");
    result.names = {"docker.io/library/app:latest"};
    build.succeeded(result);
  }
  // The client saw all of it, unchanged.
  EXPECT_EQ(client.events, (std::vector<std::string>{"started [2/2] RUN make", "log v2 output", "completed v2"}));
  ASSERT_EQ(sink->entries.size(), 3u);
  EXPECT_EQ(*sink->entries[0].field("KBUILD_STEP"), "[2/2] RUN make");
  EXPECT_EQ(*sink->entries[1].field("KBUILD_STEP"), "[2/2] RUN make");
  EXPECT_TRUE(sink->entries[1].message.starts_with("build 1a2b3c step done in ")) << sink->entries[1].message;
  const LogEntry& summary = sink->entries[2];
  EXPECT_EQ(*summary.field("KBUILD_BUILD_ID"), "1a2b3c");
  EXPECT_EQ(*summary.field("KBUILD_CALLER_UID"), "1000");
  EXPECT_EQ(*summary.field("KBUILD_RESULT"), "success");
  EXPECT_EQ(*summary.field("KBUILD_DOCKERFILE_DIGEST"), store::Digest::of("FROM scratch\n").str());
  EXPECT_EQ(*summary.field("KBUILD_IMAGE"), store::Digest::of("config").str());
  EXPECT_EQ(*summary.field("KBUILD_IMAGE_NAMES"), "docker.io/library/app:latest");
  EXPECT_FALSE(summary.field("KBUILD_DURATION_USEC")->empty());
}

TEST_F(Monitored, AFailedStepAndBuildSayWhyWithoutTheSecret) {
  {
    BuildMonitor::Build build(monitor, request, client);
    build.started("v2", "[2/2] RUN test \"$(cat /run/secrets/token)\" = hunter2-s3cr3t");
    build.completed("v2", "", false, "exit code: 1");
    build.failed(std::make_exception_ptr(Error(ErrorKind::user, "exit code: 1 near hunter2-s3cr3t")));
  }
  ASSERT_EQ(sink->entries.size(), 3u);
  EXPECT_TRUE(sink->entries[1].message.starts_with("build 1a2b3c step failed: ")) << sink->entries[1].message;
  EXPECT_EQ(*sink->entries[2].field("KBUILD_RESULT"), "failure");
  EXPECT_EQ(*sink->entries[2].field("KBUILD_IMAGE"), "");
  for (const LogEntry& entry : sink->entries) {
    EXPECT_EQ(entry.message.find("hunter2"), std::string::npos) << entry.message;
    for (const auto& [name, value] : entry.fields) EXPECT_EQ(value.find("hunter2"), std::string::npos) << name;
  }
}

TEST_F(Monitored, ACanceledBuildIsNotAFailure) {
  {
    BuildMonitor::Build build(monitor, request, client);
    build.failed(std::make_exception_ptr(Error(ErrorKind::canceled, "build canceled")));
  }
  ASSERT_EQ(sink->entries.size(), 1u);
  EXPECT_EQ(*sink->entries[0].field("KBUILD_RESULT"), "canceled");
  EXPECT_EQ(sink->entries[0].priority, LOG_INFO);
}

}  // namespace
}  // namespace kbuild::service
