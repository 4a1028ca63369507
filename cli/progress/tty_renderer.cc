#include "cli/progress/tty_renderer.h"

#include <algorithm>

#include "cli/progress/units.h"

namespace kbuild::progress {

namespace {

constexpr std::string_view kReset = "\x1b[0m";
constexpr std::string_view kFaint = "\x1b[2m";
constexpr std::string_view kHideCursor = "\x1b[?25l";
constexpr std::string_view kShowCursor = "\x1b[?25h";

std::string cursor_up(int n) { return n == 0 ? "" : "\x1b[" + std::to_string(n) + "A"; }
std::string cursor_down(int n) { return n == 0 ? "" : "\x1b[" + std::to_string(n) + "B"; }
std::string cursor_column(int n) { return "\x1b[" + std::to_string(n) + "G"; }

// Go's fmt.Sprintf("%-[2]*[1]s %[3]s", l, w-len(r)-1, r).
std::string align(std::string_view l, std::string_view r, int w) {
  return pad_right(l, w - static_cast<int>(r.size()) - 1) + " " + std::string(r);
}

}  // namespace

std::vector<Job*> wrap_height(const std::vector<Job*>& jobs, int limit) {
  if (limit < 0) return {};
  std::vector<Job*> wrapped = jobs;
  const auto cut = static_cast<size_t>(limit);
  if (jobs.size() > cut) {
    wrapped.assign(jobs.end() - static_cast<std::ptrdiff_t>(cut), jobs.end());
    std::vector<Job*> invisible;
    for (auto it = jobs.begin(); it != jobs.end() - static_cast<std::ptrdiff_t>(cut); ++it)
      if (!(*it)->is_completed) invisible.push_back(*it);
    if (!invisible.empty()) {
      std::vector<Job*> rewrapped;
      auto l = static_cast<std::ptrdiff_t>(invisible.size());
      for (Job* j : wrapped) {
        if (!j->is_completed || l <= 0) rewrapped.push_back(j);
        --l;
      }
      const size_t freespace = wrapped.size() - rewrapped.size();
      std::vector<Job*> out(invisible.end() - static_cast<std::ptrdiff_t>(freespace), invisible.end());
      out.insert(out.end(), rewrapped.begin(), rewrapped.end());
      wrapped = std::move(out);
    }
  }
  return wrapped;
}

TtyRenderer::TtyRenderer(std::ostream& out, const DisplayOptions& options, const Clock& clock,
                         std::function<TerminalSize()> terminal_size)
    : out_(out),
      trace_(clock, true, options.tty_log_lines),
      limiter_(options.display_interval),
      terminal_size_(std::move(terminal_size)),
      phase_(options.phase),
      desc_(options.console_desc),
      colors_(options.colors) {}

TerminalSize TtyRenderer::size() const {
  TerminalSize size;
  if (terminal_size_) {
    const TerminalSize s = terminal_size_();
    if (s.width > 0 && s.height > 0) size = s;
  }
  return size;
}

void TtyRenderer::flush() {
  if (buffer_.empty()) return;
  out_ << buffer_;
  out_.flush();
  buffer_.clear();
}

void TtyRenderer::on_update(const SolveStatus& status) {
  current_size_ = size();
  trace_.update(status, current_size_.width);
  if (!limiter_.allow(trace_.clock().now())) return;
  refresh();
}

void TtyRenderer::refresh() {
  print(trace_.display_info(), current_size_.width, current_size_.height, false);
  flush();
}

void TtyRenderer::finish() {
  current_size_ = size();
  print(trace_.display_info(), current_size_.width, current_size_.height, true);
  trace_.print_error_logs(buffer_);
  flush();
}

std::vector<Job*> TtyRenderer::setup_terminals(std::vector<Job*> jobs, int height, bool all) {
  std::vector<Job*> candidates;
  int in_use = 0;
  for (Job* j : jobs) {
    if (j->vertex && j->vertex->term_bytes > 0 && !j->is_completed) candidates.push_back(j);
    if (!j->is_completed) ++in_use;
  }
  std::stable_sort(candidates.begin(), candidates.end(), [](const Job* a, const Job* b) {
    const size_t ia = a->vertex->term_bytes + static_cast<size_t>(a->vertex->term_count) * 50;
    const size_t ib = b->vertex->term_bytes + static_cast<size_t>(b->vertex->term_count) * 50;
    return ia > ib;
  });
  int free_lines = height - 2 - in_use;
  int to_hide = 0;
  trace_.term_height = std::max(Trace::kTermHeightMin,
                                std::min(trace_.term_height_initial, height - Trace::kTermHeightMin - 1));
  const int term_limit = trace_.term_height + 3;
  for (size_t i = 0; free_lines > term_limit && i < candidates.size(); ++i) {
    candidates[i]->show_term = true;
    to_hide += candidates[i]->vertex->term->used_height();
    free_lines -= term_limit;
  }
  if (!all) jobs = wrap_height(jobs, height - 2 - to_hide);
  return jobs;
}

void TtyRenderer::print(DisplayInfo d, int width, int height, bool all) {
  std::string& w = buffer_;
  const Timestamp now = trace_.clock().now();
  d.jobs = setup_terminals(std::move(d.jobs), height, all);

  // Back to the top of the previous frame (on the first, the net move is nil).
  for (int i = 0; i <= line_count_; ++i) w += cursor_up(1);
  if (!repeated_) w += cursor_down(1);
  repeated_ = true;
  w += cursor_column(0);
  w += kHideCursor;

  const std::string status =
      d.count_completed > 0 && d.count_completed == d.count_total && all ? "FINISHED" : "";
  std::string header = "[+] " + phase_ + " " + format_fixed(seconds_of(now - d.start_time), 1) + "s (" +
                       std::to_string(d.count_completed) + "/" + std::to_string(d.count_total) + ") " + status;
  header = desc_.empty() ? align(header, "", width) : align(header, desc_, width - 1);
  if (static_cast<int>(header.size()) > width) header.resize(static_cast<size_t>(std::max(width, 0)));
  w += header + "\n";

  int line_count = 0;
  for (Job* j : d.jobs) {
    if (j->intervals.empty()) continue;
    double dt = 0;
    for (const Interval& ival : j->intervals) dt += seconds_of(ival.duration(now));
    if (dt < 0.05) dt = 0;
    const std::string pfx = " => ";
    const std::string timer = " " + format_fixed(dt, 1) + "s\n";  // " %3.1fs\n": never under 3 wide
    bool show_status = false;
    int left = width - static_cast<int>(pfx.size()) - static_cast<int>(timer.size()) - 1;
    if (!j->status.empty() && left + static_cast<int>(j->status.size()) > 20) {
      show_status = true;
      left -= static_cast<int>(j->status.size()) + 1;
    }
    if (left < 12) continue;  // too small a screen to show progress
    std::string name = j->name;
    if (static_cast<int>(name.size()) > left) name.resize(static_cast<size_t>(left));
    std::string line = pfx + name;
    if (show_status) line += " " + j->status;
    line = align(line, timer, width);
    if (j->is_completed) {
      const std::optional<std::string>* color = &colors_.run;
      if (j->is_canceled)
        color = &colors_.cancel;
      else if (j->has_error)
        color = &colors_.error;
      else if (j->has_warning)
        color = &colors_.warning;
      if (*color) line = **color + line + std::string(kReset);
    }
    w += line;
    ++line_count;
    if (j->show_term) {
      Vt100& term = *j->vertex->term;
      term.resize(trace_.term_height, width - Trace::kTermPad);
      for (int y = 0; y < term.height(); ++y) {
        if (term.row_empty(y)) continue;
        w += std::string(kFaint) + " => => # " + term.row(y) + "\n" + std::string(kReset);
        ++line_count;
      }
      ++j->vertex->term_count;
      j->show_term = false;
    }
  }
  // Blank out what is left of a longer previous frame.
  if (const int diff = line_count_ - line_count; diff > 0) {
    for (int i = 0; i < diff; ++i) w += std::string(static_cast<size_t>(std::max(width, 0)), ' ') + "\n";
    w += cursor_up(diff) + cursor_column(0);
  }
  line_count_ = line_count;
  w += kShowCursor;
}

}  // namespace kbuild::progress
