#!/usr/bin/env python3
"""Crash consistency and concurrency of the store: a real kbuildd on a private socket and store
(test_registry.Daemon).

- kill -9 at a random moment (seeded; the seed and every delay are printed): N times, a mixed
  build (COPY of a large context, RUN steps with a cache mount, an OCI export) is started on a
  pruned store and the daemon killed mid-way, with the step processes it left (as systemd kills
  a unit's cgroup). The daemon started again on the same store starts clean (no error in its
  log, no mount under the store, no build cgroup of the old daemon, none of the store's temp
  files or steps' work dirs), `du` adds up to what is on disk, and the same Dockerfile builds
  the rootfs a fresh store builds, file by file; a build that ended before its kill exported it.
- 16 concurrent builds sharing cache, with `prune -f` and a GC pass (builder.gc, a tiny
  defaultKeepStorage) among them: every build succeeds with the right rootfs, and every image
  they tagged is whole afterwards.

Run as root:

    python3 tests/integration/test_crash.py [--build-dir build] [-k PATTERN]

KBUILD_CRASH_SEED fixes the seed, KBUILD_CRASH_ROUNDS the number of kills (20). The last line is
`crash: N passed, M failed, K skipped` (scripts/test.sh sums it).
"""
import grp
import gzip
import hashlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite  # noqa: E402
import base_image  # noqa: E402
import test_gc  # noqa: E402  -- records() and on_disk(): du against the disk
import test_registry as harness  # noqa: E402  -- Daemon and its helpers
from daemon_process import terminate, wait_listening  # noqa: E402
from mounts import mount_points_under, unmount_all_under  # noqa: E402
from test_registry import run, write  # noqa: E402

BASE = base_image.DEFAULT_TAG
CONTEXT_FILES = 48
CONTEXT_FILE_SIZE = 256 * 1024  # 12 MB of context in all

MIXED_DOCKERFILE = f"""FROM {BASE}
COPY data /data
RUN --mount=type=cache,target=/cache cat /data/* | sha256sum > /sum && cp /data/f00 /cache/last
RUN mkdir /out && for i in 1 2 3 4 5 6 7 8; do head -c 100000 /data/f0$i > /out/part$i; done && rm /data/f01
RUN sleep 0.3 && ln -s /sum /out/sum-link && echo done > /done
"""


# -- trees: an image's rootfs as {path: attributes}, compared file by file --------------------------

def entry_of(tar, member):
    kind = "dir" if member.isdir() else "link" if member.issym() else "hard" if member.islnk() else \
        "file" if member.isfile() else f"type {member.type}"
    content = ""
    if member.isfile():
        content = hashlib.sha256(tar.extractfile(member).read()).hexdigest()
    elif member.issym() or member.islnk():
        content = member.linkname.lstrip("/") if member.islnk() else member.linkname
    # Times differ from one build to the next: everything else must not.
    return (kind, member.mode & 0o7777, member.uid, member.gid, member.size if member.isfile() else 0, content)


def tree_of_tar(data):
    """A rootfs tar (type=tar) as {path: (kind, mode, uid, gid, size, content)}."""
    tree = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar:
            path = member.name.removeprefix("./").lstrip("/").rstrip("/")
            if path:
                tree[path] = entry_of(tar, member)
    return tree


def apply_layer(tree, layer):
    """One layer tar applied as overlay upper dirs are: whiteouts delete, opaque dirs empty."""
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        for member in tar:
            path = member.name.removeprefix("./").lstrip("/").rstrip("/")
            if not path:
                continue
            parent, _, name = path.rpartition("/")
            if name == ".wh..wh..opq":
                for key in [k for k in tree if k.startswith(parent + "/")]:
                    del tree[key]
            elif name.startswith(".wh."):
                gone = (parent + "/" if parent else "") + name[4:]
                for key in [k for k in tree if k == gone or k.startswith(gone + "/")]:
                    del tree[key]
            else:
                tree[path] = entry_of(tar, member)
    return tree


