// What the plain and tty displays know about a build so far: BuildKit's progressui `trace`,
// fed SolveStatus events and read by the printers. Kept as BuildKit keeps it (vertices in
// start order, intervals per vertex, log lines with their time prefix, the last log lines of
// each vertex for the error summary) because the output depends on every detail of it.
#pragma once

#include <array>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "dbus/progress_events.h"
#include "cli/progress/vt100.h"

namespace kbuild::progress {

// The time source of a display, so tests can run one on fixed times.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual Timestamp now() const = 0;
};

// Wall-clock time.
const Clock& system_clock();

// A span a vertex or status was running; an open one has no stop.
struct Interval {
  std::optional<Timestamp> start;
  std::optional<Timestamp> stop;

  // Go's interval.duration(): 0 without a start, up to `now` without a stop.
  Duration duration(const Timestamp& now) const;
  bool operator==(const Interval&) const = default;
};

// Whether a vertex error means the step was canceled (Go's context.Canceled) rather than failed:
// shown as CANCELED and left out of the error summary.
bool is_canceled_error(std::string_view error);

// Overlapping intervals joined, unstarted ones dropped, sorted by start; an open interval
// swallows everything after it (BuildKit's mergeIntervals).
std::vector<Interval> merge_intervals(std::vector<Interval> intervals);

// BuildKit's log ring: the last ten lines of a vertex, printed under its error.
class LogRing {
 public:
  void set(std::string line) { slots_[pos_] = std::move(line); }
  void advance() { pos_ = (pos_ + 1) % slots_.size(); }
  // From the current slot round the ring, skipping empty slots.
  std::vector<std::string> lines() const;

 private:
  std::array<std::optional<std::string>, 10> slots_;
  size_t pos_ = 0;
};

struct TraceVertex;

// One line of the tty display.
struct Job {
  std::vector<Interval> intervals;
  bool is_completed = false;
  std::string name;
  std::string status;
  bool has_error = false;
  bool has_warning = false;
  bool is_canceled = false;
  TraceVertex* vertex = nullptr;  // set for a vertex's own line, not for its statuses
  bool show_term = false;
};

struct TraceVertex {
  Vertex vtx;     // the latest event for it
  size_t order;   // creation order, for deterministic iteration where Go iterates a map

  std::vector<VertexStatus*> statuses;  // in the order they started
  std::unordered_map<std::string, std::unique_ptr<VertexStatus>> by_id;
  int index = 0;  // "#N" in plain output, given when first printed

  std::vector<std::string> logs;  // lines with their "0.123 " prefix
  bool logs_partial = false;
  size_t logs_offset = 0;
  std::optional<LogRing> logs_buffer;
  std::optional<Vertex> prev;
  std::optional<Timestamp> last_block_time;
  int count = 0;
  std::set<std::string> status_updates;

  std::vector<VertexWarning> warnings;
  size_t warning_idx = 0;

  std::vector<std::unique_ptr<Job>> jobs;
  bool job_cached = false;

  std::unique_ptr<Vt100> term;
  size_t term_bytes = 0;
  int term_count = 0;

  std::map<int64_t, Interval> intervals;  // keyed by start in Unix nanoseconds
  std::vector<Interval> merged_intervals;
  bool hidden = false;

  // A progress group stands for its members, which are not shown on their own.
  bool is_group = false;
  std::vector<Vertex> group_members;
  std::unordered_map<std::string, size_t> group_member_index;

  void update(int c, const Clock& clock);
  const Interval* most_recent_interval() const;
  bool is_started() const { return !merged_intervals.empty(); }
  bool is_completed() const;
};

struct DisplayInfo {
  Timestamp start_time;
  std::vector<Job*> jobs;
  int count_total = 0;
  int count_completed = 0;
};

class Trace {
 public:
  static constexpr int kTermHeightMin = 6;
  static constexpr int kTermPad = 10;

  // `console` keeps a terminal emulator per vertex for the tty display; `tty_log_lines` is
  // BUILDKIT_TTY_LOG_LINES.
  Trace(const Clock& clock, bool console, int tty_log_lines = kTermHeightMin);

  void update(const SolveStatus& status, int term_width);
  // The "------ > name: ... ------" blocks for failed vertices.
  void print_error_logs(std::string& out);
  DisplayInfo display_info();

  TraceVertex* find(const std::string& digest) const;
  // Every digest seen, in first-seen order, with the vertex that stands for it.
  const std::vector<std::pair<std::string, TraceVertex*>>& by_digest() const { return by_digest_order_; }
  const std::vector<TraceVertex*>& vertexes() const { return vertexes_; }

  // Digests with changes the plain printer has not shown yet.
  std::set<std::string> updates;

  const Clock& clock() const { return clock_; }
  int term_height = kTermHeightMin;
  int term_height_initial = kTermHeightMin;

 private:
  TraceVertex* create(const std::string& digest, int term_width);
  void set_digest(const std::string& digest, TraceVertex* v);
  void trigger_vertex_event(const Vertex& v);
  void update_group(TraceVertex& group);
  void add_log(const VertexLog& log, int term_width);

  const Clock& clock_;
  bool console_;
  std::optional<Timestamp> start_time_;
  Duration local_time_diff_{0};
  std::vector<std::unique_ptr<TraceVertex>> storage_;
  std::vector<TraceVertex*> vertexes_;
  std::unordered_map<std::string, TraceVertex*> by_digest_;
  std::vector<std::pair<std::string, TraceVertex*>> by_digest_order_;
  std::unordered_map<std::string, TraceVertex*> groups_;
};

}  // namespace kbuild::progress
