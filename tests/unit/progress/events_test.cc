#include "dbus/progress_events.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include <gtest/gtest.h>

#include "common/client_stream.h"
#include "common/error.h"
#include "common/unique_fd.h"

namespace kbuild::progress {
namespace {

std::pair<UniqueFd, UniqueFd> make_pipe() {
  int fds[2];
  EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

TEST(Timestamp, FormatsAsGoMarshalsTimeToJson) {
  const int64_t t = 1714557600LL * 1'000'000'000;  // 2024-05-01T10:00:00Z
  EXPECT_EQ(format_rfc3339_nano(Timestamp::from_unix_nanos(t)), "2024-05-01T10:00:00Z");
  EXPECT_EQ(format_rfc3339_nano(Timestamp::from_unix_nanos(t + 120'000'000)), "2024-05-01T10:00:00.12Z");
  EXPECT_EQ(format_rfc3339_nano(Timestamp::from_unix_nanos(t + 1)), "2024-05-01T10:00:00.000000001Z");
  EXPECT_EQ(format_rfc3339_nano(Timestamp::from_unix_nanos(-1)), "1969-12-31T23:59:59.999999999Z");
  EXPECT_EQ(format_rfc3339_nano(Timestamp{}), "0001-01-01T00:00:00Z");
  EXPECT_TRUE(Timestamp{}.is_zero());
}

TEST(Timestamp, ParsesRfc3339AndKeepsTheOffsetForPrintingBack) {
  const Timestamp t = parse_rfc3339("2024-05-01T12:00:00.5+02:00");
  EXPECT_EQ(t, Timestamp::from_unix_nanos(1714557600LL * 1'000'000'000 + 500'000'000));
  EXPECT_EQ(format_rfc3339_nano(t), "2024-05-01T12:00:00.5+02:00");
  EXPECT_EQ(format_rfc3339_nano(parse_rfc3339("2024-02-29T23:59:59.000000001-07:30")),
            "2024-02-29T23:59:59.000000001-07:30");
  EXPECT_EQ(parse_rfc3339("0001-01-01T00:00:00Z"), Timestamp{});
}

TEST(Timestamp, RejectsWhatIsNotRfc3339) {
  for (const char* bad : {"", "2024-05-01", "2024-05-01T10:00:00", "2024-13-01T10:00:00Z", "2023-02-29T10:00:00Z",
                          "2024-05-01T24:00:00Z", "2024-05-01T10:00:00.Z", "2024-05-01T10:00:00Zjunk",
                          "2024-05-01 10:00:00Z"})
    EXPECT_THROW(parse_rfc3339(bad), Error) << bad;
}

TEST(Timestamp, SubtractsAndConvertsToSecondsAsGoDoes) {
  const Timestamp a = parse_rfc3339("2024-05-01T10:00:01.25Z");
  const Timestamp b = parse_rfc3339("2024-05-01T10:00:00.5Z");
  EXPECT_EQ((a - b).count(), 750'000'000);
  EXPECT_EQ((b - a).count(), -750'000'000);
  EXPECT_EQ(b + (a - b), a);
  EXPECT_DOUBLE_EQ(seconds_of(a - b), 0.75);
  // Go's Sub saturates rather than overflowing.
  EXPECT_EQ((a - Timestamp{}).count(), std::numeric_limits<int64_t>::max());
}

TEST(GoJson, EncodesBytesAsPaddedBase64) {
  EXPECT_EQ(base64_encode(""), "");
  EXPECT_EQ(base64_encode("f"), "Zg==");
  EXPECT_EQ(base64_encode("fo"), "Zm8=");
  EXPECT_EQ(base64_encode("foo"), "Zm9v");
  EXPECT_EQ(base64_encode("\xff\xfe\n"), "//4K");
  EXPECT_EQ(base64_decode("Zm9vYmE="), "fooba");
  EXPECT_EQ(base64_decode("//4K"), "\xff\xfe\n");
  EXPECT_THROW(base64_decode("Zm9"), Error);
  EXPECT_THROW(base64_decode("Zm=v"), Error);
  EXPECT_THROW(base64_decode("Zm9*"), Error);
}

TEST(SolveStatusJson, OmitsEmptyFieldsButKeepsIdCurrentTimestampAndData) {
  EXPECT_EQ(to_json(SolveStatus{}), "{}");
  SolveStatus s;
  s.vertexes.push_back(Vertex{});
  s.statuses.push_back(VertexStatus{});
  s.logs.push_back(VertexLog{});
  s.warnings.push_back(VertexWarning{});
  EXPECT_EQ(to_json(s),
            R"({"vertexes":[{}],"statuses":[{"id":"","current":0,"timestamp":"0001-01-01T00:00:00Z"}],)"
            R"("logs":[{"data":"","timestamp":"0001-01-01T00:00:00Z"}],"warnings":[{}]})");
}

TEST(SolveStatusJson, BuildsTheLineOfAStartedVertex) {
  SolveStatus s;
  Vertex v;
  v.digest = "sha256:ab";
  v.inputs = {"sha256:cd"};
  v.name = "[2/3] COPY a /a";
  v.started = parse_rfc3339("2024-05-01T10:00:00.25Z");
  v.cached = true;
  s.vertexes.push_back(v);
  EXPECT_EQ(to_json(s),
            R"({"vertexes":[{"digest":"sha256:ab","inputs":["sha256:cd"],"name":"[2/3] COPY a /a",)"
            R"("started":"2024-05-01T10:00:00.25Z","cached":true}]})");
}

// Lines as buildx --progress=rawjson writes them (made by Go's encoding/json from the same
// structures), read and written back unchanged.
TEST(SolveStatusJson, RoundTripsBuildxRawJsonLines) {
  const std::string lines[] = {
      R"--({"vertexes":[{"digest":"sha256:8b1d1c4b4a1b0d2fbb6c9bd0b4bd28e4f3a4e0e38c3f0bd9c1c0e2a2e3b1a8b1","inputs":["sha256:aa","sha256:bb"],"name":"[build 2/4] RUN make \u0026\u0026 make install \u003e /dev/null","started":"2024-05-01T12:00:00.123456789+02:00","completed":"2024-05-01T12:00:01.5+02:00","error":"process \"/bin/sh -c make\" did not complete successfully: exit code: 2"}]})--",
      R"--({"statuses":[{"id":"sha256:cc 1/2","vertex":"sha256:8b","name":"downloading","total":3400000,"current":1234,"timestamp":"2024-05-01T10:00:00.000000001Z","started":"2024-05-01T09:59:59Z"},{"id":"exporting layers","current":0,"timestamp":"0001-01-01T00:00:00Z"}]})--",
      R"--({"logs":[{"vertex":"sha256:8b","stream":2,"data":"ZXJyb3I6IDx4PiAmIHkK","timestamp":"2024-05-01T10:00:00.5-07:30"},{"data":"","timestamp":"2024-05-01T10:00:00Z"}]})--",
      R"--({"warnings":[{"vertex":"sha256:8b","level":1,"short":"SnNvbkFyZ3NSZWNvbW1lbmRlZA==","detail":["SlNPTiBhcmd1bWVudHM=","bW9yZQ=="],"url":"https://docs.docker.com/go/dockerfile/rule/json-args-recommended/","sourceInfo":{"filename":"Dockerfile","data":"RlJPTSBhbHBpbmUKQ01EIGVjaG8gaGkK","definition":{"def":["AAEC","AwQF"]},"language":"Dockerfile"},"range":[{"start":{"line":2},"end":{"line":2,"character":11}},{}]}]})--",
      R"--({"vertexes":[{"digest":"v1","name":"[builder 1/2] RUN echo \"\u003ca\u003e \u0026 \u003cb\u003e\" \tcafé","started":"2024-05-01T10:00:00Z"}]})--",
      R"--({"logs":[{"vertex":"v1","stream":1,"data":"PHRhZz4gJiDDqQo=","timestamp":"2024-05-01T10:00:00.15Z"}],"warnings":[{"vertex":"v1","level":1,"short":"VW5kZWZpbmVkVmFyOiBVc2FnZSBvZiB1bmRlZmluZWQgdmFyaWFibGUgJyRGT08nIChsaW5lIDMp"}]})--",
      R"--({"vertexes":[{"digest":"v1","name":"[builder 1/2] RUN echo \"\u003ca\u003e \u0026 \u003cb\u003e\" \tcafé","started":"2024-05-01T10:00:00Z","completed":"2024-05-01T10:00:00.3Z"}]})--",
      R"--({"vertexes":[{"digest":"m1","name":"merge","started":"2024-05-01T10:00:00.5Z","progressGroup":{"id":"g1","name":"[builder 2/2] COPY --link a /a"}},{"digest":"m2","name":"copy","started":"2024-05-01T10:00:00.51Z","progressGroup":{"id":"g1","name":"[builder 2/2] COPY --link a /a","weak":true}}]})--",
      R"--({"vertexes":[{"digest":"m1","name":"merge","started":"2024-05-01T10:00:00.5Z","completed":"2024-05-01T10:00:00.7Z","progressGroup":{"id":"g1","name":"[builder 2/2] COPY --link a /a"}},{"digest":"m2","name":"copy","started":"2024-05-01T10:00:00.51Z","completed":"2024-05-01T10:00:00.6Z","progressGroup":{"id":"g1","name":"[builder 2/2] COPY --link a /a","weak":true}}]})--",
      R"--({"vertexes":[{"digest":"v3","name":"[other 1/1] RUN sleep 100","started":"2024-05-01T10:00:00.9Z"}]})--",
      R"--({"vertexes":[{"digest":"v3","name":"[other 1/1] RUN sleep 100","started":"2024-05-01T10:00:00.9Z","completed":"2024-05-01T10:00:01.1Z","error":"failed to execute: context canceled"}]})--",
  };
  for (const std::string& line : lines) EXPECT_EQ(to_json(parse_solve_status(line)), line);
}

