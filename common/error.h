// The one error type of kbuild: thrown inside, turned into a D-Bus error or an exit code at the edges.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace kbuild {

enum class ErrorKind {
  user,        // bad input: Dockerfile, flags, context, configuration
  not_found,   // a file, image, stage or secret that does not exist
  permission,  // the caller may not do or read this
  canceled,    // the caller went away or asked to stop
  internal,    // a bug or an environment failure
};

// Lines of a Dockerfile, 1-based and inclusive.
struct SourceRange {
  int start_line = 0;
  int end_line = 0;
  bool operator==(const SourceRange&) const = default;
};

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message, std::optional<SourceRange> where = {})
      : std::runtime_error(message), kind_(kind), where_(where) {}

  ErrorKind kind() const { return kind_; }
  const std::optional<SourceRange>& where() const { return where_; }

  // The same error with "context: " in front of its message, e.g. "pulling alpine:3.20: ...".
  Error with_context(std::string_view context) const;
  // The same error attached to Dockerfile lines, unless it already has a location.
  Error at(SourceRange where) const;

 private:
  ErrorKind kind_;
  std::optional<SourceRange> where_;
};

[[noreturn]] void throw_user_error(const std::string& message, std::optional<SourceRange> where = {});

const char* error_kind_name(ErrorKind kind);

}  // namespace kbuild
