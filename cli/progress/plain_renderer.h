// `--progress=plain`: BuildKit's textMux, one "#N ..." line per change, one vertex at a time.
#pragma once

#include <map>
#include <ostream>
#include <string>

#include "cli/progress/renderer.h"
#include "cli/progress/trace.h"

namespace kbuild::progress {

class PlainRenderer final : public Renderer {
 public:
  PlainRenderer(std::ostream& out, const DisplayOptions& options, const Clock& clock);

  void refresh() override;
  void finish() override;

 protected:
  void on_update(const SolveStatus& status) override;

 private:
  struct LastStatus {
    int64_t current = 0;
    Timestamp timestamp;
  };

  void print();
  void print_vertex(const std::string& digest);
  void print_header(TraceVertex& v);
  // Returns whether a printed status is still running, which keeps the vertex on screen.
  bool print_statuses(TraceVertex& v);
  void print_logs(TraceVertex& v);
  void print_result(TraceVertex& v);
  std::vector<std::string> sort_completed(const std::set<std::string>& digests) const;
  std::vector<std::string> in_order(const std::set<std::string>& digests) const;
  void flush();

  std::ostream& out_;
  std::string buffer_;
  Trace trace_;
  RateLimiter limiter_;
  std::string desc_;
  bool truncate_names_;

  std::string current_;
  std::map<std::string, LastStatus> last_;
  bool not_first_ = false;
  int next_index_ = 0;
};

}  // namespace kbuild::progress
