// What kbuildd tells its operators about builds while it runs: the log entries of each build
// and of its steps (build_log.h), and the counts of its STATUS= line (sd_notify).
#pragma once

#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "engine/solver/builder.h"
#include "engine/solver/progress.h"
#include "service/build_log.h"

namespace kbuild::service {

// Counts since the daemon started, and the store's size as last measured.
struct ServiceCounts {
  uint64_t builds_running = 0;
  uint64_t steps_run = 0;
  uint64_t steps_cached = 0;
  uint64_t stored_bytes = 0;
};

// "2 builds running, 5 steps run, 14 steps cached, 1.2 GB stored".
std::string format_status(const ServiceCounts& counts);

class BuildMonitor {
 public:
  // `stored_bytes` measures the store: here, and after each build on that build's thread.
  BuildMonitor(std::unique_ptr<LogSink> log, std::function<uint64_t()> stored_bytes);

  // The status line now.
  std::string status() const;
  // The status line when it changed since the last call, else nothing. The daemon's loop asks
  // once a second, which also bounds how often systemd hears of a change.
  std::optional<std::string> take_status();

  // One build from its start to its end: the solver reports its progress here, and this passes
  // it on to the client. Call succeeded() or failed() once the solver returns.
  class Build : public solver::Progress {
   public:
    Build(BuildMonitor& monitor, const solver::BuildRequest& request, solver::Progress& client);
    ~Build() override;
    Build(const Build&) = delete;
    Build& operator=(const Build&) = delete;

    void succeeded(const solver::BuildResult& result);
    // With the exception the build ended with: a canceled error counts as canceled.
    void failed(const std::exception_ptr& error);

    void announced(const std::string& vertex, const std::string& name) override;
    void started(const std::string& vertex, const std::string& name) override;
    void completed(const std::string& vertex, const std::string& name, bool cached, const std::string& error) override;
    void status(const std::string& vertex, const std::string& id, int64_t current, int64_t total, bool done) override;
    void log(const std::string& vertex, int stream, std::string_view data) override;
    void warning(const std::string& vertex, const std::string& text) override;
    void classic_output(std::string_view text) override;

   private:
    void finish(BuildSummary summary);

    BuildMonitor& monitor_;
    solver::Progress& client_;
    BuildIdentity identity_;
    std::string dockerfile_digest_;
    std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
    // Steps started and not completed, by vertex: when, and their names (the solver completes
    // some without one).
    struct RunningStep {
      std::chrono::steady_clock::time_point started;
      std::string name;
    };
    std::mutex mutex_;
    std::map<std::string, RunningStep> running_steps_;
  };

 private:
  void write(const LogEntry& entry) { log_->write(entry); }
  // Applies `change` to the counts under the lock.
  void count(const std::function<void(ServiceCounts&)>& change);
  void measure_store();

  std::unique_ptr<LogSink> log_;
  std::function<uint64_t()> stored_bytes_;
  mutable std::mutex mutex_;
  ServiceCounts counts_;
  std::string last_status_;
};

}  // namespace kbuild::service
