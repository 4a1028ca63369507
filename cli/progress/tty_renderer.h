// `--progress=tty`: BuildKit's console display, "[+] Building 1.2s (7/7)" and one line per step,
// redrawn in place with cursor-up escapes, with the last screen of output of running steps.
#pragma once

#include <functional>
#include <ostream>
#include <string>

#include "cli/progress/renderer.h"
#include "cli/progress/trace.h"

namespace kbuild::progress {

class TtyRenderer final : public Renderer {
 public:
  TtyRenderer(std::ostream& out, const DisplayOptions& options, const Clock& clock,
              std::function<TerminalSize()> terminal_size);

  void refresh() override;
  void finish() override;

 protected:
  void on_update(const SolveStatus& status) override;

 private:
  TerminalSize size() const;
  void print(DisplayInfo d, int width, int height, bool all);
  std::vector<Job*> setup_terminals(std::vector<Job*> jobs, int height, bool all);
  void flush();

  std::ostream& out_;
  std::string buffer_;
  Trace trace_;
  RateLimiter limiter_;
  std::function<TerminalSize()> terminal_size_;
  std::string phase_;
  std::string desc_;
  TtyColors colors_;
  TerminalSize current_size_;
  int line_count_ = 0;
  bool repeated_ = false;
};

// BuildKit's wrapHeight: the last `limit` jobs, with running ones that would scroll away
// brought back in place of finished ones.
std::vector<Job*> wrap_height(const std::vector<Job*>& jobs, int limit);

}  // namespace kbuild::progress
