#include "cli/progress/plain_renderer.h"

#include <sstream>

#include <gtest/gtest.h>

#include "tests/unit/progress/scenario.h"

namespace kbuild::progress {
namespace {

using testing::FakeClock;
using testing::play;

std::string render_plain(std::string_view script, DisplayOptions options = {}) {
  std::ostringstream out;
  FakeClock clock;
  PlainRenderer renderer(out, options, clock);
  play(renderer, clock, script);
  return out.str();
}

TEST(PlainRenderer, PrintsAWholeBuildAsDockerBuildDoes) {
  DisplayOptions options;
  options.text_desc = "building with \"default\" instance using docker driver";
  EXPECT_EQ(render_plain(testing::kBuildScript, options), R"--(#0 building with "default" instance using docker driver

#1 [internal] load build definition from Dockerfile
#1 transferring dockerfile: 227B done
#1 DONE 0.0s

#2 [internal] load metadata for docker.io/library/alpine:3.20
#2 ...

#3 [auth] library/alpine:pull token for registry-1.docker.io
#3 DONE 0.0s

#2 [internal] load metadata for docker.io/library/alpine:3.20
#2 DONE 0.9s

#4 [internal] load .dockerignore
#4 transferring context: 2B done
#4 DONE 0.0s

#5 [internal] load build context
#5 transferring context: 1.23kB 0.3s done
#5 DONE 0.3s

#6 [1/3] FROM docker.io/library/alpine:3.20@sha256:0a4eaa0eecf5f8c050e5bba433f58c052be7587ee8af3e8b3910ef9ab5fbe9f5
#6 resolve docker.io/library/alpine:3.20@sha256:0a4eaa0eecf5f8c050e5bba433f58c052be7587ee8af3e8b3910ef9ab5fbe9f5 done
#6 CACHED

#7 [2/3] COPY a /a
#7 DONE 0.1s

#8 [3/3] RUN echo hello && printf wor && sleep 1 && echo ld
#8 0.345 hello
#8 0.500 world
#8 DONE 1.6s

#9 exporting to image
#9 exporting layers
#9 exporting layers 0.2s done
#9 writing image sha256:3b1eb73e993990490aa137c00e60ff4ca9d1715bafb8e888dbb0986275edb13f
#9 writing image sha256:3b1eb73e993990490aa137c00e60ff4ca9d1715bafb8e888dbb0986275edb13f done
#9 naming to docker.io/library/hello:latest done
#9 DONE 0.2s
)--");
}

TEST(PlainRenderer, PrintsTheErrorAndTheLastTenLogLinesOfAFailedStep) {
  // The partial last line shows twice and leaves an empty line: BuildKit's log ring does that.
  EXPECT_EQ(render_plain(testing::kFailingRunScript), R"--(#1 [1/2] FROM docker.io/library/alpine:3.20
#1 CACHED

#2 [2/2] RUN for i in $(seq 1 12); do echo line $i; done; printf partial; exit 3
#2 0.150 line 1
#2 0.150 line 2
#2 0.150 line 3
#2 0.150 line 4
#2 0.150 line 5
#2 0.150 line 6
#2 0.150 line 7
#2 0.350 line 8
#2 0.350 line 9
#2 0.350 line 10
#2 0.350 line 11
#2 0.350 line 12
#2 0.550 partial
#2 ERROR: process "/bin/sh -c for i in $(seq 1 12); do echo line $i; done; printf partial; exit 3" did not complete successfully: exit code: 3
------
 > [2/2] RUN for i in $(seq 1 12); do echo line $i; done; printf partial; exit 3:
0.550 partial

0.150 line 4
0.150 line 5
0.150 line 6
0.150 line 7
0.350 line 8
0.350 line 9
0.350 line 10
0.350 line 11
0.350 line 12
------
)--");
}

TEST(PlainRenderer, SharesTheOutputBetweenRunningStepsWithHeaderRepeats) {
  // Two stages log at once: the one on screen keeps it until it finishes or waits too long.
  constexpr std::string_view script = R"--(0 {"vertexes":[{"digest":"a","name":"[stage-a 2/2] RUN ./build.sh","started":"@0"}]}
100 {"vertexes":[{"digest":"b","name":"[stage-b 2/2] RUN make","started":"@5"}]}
200 {"logs":[{"vertex":"a","stream":1,"text":"a1\n","timestamp":"@190"}]}
400 {"logs":[{"vertex":"b","stream":1,"text":"b1\nb2","timestamp":"@390"}]}
600 {"logs":[{"vertex":"a","stream":1,"text":"a2\n","timestamp":"@590"}]}
6000 {"logs":[{"vertex":"b","stream":2,"text":" continued\n","timestamp":"@5990"}]}
6200 {"logs":[{"vertex":"a","stream":1,"text":"a3\n","timestamp":"@6190"}]}
12000 {"logs":[{"vertex":"b","stream":1,"text":"b3\n","timestamp":"@11990"}]}
12200 {"vertexes":[{"digest":"a","name":"[stage-a 2/2] RUN ./build.sh","started":"@0","completed":"@12100"}]}
12400 {"logs":[{"vertex":"b","stream":1,"text":"b4\n","timestamp":"@12390"}]}
12600 {"vertexes":[{"digest":"b","name":"[stage-b 2/2] RUN make","started":"@5","completed":"@12500"}]}
12700 done
)--";
  EXPECT_EQ(render_plain(script), R"--(#1 [stage-a 2/2] RUN ./build.sh
#1 0.190 a1
#1 0.590 a2
#1 6.190 a3
#1 ...

#2 [stage-b 2/2] RUN make
#2 0.385 b1
#2 0.385 b2 continued
#2 11.98 b3
#2 ...

#1 [stage-a 2/2] RUN ./build.sh
#1 DONE 12.1s

#2 [stage-b 2/2] RUN make
#2 12.38 b4
#2 DONE 12.5s
)--");
}

TEST(PlainRenderer, EndsAnOpenLineBeforeSwitchingAndRepeatsItOnReturn) {
  // A line still open when another step takes over is closed, and printed again in full later.
  constexpr std::string_view script = R"--(0 {"vertexes":[{"digest":"v1","name":"[2/2] RUN npm ci","started":"@0"}]}
200 {"logs":[{"vertex":"v1","stream":1,"text":"npm warn deprecated","timestamp":"@150"}]}
400 {"vertexes":[{"digest":"v2","name":"[internal] load build context","started":"@300"}]}
600 {"logs":[{"vertex":"v1","stream":1,"text":" inflight@1.0.6\nadded 10 packages","timestamp":"@550"}]}
800 {"vertexes":[{"digest":"v2","name":"[internal] load build context","started":"@300","completed":"@700"}]}
1000 {"logs":[{"vertex":"v1","stream":1,"text":" in 2s\n","timestamp":"@950"}]}
1200 {"vertexes":[{"digest":"v1","name":"[2/2] RUN npm ci","started":"@0","completed":"@1100"}]}
1300 done
)--";
  EXPECT_EQ(render_plain(script), R"--(#1 [2/2] RUN npm ci
#1 0.150 npm warn deprecated inflight@1.0.6
#1 0.550 added 10 packages
#1 ...

#2 [internal] load build context
#2 DONE 0.4s

#1 [2/2] RUN npm ci
#1 0.550 added 10 packages in 2s
#1 DONE 1.1s
)--");
}

