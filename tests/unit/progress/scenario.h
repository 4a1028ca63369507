// Scripted builds for the renderer tests. A script has one step per line: "<ms> <json>" feeds a
// SolveStatus at that time, "<ms> refresh" is an idle tick and "<ms> done" the end. Times are
// milliseconds after 2024-05-01T10:00:00Z: the clock is set to them, and "@<ms>" strings inside
// the JSON become those times in RFC 3339. A log's "text" and a warning's "short" are plain text,
// base64-encoded here, so that scripts stay readable.
//
// The expected outputs in these tests were produced by BuildKit's own progressui code
// (util/progress/progressui at moby/buildkit 73ed6825) driven with the same scripts and clock.
#pragma once

#include <string>
#include <string_view>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "dbus/progress_events.h"
#include "cli/progress/renderer.h"

namespace kbuild::progress::testing {

// 2024-05-01T10:00:00Z
constexpr int64_t kEpochSeconds = 1714557600;

inline Timestamp at(int64_t ms) {
  return Timestamp::from_unix_nanos(kEpochSeconds * 1'000'000'000 + ms * 1'000'000);
}

class FakeClock final : public Clock {
 public:
  Timestamp now() const override { return now_; }
  void set(Timestamp t) { now_ = t; }

 private:
  Timestamp now_ = at(0);
};

inline void expand(nlohmann::ordered_json& j) {
  if (j.is_object()) {
    if (j.contains("text")) {
      j["data"] = base64_encode(j["text"].get<std::string>());
      j.erase("text");
    }
    if (j.contains("short") && j["short"].is_string()) j["short"] = base64_encode(j["short"].get<std::string>());
    for (auto& [key, value] : j.items()) expand(value);
  } else if (j.is_array()) {
    for (auto& value : j) expand(value);
  } else if (j.is_string()) {
    const auto& s = j.get_ref<const std::string&>();
    const bool is_time = s.size() > 1 && s[0] == '@' &&
                         s.find_first_not_of("-0123456789", 1) == std::string::npos;
    if (is_time) j = format_rfc3339_nano(at(std::stoll(s.substr(1))));
  }
}

// A SolveStatus from script JSON.
inline SolveStatus status(std::string_view json) {
  auto j = nlohmann::ordered_json::parse(json);
  expand(j);
  return parse_solve_status(j.dump());
}

inline void play(Renderer& renderer, FakeClock& clock, std::string_view script) {
  while (!script.empty()) {
    const size_t nl = script.find('\n');
    std::string_view line = script.substr(0, nl);
    script.remove_prefix(nl == std::string_view::npos ? script.size() : nl + 1);
    while (!line.empty() && line.front() == ' ') line.remove_prefix(1);
    if (line.empty()) continue;
    const size_t space = line.find(' ');
    clock.set(at(std::stoll(std::string(line.substr(0, space)))));
    const std::string_view rest = line.substr(space + 1);
    if (rest == "refresh")
      renderer.refresh();
    else if (rest == "done")
      renderer.finish();
    else
      renderer.update(status(rest));
  }
}

// Escape sequences made visible: ESC becomes "^[".
inline std::string visible(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '\x1b')
      out += "^[";
    else
      out += c;
  }
  return out;
}

// The shared scripts.

