#include "engine/context/reader_program.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/fd_io.h"
#include "engine/context/fs.h"
#include "engine/context/sender.h"
#include "engine/context/wire.h"

namespace kbuild::context {
namespace {

using nlohmann::json;

// Before anything can be reported: the daemon reads this as the read's error.
[[noreturn]] void die(ErrorKind kind, const std::string& message) {
  std::string frame;
  wire::append_error(frame, kind, message);
  [[maybe_unused]] ssize_t ignored = ::write(kReaderDataFd, frame.data(), frame.size());
  ::_exit(1);
}

[[noreturn]] void die_errno(const char* what) {
  die(ErrorKind::internal, std::string("context reader: ") + what + ": " + errno_text(errno));
}

void drop_privileges(const ReaderOptions& caller) {
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) die_errno("no_new_privs");
  if (::setgroups(caller.groups.size(), caller.groups.data()) != 0) die_errno("setgroups");
  if (::setresgid(caller.gid, caller.gid, caller.gid) != 0) die_errno("setresgid");
  if (::setresuid(caller.uid, caller.uid, caller.uid) != 0) die_errno("setresuid");
  // Leaving uid 0 cleared the capabilities already; a root caller keeps only the one that lets
  // root read any file, as a client running as root could.
  struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct data[2] = {};
  if (caller.uid == 0) {
    data[0].effective = data[0].permitted = 1u << CAP_DAC_READ_SEARCH;
  }
  if (::syscall(SYS_capset, &header, data) != 0) die_errno("capset");
  // The id switch set "dumpable" to fs.suid_dumpable; the caller must not ptrace the reader or
  // read its /proc files (its memory holds only this program, but root's fds are no business
  // of the caller's either).
  if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) die_errno("dumpable");
  // Set after the credential change, which clears it.
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) die_errno("pdeathsig");
  if (::getppid() != caller.daemon) ::_exit(1);
}

}  // namespace

std::string serialize_reader_options(const ReaderOptions& options) {
  json ignore = nullptr;
  if (options.ignore) {
    ignore = json::array();
    for (const auto& p : *options.ignore) ignore.push_back({p.pattern, p.exclusion});
  }
  return json{{"uid", options.uid},
              {"gid", options.gid},
              {"groups", options.groups},
              {"daemon", options.daemon},
              {"ignore", ignore},
              {"include", options.include_patterns},
              {"follow", options.follow_paths}}
      .dump();
}

ReaderOptions parse_reader_options(std::string_view text) {
  try {
    const json j = json::parse(text);
    ReaderOptions options;
    options.uid = j.at("uid").get<uid_t>();
    options.gid = j.at("gid").get<gid_t>();
    options.groups = j.at("groups").get<std::vector<gid_t>>();
    options.daemon = j.at("daemon").get<pid_t>();
    if (!j.at("ignore").is_null()) {
      options.ignore.emplace();
      for (const json& p : j.at("ignore")) options.ignore->push_back({p.at(0).get<std::string>(), p.at(1).get<bool>()});
    }
    options.include_patterns = j.at("include").get<std::vector<std::string>>();
    options.follow_paths = j.at("follow").get<std::vector<std::string>>();
    return options;
  } catch (const json::exception& e) {
    throw Error(ErrorKind::internal, std::string("context reader options: ") + e.what());
  }
}

int context_reader_main(const std::function<void()>& check) {
  ::signal(SIGPIPE, SIG_DFL);  // the daemon went away: nothing left to do
  ReaderOptions options;
  try {
    options = parse_reader_options(read_all(kReaderOptionsFd, "context reader options"));
  } catch (const Error& e) {
    die(e.kind(), e.what());
  }
  ::close(kReaderOptionsFd);
  drop_privileges(options);
  // One fd per directory level of the walk.
  struct rlimit files {};
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &files);
  }
  if (check) {
    try {
      check();
    } catch (const Error& e) {
      die(e.kind(), e.what());
    } catch (...) {
      die(ErrorKind::internal, "reader check failed");
    }
  }
  std::optional<patterns::IgnoreMatcher> ignore;
  try {
    if (options.ignore) ignore.emplace(*options.ignore);
  } catch (const Error& e) {
    die(e.kind(), e.what());
  }
  SenderOptions sender;
  sender.ignore = ignore ? &*ignore : nullptr;
  sender.include_patterns = options.include_patterns;
  sender.follow_paths = options.follow_paths;
  return run_context_sender(kReaderRootFd, kReaderDataFd, kReaderRequestFd, sender);
}

}  // namespace kbuild::context
