// The entries kbuildd logs of builds: their fields, their one-line text, and no secret in any.
#include "service/build_log.h"

#include <unistd.h>

#include <gtest/gtest.h>

#include "common/unique_fd.h"

namespace kbuild::service {
namespace {

using namespace std::chrono_literals;

const std::map<std::string, std::string> kSecrets = {{"token", "hunter2-s3cr3t"}, {"empty", ""}};
const BuildIdentity kBuild{"1a2b3c", 1000, &kSecrets};

std::string field(const LogEntry& entry, std::string_view name) {
  const std::string* value = entry.field(name);
  return value ? *value : "<missing " + std::string(name) + ">";
}

// Every text of an entry, for searching.
std::string everything(const LogEntry& entry) {
  std::string text = entry.message;
  for (const auto& [name, value] : entry.fields) text += "\n" + name + "=" + value;
  return text;
}

TEST(BuildSummaryEntry, CarriesEveryFieldOfASuccessfulBuild) {
  BuildSummary summary;
  summary.result = BuildOutcome::success;
  summary.dockerfile_digest = "sha256:" + std::string(64, 'd');
  summary.duration = 2310000us;
  summary.image = "sha256:" + std::string(64, 'e');
  summary.image_names = {"docker.io/library/app:1", "docker.io/library/app:latest"};
  LogEntry entry = build_summary_entry(kBuild, summary);
  EXPECT_EQ(entry.message, "build 1a2b3c by uid 1000: success in 2.31s, image sha256:" + std::string(64, 'e') +
                               " (docker.io/library/app:1,docker.io/library/app:latest)");
  EXPECT_EQ(entry.priority, LOG_INFO);
  EXPECT_EQ(field(entry, "KBUILD_BUILD_ID"), "1a2b3c");
  EXPECT_EQ(field(entry, "KBUILD_CALLER_UID"), "1000");
  EXPECT_EQ(field(entry, "KBUILD_DOCKERFILE_DIGEST"), summary.dockerfile_digest);
  EXPECT_EQ(field(entry, "KBUILD_RESULT"), "success");
  EXPECT_EQ(field(entry, "KBUILD_DURATION_USEC"), "2310000");
  EXPECT_EQ(field(entry, "KBUILD_IMAGE"), summary.image);
  EXPECT_EQ(field(entry, "KBUILD_IMAGE_NAMES"), "docker.io/library/app:1,docker.io/library/app:latest");
}

TEST(BuildSummaryEntry, AFailureHasNoImageAndSaysWhyOnOneLine) {
  BuildSummary summary;
  summary.result = BuildOutcome::failure;
  summary.duration = 120000us;
  summary.error = "process \"/bin/sh -c make\" did not complete successfully: exit code: 2\nKBUILD_RESULT=success";
  LogEntry entry = build_summary_entry(kBuild, summary);
  EXPECT_EQ(entry.message,
            "build 1a2b3c by uid 1000: failure in 0.12s: process \"/bin/sh -c make\" did not complete successfully: "
            "exit code: 2\\nKBUILD_RESULT=success");
  EXPECT_EQ(entry.priority, LOG_NOTICE);
  EXPECT_EQ(field(entry, "KBUILD_RESULT"), "failure");
  EXPECT_EQ(field(entry, "KBUILD_IMAGE"), "");
  EXPECT_EQ(field(entry, "KBUILD_IMAGE_NAMES"), "");
  EXPECT_EQ(entry.fields.size(), 7u);
}

TEST(BuildSummaryEntry, ACanceledBuildSaysSo) {
  BuildSummary summary;
  summary.result = BuildOutcome::canceled;
  summary.duration = 3000000us;
  LogEntry entry = build_summary_entry(kBuild, summary);
  EXPECT_EQ(entry.message, "build 1a2b3c by uid 1000: canceled in 3.00s");
  EXPECT_EQ(field(entry, "KBUILD_RESULT"), "canceled");
}

TEST(StepEntries, NameTheBuildAndTheStep) {
  LogEntry started = step_started_entry(kBuild, "[stage-1 2/5] RUN make");
  EXPECT_EQ(started.message, "build 1a2b3c step started: [stage-1 2/5] RUN make");
  EXPECT_EQ(field(started, "KBUILD_BUILD_ID"), "1a2b3c");
  EXPECT_EQ(field(started, "KBUILD_STEP"), "[stage-1 2/5] RUN make");
  EXPECT_EQ(field(started, "KBUILD_CALLER_UID"), "1000");
  EXPECT_EQ(step_done_entry(kBuild, "[2/2] RUN x", 520000us).message, "build 1a2b3c step done in 0.52s: [2/2] RUN x");
  EXPECT_EQ(step_cached_entry(kBuild, "[2/2] RUN x").message, "build 1a2b3c step cached: [2/2] RUN x");
  LogEntry failed = step_failed_entry(kBuild, "[2/2] RUN x", "exit code: 1");
  EXPECT_EQ(failed.message, "build 1a2b3c step failed: [2/2] RUN x: exit code: 1");
  EXPECT_EQ(failed.priority, LOG_NOTICE);
}

TEST(StepEntries, AStepNameCannotForgeALineOrAField) {
  LogEntry entry = step_started_entry(kBuild, "[1/2] RUN a\nKBUILD_RESULT=success\r\n\x1b[1m\xff");
  EXPECT_EQ(field(entry, "KBUILD_STEP"), "[1/2] RUN a\\nKBUILD_RESULT=success\\r\\n\\x1b[1m\\xff");
  EXPECT_EQ(entry.message.find('\n'), std::string::npos);
  EXPECT_EQ(entry.message.find('\x1b'), std::string::npos);
  EXPECT_EQ(entry.field("KBUILD_RESULT"), nullptr);
  EXPECT_LE(field(step_started_entry(kBuild, std::string(100000, 'x')), "KBUILD_STEP").size(), 512u);
}

TEST(StepEntries, NoSecretValueAppearsInAnyEntry) {
  const std::string secret = kSecrets.at("token");
  std::vector<LogEntry> entries = {
      step_started_entry(kBuild, "[1/2] RUN echo " + secret + " > /x"),
      step_failed_entry(kBuild, "[1/2] RUN test \"$TOKEN\" = x", "exit code: 1 (saw " + secret + ")"),
  };
  BuildSummary summary;
  summary.error = "step said " + secret;
  summary.image_names = {"example.com/" + secret + ":1"};
  entries.push_back(build_summary_entry(kBuild, summary));
  for (const LogEntry& entry : entries) {
    EXPECT_EQ(everything(entry).find(secret), std::string::npos) << everything(entry);
    EXPECT_NE(everything(entry).find("****"), std::string::npos) << everything(entry);
  }
  EXPECT_EQ(field(entries[0], "KBUILD_STEP"), "[1/2] RUN echo **** > /x");
}

TEST(StepEntries, ASecretIsTakenOutBeforeItsTextIsCut) {
  // Cut at 512 bytes, a secret straddling the cut would leave its first part behind.
  std::string step = std::string(505, 'x') + kSecrets.at("token");
  std::string shown = field(step_started_entry(kBuild, step), "KBUILD_STEP");
  EXPECT_EQ(shown.find("hunter"), std::string::npos) << shown;
}

TEST(LineSink, WritesOneLinePerEntry) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  UniqueFd read_end(fds[0]), write_end(fds[1]);
  auto sink = make_line_sink(write_end.get());
  sink->write(step_started_entry(kBuild, "[1/2] RUN a\nb"));
  write_end.reset();
  char buffer[256];
  ssize_t n = ::read(read_end.get(), buffer, sizeof buffer);
  ASSERT_GT(n, 0);
  EXPECT_EQ(std::string(buffer, static_cast<size_t>(n)), "kbuildd: build 1a2b3c step started: [1/2] RUN a\\nb\n");
}

}  // namespace
}  // namespace kbuild::service
