// kbuildd's log of builds: entries with fields (KBUILD_BUILD_ID, KBUILD_STEP, ...) that go to
// the journal when there is one, else one line each on stderr. Every text an entry carries
// comes from callers and Dockerfiles: the entry builders make each value one printable line
// and take the build's secret values out of all of them.
#pragma once

#include <sys/types.h>
#include <syslog.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kbuild::service {

struct LogEntry {
  int priority = LOG_INFO;
  std::string message;
  std::vector<std::pair<std::string, std::string>> fields;  // KBUILD_* name, value

  // The value of field `name`, or nullptr (tests, the stderr sink).
  const std::string* field(std::string_view name) const;
};

// Where entries go. write() may be called from any thread and never throws.
class LogSink {
 public:
  virtual ~LogSink() = default;
  virtual void write(const LogEntry& entry) = 0;
};

// The journal (sd_journal_sendv) when its socket, /run/systemd/journal/socket, exists; else
// "kbuildd: MESSAGE" lines on stderr.
std::unique_ptr<LogSink> make_log_sink();
// "kbuildd: MESSAGE" lines written to `fd` (not owned) in one write(2) each.
std::unique_ptr<LogSink> make_line_sink(int fd);

// Who asked for a build, and what the log must never show of it.
struct BuildIdentity {
  std::string build_id;
  uid_t caller_uid = 0;
  const std::map<std::string, std::string>* secrets = nullptr;  // --secret values by id
};

enum class BuildOutcome { success, failure, canceled };

// What one build's summary entry says.
struct BuildSummary {
  BuildOutcome result = BuildOutcome::failure;
  std::string dockerfile_digest;  // "sha256:..." of the Dockerfile's text; empty when unknown
  std::chrono::microseconds duration{0};
  std::string image;               // the image's id (its config's digest); empty unless success
  std::vector<std::string> image_names;
  std::string error;               // failure: what went wrong
};

// The one entry a build leaves: "build 1a2b3c by uid 1000: success in 2.31s, image sha256:..."
// with KBUILD_BUILD_ID, KBUILD_CALLER_UID, KBUILD_DOCKERFILE_DIGEST, KBUILD_RESULT,
// KBUILD_DURATION_USEC, KBUILD_IMAGE and KBUILD_IMAGE_NAMES (comma-separated).
LogEntry build_summary_entry(const BuildIdentity& build, const BuildSummary& summary);

// A step (a progress vertex, `step` its name: "[stage-1 2/5] RUN make") starting, done, served
// from the cache or failed; each with KBUILD_BUILD_ID, KBUILD_CALLER_UID and KBUILD_STEP.
LogEntry step_started_entry(const BuildIdentity& build, std::string_view step);
LogEntry step_done_entry(const BuildIdentity& build, std::string_view step, std::chrono::microseconds duration);
LogEntry step_cached_entry(const BuildIdentity& build, std::string_view step);
LogEntry step_failed_entry(const BuildIdentity& build, std::string_view step, std::string_view error);

}  // namespace kbuild::service