TEST(PlainRenderer, ThrottlesTransferCountersBelowFivePercentAndFiveSeconds) {
  // Layer downloads: a counter prints when it moved 5% or 5s passed, and when done.
  constexpr std::string_view script = R"--(0 {"vertexes":[{"digest":"v1","name":"[1/2] FROM docker.io/library/node:20@sha256:4b232","started":"@0"}]}
1000 {"statuses":[{"id":"sha256:a1b2","vertex":"v1","total":48500000,"current":2000000,"timestamp":"@1000","started":"@10"}]}
2000 {"statuses":[{"id":"sha256:a1b2","vertex":"v1","total":48500000,"current":3000000,"timestamp":"@2000","started":"@10"}]}
3000 {"statuses":[{"id":"sha256:a1b2","vertex":"v1","total":48500000,"current":4000000,"timestamp":"@3000","started":"@10"},{"id":"sha256:c3d4","vertex":"v1","total":1200,"current":1200,"timestamp":"@3000","started":"@2900","completed":"@3000"}]}
7000 {"statuses":[{"id":"sha256:a1b2","vertex":"v1","total":48500000,"current":5000000,"timestamp":"@7000","started":"@10"}]}
8000 {"statuses":[{"id":"sha256:a1b2","vertex":"v1","total":48500000,"current":30000000,"timestamp":"@8000","started":"@10"}]}
9000 {"statuses":[{"id":"sha256:a1b2","vertex":"v1","total":48500000,"current":48500000,"timestamp":"@9000","started":"@10","completed":"@9000"},{"id":"extracting sha256:a1b2","vertex":"v1","current":0,"timestamp":"@9000","started":"@9000"}]}
10500 {"statuses":[{"id":"extracting sha256:a1b2","vertex":"v1","current":0,"timestamp":"@10400","started":"@9000","completed":"@10400"}]}
10600 {"vertexes":[{"digest":"v1","name":"[1/2] FROM docker.io/library/node:20@sha256:4b232","started":"@0","completed":"@10500"}]}
10700 done
)--";
  EXPECT_EQ(render_plain(script), R"--(#1 [1/2] FROM docker.io/library/node:20@sha256:4b232
#1 sha256:a1b2 2.00MB / 48.50MB 1.0s
#1 sha256:c3d4 1.20kB / 1.20kB 0.1s done
#1 sha256:a1b2 5.00MB / 48.50MB 7.0s
#1 sha256:a1b2 30.00MB / 48.50MB 8.0s
#1 sha256:a1b2 48.50MB / 48.50MB 9.0s done
#1 extracting sha256:a1b2
#1 extracting sha256:a1b2 1.4s done
#1 DONE 10.5s
)--");
}

