#include "cli/progress/trace.h"

#include <algorithm>

#include "cli/progress/units.h"

namespace kbuild::progress {

namespace {

class SystemClock final : public Clock {
 public:
  Timestamp now() const override { return Timestamp::now(); }
};

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::optional<Timestamp> add_time(const std::optional<Timestamp>& t, Duration d) {
  if (!t) return std::nullopt;
  return *t + d;
}

}  // namespace

bool is_canceled_error(std::string_view error) { return ends_with(error, "context canceled"); }

const Clock& system_clock() {
  static const SystemClock clock;
  return clock;
}

Duration Interval::duration(const Timestamp& now) const {
  if (!start) return Duration(0);
  if (!stop) return now - *start;
  return *stop - *start;
}

std::vector<Interval> merge_intervals(std::vector<Interval> intervals) {
  std::erase_if(intervals, [](const Interval& i) { return !i.start; });
  if (intervals.empty()) return {};
  std::stable_sort(intervals.begin(), intervals.end(),
                   [](const Interval& a, const Interval& b) { return *a.start < *b.start; });
  std::vector<Interval> merged;
  Interval cur = intervals[0];
  for (size_t i = 1; i < intervals.size(); ++i) {
    const Interval& next = intervals[i];
    if (!cur.stop) {
      // An interval that never stops swallows everything after it.
      merged.push_back(cur);
      return merged;
    }
    if (*cur.stop < *next.start) {
      merged.push_back(cur);
      cur = next;
      continue;
    }
    if (!next.stop) {
      merged.push_back(Interval{cur.start, std::nullopt});
      return merged;
    }
    if (*cur.stop >= *next.stop) continue;  // cur covers next
    cur = Interval{cur.start, next.stop};
  }
  merged.push_back(cur);
  return merged;
}

std::vector<std::string> LogRing::lines() const {
  std::vector<std::string> out;
  for (size_t i = 0; i < slots_.size(); ++i)
    if (const auto& slot = slots_[(pos_ + i) % slots_.size()]) out.push_back(*slot);
  return out;
}

void TraceVertex::update(int c, const Clock& clock) {
  if (count == 0) last_block_time = clock.now();
  count += c;
}

const Interval* TraceVertex::most_recent_interval() const {
  return merged_intervals.empty() ? nullptr : &merged_intervals.back();
}

bool TraceVertex::is_completed() const {
  const Interval* i = most_recent_interval();
  return i && i->stop.has_value();
}

Trace::Trace(const Clock& clock, bool console, int tty_log_lines)
    : term_height(tty_log_lines), term_height_initial(tty_log_lines), clock_(clock), console_(console) {}

TraceVertex* Trace::find(const std::string& digest) const {
  auto it = by_digest_.find(digest);
  return it == by_digest_.end() ? nullptr : it->second;
}

void Trace::set_digest(const std::string& digest, TraceVertex* v) {
  auto [it, inserted] = by_digest_.insert_or_assign(digest, v);
  if (inserted) {
    by_digest_order_.emplace_back(digest, v);
  } else {
    for (auto& entry : by_digest_order_)
      if (entry.first == digest) entry.second = v;
  }
}

TraceVertex* Trace::create(const std::string& digest, int term_width) {
  auto v = std::make_unique<TraceVertex>();
  v->order = storage_.size();
  if (console_) v->term = std::make_unique<Vt100>(term_height, std::max(term_width - kTermPad, 1));
  TraceVertex* raw = v.get();
  storage_.push_back(std::move(v));
  set_digest(digest, raw);
  return raw;
}

void Trace::trigger_vertex_event(const Vertex& v) {
  if (!v.started) return;
  TraceVertex* vtx = find(v.digest);
  const Vertex old = vtx->prev.value_or(Vertex{});
  bool changed = v.digest != old.digest || v.name != old.name;
  if (!old.started || !(*v.started == *old.started)) changed = true;
  // BuildKit compares the completion time by pointer, so any event carrying one is a change.
  if (v.completed) changed = true;
  if (v.cached != old.cached || v.error != old.error) changed = true;
  if (changed) {
    vtx->update(1, clock_);
    updates.insert(v.digest);
  }
  vtx->prev = v;
}

void Trace::update(const SolveStatus& s, int term_width) {
  std::vector<TraceVertex*> groups;
  for (const Vertex& v : s.vertexes) {
    if (!start_time_) start_time_ = v.started;
    if (v.progress_group) {
      TraceVertex* group;
      if (auto it = groups_.find(v.progress_group->id); it != groups_.end()) {
        group = it->second;
      } else {
        group = create(v.progress_group->id, term_width);
        group->vtx.digest = v.progress_group->id;
        group->vtx.name = v.progress_group->name;
        group->hidden = true;
        group->is_group = true;
        groups_[v.progress_group->id] = group;
      }
      if (std::find(groups.begin(), groups.end(), group) == groups.end()) groups.push_back(group);
      if (auto it = group->group_member_index.find(v.digest); it != group->group_member_index.end()) {
        group->group_members[it->second] = v;
      } else {
        group->group_member_index[v.digest] = group->group_members.size();
        group->group_members.push_back(v);
      }
      set_digest(v.digest, group);
      continue;
    }
    TraceVertex* prev = find(v.digest);
    const bool prev_started = prev && prev->is_started();
    TraceVertex* cur = prev ? prev : create(v.digest, term_width);
    trigger_vertex_event(v);
    if (v.started && !prev_started) {
      if (local_time_diff_.count() == 0) local_time_diff_ = clock_.now() - *v.started;
      vertexes_.push_back(cur);
    }
    // A repeated announcement of a started vertex without times must not reset it.
    if (!prev_started || v.started) cur->vtx = v;
    if (v.started) {
      cur->intervals[v.started->unix_nanos()] = Interval{v.started, v.completed};
      std::vector<Interval> all;
      for (const auto& [key, ival] : cur->intervals) all.push_back(ival);
      cur->merged_intervals = merge_intervals(std::move(all));
    }
    cur->job_cached = false;
  }
  for (TraceVertex* group : groups) update_group(*group);
  for (const VertexStatus& st : s.statuses) {
    TraceVertex* v = find(st.vertex);
    if (!v) continue;
    v->job_cached = false;
    VertexStatus* prev = nullptr;
    if (auto it = v->by_id.find(st.id); it != v->by_id.end()) {
      prev = it->second.get();
    } else {
      v->by_id[st.id] = std::make_unique<VertexStatus>(st);
    }
    VertexStatus* status = v->by_id[st.id].get();
    if (st.started && (!prev || !prev->started)) v->statuses.push_back(status);
    *status = st;
    v->status_updates.insert(st.id);
    updates.insert(v->vtx.digest);
    v->update(1, clock_);
  }
  for (const VertexWarning& w : s.warnings) {
    TraceVertex* v = find(w.vertex);
    if (!v) continue;
    v->warnings.push_back(w);
    v->update(1, clock_);
  }
  for (const VertexLog& l : s.logs) add_log(l, term_width);
}

void Trace::update_group(TraceVertex& g) {
  Vertex next = g.vtx;
  next.cached = true;
  const bool already_started = g.is_started();
  const bool was_hidden = g.hidden;
  bool changed = false, newly_started = false, newly_revealed = false;
  for (const Vertex& member : g.group_members) {
    if (member.started) {
      const Interval ival{member.started, member.completed};
      Interval& slot = g.intervals[member.started->unix_nanos()];
      if (!(ival == slot)) changed = true;
      if (!already_started) newly_started = true;
      slot = ival;
      if (!member.progress_group->weak) g.hidden = false;
    }
    next.cached = next.cached && member.cached;
    if (next.error.empty())
      next.error = member.error;
    else
      g.hidden = false;
  }
  if (g.vtx.cached != next.cached || g.vtx.error != next.error) changed = true;
  g.vtx = next;
  if (!g.hidden && was_hidden) changed = newly_revealed = true;
  std::vector<Interval> all;
  for (const auto& [key, ival] : g.intervals) all.push_back(ival);
  g.merged_intervals = merge_intervals(std::move(all));

  if (newly_started && local_time_diff_.count() == 0)
    local_time_diff_ = clock_.now() - *g.merged_intervals[0].start;
  if (g.hidden) return;
  if (newly_revealed) vertexes_.push_back(&g);
  if (changed) {
    g.update(1, clock_);
    updates.insert(g.vtx.digest);
  }
  g.job_cached = false;
}

void Trace::add_log(const VertexLog& l, int term_width) {
  TraceVertex* v = find(l.vertex);
  if (!v) return;
  v->job_cached = false;
  if (v->term) {
    // BuildKit compares the emulator's width with the full terminal width, so this always runs.
    if (v->term->width() != term_width) {
      term_height = std::max(kTermHeightMin, std::min(term_height_initial, v->term->height() - kTermHeightMin - 1));
      v->term->resize(term_height, term_width - kTermPad);
    }
    v->term_bytes += l.data.size();
    v->term->write(l.data);
  }
  // Split on newlines; a chunk not ending in one leaves its last line open for the next chunk.
  bool complete = false;
  if (!l.data.empty()) {
    std::string_view rest = l.data;
    for (size_t i = 0;; ++i) {
      if (rest.empty()) {
        complete = true;
        break;
      }
      const size_t nl = rest.find('\n');
      const std::string_view line = rest.substr(0, nl);
      if (v->logs_partial && !v->logs.empty() && i == 0) {
        v->logs.back() += line;
      } else {
        Duration ts(0);
        if (const Interval* ival = v->most_recent_interval()) ts = l.timestamp - *ival->start;
        const double sec = seconds_of(ts);
        const int precision = sec < 10 ? 3 : sec < 100 ? 2 : 1;
        v->logs.push_back(format_fixed(sec, precision) + " " + std::string(line));
      }
      if (nl == std::string_view::npos) break;
      rest.remove_prefix(nl + 1);
    }
  }
  v->logs_partial = !complete;
  updates.insert(v->vtx.digest);
  v->update(1, clock_);
}

void Trace::print_error_logs(std::string& out) {
  for (TraceVertex* v : vertexes_) {
    if (v->vtx.error.empty() || is_canceled_error(v->vtx.error)) continue;
    out += "------\n";
    out += " > " + v->vtx.name + ":\n";
    // The tty display keeps every line; the plain printer only the last ones, in the ring.
    for (const std::string& l : v->logs) out += l + "\n";
    if (v->logs_buffer)
      for (const std::string& l : v->logs_buffer->lines()) out += l + "\n";
    out += "------\n";
  }
}

DisplayInfo Trace::display_info() {
  DisplayInfo d;
  const Timestamp now = clock_.now();
  d.start_time = start_time_ ? *start_time_ + local_time_diff_ : now;
  d.count_total = static_cast<int>(by_digest_order_.size());
  for (const auto& [digest, v] : by_digest_order_) {
    if (v->vtx.progress_group || v->hidden) {
      --d.count_total;
      continue;
    }
    if (v->is_completed()) ++d.count_completed;
  }

  for (TraceVertex* v : vertexes_) {
    if (!v->job_cached) {
      std::vector<std::unique_ptr<Job>> jobs;
      auto j = std::make_unique<Job>();
      j->name = v->vtx.name;
      std::replace(j->name.begin(), j->name.end(), '\t', ' ');
      j->vertex = v;
      j->is_completed = true;
      for (const auto& [key, ival] : v->intervals) {
        j->intervals.push_back(Interval{add_time(ival.start, local_time_diff_), add_time(ival.stop, local_time_diff_)});
        if (!ival.stop) j->is_completed = false;
      }
      j->intervals = merge_intervals(std::move(j->intervals));
      if (!v->vtx.error.empty()) {
        if (is_canceled_error(v->vtx.error)) {
          j->is_canceled = true;
          j->name = "CANCELED " + j->name;
        } else {
          j->has_error = true;
          j->name = "ERROR " + j->name;
        }
      }
      if (v->vtx.cached) j->name = "CACHED " + j->name;
      jobs.push_back(std::move(j));
      for (const VertexStatus* s : v->statuses) {
        auto sj = std::make_unique<Job>();
        sj->intervals = {Interval{add_time(s->started, local_time_diff_), add_time(s->completed, local_time_diff_)}};
        sj->is_completed = s->completed.has_value();
        sj->name = "=> " + s->id;
        if (s->total != 0)
          sj->status = format_bytes(s->current) + " / " + format_bytes(s->total);
        else if (s->current != 0)
          sj->status = format_bytes(s->current);
        jobs.push_back(std::move(sj));
      }
      for (const VertexWarning& w : v->warnings) {
        Interval recent;
        if (const Interval* i = v->most_recent_interval()) recent = *i;
        auto wj = std::make_unique<Job>();
        wj->intervals = {Interval{add_time(recent.start, local_time_diff_), add_time(recent.stop, local_time_diff_)}};
        wj->name = "WARN: " + w.short_text;
        wj->is_canceled = true;
        jobs.push_back(std::move(wj));
      }
      v->jobs = std::move(jobs);
      v->job_cached = true;
    }
    for (const auto& j : v->jobs) d.jobs.push_back(j.get());
  }
  return d;
}

}  // namespace kbuild::progress