// A whole `docker build` of FROM / COPY / RUN: internal steps, auth, a cached FROM, context
// transfer, a RUN whose output splits a line across chunks, and the export.
inline constexpr std::string_view kBuildScript = R"(
10 {"vertexes":[{"digest":"v1","name":"[internal] load build definition from Dockerfile","started":"@10"}]}
12 {"statuses":[{"id":"transferring dockerfile:","vertex":"v1","current":227,"timestamp":"@12","started":"@11"}]}
130 {"statuses":[{"id":"transferring dockerfile:","vertex":"v1","current":227,"timestamp":"@30","started":"@11","completed":"@20"}]}
240 {"vertexes":[{"digest":"v1","name":"[internal] load build definition from Dockerfile","started":"@10","completed":"@40"}]}
350 {"vertexes":[{"digest":"v2","name":"[internal] load metadata for docker.io/library/alpine:3.20","started":"@150"}]}
460 {"vertexes":[{"digest":"v3","name":"[auth] library/alpine:pull token for registry-1.docker.io","started":"@260"}]}
570 {"vertexes":[{"digest":"v3","name":"[auth] library/alpine:pull token for registry-1.docker.io","started":"@260","completed":"@270"}]}
1200 {"vertexes":[{"digest":"v2","name":"[internal] load metadata for docker.io/library/alpine:3.20","started":"@150","completed":"@1100"}]}
1310 {"vertexes":[{"digest":"v4","name":"[internal] load .dockerignore","started":"@1210","completed":"@1230"}],"statuses":[{"id":"transferring context:","vertex":"v4","current":2,"timestamp":"@1220","started":"@1215","completed":"@1220"}]}
1420 {"vertexes":[{"digest":"v5","name":"[1/3] FROM docker.io/library/alpine:3.20@sha256:0a4eaa0eecf5f8c050e5bba433f58c052be7587ee8af3e8b3910ef9ab5fbe9f5"},{"digest":"v6","name":"[internal] load build context","started":"@1400"},{"digest":"v7","inputs":["v5","v6"],"name":"[2/3] COPY a /a"},{"digest":"v8","inputs":["v7"],"name":"[3/3] RUN echo hello && printf wor && sleep 1 && echo ld"}]}
1530 {"vertexes":[{"digest":"v5","name":"[1/3] FROM docker.io/library/alpine:3.20@sha256:0a4eaa0eecf5f8c050e5bba433f58c052be7587ee8af3e8b3910ef9ab5fbe9f5","started":"@1500"}],"statuses":[{"id":"resolve docker.io/library/alpine:3.20@sha256:0a4eaa0eecf5f8c050e5bba433f58c052be7587ee8af3e8b3910ef9ab5fbe9f5","vertex":"v5","current":0,"timestamp":"@1510","started":"@1505","completed":"@1510"}]}
1640 {"statuses":[{"id":"transferring context:","vertex":"v6","current":1234,"timestamp":"@1600","started":"@1410"}]}
1750 {"vertexes":[{"digest":"v6","name":"[internal] load build context","started":"@1400","completed":"@1700"}],"statuses":[{"id":"transferring context:","vertex":"v6","current":1234,"timestamp":"@1690","started":"@1410","completed":"@1690"}]}
1860 {"vertexes":[{"digest":"v5","name":"[1/3] FROM docker.io/library/alpine:3.20@sha256:0a4eaa0eecf5f8c050e5bba433f58c052be7587ee8af3e8b3910ef9ab5fbe9f5","started":"@1500","completed":"@1501","cached":true}]}
1970 {"vertexes":[{"digest":"v7","inputs":["v5","v6"],"name":"[2/3] COPY a /a","started":"@1900"}]}
2080 {"vertexes":[{"digest":"v7","inputs":["v5","v6"],"name":"[2/3] COPY a /a","started":"@1900","completed":"@2000"}]}
2190 {"vertexes":[{"digest":"v8","inputs":["v7"],"name":"[3/3] RUN echo hello && printf wor && sleep 1 && echo ld","started":"@2100"}]}
2500 {"logs":[{"vertex":"v8","stream":1,"text":"hello\n","timestamp":"@2445"}]}
2700 {"logs":[{"vertex":"v8","stream":1,"text":"wor","timestamp":"@2600"}]}
3700 {"logs":[{"vertex":"v8","stream":1,"text":"ld\n","timestamp":"@3600"}]}
3810 {"vertexes":[{"digest":"v8","inputs":["v7"],"name":"[3/3] RUN echo hello && printf wor && sleep 1 && echo ld","started":"@2100","completed":"@3700"}]}
3920 {"vertexes":[{"digest":"v9","name":"exporting to image","started":"@3800"}],"statuses":[{"id":"exporting layers","vertex":"v9","current":0,"timestamp":"@3810","started":"@3805"}]}
4030 {"statuses":[{"id":"exporting layers","vertex":"v9","current":0,"timestamp":"@4000","started":"@3805","completed":"@4000"},{"id":"writing image sha256:3b1eb73e993990490aa137c00e60ff4ca9d1715bafb8e888dbb0986275edb13f","vertex":"v9","current":0,"timestamp":"@4000","started":"@4000"}]}
4140 {"statuses":[{"id":"writing image sha256:3b1eb73e993990490aa137c00e60ff4ca9d1715bafb8e888dbb0986275edb13f","vertex":"v9","current":0,"timestamp":"@4010","started":"@4000","completed":"@4010"},{"id":"naming to docker.io/library/hello:latest","vertex":"v9","current":0,"timestamp":"@4010","started":"@4010","completed":"@4010"}]}
4250 {"vertexes":[{"digest":"v9","name":"exporting to image","started":"@3800","completed":"@4020"}]}
4300 done
)";

// A RUN that prints twelve lines, then a partial one, and fails.
inline constexpr std::string_view kFailingRunScript = R"(
10 {"vertexes":[{"digest":"v1","name":"[1/2] FROM docker.io/library/alpine:3.20","started":"@10","completed":"@11","cached":true},{"digest":"v2","inputs":["v1"],"name":"[2/2] RUN for i in $(seq 1 12); do echo line $i; done; printf partial; exit 3","started":"@150"}]}
400 {"logs":[{"vertex":"v2","stream":1,"text":"line 1\nline 2\nline 3\nline 4\nline 5\nline 6\nline 7\n","timestamp":"@300"}]}
600 {"logs":[{"vertex":"v2","stream":2,"text":"line 8\nline 9\nline 10\nline 11\nline 12\n","timestamp":"@500"}]}
800 {"logs":[{"vertex":"v2","stream":1,"text":"partial","timestamp":"@700"}]}
1000 {"vertexes":[{"digest":"v2","inputs":["v1"],"name":"[2/2] RUN for i in $(seq 1 12); do echo line $i; done; printf partial; exit 3","started":"@150","completed":"@900","error":"process \"/bin/sh -c for i in $(seq 1 12); do echo line $i; done; printf partial; exit 3\" did not complete successfully: exit code: 3"}]}
1100 done
)";

}  // namespace kbuild::progress::testing
