// What the solver reports while it works: vertices starting, finishing or cached, statuses
// with counters, and log output. The service turns these into BuildKit's progress stream.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace kbuild::solver {

class Progress {
 public:
  virtual ~Progress() = default;
  // A vertex the build will go through, before it starts (BuildKit announces every vertex of
  // the definition when it loads it; the tty display counts them).
  virtual void announced(const std::string& vertex, const std::string& name) = 0;
  // `vertex` is a stable id (a digest string); `name` what users see ("[2/3] COPY a /a").
  virtual void started(const std::string& vertex, const std::string& name) = 0;
  virtual void completed(const std::string& vertex, const std::string& name, bool cached, const std::string& error) = 0;
  // A sub-status of a vertex, e.g. "transferring context:" with bytes; done closes it.
  virtual void status(const std::string& vertex, const std::string& id, int64_t current, int64_t total, bool done) = 0;
  virtual void log(const std::string& vertex, int stream, std::string_view data) = 0;
  // Something the user should know that does not fail the build (a cache that cannot be read).
  virtual void warning(const std::string& vertex, const std::string& text) { (void)vertex, (void)text; }
  // The classic builder's output, as it prints it ("Step 1/3 : FROM alpine\n"): the whole of
  // what a classic build shows (classic_output.h).
  virtual void classic_output(std::string_view text) { (void)text; }
};

// Discards everything (tests, quiet internal work).
class NullProgress : public Progress {
 public:
  void announced(const std::string&, const std::string&) override {}
  void started(const std::string&, const std::string&) override {}
  void completed(const std::string&, const std::string&, bool, const std::string&) override {}
  void status(const std::string&, const std::string&, int64_t, int64_t, bool) override {}
  void log(const std::string&, int, std::string_view) override {}
};

}  // namespace kbuild::solver
