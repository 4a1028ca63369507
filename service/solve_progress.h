// The solver's progress, written to the client's pipe as BuildKit SolveStatus JSON lines.
#pragma once

#include <map>
#include <mutex>

#include "dbus/progress_events.h"
#include "engine/solver/progress.h"

namespace kbuild::service {

class SolveProgress : public solver::Progress {
 public:
  // `cancel_fd` readable: the client has gone, stop writing (see ProgressWriterOptions).
  // `classic`: a classic build's stream, its text only (progress::kClassicOutputVertex).
  SolveProgress(UniqueFd pipe, int cancel_fd, bool classic = false)
      : writer_(std::move(pipe), progress::ProgressWriterOptions{.cancel_fd = cancel_fd}), classic_(classic) {}

  void announced(const std::string& vertex, const std::string& name) override;
  void started(const std::string& vertex, const std::string& name) override;
  void completed(const std::string& vertex, const std::string& name, bool cached, const std::string& error) override;
  void status(const std::string& vertex, const std::string& id, int64_t current, int64_t total, bool done) override;
  void log(const std::string& vertex, int stream, std::string_view data) override;
  void warning(const std::string& vertex, const std::string& text) override;
  void classic_output(std::string_view text) override;

 private:
  std::mutex mutex_;
  progress::ProgressWriter writer_;
  const bool classic_;
  std::map<std::string, progress::Vertex> vertices_;
  std::map<std::pair<std::string, std::string>, progress::VertexStatus> statuses_;
};

}  // namespace kbuild::service