TEST(PlainRenderer, PrintsWarningsGroupsAndCanceledSteps) {
  // Names print unescaped; a progress group prints as one step; "context canceled" is CANCELED.
  constexpr std::string_view script = R"--(0 {"vertexes":[{"digest":"v1","name":"[builder 1/2] RUN echo \"<a> & <b>\" \tcaf\u00e9","started":"@0"}]}
200 {"logs":[{"vertex":"v1","stream":1,"text":"<tag> & \u00e9\n","timestamp":"@150"}],"warnings":[{"vertex":"v1","level":1,"short":"UndefinedVar: Usage of undefined variable '$FOO' (line 3)"}]}
400 {"vertexes":[{"digest":"v1","name":"[builder 1/2] RUN echo \"<a> & <b>\" \tcaf\u00e9","started":"@0","completed":"@300"}]}
600 {"vertexes":[{"digest":"m1","name":"merge","started":"@500","progressGroup":{"id":"g1","name":"[builder 2/2] COPY --link a /a"}},{"digest":"m2","name":"copy","started":"@510","progressGroup":{"id":"g1","name":"[builder 2/2] COPY --link a /a","weak":true}}]}
800 {"vertexes":[{"digest":"m1","name":"merge","started":"@500","completed":"@700","progressGroup":{"id":"g1","name":"[builder 2/2] COPY --link a /a"}},{"digest":"m2","name":"copy","started":"@510","completed":"@600","progressGroup":{"id":"g1","name":"[builder 2/2] COPY --link a /a","weak":true}}]}
1000 {"vertexes":[{"digest":"v3","name":"[other 1/1] RUN sleep 100","started":"@900"}]}
1200 {"vertexes":[{"digest":"v3","name":"[other 1/1] RUN sleep 100","started":"@900","completed":"@1100","error":"failed to execute: context canceled"}]}
1300 done
)--";
  EXPECT_EQ(render_plain(script), R"--(#1 [builder 1/2] RUN echo "<a> & <b>" 	café
#1 WARN: UndefinedVar: Usage of undefined variable '$FOO' (line 3)
#1 0.150 <tag> & é
#1 DONE 0.3s

#2 [builder 2/2] COPY --link a /a
#2 DONE 0.2s

#3 [other 1/1] RUN sleep 100
#3 CANCELED
)--");
}

TEST(PlainRenderer, CutsLongNamesWhenProgressNoTruncIsZero) {
  DisplayOptions options;
  options.truncate_names = true;
  constexpr std::string_view script = R"(
0 {"vertexes":[{"digest":"v1","name":"[1/1] RUN echo 0123456789012345678901234567890123456789012345678901234567890123456789","started":"@0","completed":"@100"}]}
200 done
)";
  EXPECT_EQ(render_plain(script, options),
            "#1 [1/1] RUN echo 012345678901234567890123456789012345678901234567890123456...\n"
            "#1 DONE 0.1s\n");
}

TEST(PlainRenderer, HoldsUpdatesWithinTheRateLimitUntilTheNextTick) {
  constexpr std::string_view script = R"(
0 {"vertexes":[{"digest":"v1","name":"[1/1] RUN true","started":"@0"}]}
50 {"logs":[{"vertex":"v1","stream":1,"text":"held\n","timestamp":"@40"}]}
)";
  std::ostringstream out;
  FakeClock clock;
  PlainRenderer renderer(out, {}, clock);
  play(renderer, clock, script);
  EXPECT_EQ(out.str(), "#1 [1/1] RUN true\n");
  clock.set(testing::at(200));
  renderer.refresh();
  EXPECT_EQ(out.str(), "#1 [1/1] RUN true\n#1 0.040 held\n");
}

}  // namespace
}  // namespace kbuild::progress
