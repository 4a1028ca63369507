#include "engine/solver/step_executor.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>

#include "common/directory.h"
#include "common/fd_io.h"
#include "common/syscall.h"
#include "common/temp_dir.h"
#include "common/unique_fd.h"
#include "engine/fileops/chmod.h"
#include "engine/fileops/chown.h"
#include "engine/fileops/fileops.h"
#include "engine/fileops/root_path.h"
#include "engine/store/mount.h"

namespace kbuild::solver {
namespace {

using nlohmann::json;
namespace df = kbuild::dockerfile;

UniqueFd open_directory(const std::string& path) {
  return UniqueFd(check(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC), "open", path));
}

void make_workdir(int root_fd, const graph::Step& step) {
  std::optional<fileops::Owner> owner;
  if (!step.user.empty()) owner = fileops::resolve_chown(step.user, root_fd);
  fileops::RootedPath path = fileops::resolve_in_root(root_fd, step.workdir);
  fileops::make_dirs(root_fd, path, path.parts.size(), 0755, owner);
}

// Heredoc sources become files in a scratch directory that the copy reads like a context.
TempDir write_inline_sources(store::Store& store, const df::CopyInstruction& copy) {
  TempDir dir(store.root() + "/mounts", "heredoc-");
  for (const auto& source : copy.inline_sources) {
    if (source.path.find('/') != std::string::npos || source.path == "." || source.path == "..") {
      throw Error(ErrorKind::user, "invalid heredoc name " + source.path);
    }
    std::string path = dir.path() + "/" + source.path;
    UniqueFd fd(check(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644), "create", path));
    write_all(fd.get(), source.data, path);
  }
  return dir;
}

fileops::CopyRequest copy_request(const graph::Step& step, const df::CopyInstruction& copy, int dest_root_fd) {
  fileops::CopyRequest request;
  request.sources = copy.sources;
  request.dest = copy.dest;
  request.workdir = step.workdir;
  if (!copy.chown.empty()) request.owner = fileops::resolve_chown(copy.chown, dest_root_fd);
  if (!copy.chmod.empty()) request.chmod = fileops::Chmod::parse(copy.chmod);
  request.parents = copy.parents;
  request.excludes = copy.excludes;
  request.unpack = copy.is_add && copy.unpack.value_or(true);
  request.instruction = copy.is_add ? "ADD" : "COPY";
  request.source_owner_is_root = step.source.kind == graph::CopySource::Kind::context;
  return request;
}

void run_copy(StepContext& context, int dest_root_fd, bool fresh_layer, int name_root_fd = -1) {
  const auto& copy = std::get<df::CopyInstruction>(context.step.instruction.body);
  if (!copy.checksum.empty()) throw Error(ErrorKind::user, "ADD --checksum needs a URL source, which is not supported yet");
  fileops::CopyRequest request = copy_request(context.step, copy, name_root_fd >= 0 ? name_root_fd : dest_root_fd);
  // The materialized context is never written again: a fresh layer may share its files. Not
  // with ADD unpacking archives: a hard link in an archive to a file already copied would give
  // the shared inode the archive's owner, mode and times.
  request.link_unchanged_files =
      fresh_layer && context.step.source.kind == graph::CopySource::Kind::context && !request.unpack;
  if (!copy.sources.empty()) {
    std::optional<ChainView> view;
    UniqueFd source;
    if (context.step.source.kind != graph::CopySource::Kind::context) {
      view.emplace(context.store, context.source);
      source = open_directory(view->dir.path());
    } else {
      source = open_directory(context.context_dir);
    }
    try {
      fileops::copy_files(source.get(), dest_root_fd, request);
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::not_found && context.step.source.kind == graph::CopySource::Kind::context) {
        throw Error(ErrorKind::not_found, std::string("failed to compute cache key: failed to calculate checksum of ref: ") +
                                              e.what());
      }
      throw;
    }
  }
  if (!copy.inline_sources.empty()) {
    TempDir inline_dir = write_inline_sources(context.store, copy);
    fileops::CopyRequest inline_request = request;
    inline_request.sources.clear();
    for (const auto& s : copy.inline_sources) inline_request.sources.push_back(s.path);
    inline_request.source_owner_is_root = true;
    inline_request.unpack = false;
    UniqueFd source = open_directory(inline_dir.path());
    fileops::copy_files(source.get(), dest_root_fd, inline_request);
  }
}

void copy_xattrs(int from, int to, const std::string& path) {
  ssize_t size = ::flistxattr(from, nullptr, 0);
  if (size <= 0) return;
  std::string names(static_cast<size_t>(size), '\0');
  size = check(::flistxattr(from, names.data(), names.size()), "listxattr", path);
  for (size_t at = 0; at < static_cast<size_t>(size); at += std::strlen(names.c_str() + at) + 1) {
    const char* name = names.c_str() + at;
    ssize_t length = ::fgetxattr(from, name, nullptr, 0);
    if (length < 0) continue;
    std::string value(static_cast<size_t>(length), '\0');
    length = ::fgetxattr(from, name, value.data(), value.size());
    if (length >= 0) check(::fsetxattr(to, name, value.data(), static_cast<size_t>(length), 0), "setxattr", path);
  }
}

