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


UniqueFd open_directory(const std::string& path) {
  return UniqueFd(check(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC), "open", path));
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

namespace {

// A tree an action reads, open: a local directory, or a view of a snapshot chain.
struct OpenTree {
  std::optional<ChainView> view;
  UniqueFd fd;
  bool local = false;
};

OpenTree open_tree(OpContext& context, graph::OpIndex index) {
  const Ref& ref = context.input(index);
  OpenTree tree;
  if (!ref.local_path.empty()) {
    tree.fd = open_directory(ref.local_path);
    tree.local = true;
  } else {
    tree.view.emplace(context.store, ref.top);
    tree.fd = open_directory(tree.view->dir.path());
  }
  return tree;
}

void apply(OpContext& context, const graph::CopyAction& copy, int root, bool fresh_layer) {
  OpenTree source = open_tree(context, copy.source);
  // --chown names come from the tree they belong to, which is not always the one written.
  std::optional<OpenTree> names;
  if (copy.names) names.emplace(open_tree(context, *copy.names));
  int names_root = names ? names->fd.get() : root;
  fileops::CopyRequest request;
  request.sources = copy.paths;
  request.dest = copy.dest;
  request.workdir = copy.cwd;
  if (!copy.chown.empty()) request.owner = fileops::resolve_chown(copy.chown, names_root);
  if (!copy.chmod.empty()) request.chmod = fileops::Chmod::parse(copy.chmod);
  request.parents = copy.parents;
  request.excludes = copy.excludes;
  request.unpack = copy.unpack;
  request.instruction = copy.verb;
  request.legacy_builder = copy.classic;
  request.source_owner_is_root = source.local;
  // A local tree is never written again: a fresh layer may share its files. Not when
  // unpacking archives: a hard link in an archive to a file already copied would give the
  // shared inode the archive's owner, mode and times.
  request.link_unchanged_files = fresh_layer && source.local && !request.unpack;
  try {
    fileops::copy_files(source.fd.get(), root, request);
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::not_found && source.local) {
      throw Error(ErrorKind::not_found,
                  std::string("failed to compute cache key: failed to calculate checksum of ref: ") + e.what());
    }
    throw;
  }
}

void apply(OpContext&, const graph::MkdirAction& mkdir, int root, bool) {
  std::optional<fileops::Owner> owner;
  if (!mkdir.chown.empty()) owner = fileops::resolve_chown(mkdir.chown, root);
  fileops::RootedPath path = fileops::resolve_in_root(root, mkdir.path);
  fileops::make_dirs(root, path, path.parts.size(), mkdir.mode, owner);
}

void apply(OpContext&, const graph::MkfileAction& mkfile, int root, bool) {
  fileops::RootedPath path = fileops::resolve_in_root(root, mkfile.path, false);
  if (path.parts.empty()) throw Error(ErrorKind::user, "cannot make a file at /");
  fileops::make_dirs(root, path, path.parts.size() - 1, 0755, std::nullopt);
  UniqueFd parent = fileops::open_dir_parts(root, path.parts, path.parts.size() - 1);
  const std::string& leaf = path.parts.back();
  UniqueFd fd(check(::openat(parent.get(), leaf.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600),
                    "create", mkfile.path));
  write_all(fd.get(), mkfile.data, mkfile.path);
  check(::fchmod(fd.get(), mkfile.mode & 07777), "chmod", mkfile.path);
}

// The same layer again on top of `parent`. Returns the new snapshot's id.
std::string restack_layer(store::Store& store, const std::string& layer, const std::optional<std::string>& parent) {
  store::SnapshotStore& snapshots = store.snapshots();
  store::SnapshotStore::Prepared prepared = snapshots.prepare(parent, "layer");
  std::string source_path = snapshots.diff_path(layer);
  UniqueFd source = open_directory(source_path);
  UniqueFd dest = open_directory(prepared.diff_path());
  restack_tree(source.get(), dest.get(), source_path);
  return snapshots.commit_deferred(std::move(prepared)).id;
}

}  // namespace

Ref execute_file_op(OpContext& context, const graph::FileOp& op) {
  const Ref& base = context.input(op.base);
  if (!base.local_path.empty()) throw Error(ErrorKind::internal, "a file op on a local source");
  store::SnapshotStore& snapshots = context.store.snapshots();
  store::SnapshotStore::Prepared prepared = snapshots.prepare(base.top, "layer");
  auto run = [&](int root, bool fresh_layer) {
    for (const graph::FileAction& action : op.actions) {
      context.cancel.check();
      std::visit([&](const auto& a) { apply(context, a, root, fresh_layer); }, action);
    }
  };
  if (!base.top) {
    // Nothing below: the layer is the whole tree, written in place without an overlay (and
    // so on the store's filesystem, where local files can be hard-linked).
    UniqueFd root = open_directory(prepared.diff_path());
    run(root.get(), true);
  } else {
    TempDir target(context.store.root() + "/mounts", "step-");
    store::Mount mount = store::Mount::overlay(lowers_for(context.store, base.top), prepared.diff_path(),
                                               prepared.work_path(), target.path());
    {
      UniqueFd root = open_directory(target.path());
      run(root.get(), false);
    }
    mount.unmount();
  }
  return Ref{snapshots.commit_deferred(std::move(prepared)).id, ""};
}

Ref execute_merge_op(OpContext& context, const graph::MergeOp& op) {
  std::optional<std::string> top = context.input(op.inputs.at(0)).top;
  for (size_t i = 1; i < op.inputs.size(); ++i) {
    const Ref& layers = context.input(op.inputs[i]);
    if (!layers.local_path.empty()) throw Error(ErrorKind::internal, "a merge of a local source");
    if (!top) {  // on nothing, a chain is already what the merge would make
      top = layers.top;
      continue;
    }
    for (const store::SnapshotRecord& layer : context.store.snapshots().records_bottom_up(layers.top)) {
      context.cancel.check();
      top = restack_layer(context.store, layer.id, top);
    }
  }
  return Ref{top, ""};
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