def tree_of_oci(data):
    """The rootfs of the one image in an OCI archive (type=oci), its layers applied in order."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        def blob(digest):
            return tar.extractfile("blobs/sha256/" + digest.split(":", 1)[1]).read()
        index = json.loads(tar.extractfile("index.json").read())
        manifest = json.loads(blob(index["manifests"][0]["digest"]))
        tree = {}
        for layer in manifest["layers"]:
            raw = blob(layer["digest"])
            apply_layer(tree, gzip.decompress(raw) if layer["mediaType"].endswith("gzip") else raw)
        return tree


def tree_of_docker_archive(data):
    """The rootfs of the one image in a `kbuildctl save` archive."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())[0]
        tree = {}
        for layer in manifest["Layers"]:
            raw = tar.extractfile(layer).read()
            apply_layer(tree, gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
        return tree


def tree_difference(got, want):
    """The paths whose entries differ, for an assertion message (empty when equal)."""
    lines = []
    for path in sorted(set(got) | set(want)):
        if got.get(path) != want.get(path):
            lines.append(f"{path}: {got.get(path)} != {want.get(path)}")
    return "\n".join(lines[:40])


# -- the daemon, killed and started again -------------------------------------------------------

def own_cgroups():
    """{controller or "": path} of this process, from /proc/self/cgroup (the daemon inherits it)."""
    groups = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(","):
                groups[controller.removeprefix("name=")] = path
    return groups


def build_group_parents(root):
    """The direct backend's parent group of the daemon on `root` in each hierarchy (see
    direct_cgroup_parent in service/daemon.cc): where the builds' kbuild-* groups live."""
    name = "kbuild_" + hashlib.sha256(root.encode()).hexdigest()[:12]
    groups = own_cgroups()
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return [os.path.join("/sys/fs/cgroup", groups.get("", "/").lstrip("/"), name)]
    parents = []
    for controller in ("memory", "pids", "cpu"):
        mount = os.path.join("/sys/fs/cgroup", controller)
        if controller in groups and os.path.isdir(mount):
            parents.append(os.path.join(mount, groups[controller].lstrip("/"), name))
    return parents


def build_groups(root):
    """Every build group (kbuild-*) of the daemon on `root`, in every hierarchy."""
    found = []
    for parent in build_group_parents(root):
        if os.path.isdir(parent):
            found += [os.path.join(parent, name) for name in os.listdir(parent) if name.startswith("kbuild-")]
    return found


def pids_in_groups(dirs):
    pids = set()
    for top in dirs:
        for where, _, _ in os.walk(top):
            try:
                with open(os.path.join(where, "cgroup.procs")) as f:
                    pids |= {int(p) for p in f.read().split()}
            except OSError:
                pass
    return pids


def alive(pid):
    """Whether `pid` is a process that has not exited (a zombie has, and waits for its reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def describe(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return f"{pid} " + " ".join(l.split(":", 1)[1].strip() for l in f if l.startswith(("Name", "State", "PPid")))
    except OSError:
        return f"{pid} (gone)"


def kill_quietly(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def session_members(sid):
    members = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.getsid(int(name)) == sid:
                    members.add(int(name))
            except OSError:
                pass
    return members


class Daemon(harness.Daemon):
    """test_registry.Daemon that can be killed with SIGKILL and started again on its store, each
    run logging to a file of its own."""

    def __init__(self, workdir, config=None):
        super().__init__(workdir, config)
        with open(f"/proc/{self.process.pid}/cmdline") as f:
            self.command = f.read().split("\0")[:-1]
        self.runs = 1

    def kill_9(self):
        """SIGKILL to the daemon, then to every process it left (its session's and those in its
        builds' groups), as systemd kills what is left in a unit's cgroup."""
        sid = self.process.pid  # start_new_session: the daemon leads its session
        self.process.kill()
        self.process.wait()
        for _ in range(20):
            left = {p for p in session_members(sid) | pids_in_groups(build_groups(self.root)) if alive(p)}
            if not left:
                return
            for pid in left:
                kill_quietly(pid)
            time.sleep(0.05)
        raise AssertionError(f"processes of the killed daemon survive: {[describe(p) for p in sorted(left)]}")

    def restart(self):
        self.runs += 1
        self.log_path = os.path.join(self.workdir, f"kbuildd.{self.runs}.log")
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        if not wait_listening(self.process, self.socket, 30):
            terminate(self.process, 5)
            raise AssertionError(f"kbuildd did not start again on its store:\n{self.log()[-3000:]}")
        # The socket listens before the store's sweep is done; an answered call comes after it.
        self.client("du")


def leftovers(root):
    """What a crash may leave in the store that no running daemon should have kept: temp files
    of blobs and snapshots, working dirs of steps and exports, half-made cache mounts."""
    found = []
    tmp = os.path.join(root, "blobs", "tmp")
    found += [os.path.join(tmp, n) for n in os.listdir(tmp)] if os.path.isdir(tmp) else []
    snapshots = os.path.join(root, "snapshots")
    found += [os.path.join(snapshots, n) for n in os.listdir(snapshots) if n.startswith("tmp-")]
    mounts = os.path.join(root, "mounts")
    found += [os.path.join(mounts, n) for n in os.listdir(mounts)] if os.path.isdir(mounts) else []
    cache = os.path.join(root, "cache")
    found += [os.path.join(cache, n) for n in os.listdir(cache) if n.startswith("new-")] \
        if os.path.isdir(cache) else []
    sandbox = os.path.join(root, "sandbox")
    found += [os.path.join(sandbox, n) for n in os.listdir(sandbox) if ".tmp" in n] \
        if os.path.isdir(sandbox) else []
    return found


class CrashTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.workdir = tempfile.mkdtemp(prefix="kbuild-crash-")
        os.chmod(cls.workdir, 0o755)
        cls.base_archive = os.path.join(cls.workdir, "base.tar")
        base_image.write_base_image(cls.base_archive, BASE)

    @classmethod
    def tearDownClass(cls):
        unmount_all_under(cls.workdir)
        shutil.rmtree(cls.workdir, ignore_errors=True)

    def path(self, *parts):
        # Short: a daemon's socket lives here, and a socket's path has 107 bytes at most.
        return os.path.join(self.workdir, self.id().rsplit(".", 1)[-1].removeprefix("test_")[:16], *parts)

    def daemon(self, name, config=None):
        daemon = Daemon(self.path(name), config)
        self.addCleanup(daemon.stop)
        daemon.client("load", "-i", self.base_archive)
        return daemon

    def build(self, daemon, ctx, *args):
        return daemon.client("build", "--progress", "plain", *args, ctx, timeout=300)

    def read(self, path):
        with open(path, "rb") as f:
            return f.read()

    def assert_clean_start(self, d, old_groups):
        """What the start after a kill must leave: no error in its log, no mount under the
        store, no group of the old daemon's builds, no temp file in the store."""
        self.assertEqual(mount_points_under(d.root), [])
        self.assertEqual([g for g in old_groups if os.path.isdir(g)], [])
        self.assertEqual(build_groups(d.root), [])
        self.assertEqual(leftovers(d.root), [])
        self.assertNotIn("error", d.log().lower(), d.log()[-3000:])

    def assert_du_adds_up(self, d):
        recs = test_gc.records(d)
        counted, disk = test_gc.total(recs), test_gc.on_disk(d.root)
        self.assertLessEqual(counted, disk)
        self.assertLessEqual(disk - counted, 4 * 4096 * len(recs) + 64 * 1024, (counted, disk))

    # -- tests ------------------------------------------------------------------------------------

    def test_kill_9_at_random_moments_leaves_a_store_that_builds_right(self):
        seed = int(os.environ.get("KBUILD_CRASH_SEED") or random.randrange(1 << 32))
        rounds = int(os.environ.get("KBUILD_CRASH_ROUNDS", "20"))
        print(f"\ncrash: seed {seed} (KBUILD_CRASH_SEED={seed} repeats this run), {rounds} rounds", flush=True)
        rng = random.Random(seed)
        ctx = self.path("ctx")
        write(os.path.join(ctx, "Dockerfile"), MIXED_DOCKERFILE)
        data = random.Random(seed).randbytes(CONTEXT_FILES * CONTEXT_FILE_SIZE)
        for i in range(CONTEXT_FILES):
            write(os.path.join(ctx, "data", f"f{i:02d}"), data[i * CONTEXT_FILE_SIZE:(i + 1) * CONTEXT_FILE_SIZE])

        # What a fresh store builds, and how long it takes: kills land anywhere in that time.
        fresh = self.daemon("fresh")
        started = time.monotonic()
        self.build(fresh, ctx, "-o", f"type=tar,dest={self.path('fresh.tar')}")
        duration = time.monotonic() - started
        fresh.stop()
        want = tree_of_tar(self.read(self.path("fresh.tar")))
        self.assertIn("out/sum-link", want)
        self.assertNotIn("data/f01", want)

        d = self.daemon("d")
        completed = with_leftovers = with_groups = 0
        for i in range(rounds):
            d.client("prune", "-a", "-f")  # the killed build has everything to make again
            delay = rng.uniform(0, duration * 1.1)
            print(f"crash: round {i + 1}: kill -9 after {delay:.3f}s of a {duration:.2f}s build", flush=True)
            oci = self.path(f"round{i}.oci.tar")
            client = subprocess.Popen(d.argv("build", "--progress", "plain", "-o", f"type=oci,dest={oci}", ctx),
                                      env=d.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(delay)
            old_groups = build_groups(d.root)
            d.kill_9()
            _, client_err = client.communicate(timeout=60)
            if client.returncode == 0:
                # Done before the kill: what it exported is the fresh store's rootfs.
                completed += 1
                self.assertEqual(tree_difference(tree_of_oci(self.read(oci)), want), "")
            # What the sweep at the next start has to clear (mounts die with the daemon's namespace).
            with_leftovers += bool(leftovers(d.root))
            with_groups += bool(build_groups(d.root))
            d.restart()
            self.assert_clean_start(d, old_groups)
            self.assert_du_adds_up(d)
            out = self.path(f"round{i}.tar")
            self.build(d, ctx, "-o", f"type=tar,dest={out}")
            self.assertEqual(tree_difference(tree_of_tar(self.read(out)), want), "", f"round {i + 1}")
            os.unlink(out)
            self.assertNotIn("error", d.log().lower(), d.log()[-3000:])
        print(f"crash: {completed} of {rounds} builds ended before their kill; {with_leftovers} left files for the "
              f"sweep, {with_groups} build cgroups", flush=True)
        self.assertGreater(with_leftovers, 0)
        d.stop()
        self.assertEqual(d.process.returncode, 0, d.log()[-3000:])

    def test_concurrent_builds_with_prune_and_gc_keep_what_they_use(self):
        builds = 16
        d = self.daemon("d", {"builder": {"gc": {"enabled": True, "defaultKeepStorage": "1MB"}}})
        contexts, wants = [], []
        for i in range(builds):
            ctx = self.path(f"ctx{i}")
            own = f"build {i}\n" * 2000
            # Every build shares the first step, one in four the second, and each has its own; the
            # first stage's layer is no image's, for the GC passes after each build to take.
            write(os.path.join(ctx, "Dockerfile"),
                  f"FROM {BASE} AS work\nRUN seq 1 {50000 + i} > /scratch\n"
                  f"FROM {BASE}\nRUN seq 1 200000 > /shared\nRUN seq 1 {i % 4 + 1} > /group\nCOPY own /own\n"
                  f"COPY --from=work /scratch /scratch\nRUN cat /shared /group /own /scratch | sha256sum > /sum\n")
            write(os.path.join(ctx, "own"), own)
            contexts.append(ctx)
            shared = "".join(f"{n}\n" for n in range(1, 200001))
            group = "".join(f"{n}\n" for n in range(1, i % 4 + 2))
            scratch = "".join(f"{n}\n" for n in range(1, 50001 + i))
            digest = hashlib.sha256((shared + group + own + scratch).encode()).hexdigest()
            wants.append({"shared": shared.encode(), "group": group.encode(), "own": own.encode(),
                          "scratch": scratch.encode(), "sum": f"{digest}  -\n".encode()})

        results = [None] * builds
        done = threading.Event()
        # kbuildd runs 8 calls of one uid at once: the builds come from two callers of its group
        # (unnamed uids: the daemon reads a caller's groups from its socket), the prunes from root.
        group = grp.getgrnam("kbuild").gr_gid
        callers = [64101, 64102]
        outs = []
        for uid in callers:
            outs.append(self.path(f"out-{uid}"))
            os.makedirs(outs[-1])
            os.chown(outs[-1], uid, group)

        def as_caller(uid):
            def demote():
                os.setgroups([group])
                os.setgid(group)
                os.setuid(uid)
            return demote

        def build(i):
            out = os.path.join(outs[i % 2], f"{i}.tar")
            results[i] = run(d.argv("build", "--progress", "plain", "-t", f"concurrent-{i}", "-o",
                                    f"type=tar,dest={out}", contexts[i]), check=False, env=d.env(), timeout=300,
                             preexec_fn=as_caller(callers[i % 2]))

        threads = [threading.Thread(target=build, args=(i,)) for i in range(builds)]
        for thread in threads:
            thread.start()
        prunes = []

        def prune_among_builds():
            while not done.is_set():
                prunes.append(d.client("prune", "-f", check=False))
                time.sleep(0.2)
        pruner = threading.Thread(target=prune_among_builds)
        pruner.start()
        for thread in threads:
            thread.join()
        done.set()
        pruner.join()
        self.assertGreater(len(prunes), 1)
        for prune in prunes:
            self.assertEqual(prune.returncode, 0, prune.stderr)
        for i, result in enumerate(results):
            self.assertEqual(result.returncode, 0, f"build {i}:\n{result.stderr[-3000:]}")
            out = os.path.join(outs[i % 2], f"{i}.tar")
            tree = tree_of_tar(self.read(out))
            with tarfile.open(out) as tar:
                for name, content in wants[i].items():
                    self.assertEqual(tar.extractfile(name).read(), content, f"build {i}: /{name}")
            # Nothing a tagged image stands on went: its saved layers make the same rootfs.
            archive = self.path(f"image{i}.tar")
            d.client("save", f"concurrent-{i}", "-o", archive)
            self.assertEqual(tree_difference(tree_of_docker_archive(self.read(archive)), tree), "", f"image {i}")
        self.assertIn("garbage collection freed", d.log(), d.log()[-3000:])
        self.assertNotIn("error", d.log().lower(), d.log()[-3000:])
        self.assert_du_adds_up(d)


def main():
    return suite.main("crash", CrashTest, needs_root="they run root daemons", harness=harness)


if __name__ == "__main__":
    sys.exit(main())
