#include "cli/progress/tty_renderer.h"

#include <sstream>

#include <gtest/gtest.h>

#include "tests/unit/progress/scenario.h"

namespace kbuild::progress {
namespace {

using testing::FakeClock;
using testing::play;
using testing::visible;

std::string render_tty(std::string_view script, TerminalSize size, DisplayOptions options = {}) {
  std::ostringstream out;
  FakeClock clock;
  TtyRenderer renderer(out, options, clock, [size] { return size; });
  play(renderer, clock, script);
  return out.str();
}

// The last frame drawn, from its hide-cursor escape on.
std::string last_frame(const std::string& output) { return output.substr(output.rfind("\x1b[?25l")); }

TEST(TtyRenderer, EndsAWholeBuildWithTheFinishedFrame) {
  DisplayOptions options;
  options.console_desc = "docker:default";
  EXPECT_EQ(visible(last_frame(render_tty(testing::kBuildScript, {80, 30}, options))), R"--(^[[?25l[+] Building 4.1s (9/9) FINISHED                                 docker:default
^[[34m => [internal] load build definition from Dockerfile                       0.0s
^[[0m^[[34m => => transferring dockerfile: 227B                                       0.0s
^[[0m^[[34m => [internal] load metadata for docker.io/library/alpine:3.20             0.9s
^[[0m^[[34m => [auth] library/alpine:pull token for registry-1.docker.io              0.0s
^[[0m^[[34m => [internal] load .dockerignore                                          0.0s
^[[0m^[[34m => => transferring context: 2B                                            0.0s
^[[0m^[[34m => [internal] load build context                                          0.3s
^[[0m^[[34m => => transferring context: 1.23kB                                        0.3s
^[[0m^[[34m => CACHED [1/3] FROM docker.io/library/alpine:3.20@sha256:0a4eaa0eecf5f8  0.0s
^[[0m^[[34m => => resolve docker.io/library/alpine:3.20@sha256:0a4eaa0eecf5f8c050e5b  0.0s
^[[0m^[[34m => [2/3] COPY a /a                                                        0.1s
^[[0m^[[34m => [3/3] RUN echo hello && printf wor && sleep 1 && echo ld               1.6s
^[[0m^[[34m => exporting to image                                                     0.2s
^[[0m^[[34m => => exporting layers                                                    0.2s
^[[0m^[[34m => => writing image sha256:3b1eb73e993990490aa137c00e60ff4ca9d1715bafb8e  0.0s
^[[0m^[[34m => => naming to docker.io/library/hello:latest                            0.0s
^[[0m^[[?25h)--");
}

TEST(TtyRenderer, CutsNamesAndKeepsSizesOnANarrowTerminal) {
  EXPECT_EQ(visible(last_frame(render_tty(testing::kBuildScript, {40, 30}))), R"--(^[[?25l[+] Building 4.1s (9/9) FINISHED        
^[[34m => [internal] load build definit  0.0s
^[[0m^[[34m => => transferring dockerfi 227B  0.0s
^[[0m^[[34m => [internal] load metadata for   0.9s
^[[0m^[[34m => [auth] library/alpine:pull to  0.0s
^[[0m^[[34m => [internal] load .dockerignore  0.0s
^[[0m^[[34m => => transferring context: 2B    0.0s
^[[0m^[[34m => [internal] load build context  0.3s
^[[0m^[[34m => => transferring contex 1.23kB  0.3s
^[[0m^[[34m => CACHED [1/3] FROM docker.io/l  0.0s
^[[0m^[[34m => => resolve docker.io/library/  0.0s
^[[0m^[[34m => [2/3] COPY a /a                0.1s
^[[0m^[[34m => [3/3] RUN echo hello && print  1.6s
^[[0m^[[34m => exporting to image             0.2s
^[[0m^[[34m => => exporting layers            0.2s
^[[0m^[[34m => => writing image sha256:3b1eb  0.0s
^[[0m^[[34m => => naming to docker.io/librar  0.0s
^[[0m^[[?25h)--");
}

TEST(TtyRenderer, MarksTheFailedStepAndPrintsAllItsLogsAfterTheFrame) {
  EXPECT_EQ(visible(last_frame(render_tty(testing::kFailingRunScript, {100, 30}))), R"--(^[[?25l[+] Building 1.2s (2/2) FINISHED                                                                    
^[[34m => CACHED [1/2] FROM docker.io/library/alpine:3.20                                            0.0s
^[[0m^[[31m => ERROR [2/2] RUN for i in $(seq 1 12); do echo line $i; done; printf partial; exit 3        0.8s
^[[0m^[[?25h------
 > [2/2] RUN for i in $(seq 1 12); do echo line $i; done; printf partial; exit 3:
0.150 line 1
0.150 line 2
0.150 line 3
0.150 line 4
0.150 line 5
0.150 line 6
0.150 line 7
0.350 line 8
0.350 line 9
0.350 line 10
0.350 line 11
0.350 line 12
0.550 partial
------
)--");
}

TEST(TtyRenderer, RepaintsInPlaceWithCursorUpAndBlanksLinesThatWentAway) {
  constexpr std::string_view script = R"--(0 {"vertexes":[{"digest":"v1","name":"[1/2] FROM docker.io/library/busybox:latest","started":"@0","completed":"@5","cached":true},{"digest":"v2","name":"[2/2] RUN echo hi","started":"@10"}]}
200 {"logs":[{"vertex":"v2","stream":1,"text":"hi\n","timestamp":"@150"}]}
350 refresh
400 {"vertexes":[{"digest":"v2","name":"[2/2] RUN echo hi","started":"@10","completed":"@300"}]}
500 done
)--";
  EXPECT_EQ(visible(render_tty(script, {60, 20})), R"--(^[[1A^[[1B^[[0G^[[?25l[+] Building 0.0s (1/2)                                     
^[[34m => CACHED [1/2] FROM docker.io/library/busybox:lates  0.0s
^[[0m => [2/2] RUN echo hi                                  0.0s
^[[?25h^[[1A^[[1A^[[1A^[[0G^[[?25l[+] Building 0.2s (1/2)                                     
^[[34m => CACHED [1/2] FROM docker.io/library/busybox:lates  0.0s
^[[0m => [2/2] RUN echo hi                                  0.2s
^[[2m => => # hi                                                
^[[0m^[[?25h^[[1A^[[1A^[[1A^[[1A^[[0G^[[?25l[+] Building 0.4s (1/2)                                     
^[[34m => CACHED [1/2] FROM docker.io/library/busybox:lates  0.0s
^[[0m => [2/2] RUN echo hi                                  0.3s
^[[2m => => # hi                                                
^[[0m^[[?25h^[[1A^[[1A^[[1A^[[1A^[[0G^[[?25l[+] Building 0.4s (2/2)                                     
^[[34m => CACHED [1/2] FROM docker.io/library/busybox:lates  0.0s
^[[0m^[[34m => [2/2] RUN echo hi                                  0.3s
^[[0m                                                            
^[[1A^[[0G^[[?25h^[[1A^[[1A^[[1A^[[0G^[[?25l[+] Building 0.5s (2/2) FINISHED                            
^[[34m => CACHED [1/2] FROM docker.io/library/busybox:lates  0.0s
^[[0m^[[34m => [2/2] RUN echo hi                                  0.3s
^[[0m^[[?25h)--");
}

TEST(TtyRenderer, ShowsTheLastScreenOfARunningStepsOutput) {
  // Output goes through a terminal emulator: "\r" overwrites, escapes vanish, long lines wrap.
  constexpr std::string_view script = R"--(0 {"vertexes":[{"digest":"v1","name":"[1/2] FROM docker.io/library/debian:12","started":"@0","completed":"@5","cached":true},{"digest":"v2","name":"[2/2] RUN apt-get update && apt-get install -y curl","started":"@100"}]}
300 {"logs":[{"vertex":"v2","stream":1,"text":"Get:1 http://deb.debian.org/debian bookworm InRelease [151 kB]\nGet:2 http://deb.debian.org/debian bookworm/main amd64 Packages [8792 kB]\n","timestamp":"@250"}]}
600 {"logs":[{"vertex":"v2","stream":1,"text":"Reading package lists... 0%\rReading package lists... 50%\rReading package lists... Done\n","timestamp":"@550"}]}
900 {"logs":[{"vertex":"v2","stream":2,"text":"\u001b[1mdebconf:\u001b[0m delaying package configuration\n","timestamp":"@850"}]}
1200 refresh
)--";
  DisplayOptions options;
  options.console_desc = "docker:default";
  EXPECT_EQ(visible(last_frame(render_tty(script, {80, 30}, options))), R"--(^[[?25l[+] Building 1.3s (1/2)                                          docker:default
^[[34m => CACHED [1/2] FROM docker.io/library/debian:12                          0.0s
^[[0m => [2/2] RUN apt-get update && apt-get install -y curl                    1.2s
^[[2m => => # Get:1 http://deb.debian.org/debian bookworm InRelease [151 kB]        
^[[0m^[[2m => => # Get:2 http://deb.debian.org/debian bookworm/main amd64 Packages [8792 
^[[0m^[[2m => => # kB]                                                                   
^[[0m^[[2m => => # Reading package lists... Done                                         
^[[0m^[[2m => => # debconf: delaying package configuration                               
^[[0m^[[?25h)--");
}

TEST(TtyRenderer, PrintsNoColoursWithNoColor) {
  DisplayOptions options;
  options.colors = TtyColors{std::nullopt, std::nullopt, std::nullopt, std::nullopt};
  const std::string frame = last_frame(render_tty(testing::kFailingRunScript, {100, 30}, options));
  EXPECT_EQ(frame.find("\x1b[34m"), std::string::npos);
  EXPECT_EQ(frame.find("\x1b[31m"), std::string::npos);
  EXPECT_NE(frame.find(" => ERROR [2/2] RUN for i in"), std::string::npos);
}

TEST(TtyRenderer, AssumesEightyColumnsWithoutATerminalSize) {
  std::ostringstream out;
  FakeClock clock;
  TtyRenderer renderer(out, {}, clock, {});
  play(renderer, clock, testing::kBuildScript);
  EXPECT_EQ(visible(last_frame(out.str())), visible(last_frame(render_tty(testing::kBuildScript, {80, 10}))));
}

Job job(bool completed) {
  Job j;
  j.is_completed = completed;
  return j;
}

TEST(WrapHeight, KeepsTheLastJobsAndBringsBackRunningOnesCutAbove) {
  Job running1 = job(false), done1 = job(true), running2 = job(false), done2 = job(true), done3 = job(true);
  const std::vector<Job*> jobs = {&running1, &done1, &running2, &done2, &done3};
  EXPECT_EQ(wrap_height(jobs, 5), jobs);
  EXPECT_EQ(wrap_height(jobs, 2), (std::vector<Job*>{&running1, &running2}));
  // Only finished jobs at the top of the visible part make room.
  EXPECT_EQ(wrap_height(jobs, 3), (std::vector<Job*>{&running2, &done2, &done3}));
  const std::vector<Job*> late = {&running1, &done1, &done2, &done3, &running2};
  EXPECT_EQ(wrap_height(late, 3), (std::vector<Job*>{&running1, &done3, &running2}));
  EXPECT_TRUE(wrap_height(jobs, -1).empty());
}

}  // namespace
}  // namespace kbuild::progress
