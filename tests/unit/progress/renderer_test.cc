#include "cli/progress/renderer.h"

#include <fcntl.h>
#include <unistd.h>

#include <map>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "cli/progress/summary.h"
#include "common/error.h"
#include "tests/unit/progress/scenario.h"

namespace kbuild::progress {
namespace {

using testing::at;
using testing::FakeClock;
using testing::status;

DisplayChoice choose(std::string_view flag, bool quiet, bool terminal, std::optional<std::string_view> env = {}) {
  return choose_display_mode(flag, quiet, terminal, env);
}

TEST(ChooseDisplayMode, AutoIsTtyOnATerminalAndPlainElsewhere) {
  EXPECT_EQ(choose("auto", false, true).mode, DisplayMode::tty);
  EXPECT_EQ(choose("auto", false, false).mode, DisplayMode::plain);
  EXPECT_EQ(choose("tty", false, true).mode, DisplayMode::tty);
  EXPECT_EQ(choose("plain", false, true).mode, DisplayMode::plain);
  EXPECT_EQ(choose("rawjson", false, true).mode, DisplayMode::rawjson);
  EXPECT_FALSE(choose("auto", false, true).print_image_id);
  EXPECT_TRUE(choose("auto", false, true).print_warnings);
}

TEST(ChooseDisplayMode, BuildkitProgressOnlyReplacesAuto) {
  EXPECT_EQ(choose("auto", false, true, "plain").mode, DisplayMode::plain);
  EXPECT_EQ(choose("auto", false, false, "rawjson").mode, DisplayMode::rawjson);
  EXPECT_EQ(choose("auto", false, false, "").mode, DisplayMode::plain);
  EXPECT_EQ(choose("plain", false, true, "rawjson").mode, DisplayMode::plain);
  EXPECT_EQ(choose("auto", true, true, "plain").mode, DisplayMode::quiet);
  // The warnings summary follows the flag, not the environment.
  EXPECT_TRUE(choose("auto", false, false, "rawjson").print_warnings);
  const DisplayChoice quiet_env = choose("auto", false, false, "quiet");
  EXPECT_EQ(quiet_env.mode, DisplayMode::quiet);
  EXPECT_FALSE(quiet_env.print_image_id);
  EXPECT_TRUE(quiet_env.print_warnings);
}

TEST(ChooseDisplayMode, QuietPrintsTheImageIdAndNoneDoesNot) {
  for (const DisplayChoice& c : {choose("quiet", false, true), choose("auto", true, true), choose("quiet", true, false)}) {
    EXPECT_EQ(c.mode, DisplayMode::quiet);
    EXPECT_TRUE(c.print_image_id);
    EXPECT_FALSE(c.print_warnings);
  }
  const DisplayChoice none = choose("none", false, true);
  EXPECT_EQ(none.mode, DisplayMode::quiet);
  EXPECT_FALSE(none.print_image_id);
  EXPECT_FALSE(none.print_warnings);
  EXPECT_TRUE(choose("none", true, true).print_image_id);  // -q still asks for the ID
  EXPECT_FALSE(choose("rawjson", false, true).print_warnings);
}

void expect_user_error(std::function<void()> f, const std::string& message) {
  try {
    f();
    ADD_FAILURE() << "no error, expected: " << message;
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::user);
    EXPECT_EQ(e.what(), message);
  }
}

TEST(ChooseDisplayMode, RejectsWhatBuildxRejects) {
  expect_user_error([] { choose("plain", true, true); }, "progress=plain and quiet cannot be used together");
  expect_user_error([] { choose("tty", false, false); }, "failed to get console: provided file is not a console");
  expect_user_error([] { choose("fancy", false, true); }, "invalid progress mode fancy");
  expect_user_error([] { choose("auto", false, false, "none"); }, "invalid progress mode none");
}

std::function<std::optional<std::string>(const char*)> env(std::map<std::string, std::string> values) {
  return [values](const char* name) -> std::optional<std::string> {
    auto it = values.find(name);
    if (it == values.end()) return std::nullopt;
    return it->second;
  };
}

TEST(DisplayOptionsFromEnv, ReadsBuildkitsVariables) {
  const DisplayOptions defaults = display_options_from_env(env({}));
  EXPECT_EQ(defaults.colors.run, "\x1b[34m");
  EXPECT_EQ(defaults.colors.error, "\x1b[31m");
  EXPECT_EQ(defaults.tty_log_lines, 6);
  EXPECT_FALSE(defaults.truncate_names);

  const DisplayOptions o = display_options_from_env(env({{"BUILDKIT_COLORS", "run=green:ERROR=255,0,0:cancel=nope:warning"},
                                                          {"BUILDKIT_TTY_LOG_LINES", "10"},
                                                          {"PROGRESS_NO_TRUNC", "0"},
                                                          {"TTY_DISPLAY_RATE", "50"}}));
  EXPECT_EQ(o.colors.run, "\x1b[32m");
  EXPECT_EQ(o.colors.error, "\x1b[38;5;196m");
  EXPECT_EQ(o.colors.cancel, "\x1b[33m");
  EXPECT_EQ(o.tty_log_lines, 10);
  EXPECT_TRUE(o.truncate_names);
  EXPECT_EQ(o.display_interval, std::chrono::milliseconds(50));
  EXPECT_EQ(o.tick_interval, std::chrono::milliseconds(50));
}

TEST(DisplayOptionsFromEnv, NoColorDropsColoursAndTheLogLinesSetting) {
  const DisplayOptions o = display_options_from_env(env({{"NO_COLOR", "1"}, {"BUILDKIT_TTY_LOG_LINES", "10"}}));
  EXPECT_FALSE(o.colors.run);
  EXPECT_FALSE(o.colors.error);
  EXPECT_EQ(o.tty_log_lines, 6);
}

TEST(RawJsonRenderer, PrintsEachStatusAsOneLine) {
  std::ostringstream out;
  auto r = make_renderer(DisplayMode::rawjson, out);
  const std::string line = R"({"vertexes":[{"digest":"v1","name":"[1/2] RUN a \u0026\u0026 b","started":"2024-05-01T10:00:00Z"}]})";
  r->update(parse_solve_status(line));
  r->update(SolveStatus{});
  r->finish();
  EXPECT_EQ(out.str(), line + "\n{}\n");
}

TEST(QuietRenderer, PrintsNothingButKeepsWarnings) {
  std::ostringstream out;
  FakeClock clock;
  auto r = make_renderer(DisplayMode::quiet, out, {}, clock);
  r->update(status(R"({"vertexes":[{"digest":"v1","name":"x","started":"@0","completed":"@1","error":"boom"}]})"));
  r->update(status(R"--({"warnings":[{"vertex":"v1","level":1,"short":"StageNameCasing: Stage name 'Build' should be lowercase (line 1)"}]})--"));
  r->finish();
  EXPECT_EQ(out.str(), "");
  ASSERT_EQ(r->warnings().size(), 1u);
}

TEST(Renderer, KeepsEachWarningOnceWhateverItsVertex) {
  std::ostringstream out;
  auto r = make_renderer(DisplayMode::quiet, out);
  r->update(status(R"({"warnings":[{"vertex":"a","short":"one"},{"vertex":"b","short":"one"}]})"));
  r->update(status(R"({"warnings":[{"vertex":"c","short":"two"},{"vertex":"a","short":"one"}]})"));
  ASSERT_EQ(r->warnings().size(), 2u);
  EXPECT_EQ(r->warnings()[0].short_text, "one");
  EXPECT_EQ(r->warnings()[0].vertex, "a");
  EXPECT_EQ(r->warnings()[1].short_text, "two");
}

class RecordingRenderer final : public Renderer {
 public:
  int updates = 0;
  int refreshes = 0;
  void refresh() override { ++refreshes; }
  void finish() override {}