// Recreates the directory `from` in `to` (both open), linking what is not a directory.
void restack_tree(int from, int to, const std::string& path) {
  for (const DirEntry& entry : list_directory(from, path)) {
    std::string child = path + "/" + entry.name;
    struct stat st {};
    check(::fstatat(from, entry.name.c_str(), &st, AT_SYMLINK_NOFOLLOW), "stat", child);
    if (!S_ISDIR(st.st_mode)) {
      check(::linkat(from, entry.name.c_str(), to, entry.name.c_str(), 0), "link", child);
      continue;
    }
    check(::mkdirat(to, entry.name.c_str(), 0700), "mkdir", child);
    UniqueFd source(check(::openat(from, entry.name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC), "open", child));
    UniqueFd dest(check(::openat(to, entry.name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC), "open", child));
    restack_tree(source.get(), dest.get(), child);
    check(::fchown(dest.get(), st.st_uid, st.st_gid), "chown", child);
    check(::fchmod(dest.get(), st.st_mode & 07777), "chmod", child);
    copy_xattrs(source.get(), dest.get(), child);
    timespec times[2] = {st.st_atim, st.st_mtim};
    check(::futimens(dest.get(), times), "utimes", child);
  }
}

json command_json(const df::CommandLine& line) {
  json files = json::array();
  for (const auto& f : line.files) files.push_back({f.name, f.data, f.chomp});
  return {{"args", line.args}, {"shell", line.prepend_shell}, {"files", files}};
}

}  // namespace

// Overlayfs needs a lower layer: a layer without a parent sits on this empty directory.
namespace {
std::string empty_lower(store::Store& store) {
  std::string path = store.root() + "/empty";
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) throw_errno("mkdir", path);
  return path;
}
}  // namespace

std::vector<std::string> lowers_for(store::Store& store, const std::optional<std::string>& top) {
  if (!top) return {empty_lower(store)};
  return store.snapshots().lower_chain(*top);
}


ChainView::ChainView(store::Store& store, const std::optional<std::string>& top) : dir(store.root() + "/mounts", "from-") {
  mount = store::Mount::overlay(lowers_for(store, top), "", "", dir.path());
}

std::string execute_step(StepContext& context) {
  const graph::Step& step = context.step;
  if (step.kind == graph::StepKind::run) return execute_run(context);
  if (context.linked) return execute_linked_copy(context);
  store::SnapshotStore& snapshots = context.store.snapshots();
  store::SnapshotStore::Prepared prepared = snapshots.prepare(context.parent, "layer");
  auto run = [&](int root, bool fresh_layer) {
    context.cancel.check();
    if (step.kind == graph::StepKind::workdir) {
      make_workdir(root, step);
    } else {
      run_copy(context, root, fresh_layer);
    }
  };
  if (!context.parent) {
    // Nothing below: the layer is the whole tree, written in place without an overlay (and
    // so on the store's filesystem, where context files can be hard-linked).
    UniqueFd root = open_directory(prepared.diff_path());
    run(root.get(), true);
  } else {
    TempDir target(context.store.root() + "/mounts", "step-");
    store::Mount mount = store::Mount::overlay(lowers_for(context.store, context.parent), prepared.diff_path(),
                                                   prepared.work_path(), target.path());
    {
      UniqueFd root = open_directory(target.path());
      run(root.get(), false);
    }
    mount.unmount();
  }
  return snapshots.commit_deferred(std::move(prepared)).id;
}

std::string execute_linked_copy(StepContext& context) {
  store::SnapshotStore& snapshots = context.store.snapshots();
  store::SnapshotStore::Prepared prepared = snapshots.prepare(std::nullopt, "layer");
  UniqueFd root = open_directory(prepared.diff_path());
  // --chown names come from the stage's own passwd and group, not from the empty layer.
  std::optional<ChainView> names;
  UniqueFd names_root;
  if (context.parent) {
    names.emplace(context.store, context.parent);
    names_root = open_directory(names->dir.path());
  }
  context.cancel.check();
  run_copy(context, root.get(), true, names_root ? names_root.get() : -1);
  return snapshots.commit_deferred(std::move(prepared)).id;
}

std::string restack_layer(store::Store& store, const std::string& layer, const std::optional<std::string>& parent) {
  store::SnapshotStore& snapshots = store.snapshots();
  store::SnapshotStore::Prepared prepared = snapshots.prepare(parent, "layer");
  std::string source_path = snapshots.diff_path(layer);
  UniqueFd source = open_directory(source_path);
  UniqueFd dest = open_directory(prepared.diff_path());
  restack_tree(source.get(), dest.get(), source_path);
  return snapshots.commit_deferred(std::move(prepared)).id;
}

json describe_step(const graph::Step& step) {
  json out = {{"workdir", step.workdir}, {"user", step.user}};
  std::visit(
      [&](const auto& body) {
        using T = std::decay_t<decltype(body)>;
        if constexpr (std::is_same_v<T, df::CopyInstruction>) {
          json inline_sources = json::array();
          for (const auto& s : body.inline_sources) inline_sources.push_back({s.path, s.data});
          out["copy"] = {{"add", body.is_add},         {"sources", body.sources},   {"inline", inline_sources},
                         {"dest", body.dest},          {"chown", body.chown},       {"chmod", body.chmod},
                         {"link", body.link},          {"parents", body.parents},   {"exclude", body.excludes},
                         {"checksum", body.checksum},  {"unpack", body.unpack ? json(*body.unpack) : json(nullptr)}};
        } else if constexpr (std::is_same_v<T, df::RunInstruction>) {
          out["run"] = {{"command", command_json(body.command)}, {"mounts", body.mount_specs},
                        {"network", body.network},               {"security", body.security},
                        {"env", step.env},                        {"shell", step.shell}};
        } else if constexpr (std::is_same_v<T, df::WorkdirInstruction>) {
          out["mkdir"] = step.workdir;
        }
      },
      step.instruction.body);
  return out;
}

void make_dirs(const std::string& path) {
  std::string partial;
  size_t start = 0;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    partial = path.substr(0, slash);
    if (!partial.empty() && ::mkdir(partial.c_str(), 0700) != 0 && errno != EEXIST) throw_errno("mkdir", partial);
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
}

}  // namespace kbuild::solver
