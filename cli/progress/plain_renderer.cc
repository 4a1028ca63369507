#include "cli/progress/plain_renderer.h"

#include <algorithm>

#include "cli/progress/units.h"

namespace kbuild::progress {

namespace {

// BuildKit's pacing of the plain output (progressui/printer.go).
constexpr Duration kAntiFlicker = std::chrono::seconds(5);
constexpr Duration kMaxDelay = std::chrono::seconds(10);
constexpr Duration kMinTimeDelta = std::chrono::seconds(5);
constexpr double kMinProgressDelta = 0.05;

std::string limit_string(const std::string& s, size_t limit) {
  return s.size() > limit ? s.substr(0, limit) + "..." : s;
}

}  // namespace

PlainRenderer::PlainRenderer(std::ostream& out, const DisplayOptions& options, const Clock& clock)
    : out_(out),
      trace_(clock, false),
      limiter_(options.display_interval),
      desc_(options.text_desc),
      truncate_names_(options.truncate_names) {}

void PlainRenderer::flush() {
  if (buffer_.empty()) return;
  out_ << buffer_;
  out_.flush();
  buffer_.clear();
}

void PlainRenderer::on_update(const SolveStatus& status) {
  trace_.update(status, 80);
  if (!limiter_.allow(trace_.clock().now())) return;
  refresh();
}

void PlainRenderer::refresh() {
  print();
  flush();
}

void PlainRenderer::finish() {
  print();
  trace_.print_error_logs(buffer_);
  flush();
}

std::vector<std::string> PlainRenderer::in_order(const std::set<std::string>& digests) const {
  // Go iterates a map here, in random order; creation order is the deterministic stand-in.
  std::vector<std::string> out(digests.begin(), digests.end());
  std::stable_sort(out.begin(), out.end(), [&](const std::string& a, const std::string& b) {
    return trace_.find(a)->order < trace_.find(b)->order;
  });
  return out;
}

std::vector<std::string> PlainRenderer::sort_completed(const std::set<std::string>& digests) const {
  std::vector<std::string> out = in_order(digests);
  std::stable_sort(out.begin(), out.end(), [&](const std::string& a, const std::string& b) {
    return *trace_.find(a)->most_recent_interval()->stop < *trace_.find(b)->most_recent_interval()->stop;
  });
  return out;
}

void PlainRenderer::print() {
  std::set<std::string> completed, rest;
  for (const std::string& digest : trace_.updates) {
    const TraceVertex* v = trace_.find(digest);
    if (!v || v->vtx.progress_group || v->hidden) continue;  // group members print as their group
    (v->is_completed() ? completed : rest).insert(digest);
  }

  const std::string current = current_;
  // Finished vertices first, the one on screen before the others.
  if (completed.contains(current)) print_vertex(current);
  for (const std::string& digest : sort_completed(completed))
    if (digest != current) print_vertex(digest);

  if (rest.empty()) {
    if (!current.empty()) {
      const TraceVertex* v = trace_.find(current);
      if (v && v->is_started() && !v->is_completed()) return;
    }
    // Make any open vertex the active one.
    for (const auto& [digest, v] : trace_.by_digest()) {
      if (v->is_started() && !v->is_completed() && !v->vtx.progress_group && !v->hidden) {
        print_vertex(digest);
        return;
      }
    }
    return;
  }

  if (rest.contains(current)) print_vertex(current);

  // Share the output between running vertices by how fast each produces it.
  struct Stat {
    Duration block_time;
    double speed;
    double share = 0;
    bool over_limit;
  };
  std::map<std::string, Stat> stats;
  const Timestamp now = trace_.clock().now();
  double sum = 0;
  std::string max;
  if (!current.empty()) rest.insert(current);
  const std::vector<std::string> running = in_order(rest);
  for (const std::string& digest : running) {
    const TraceVertex* v = trace_.find(digest);
    if (!v || !v->last_block_time) continue;
    const Duration tm = now - *v->last_block_time;
    const double speed = static_cast<double>(v->count) / seconds_of(tm);
    const bool over_limit = tm > kMaxDelay && digest != current;
    stats[digest] = Stat{tm, speed, 0, over_limit};
    sum += speed;
    if (over_limit || max.empty() || stats[max].speed < speed) max = digest;
  }
  for (auto& [digest, stat] : stats) stat.share = stat.speed / sum;

  if (completed.contains(current) || current.empty()) {
    print_vertex(max);
    return;
  }
  // Show vertices that waited too long.
  for (const std::string& digest : running) {
    auto it = stats.find(digest);
    if (it != stats.end() && it->second.over_limit) {
      print_vertex(digest);
      return;
    }
  }
  // Fair split between vertices.
  auto it = stats.find(current);
  if (it == stats.end()) return;
  if (1.0 / (1.0 - it->second.share) * seconds_of(kAntiFlicker) < seconds_of(it->second.block_time)) print_vertex(max);
}

void PlainRenderer::print_vertex(const std::string& digest) {
  TraceVertex* v = trace_.find(digest);
  if (!v) return;
  if (v->index == 0) v->index = ++next_index_;
  if (digest != current_) print_header(*v);
  const bool open_status = print_statuses(*v);
  const std::string prefix = "#" + std::to_string(v->index) + " ";
  for (; v->warning_idx < v->warnings.size(); ++v->warning_idx)
    buffer_ += prefix + "WARN: " + v->warnings[v->warning_idx].short_text + "\n";
  print_logs(*v);

  current_ = digest;
  if (v->is_completed() && !open_status) {
    current_.clear();
    v->count = 0;
    print_result(*v);
  }
  trace_.updates.erase(digest);
}

void PlainRenderer::print_header(TraceVertex& v) {
  if (!current_.empty()) {
    // The vertex on screen so far is interrupted: close its open line and say it goes on.
    TraceVertex* old = trace_.find(current_);
    if (old->logs_partial) buffer_ += "\n";
    old->logs_offset = 0;
    old->count = 0;
    buffer_ += "#" + std::to_string(old->index) + " ...\n";
  }
  if (not_first_) {
    buffer_ += "\n";
  } else {
    if (!desc_.empty()) buffer_ += "#0 " + desc_ + "\n\n";
    not_first_ = true;
  }
  buffer_ += "#" + std::to_string(v.index) + " " + (truncate_names_ ? limit_string(v.vtx.name, 72) : v.vtx.name) + "\n";
}

bool PlainRenderer::print_statuses(TraceVertex& v) {
  // Remote cache loading can produce status updates without an active vertex.
  bool open_status = false;
  for (const VertexStatus* s : v.statuses) {
    if (!v.status_updates.contains(s->id)) continue;
    if (auto last = last_.find(s->id); last != last_.end() && !s->completed) {
      double progress_delta = 0;
      if (s->total > 0)
        progress_delta = static_cast<double>(s->current - last->second.current) / static_cast<double>(s->total);
      const Duration time_delta = s->timestamp - last->second.timestamp;
      if (progress_delta < kMinProgressDelta && time_delta < kMinTimeDelta) continue;
    }
    last_[s->id] = LastStatus{s->current, s->timestamp};

    std::string bytes;
    if (s->total != 0)
      bytes = " " + format_bytes(s->current) + " / " + format_bytes(s->total);
    else if (s->current != 0)
      bytes = " " + format_bytes(s->current);
    std::string tm;
    const Timestamp end = s->completed ? *s->completed : s->timestamp;
    if (s->started) {
      const double diff = seconds_of(end - *s->started);
      if (diff > 0.01) tm = " " + format_fixed(diff, 1) + "s";
    }
    if (s->completed)
      tm += " done";
    else
      open_status = true;
    buffer_ += "#" + std::to_string(v.index) + " " + s->id + bytes + tm + "\n";
  }
  v.status_updates.clear();
  return open_status;
}

void PlainRenderer::print_logs(TraceVertex& v) {
  for (size_t i = 0; i < v.logs.size(); ++i) {
    std::string line = v.logs[i];
    if (i == 0 && v.logs_offset != 0) {
      // The start of this line is already on screen.
      line = line.substr(v.logs_offset);
      buffer_ += line;
    } else {
      buffer_ += "#" + std::to_string(v.index) + " " + line;
    }
    if (i != v.logs.size() - 1 || !v.logs_partial) buffer_ += "\n";
    // BuildKit's ring keeps what was printed, and moves on only while no line is open.
    if (!v.logs_buffer) v.logs_buffer.emplace();
    v.logs_buffer->set(line);
    if (!v.logs_partial) v.logs_buffer->advance();
  }
  if (v.logs.empty()) return;
  if (v.logs_partial) {
    v.logs.erase(v.logs.begin(), v.logs.end() - 1);
    v.logs_offset = v.logs[0].size();
  } else {
    v.logs.clear();
    v.logs_offset = 0;
  }
}

void PlainRenderer::print_result(TraceVertex& v) {
  const std::string prefix = "#" + std::to_string(v.index) + " ";
  if (v.logs_partial) buffer_ += "\n";
  if (!v.vtx.error.empty()) {
    buffer_ += is_canceled_error(v.vtx.error) ? prefix + "CANCELED\n" : prefix + "ERROR: " + v.vtx.error + "\n";
  } else if (v.vtx.cached) {
    buffer_ += prefix + "CACHED\n";
  } else {
    std::string tm;
    std::vector<Interval> all;
    for (const auto& [key, ival] : v.intervals) all.push_back(ival);
    const std::vector<Interval> merged = merge_intervals(std::move(all));
    if (!merged.empty()) {
      double dt = 0;
      for (const Interval& ival : merged) dt += seconds_of(ival.duration(trace_.clock().now()));
      tm = " " + format_fixed(dt, 1) + "s";
    }
    buffer_ += prefix + "DONE" + tm + "\n";
  }
}

}  // namespace kbuild::progress