 protected:
  void on_update(const SolveStatus&) override { ++updates; }
};

TEST(RunDisplay, FeedsEventsAndRefreshesWhileThePipeIsIdle) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  ProgressReader reader{UniqueFd(fds[0])};
  ProgressWriter writer{UniqueFd(fds[1])};
  std::thread daemon([&writer] {
    writer.write(status(R"({"vertexes":[{"digest":"v1","name":"a","started":"@0"}]})"));
    writer.write(SolveStatus{});
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    writer.write(status(R"({"vertexes":[{"digest":"v1","name":"a","started":"@0","completed":"@100"}]})"));
    writer.close();
  });
  RecordingRenderer renderer;
  run_display(reader, renderer, std::chrono::milliseconds(50));
  daemon.join();
  EXPECT_EQ(renderer.updates, 3);
  EXPECT_GE(renderer.refreshes, 2);
}

TEST(RunDisplay, DivertedEventsNeverReachTheRenderer) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  ProgressReader reader{UniqueFd(fds[0])};
  {
    ProgressWriter writer{UniqueFd(fds[1])};
    SolveStatus classic;
    classic.logs.push_back(VertexLog{std::string(kClassicOutputVertex), 1, "Step 1/1 : FROM x\n", {}});
    writer.write(classic);
    writer.write(status(R"({"vertexes":[{"digest":"v1","name":"a","started":"@0"}]})"));
  }
  RecordingRenderer renderer;
  std::string text;
  run_display(reader, renderer, std::chrono::milliseconds(50), [&text](const SolveStatus& s) {
    if (s.logs.empty() || s.logs[0].vertex != kClassicOutputVertex) return false;
    text += s.logs[0].data;
    return true;
  });
  EXPECT_EQ(text, "Step 1/1 : FROM x\n");
  EXPECT_EQ(renderer.updates, 1);
}