TEST(SolveStatusJson, ReadsTheFieldsOfABuildxLine) {
  const SolveStatus s = parse_solve_status(
      R"({"logs":[{"vertex":"sha256:8b","stream":2,"data":"ZXJyb3I6IDx4PiAmIHkK","timestamp":"2024-05-01T10:00:00.5-07:30"}],)"
      R"("warnings":[{"level":1,"short":"c2hvcnQ=","range":[{"start":{"line":2},"end":{"line":2,"character":11}}]}]})");
  ASSERT_EQ(s.logs.size(), 1u);
  EXPECT_EQ(s.logs[0].vertex, "sha256:8b");
  EXPECT_EQ(s.logs[0].stream, 2);
  EXPECT_EQ(s.logs[0].data, "error: <x> & y\n");
  EXPECT_EQ(s.logs[0].timestamp.utc_offset, -(7 * 3600 + 30 * 60));
  ASSERT_EQ(s.warnings.size(), 1u);
  EXPECT_EQ(s.warnings[0].short_text, "short");
  ASSERT_EQ(s.warnings[0].range.size(), 1u);
  EXPECT_EQ(s.warnings[0].range[0].start, (Position{2, 0}));
  EXPECT_EQ(s.warnings[0].range[0].end, (Position{2, 11}));
}

