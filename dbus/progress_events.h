// Progress events: BuildKit's client.SolveStatus and its parts, their JSON form exactly as buildx's
// `--progress=rawjson` prints it, and the pipe that carries them from kbuildd to kbuildctl.
#pragma once

#include <chrono>
#include <compare>
#include <condition_variable>
#include <deque>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/go_text.h"
#include "common/unique_fd.h"

namespace kbuild::progress {

using Duration = std::chrono::nanoseconds;

// A point in time as Go's time.Time carries it through JSON: the instant, plus the UTC offset it
// was written with so that a parsed time prints back unchanged. The default is Go's zero time.
struct Timestamp {
  static constexpr int64_t kGoZeroSeconds = -62135596800;  // 0001-01-01T00:00:00Z

  int64_t seconds = kGoZeroSeconds;  // since the Unix epoch
  int32_t nanos = 0;                 // 0..999'999'999
  int32_t utc_offset = 0;            // seconds east of UTC

  static Timestamp from_unix_nanos(int64_t unix_nanos);
  static Timestamp now();

  bool is_zero() const { return seconds == kGoZeroSeconds && nanos == 0; }
  // Go's UnixNano (meaningful between the years 1678 and 2262).
  int64_t unix_nanos() const;
  Timestamp operator+(Duration d) const;
  // Go's Sub: saturates instead of overflowing.
  Duration operator-(const Timestamp& other) const;
  // Instants compare as Go's Equal/Before do: the offset does not matter.
  bool operator==(const Timestamp& other) const { return seconds == other.seconds && nanos == other.nanos; }
  std::strong_ordering operator<=>(const Timestamp& other) const {
    if (auto c = seconds <=> other.seconds; c != 0) return c;
    return nanos <=> other.nanos;
  }
};

// Go's Duration.Seconds(), to the same floating-point result.
double seconds_of(Duration d);

// RFC 3339 with nanoseconds, trailing zeros trimmed, as time.Time marshals to JSON.
std::string format_rfc3339_nano(const Timestamp& t);
// The inverse; throws kbuild::Error for anything that is not an RFC 3339 time.
Timestamp parse_rfc3339(std::string_view text);

struct ProgressGroup {
  std::string id;
  std::string name;
  bool weak = false;
  bool operator==(const ProgressGroup&) const = default;
};

// One step of the build graph as the user sees it: "[2/3] COPY a /a".
struct Vertex {
  std::string digest;
  std::vector<std::string> inputs;
  std::string name;
  std::optional<Timestamp> started;
  std::optional<Timestamp> completed;
  bool cached = false;
  std::string error;
  std::optional<ProgressGroup> progress_group;
  bool operator==(const Vertex&) const = default;
};

// A counter inside a vertex: "transferring context:", a layer download, "exporting layers".
struct VertexStatus {
  std::string id;
  std::string vertex;
  std::string name;
  int64_t total = 0;
  int64_t current = 0;
  Timestamp timestamp;
  std::optional<Timestamp> started;
  std::optional<Timestamp> completed;
  bool operator==(const VertexStatus&) const = default;
};

// A chunk of a step's output (stream 1 stdout, 2 stderr); lines may be split across chunks.
struct VertexLog {
  std::string vertex;
  int stream = 0;
  std::string data;
  Timestamp timestamp;
  bool operator==(const VertexLog&) const = default;
};

struct Position {
  int32_t line = 0;
  int32_t character = 0;
  bool operator==(const Position&) const = default;
};

struct Range {
  std::optional<Position> start;
  std::optional<Position> end;
  bool operator==(const Range&) const = default;
};

struct SourceInfo {
  std::string filename;
  std::string data;
  // BuildKit's LLB definition, kept as it was read so that it prints back unchanged; null if absent.
  nlohmann::ordered_json definition;
  std::string language;
  bool operator==(const SourceInfo&) const = default;
};

// A Dockerfile lint warning attached to a vertex.
struct VertexWarning {
  std::string vertex;
  int level = 0;
  std::string short_text;  // "short" in JSON
  std::vector<std::string> detail;
  std::string url;
  std::optional<SourceInfo> source_info;
  std::vector<Range> range;
  bool operator==(const VertexWarning&) const = default;
};

// The vertex whose logs carry the classic builder's text (DOCKER_BUILDKIT=0): a build that
// sends them has no other events, and the client prints their data as it comes, on stdout.
inline constexpr std::string_view kClassicOutputVertex = "classic-builder-output";

// One progress event: what changed since the last one.
struct SolveStatus {
  std::vector<Vertex> vertexes;
  std::vector<VertexStatus> statuses;
  std::vector<VertexLog> logs;
  std::vector<VertexWarning> warnings;
  bool operator==(const SolveStatus&) const = default;
};

// The JSON object Go's encoding/json makes of a SolveStatus (no trailing newline): field order,
// omitempty, base64 bytes, RFC 3339 times and Go's string escaping (\u003c, \u0026, ...).
std::string to_json(const SolveStatus& status);
// Parses one such object; unknown fields are ignored and names match case-insensitively, as in
// Go. Throws kbuild::Error naming what is wrong.
SolveStatus parse_solve_status(std::string_view json);

std::string base64_encode(std::string_view bytes);
// Throws kbuild::Error on anything that is not padded standard base64.
std::string base64_decode(std::string_view text);

struct ProgressWriterOptions {
  // Bytes of lines waiting for a slow reader: beyond, logs and counters are dropped (vertex
  // events beyond twice as much), and a vertex "progress: N events dropped, the client reads
  // too slowly" marks the gap.
  std::size_t buffer_limit = 4 << 20;
  // How long close() waits for a reader that takes nothing before it drops what is left.
  std::chrono::milliseconds close_grace{2000};
  // Readable (an eventfd): the client has gone; stop writing at once.
  int cancel_fd = -1;
};

// The daemon's end of the progress pipe: each SolveStatus goes out as one JSON line, written by
// a thread of its own, so that a reader that is slow or stopped never blocks the build that
// reports (write() only queues, up to a bound). Safe to call from several threads. Once the
// client has gone (a broken pipe, the cancel fd), lines are dropped quietly: a build never
// fails because nobody watches it.
class ProgressWriter {
 public:
  explicit ProgressWriter(UniqueFd fd, ProgressWriterOptions options = {});
  // Closes, as close() does.
  ~ProgressWriter();
  ProgressWriter(const ProgressWriter&) = delete;
  ProgressWriter& operator=(const ProgressWriter&) = delete;