TEST(RunDisplay, ReportsALineThatIsNotAStatus) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  ProgressReader reader{UniqueFd(fds[0])};
  UniqueFd write_end(fds[1]);
  ASSERT_EQ(::write(write_end.get(), "oops\n", 5), 5);
  RecordingRenderer renderer;
  EXPECT_THROW(run_display(reader, renderer), Error);
}

TEST(RateLimiter, AllowsOneEventPerInterval) {
  RateLimiter limiter(std::chrono::milliseconds(100));
  EXPECT_TRUE(limiter.allow(at(0)));
  EXPECT_FALSE(limiter.allow(at(50)));
  EXPECT_FALSE(limiter.allow(at(99)));
  EXPECT_TRUE(limiter.allow(at(100)));
  EXPECT_FALSE(limiter.allow(at(150)));
  EXPECT_TRUE(limiter.allow(at(1000)));
  EXPECT_FALSE(limiter.allow(at(1099)));
}

TEST(Summary, ListsWarningsAsBuildxDoes) {
  VertexWarning w;
  w.short_text = "JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 2)";
  w.detail = {"JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals"};
  w.url = "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/";
  w.source_info = SourceInfo{"Dockerfile", "FROM alpine\nCMD echo hi\n", nullptr, "Dockerfile"};
  w.range = {Range{Position{2, 0}, Position{2, 0}}};
  EXPECT_EQ(warnings_summary({}), "");
  EXPECT_EQ(warnings_summary({w}),
            "\n \x1b[33m1 warning found (use docker --debug to expand):\n\x1b[0m"
            " - JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 2)\n");
  VertexWarning other;
  other.short_text = "StageNameCasing: Stage name 'Build' should be lowercase (line 1)";
  EXPECT_EQ(warnings_summary({w, other}),
            "\n \x1b[33m2 warnings found (use docker --debug to expand):\n\x1b[0m"
            " - JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 2)\n"
            " - StageNameCasing: Stage name 'Build' should be lowercase (line 1)\n");
  const auto source = [](const SourceInfo& si, const std::vector<Range>& r) {
    return si.filename + ":" + std::to_string(r.at(0).start->line) + "\n";
  };
  EXPECT_EQ(warnings_summary({w}, true, source),
            "\n \x1b[33m1 warning found:\n\x1b[0m"
            " - JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 2)\n"
            "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals\n"
            "More info: https://docs.docker.com/go/dockerfile/rule/json-args-recommended/\n"
            "Dockerfile:2\n"
            "\n");
}

TEST(Summary, EndsAFailedBuildWithBuildxsErrorLine) {
  EXPECT_EQ(build_error_line("process \"/bin/sh -c exit 3\" did not complete successfully: exit code: 3"),
            "ERROR: failed to build: failed to solve: process \"/bin/sh -c exit 3\" did not complete successfully: exit "
            "code: 3\n");
}

}  // namespace
}  // namespace kbuild::progress
