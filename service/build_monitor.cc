#include "service/build_monitor.h"

#include <cstdio>

#include "common/error.h"
#include "engine/store/digest.h"

namespace kbuild::service {
namespace {

using Clock = std::chrono::steady_clock;

std::chrono::microseconds since(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start);
}

// Decimal units, as `docker system df` shows sizes.
std::string format_size(uint64_t bytes) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB", "PB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1000 && unit < 5) {
    value /= 1000;
    ++unit;
  }
  char text[32];
  if (unit == 0) {
    std::snprintf(text, sizeof text, "%llu B", static_cast<unsigned long long>(bytes));
  } else {
    std::snprintf(text, sizeof text, "%.1f %s", value, units[unit]);
  }
  return text;
}

std::string counted(uint64_t n, const char* one, const char* many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

}  // namespace

std::string format_status(const ServiceCounts& counts) {
  return counted(counts.builds_running, "build", "builds") + " running, " +
         counted(counts.steps_run, "step", "steps") + " run, " + counted(counts.steps_cached, "step", "steps") +
         " cached, " + format_size(counts.stored_bytes) + " stored";
}

BuildMonitor::BuildMonitor(std::unique_ptr<LogSink> log, std::function<uint64_t()> stored_bytes)
    : log_(std::move(log)), stored_bytes_(std::move(stored_bytes)) {
  measure_store();
}

std::string BuildMonitor::status() const {
  std::lock_guard lock(mutex_);
  return format_status(counts_);
}

std::optional<std::string> BuildMonitor::take_status() {
  std::lock_guard lock(mutex_);
  std::string now = format_status(counts_);
  if (now == last_status_) return std::nullopt;
  last_status_ = now;
  return now;
}

void BuildMonitor::count(const std::function<void(ServiceCounts&)>& change) {
  std::lock_guard lock(mutex_);
  change(counts_);
}

void BuildMonitor::measure_store() {
  try {
    uint64_t bytes = stored_bytes_();
    count([bytes](ServiceCounts& c) { c.stored_bytes = bytes; });
  } catch (const std::exception& e) {
    // The status keeps the last size; the log says why it is not newer.
    LogEntry entry;
    entry.priority = LOG_WARNING;
    entry.message = std::string("measuring the store for the status line: ") + e.what();
    write(entry);
  }
}

BuildMonitor::Build::Build(BuildMonitor& monitor, const solver::BuildRequest& request, solver::Progress& client)
    : monitor_(monitor),
      client_(client),
      identity_{request.build_name, request.caller.uid, &request.secrets},
      dockerfile_digest_(request.dockerfile.empty() ? std::string() : store::Digest::of(request.dockerfile).str()) {
  monitor_.count([](ServiceCounts& c) { ++c.builds_running; });
}

BuildMonitor::Build::~Build() {
  monitor_.count([](ServiceCounts& c) { --c.builds_running; });
}

void BuildMonitor::Build::succeeded(const solver::BuildResult& result) {
  BuildSummary summary;
  summary.result = BuildOutcome::success;
  summary.image = result.config_digest.str();
  summary.image_names = result.names;
  finish(std::move(summary));
}

void BuildMonitor::Build::failed(const std::exception_ptr& error) {
  BuildSummary summary;
  try {
    std::rethrow_exception(error);
  } catch (const Error& e) {
    summary.result = e.kind() == ErrorKind::canceled ? BuildOutcome::canceled : BuildOutcome::failure;
    summary.error = e.what();
  } catch (const std::exception& e) {
    summary.error = e.what();
  } catch (...) {
    summary.error = "unknown error";
  }
  finish(std::move(summary));
}

void BuildMonitor::Build::finish(BuildSummary summary) {
  summary.dockerfile_digest = dockerfile_digest_;
  summary.duration = since(started_);
  monitor_.write(build_summary_entry(identity_, summary));
  monitor_.measure_store();
}

void BuildMonitor::Build::announced(const std::string& vertex, const std::string& name) {
  client_.announced(vertex, name);
}

void BuildMonitor::Build::started(const std::string& vertex, const std::string& name) {
  client_.started(vertex, name);
  {
    std::lock_guard lock(mutex_);
    running_steps_[vertex] = RunningStep{Clock::now(), name};
  }
  monitor_.write(step_started_entry(identity_, name));
}

void BuildMonitor::Build::completed(const std::string& vertex, const std::string& name, bool cached,
                                    const std::string& error) {
  client_.completed(vertex, name, cached, error);
  RunningStep step{Clock::now(), name};
  {
    std::lock_guard lock(mutex_);
    if (auto it = running_steps_.find(vertex); it != running_steps_.end()) {
      step.started = it->second.started;
      if (step.name.empty()) step.name = std::move(it->second.name);
      running_steps_.erase(it);
    }
  }
  if (!error.empty()) {
    monitor_.write(step_failed_entry(identity_, step.name, error));
  } else if (cached) {
    monitor_.count([](ServiceCounts& c) { ++c.steps_cached; });
    monitor_.write(step_cached_entry(identity_, step.name));
  } else {
    monitor_.count([](ServiceCounts& c) { ++c.steps_run; });
    monitor_.write(step_done_entry(identity_, step.name, since(step.started)));
  }
}

void BuildMonitor::Build::status(const std::string& vertex, const std::string& id, int64_t current, int64_t total,
                                 bool done) {
  client_.status(vertex, id, current, total, done);
}

void BuildMonitor::Build::log(const std::string& vertex, int stream, std::string_view data) {
  client_.log(vertex, stream, data);
}

void BuildMonitor::Build::warning(const std::string& vertex, const std::string& text) {
  client_.warning(vertex, text);
}

void BuildMonitor::Build::classic_output(std::string_view text) { client_.classic_output(text); }

}  // namespace kbuild::service
