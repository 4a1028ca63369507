#include "cli/progress/renderer.h"

#include <sys/ioctl.h>
#include <termios.h>

#include <algorithm>
#include <map>

#include "cli/progress/plain_renderer.h"
#include "cli/progress/tty_renderer.h"
#include "common/error.h"

namespace kbuild::progress {

namespace {

// `--progress=rawjson`: each event as the JSON line Go's json.Encoder writes.
class RawJsonRenderer final : public Renderer {
 public:
  explicit RawJsonRenderer(std::ostream& out) : out_(out) {}
  void finish() override {}

 protected:
  void on_update(const SolveStatus& status) override {
    out_ << to_json(status) << '\n';
    out_.flush();
  }

 private:
  std::ostream& out_;
};

// `--progress=quiet`: nothing at all while building.
class QuietRenderer final : public Renderer {
 public:
  void finish() override {}

 protected:
  void on_update(const SolveStatus&) override {}
};

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

// strconv.Atoi: optional sign and decimal digits.
std::optional<int64_t> parse_int(std::string_view s) {
  if (s.empty()) return std::nullopt;
  bool negative = false;
  if (s[0] == '+' || s[0] == '-') {
    negative = s[0] == '-';
    s.remove_prefix(1);
  }
  if (s.empty() || s.size() > 18) return std::nullopt;
  int64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
  }
  return negative ? -v : v;
}

// One CSV record with `separator` between fields and RFC 4180 double quotes; nullopt if malformed.
std::optional<std::vector<std::string>> csv_fields(std::string_view s, char separator) {
  std::vector<std::string> fields;
  size_t i = 0;
  while (true) {
    std::string field;
    if (i < s.size() && s[i] == '"') {
      ++i;
      while (true) {
        if (i >= s.size()) return std::nullopt;
        if (s[i] == '"') {
          if (i + 1 < s.size() && s[i + 1] == '"') {
            field += '"';
            i += 2;
            continue;
          }
          ++i;
          break;
        }
        field += s[i++];
      }
      if (i < s.size() && s[i] != separator) return std::nullopt;
    } else {
      const size_t end = s.find(separator, i);
      field = std::string(s.substr(i, end == std::string_view::npos ? std::string_view::npos : end - i));
      if (field.find('"') != std::string::npos) return std::nullopt;
      i = end == std::string_view::npos ? s.size() : end;
    }
    fields.push_back(std::move(field));
    if (i >= s.size()) break;
    ++i;  // the separator
  }
  return fields;
}

const std::map<std::string, std::string>& term_color_map() {
  static const std::map<std::string, std::string> colors = {
      {"default", "\x1b[39m"},       {"black", "\x1b[30m"},        {"blue", "\x1b[34m"},
      {"cyan", "\x1b[36m"},          {"green", "\x1b[32m"},        {"magenta", "\x1b[35m"},
      {"red", "\x1b[31m"},           {"white", "\x1b[37m"},        {"yellow", "\x1b[33m"},
      {"light-black", "\x1b[90m"},   {"light-blue", "\x1b[94m"},   {"light-cyan", "\x1b[96m"},
      {"light-green", "\x1b[92m"},   {"light-magenta", "\x1b[95m"}, {"light-red", "\x1b[91m"},
      {"light-white", "\x1b[97m"},   {"light-yellow", "\x1b[93m"},
  };
  return colors;
}

// "r,g,b" as aec's 8-bit colour; nullopt unless three integers in 0..255.
std::optional<std::string> read_rgb(std::string_view v) {
  const auto fields = csv_fields(v, ',');
  if (!fields || fields->size() != 3) return std::nullopt;
  int rgb[3];
  for (int i = 0; i < 3; ++i) {
    const auto n = parse_int((*fields)[static_cast<size_t>(i)]);
    if (!n || *n < 0 || *n > 255) return std::nullopt;
    rgb[i] = static_cast<int>(*n);
  }
  const int code = 16 + 36 * (rgb[0] / 43) + 6 * (rgb[1] / 43) + rgb[2] / 43;
  return "\x1b[38;5;" + std::to_string(code) + "m";
}

// BUILDKIT_COLORS="run=green:warning=yellow:error=red:cancel=255,165,0"; bad entries are skipped.
void apply_buildkit_colors(TtyColors& colors, std::string_view env) {
  const auto fields = csv_fields(env, ':');
  if (!fields) return;
  for (const std::string& field : *fields) {
    const size_t eq = field.find('=');
    if (eq == std::string::npos) continue;
    const std::string key = lower(field.substr(0, eq));
    const std::string value = field.substr(eq + 1);
    if (value.find('=') != std::string::npos) continue;
    std::optional<std::string> color;
    if (auto it = term_color_map().find(lower(value)); it != term_color_map().end())
      color = it->second;
    else if (value.find(',') != std::string::npos)
      color = read_rgb(value);
    if (!color) continue;
    if (key == "run")
      colors.run = color;
    else if (key == "cancel")
      colors.cancel = color;
    else if (key == "error")
      colors.error = color;
    else if (key == "warning")
      colors.warning = color;
  }
}

bool same_warning(VertexWarning a, VertexWarning b) {
  // buildx hashes warnings without their vertex and LLB definition to drop repeats.
  a.vertex.clear();
  b.vertex.clear();
  if (a.source_info) a.source_info->definition = nullptr;
  if (b.source_info) b.source_info->definition = nullptr;
  return a == b;
}

}  // namespace

