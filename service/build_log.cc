#include "service/build_log.h"

#include <sys/uio.h>
#include <syslog.h>
#include <unistd.h>
// The entries' CODE_FILE and CODE_LINE would name this file's write(), never the build's code.
#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>

#include <cstdio>
#include <mutex>

#include "common/printable_text.h"

namespace kbuild::service {
namespace {

// What a step's name or an error may take of an entry: enough to tell steps apart and to read
// an error, not a whole heredoc.
constexpr std::size_t kMaxStep = 512;
constexpr std::size_t kMaxError = 2048;
// `text` without any of the build's secret values, as one printable line.
std::string shown(const BuildIdentity& build, std::string_view text, std::size_t max_bytes) {
  if (!build.secrets) return printable_text(text, max_bytes);
  return printable_text(redact_secrets(text, *build.secrets), max_bytes);
}

const char* result_name(BuildOutcome result) {
  switch (result) {
    case BuildOutcome::success: return "success";
    case BuildOutcome::canceled: return "canceled";
    case BuildOutcome::failure: break;
  }
  return "failure";
}

std::string seconds(std::chrono::microseconds duration) {
  char text[32];
  std::snprintf(text, sizeof text, "%.2fs", static_cast<double>(duration.count()) / 1e6);
  return text;
}

LogEntry step_entry(const BuildIdentity& build, std::string_view step, int priority, const std::string& what) {
  std::string name = shown(build, step, kMaxStep);
  LogEntry entry;
  entry.priority = priority;
  entry.message = "build " + build.build_id + " step " + what + ": " + name;
  entry.fields = {{"KBUILD_BUILD_ID", build.build_id},
                  {"KBUILD_CALLER_UID", std::to_string(build.caller_uid)},
                  {"KBUILD_STEP", std::move(name)}};
  return entry;
}

class LineSink : public LogSink {
 public:
  explicit LineSink(int fd) : fd_(fd) {}

  void write(const LogEntry& entry) override {
    std::string line = "kbuildd: " + entry.message + "\n";
    std::lock_guard lock(mutex_);
    for (std::size_t done = 0; done < line.size();) {
      ssize_t n = ::write(fd_, line.data() + done, line.size() - done);
      if (n <= 0) return;  // nowhere left to say it
      done += static_cast<std::size_t>(n);
    }
  }

 private:
  int fd_;
  std::mutex mutex_;
};

class JournalSink : public LogSink {
 public:
  void write(const LogEntry& entry) override {
    std::vector<std::string> items;
    items.reserve(entry.fields.size() + 3);
    items.push_back("MESSAGE=" + entry.message);
    items.push_back("PRIORITY=" + std::to_string(entry.priority));
    items.push_back("SYSLOG_IDENTIFIER=kbuildd");
    for (const auto& [name, value] : entry.fields) items.push_back(name + "=" + value);
    std::vector<iovec> vector;
    for (std::string& item : items) vector.push_back({item.data(), item.size()});
    // The journal takes each item whole, newlines and all: a value cannot start another field.
    if (sd_journal_sendv(vector.data(), static_cast<int>(vector.size())) < 0) fallback_.write(entry);
  }

 private:
  LineSink fallback_{STDERR_FILENO};
};

}  // namespace

const std::string* LogEntry::field(std::string_view name) const {
  for (const auto& [key, value] : fields) {
    if (key == name) return &value;
  }
  return nullptr;
}

std::unique_ptr<LogSink> make_log_sink() {
  if (::access("/run/systemd/journal/socket", W_OK) == 0) return std::make_unique<JournalSink>();
  return make_line_sink(STDERR_FILENO);
}

std::unique_ptr<LogSink> make_line_sink(int fd) { return std::make_unique<LineSink>(fd); }

LogEntry build_summary_entry(const BuildIdentity& build, const BuildSummary& summary) {
  std::string names;
  for (const std::string& name : summary.image_names) names += (names.empty() ? "" : ",") + name;
  names = shown(build, names, kMaxError);
  LogEntry entry;
  entry.priority = summary.result == BuildOutcome::failure ? LOG_NOTICE : LOG_INFO;
  entry.message = "build " + build.build_id + " by uid " + std::to_string(build.caller_uid) + ": " +
                  result_name(summary.result) + " in " + seconds(summary.duration);
  if (!summary.image.empty()) entry.message += ", image " + summary.image;
  if (!names.empty()) entry.message += " (" + names + ")";
  if (!summary.error.empty()) entry.message += ": " + shown(build, summary.error, kMaxError);
  entry.fields = {{"KBUILD_BUILD_ID", build.build_id},
                  {"KBUILD_CALLER_UID", std::to_string(build.caller_uid)},
                  {"KBUILD_DOCKERFILE_DIGEST", summary.dockerfile_digest},
                  {"KBUILD_RESULT", result_name(summary.result)},
                  {"KBUILD_DURATION_USEC", std::to_string(summary.duration.count())},
                  {"KBUILD_IMAGE", summary.image},
                  {"KBUILD_IMAGE_NAMES", std::move(names)}};
  return entry;
}

LogEntry step_started_entry(const BuildIdentity& build, std::string_view step) {
  return step_entry(build, step, LOG_INFO, "started");
}

LogEntry step_done_entry(const BuildIdentity& build, std::string_view step, std::chrono::microseconds duration) {
  return step_entry(build, step, LOG_INFO, "done in " + seconds(duration));
}

LogEntry step_cached_entry(const BuildIdentity& build, std::string_view step) {
  return step_entry(build, step, LOG_INFO, "cached");
}

LogEntry step_failed_entry(const BuildIdentity& build, std::string_view step, std::string_view error) {
  LogEntry entry = step_entry(build, step, LOG_NOTICE, "failed");
  entry.message += ": " + shown(build, error, kMaxError);
  return entry;
}

}  // namespace kbuild::service