TEST(SolveStatusJson, MatchesNamesCaseInsensitivelyAndIgnoresUnknownOnesAsGoDoes) {
  const SolveStatus s = parse_solve_status(
      R"({"Vertexes":[{"DIGEST":"sha256:1","name":"x","extra":[1,2],"started":null}],"future":{"a":1}})");
  ASSERT_EQ(s.vertexes.size(), 1u);
  EXPECT_EQ(s.vertexes[0].digest, "sha256:1");
  EXPECT_EQ(s.vertexes[0].name, "x");
  EXPECT_FALSE(s.vertexes[0].started);
}

TEST(SolveStatusJson, ReportsMalformedLines) {
  for (const char* bad : {"", "not json", "[]", R"({"vertexes":{}})", R"({"vertexes":[{"name":3}]})",
                          R"({"vertexes":[{"started":"yesterday"}]})", R"({"logs":[{"data":"***"}]})",
                          R"({"statuses":[{"current":1.5}]})", R"({"logs":[{"stream":99999999999}]})"})
    EXPECT_THROW(parse_solve_status(bad), Error) << bad;
}

SolveStatus numbered(int i) {
  SolveStatus s;
  VertexLog l;
  l.vertex = "sha256:" + std::to_string(i);
  l.data = std::string(static_cast<size_t>(i) * 97, 'x') + "\n";
  s.logs.push_back(l);
  return s;
}

TEST(ProgressPipe, CarriesOneWholeLinePerStatusFromManyThreads) {
  auto [read_end, write_end] = make_pipe();
  ProgressWriter writer(std::move(write_end));
  ProgressReader reader(std::move(read_end));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&writer, t] {
      for (int i = 0; i < 50; ++i) EXPECT_TRUE(writer.write(numbered(t * 50 + i)));
    });
  std::vector<bool> seen(200);
  int count = 0;
  std::thread consumer([&] {
    while (auto s = reader.next()) {
      ASSERT_EQ(s->logs.size(), 1u);
      const int i = std::stoi(s->logs[0].vertex.substr(7));
      EXPECT_EQ(*s, numbered(i));
      seen[static_cast<size_t>(i)] = true;
      ++count;
    }
  });
  for (auto& t : threads) t.join();
  writer.close();
  consumer.join();
  EXPECT_EQ(count, 200);
  EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](bool b) { return b; }));
}

TEST(ProgressPipe, WriterStopsQuietlyWhenTheClientHasGone) {
  auto [read_end, write_end] = make_pipe();
  ProgressWriter writer(std::move(write_end));
  EXPECT_TRUE(writer.write(numbered(1)));
  read_end.reset();
  // Without the reader the writer's thread fails with EPIPE; SIGPIPE must not kill the process.
  writer.write(numbered(2));
  const auto start = std::chrono::steady_clock::now();
  writer.close();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(500));
  EXPECT_TRUE(writer.closed());
  EXPECT_FALSE(writer.write(numbered(3)));
}