const char* display_mode_name(DisplayMode mode) {
  switch (mode) {
    case DisplayMode::tty: return "tty";
    case DisplayMode::plain: return "plain";
    case DisplayMode::rawjson: return "rawjson";
    case DisplayMode::quiet: return "quiet";
  }
  return "?";
}

DisplayChoice choose_display_mode(std::string_view progress_flag, bool quiet_flag, bool stderr_is_terminal,
                                  std::optional<std::string_view> buildkit_progress_env) {
  // buildx's buildOptions.toDisplayMode.
  std::string mode(progress_flag);
  bool quiet = quiet_flag;
  if (mode == "quiet") quiet = true;
  if (mode == "none") mode = "quiet";  // in buildx "quiet" means printing the image ID at the end
  DisplayChoice choice{DisplayMode::quiet, false, true};
  if (quiet) {
    if (mode != "auto" && mode != "quiet")
      throw Error(ErrorKind::user, "progress=" + std::string(progress_flag) + " and quiet cannot be used together");
    choice.print_image_id = true;
    choice.print_warnings = false;
    return choice;
  }
  // Warnings follow the mode asked on the command line, not the one BUILDKIT_PROGRESS picks.
  choice.print_warnings = mode != "quiet" && mode != "rawjson";
  // progress.NewPrinter, then progressui.NewDisplay.
  if (buildkit_progress_env && !buildkit_progress_env->empty() && mode == "auto") mode = *buildkit_progress_env;
  if (mode == "auto" || mode == "tty" || mode.empty()) {
    if (stderr_is_terminal) {
      choice.mode = DisplayMode::tty;
      return choice;
    }
    if (mode == "tty") throw Error(ErrorKind::user, "failed to get console: provided file is not a console");
    mode = "plain";
  }
  if (mode == "plain")
    choice.mode = DisplayMode::plain;
  else if (mode == "rawjson")
    choice.mode = DisplayMode::rawjson;
  else if (mode == "quiet")
    choice.mode = DisplayMode::quiet;
  else
    throw Error(ErrorKind::user, "invalid progress mode " + mode);
  return choice;
}

DisplayOptions display_options_from_env(const std::function<std::optional<std::string>(const char*)>& getenv) {
  DisplayOptions options;
  if (auto v = getenv("PROGRESS_NO_TRUNC"); v && *v == "0") options.truncate_names = true;
  if (auto v = getenv("TTY_DISPLAY_RATE"); v && !v->empty()) {
    if (auto ms = parse_int(*v); ms && *ms > 0) {
      options.display_interval = std::chrono::milliseconds(*ms);
      options.tick_interval = std::chrono::milliseconds(*ms);
    }
  }
  // BuildKit's progressui init(): NO_COLOR returns early, before the colours and log lines.
  if (auto v = getenv("NO_COLOR"); v && !v->empty()) {
    options.colors = TtyColors{std::nullopt, std::nullopt, std::nullopt, std::nullopt};
    return options;
  }
  if (auto v = getenv("BUILDKIT_COLORS")) apply_buildkit_colors(options.colors, *v);
  if (auto v = getenv("BUILDKIT_TTY_LOG_LINES"); v && !v->empty()) {
    if (auto n = parse_int(*v); n && *n > 0 && *n < 100000) options.tty_log_lines = static_cast<int>(*n);
  }
  return options;
}

TerminalSize terminal_size_of(int fd) {
  winsize ws{};
  if (::ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 && ws.ws_row > 0) return {ws.ws_col, ws.ws_row};
  return {};
}

void Renderer::update(const SolveStatus& status) {
  for (const VertexWarning& w : status.warnings) {
    const bool seen = std::any_of(warnings_.begin(), warnings_.end(), [&](const VertexWarning& o) { return same_warning(o, w); });
    if (!seen) warnings_.push_back(w);
  }
  on_update(status);
}

std::unique_ptr<Renderer> make_renderer(DisplayMode mode, std::ostream& out, const DisplayOptions& options,
                                        const Clock& clock, std::function<TerminalSize()> terminal_size) {
  switch (mode) {
    case DisplayMode::tty:
      return std::make_unique<TtyRenderer>(out, options, clock, std::move(terminal_size));
    case DisplayMode::plain:
      return std::make_unique<PlainRenderer>(out, options, clock);
    case DisplayMode::rawjson:
      return std::make_unique<RawJsonRenderer>(out);
    case DisplayMode::quiet:
      return std::make_unique<QuietRenderer>();
  }
  return std::make_unique<QuietRenderer>();
}

void run_display(ProgressReader& reader, Renderer& renderer, std::chrono::milliseconds tick,
                 const std::function<bool(const SolveStatus&)>& divert) {
  using std::chrono::steady_clock;
  auto deadline = steady_clock::now() + tick;
  std::string line;
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady_clock::now());
    switch (reader.read_line(line, std::max(left, std::chrono::milliseconds(0)))) {
      case ProgressReader::Result::end:
        return;
      case ProgressReader::Result::timeout:
        renderer.refresh();
        break;
      case ProgressReader::Result::line:
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        if (SolveStatus status = parse_solve_status(line); !divert || !divert(status)) renderer.update(status);
        break;
    }
    deadline = steady_clock::now() + tick;
  }
}

bool RateLimiter::allow(const Timestamp& now) {
  double tokens = 1;
  if (last_) {
    const Duration elapsed = now < *last_ ? Duration(0) : now - *last_;
    const double rate = 1.0 / seconds_of(interval_);
    tokens = std::min(1.0, tokens_ + seconds_of(elapsed) * rate);
  }
  if (tokens < 1) return false;
  tokens_ = tokens - 1;
  last_ = now;
  return true;
}

}  // namespace kbuild::progress