  // Queues the line; false when it will not be delivered (the reader has gone, or closed).
  bool write(const SolveStatus& status);
  // Ends the stream after what is queued went out (see close_grace): the client's reader sees
  // end of file once every copy of the fd is closed.
  void close();
  bool closed() const;
  // Events dropped so far because the reader was too slow.
  std::uint64_t dropped() const;

 private:
  void drain();
  void enqueue_gap_note();

  UniqueFd fd_;
  ProgressWriterOptions options_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;     // the writer thread: lines queued, or stop
  std::condition_variable drained_;  // close(): the queue is empty, or the reader has gone
  std::deque<std::string> queue_;    // guarded by mutex_, as everything below
  std::size_t queued_bytes_ = 0;
  std::uint64_t dropped_ = 0;
  std::uint64_t gap_ = 0;  // dropped since the last note
  std::uint64_t notes_ = 0;
  std::chrono::steady_clock::time_point last_progress_;
  bool writing_ = false;
  bool stopping_ = false;
  bool abort_ = false;
  bool gone_ = false;
  bool closed_ = false;
  std::thread thread_;
};

// The client's end: lines from the fd, one SolveStatus each.
class ProgressReader {
 public:
  enum class Result { line, timeout, end };

  explicit ProgressReader(UniqueFd fd);

  // Waits up to `timeout` (forever if negative) for a whole line, stored without its newline.
  // A last line without a newline is returned at end of stream.
  Result read_line(std::string& line, std::chrono::milliseconds timeout = std::chrono::milliseconds(-1));
  // The next event, or nullopt at end of stream. Blank lines are skipped.
  std::optional<SolveStatus> next();

  int fd() const { return fd_.get(); }

 private:
  bool take_line(std::string& line);

  UniqueFd fd_;
  std::string buffer_;
  bool eof_ = false;
};

}  // namespace kbuild::progress