TEST(ProgressPipe, AStalledReaderNeverBlocksTheWriterAndLearnsWhatWasDropped) {
  auto [read_end, write_end] = make_pipe();
  ProgressWriterOptions options;
  options.buffer_limit = 256 << 10;
  options.close_grace = std::chrono::milliseconds(300);
  ProgressWriter writer(std::move(write_end), options);
  // Far more than the pipe and the buffer hold, while nobody reads.
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 2000; ++i) EXPECT_TRUE(writer.write(numbered(i % 50)));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  EXPECT_GT(writer.dropped(), 0u);
  // The reader comes back: what was buffered arrives, then a note about the gap.
  std::thread consumer([&, fd = read_end.get()] {
    std::string all;
    char buffer[65536];
    ssize_t n;
    while ((n = ::read(fd, buffer, sizeof buffer)) > 0) all.append(buffer, static_cast<size_t>(n));
    // One note per gap; together they count every event dropped.
    uint64_t noted = 0;
    const std::string note = "\"progress: ";
    for (size_t at = all.find(note); at != std::string::npos; at = all.find(note, at + 1)) {
      noted += std::stoull(all.substr(at + note.size()));
      EXPECT_EQ(all.compare(all.find(' ', at + note.size()), 45, " events dropped, the client reads too slowly\""),
                0);
    }
    EXPECT_EQ(noted, writer.dropped());
  });
  writer.write(numbered(7));
  writer.close();
  consumer.join();
}

TEST(ProgressPipe, CloseGivesUpOnAReaderThatTakesNothing) {
  auto [read_end, write_end] = make_pipe();
  ProgressWriterOptions options;
  options.close_grace = std::chrono::milliseconds(300);
  ProgressWriter writer(std::move(write_end), options);
  for (int i = 0; i < 200; ++i) writer.write(numbered(50));
  const auto start = std::chrono::steady_clock::now();
  writer.close();
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_GE(took, std::chrono::milliseconds(300));
  EXPECT_LT(took, std::chrono::seconds(2));
  EXPECT_TRUE(writer.closed());
}

TEST(ProgressPipe, TheCancelFdStopsTheWriterAtOnce) {
  auto [read_end, write_end] = make_pipe();
  CancelSignal cancel;
  ProgressWriterOptions options;
  options.cancel_fd = cancel.fd();
  options.close_grace = std::chrono::seconds(30);
  ProgressWriter writer(std::move(write_end), options);
  for (int i = 0; i < 200; ++i) writer.write(numbered(50));
  cancel.cancel();
  const auto start = std::chrono::steady_clock::now();
  writer.close();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
}

TEST(ProgressPipe, ReaderTimesOutAndReturnsALastLineWithoutNewline) {
  auto [read_end, write_end] = make_pipe();
  ProgressReader reader(std::move(read_end));
  std::string line;
  EXPECT_EQ(reader.read_line(line, std::chrono::milliseconds(10)), ProgressReader::Result::timeout);
  ASSERT_EQ(::write(write_end.get(), "{}\n\n{\"vert", 10), 10);
  EXPECT_EQ(reader.read_line(line, std::chrono::milliseconds(10)), ProgressReader::Result::line);
  EXPECT_EQ(line, "{}");
  EXPECT_EQ(reader.read_line(line, std::chrono::milliseconds(10)), ProgressReader::Result::line);
  EXPECT_EQ(line, "");
  EXPECT_EQ(reader.read_line(line, std::chrono::milliseconds(10)), ProgressReader::Result::timeout);
  ASSERT_EQ(::write(write_end.get(), "exes\":[]}", 9), 9);
  write_end.reset();
  EXPECT_EQ(reader.read_line(line), ProgressReader::Result::line);
  EXPECT_EQ(line, "{\"vertexes\":[]}");
  EXPECT_EQ(reader.read_line(line), ProgressReader::Result::end);
}

TEST(ProgressPipe, NextSkipsBlankLinesAndEndsAtEof) {
  auto [read_end, write_end] = make_pipe();
  ProgressReader reader(std::move(read_end));
  const std::string text = "\n{\"vertexes\":[{\"digest\":\"a\"}]}\n  \n";
  ASSERT_EQ(::write(write_end.get(), text.data(), text.size()), static_cast<ssize_t>(text.size()));
  write_end.reset();
  auto s = reader.next();
  ASSERT_TRUE(s);
  EXPECT_EQ(s->vertexes.at(0).digest, "a");
  EXPECT_FALSE(reader.next());
}

}  // namespace
}  // namespace kbuild::progress
