// The progress displays of `docker build` (BuildKit's progressui as buildx drives it): tty, plain,
// rawjson and quiet, the choice between them, and the loop that feeds one from the daemon's pipe.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "dbus/progress_events.h"
#include "cli/progress/trace.h"

namespace kbuild::progress {

enum class DisplayMode { tty, plain, rawjson, quiet };

const char* display_mode_name(DisplayMode mode);

struct DisplayChoice {
  DisplayMode mode;
  bool print_image_id = false;  // -q / --progress=quiet: the caller prints the image ID on stdout
  // The warnings summary follows the mode asked on the command line: BUILDKIT_PROGRESS=quiet
  // still prints it, --progress=rawjson does not.
  bool print_warnings = true;
};

// buildx's rules: --progress auto|tty|plain|rawjson|quiet|none (default auto), -q, then
// BUILDKIT_PROGRESS when still auto, then tty if stderr is a terminal, else plain. `none` is
// quiet without the image ID. Throws kbuild::Error (user) with buildx's messages.
DisplayChoice choose_display_mode(std::string_view progress_flag, bool quiet_flag, bool stderr_is_terminal,
                                  std::optional<std::string_view> buildkit_progress_env);

// Colours of the tty display's finished lines (BuildKit's defaults; nullopt prints no colour).
struct TtyColors {
  std::optional<std::string> run = "\x1b[34m";
  std::optional<std::string> cancel = "\x1b[33m";
  std::optional<std::string> warning = "\x1b[33m";
  std::optional<std::string> error = "\x1b[31m";
};

struct DisplayOptions {
  std::string phase = "Building";
  // buildx's WithDesc: plain prints "#0 <text_desc>" first, tty aligns console_desc right in
  // its header ("building with \"default\" instance using docker driver", "docker:default").
  std::string text_desc;
  std::string console_desc;
  bool truncate_names = false;  // PROGRESS_NO_TRUNC=0: plain cuts names at 72 bytes
  int tty_log_lines = Trace::kTermHeightMin;  // BUILDKIT_TTY_LOG_LINES
  std::chrono::milliseconds display_interval{100};  // TTY_DISPLAY_RATE: redraws at most this often
  std::chrono::milliseconds tick_interval{150};     // ... and at least this often while idle
  TtyColors colors;                                  // NO_COLOR, BUILDKIT_COLORS
};

// The options BuildKit reads from the environment: NO_COLOR, BUILDKIT_COLORS,
// BUILDKIT_TTY_LOG_LINES, PROGRESS_NO_TRUNC, TTY_DISPLAY_RATE. `getenv` returns nullopt for unset.
DisplayOptions display_options_from_env(const std::function<std::optional<std::string>(const char*)>& getenv);

struct TerminalSize {
  int width = 80;
  int height = 10;
};

// The size of the terminal on `fd`, or BuildKit's 80x10 when it cannot be had.
TerminalSize terminal_size_of(int fd);

// A display. The caller feeds it every event, refresh() on idle ticks, and finish() once the
// stream has ended; then prints the epilogue (see summary.h).
class Renderer {
 public:
  virtual ~Renderer() = default;

  // One event from the daemon; drawn now or, within the redraw interval, on the next refresh.
  void update(const SolveStatus& status);
  // Nothing new for a while: redraw (running times move on).
  virtual void refresh() {}
  // The build is over: the final frame, then for each failed step "------ > name: <its last log
  // lines> ------".
  virtual void finish() = 0;

  // Every warning seen, without repeats (as buildx dedups them), in order of arrival.
  const std::vector<VertexWarning>& warnings() const { return warnings_; }

 protected:
  virtual void on_update(const SolveStatus& status) = 0;

 private:
  std::vector<VertexWarning> warnings_;
};

// `out` receives whole frames, flushed as written. `terminal_size` is asked before each tty
// frame; without it the tty display assumes 80x10.
std::unique_ptr<Renderer> make_renderer(DisplayMode mode, std::ostream& out, const DisplayOptions& options = {},
                                        const Clock& clock = system_clock(),
                                        std::function<TerminalSize()> terminal_size = {});

// Feeds `renderer` from `reader` until the stream ends, calling refresh() after `tick` without
// an event, as BuildKit's display loop does. Does not call finish(). Throws kbuild::Error on a
// line that is not a SolveStatus.
// `divert`, when set, sees each event first and keeps it from the renderer by returning true.
void run_display(ProgressReader& reader, Renderer& renderer,
                 std::chrono::milliseconds tick = std::chrono::milliseconds(150),
                 const std::function<bool(const SolveStatus&)>& divert = {});

// golang.org/x/time/rate's limiter with a burst of one: allows an event when `interval` has
// passed since the last one allowed.
class RateLimiter {
 public:
  explicit RateLimiter(std::chrono::milliseconds interval) : interval_(interval) {}
  bool allow(const Timestamp& now);

 private:
  std::chrono::milliseconds interval_;
  std::optional<Timestamp> last_;
  double tokens_ = 0;
};

}  // namespace kbuild::progress
