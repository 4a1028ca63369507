#!/usr/bin/env python3
"""Disk usage and garbage collection: a real kbuildd on a private socket and store
(test_registry.Daemon). `kbuildctl du` lists the store's records with types and sizes that add
up to what is on disk; `prune` and `image prune` free what they say, never what an in-flight
build holds or a tagged image stands on; daemon.json's builder.gc keeps the store under
defaultKeepStorage after a series of builds; bad flags and filters get one clear error. Run as
root:

    python3 tests/integration/test_gc.py [--build-dir build] [-k PATTERN]

The last line is `gc: N passed, M failed, K skipped` (scripts/test.sh sums it).
"""
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite  # noqa: E402
import base_image  # noqa: E402
import test_registry as harness  # noqa: E402  -- Daemon and its helpers
from mounts import unmount_all_under  # noqa: E402
from test_registry import run, wait_until, write  # noqa: E402

BASE = base_image.DEFAULT_TAG


def human_size(size):
    """go-units HumanSize, as buildx and docker print sizes."""
    units = ["B", "kB", "MB", "GB", "TB"]
    value, unit = float(size), 0
    while value >= 1000 and unit < len(units) - 1:
        value /= 1000
        unit += 1
    return f"{value:.4g}{units[unit]}"


def records(daemon, *filters):
    """The store's records, from the DiskUsage method itself (exact sizes)."""
    args = ["DiskUsage", "a{sv}", "2", "records", "b", "true", "filters", "as", str(len(filters)), *filters]
    result = run(["busctl", f"--address=unix:path={daemon.socket}", "--json=short", "call", "org.kbuild.Builder1",
                  "/org/kbuild/Builder1", "org.kbuild.Builder1", *args])
    return json.loads(result.stdout)["data"][0]["records"]["data"]


def on_disk(root):
    """Bytes allocated under the store's snapshot, blob, cache-mount and context dirs, hard links
    once (what `du -s --block-size=1` reports: du's records count blocks, as BuildKit's do)."""
    dirs = [os.path.join(root, d) for d in ("snapshots", "blobs/sha256", "cache", "contexts")
            if os.path.isdir(os.path.join(root, d))]
    out = run(["du", "-s", "--block-size=1", "--total", *dirs]).stdout.splitlines()[-1]
    return int(out.split()[0])


def total(recs, shared=None):
    return sum(int(r["size"]) for r in recs if shared is None or (r["shared"] == "true") == shared)


class GcTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.workdir = tempfile.mkdtemp(prefix="kbuild-gc-")
        os.chmod(cls.workdir, 0o755)
        cls.base_archive = os.path.join(cls.workdir, "base.tar")
        base_image.write_base_image(cls.base_archive, BASE)

    @classmethod
    def tearDownClass(cls):
        unmount_all_under(cls.workdir)
        shutil.rmtree(cls.workdir, ignore_errors=True)

    # -- helpers --------------------------------------------------------------------------------

    def path(self, *parts):
        # Short: a daemon's socket lives here, and a socket's path has 107 bytes at most.
        return os.path.join(self.workdir, self.id().rsplit(".", 1)[-1].removeprefix("test_")[:24], *parts)

    def daemon(self, config=None):
        daemon = harness.Daemon(self.path("d"), config)
        self.addCleanup(daemon.stop)
        daemon.client("load", "-i", self.base_archive)
        return daemon

    def context(self, dockerfile, name="ctx", files=None):
        path = self.path(name)
        shutil.rmtree(path, ignore_errors=True)
        write(os.path.join(path, "Dockerfile"), dockerfile)
        for rel, data in (files or {}).items():
            write(os.path.join(path, rel), data)
        return path

    def build(self, daemon, ctx, *args):
        return daemon.client("build", "--progress", "plain", *args, ctx, timeout=300)

    # -- tests ----------------------------------------------------------------------------------

    def test_du_lists_typed_records_whose_sizes_add_up_to_the_disk(self):
        d = self.daemon()
        ctx = self.context(f"FROM {BASE}\nCOPY data /data\n"
                           "RUN --mount=type=cache,target=/cache dd if=/dev/zero of=/cache/obj bs=1k count=300\n"
                           "RUN dd if=/dev/zero of=/big bs=1k count=500\n",
                           files={"data": "x" * 200000})
        self.build(d, ctx)
        recs = records(d)
        types = {r["type"] for r in recs}
        self.assertEqual(types, {"regular", "exec.cachemount", "source.local"})
        mounts = [r for r in recs if r["type"] == "exec.cachemount"]
        self.assertEqual(len(mounts), 1)
        self.assertGreaterEqual(int(mounts[0]["size"]), 300 * 1024)
        self.assertEqual(mounts[0]["mutable"], "true")
        self.assertTrue(any(int(r["size"]) >= 500 * 1024 for r in recs if r["type"] == "regular"))
        # The base image is tagged: its layer and blobs are shared.
        self.assertTrue(any(r["shared"] == "true" for r in recs))
        # The context directory the next build reads again, as BuildKit's local source.
        sources = [r for r in recs if r["type"] == "source.local"]
        self.assertEqual(len(sources), 1)
        self.assertGreaterEqual(int(sources[0]["size"]), 200000)
        self.assertEqual(sources[0]["description"], "local source for context")
        # What du counts is what is on disk, but for the store's own directories (a snapshot's
        # dir, diff/ and work/, the blob, cache and context roots).
        counted, disk = total(recs), on_disk(d.root)
        self.assertLessEqual(counted, disk)
        self.assertLessEqual(disk - counted, 4 * 4096 * len(recs) + 64 * 1024, (counted, disk))
        # The table and the totals, in buildx's words.
        table = d.client("du").stdout
        lines = table.splitlines()
        self.assertRegex(lines[0], r"^ID\t+RECLAIMABLE\t+SIZE\t+LAST ACCESSED$")
        self.assertEqual(len([l for l in lines if l.endswith(" ago") or "\ttrue" in l or "\tfalse" in l]), len(recs))
        self.assertIn(f"Shared:\t\t{human_size(total(recs, shared=True))}\n", table)
        self.assertIn(f"Private:\t{human_size(total(recs, shared=False))}\n", table)
        self.assertIn(f"Reclaimable:\t{human_size(total(recs))}\n", table)
        self.assertTrue(table.endswith(f"Total:\t\t{human_size(total(recs))}\n"), table[-300:])
        verbose, summary = d.client("du", "--verbose").stdout.rsplit("\n\n", 1)
        self.assertTrue(summary.endswith(f"Total:\t\t{human_size(total(recs))}\n"), summary)
        for key in ("ID:", "Created at:", "Mutable:", "Reclaimable:", "Shared:", "Size:", "Usage count:", "Type:"):
            self.assertEqual(verbose.count(f"\n{key}") + verbose.startswith(key), len(recs), key)
        filtered = d.client("du", "--filter", "type=exec.cachemount").stdout.splitlines()
        self.assertEqual(len(filtered), 2, filtered)  # the header, one row, and no totals
        self.assertTrue(filtered[1].startswith(mounts[0]["id"] + "*"))

    def test_prune_frees_what_it_says_and_keeps_tagged_images(self):
        d = self.daemon()
        ctx = self.context(f"FROM {BASE}\nRUN dd if=/dev/zero of=/big bs=1k count=400\nRUN echo two > /two\n")
        self.build(d, ctx)
        before = records(d)
        # Answered "n": nothing goes.
        refused = d.client("prune", input="n\n")
        self.assertEqual(refused.stdout, "WARNING! This will remove all dangling build cache. "
                                         "Are you sure you want to continue? [y/N] ")
        self.assertEqual(total(records(d)), total(before))
        # The build's image has no name: its layers are an image's, left without --all.
        snapshots = {r["id"] for r in before if r["type"] == "regular" and not r["id"].startswith("sha256:")}
        self.assertIn("Total:", d.client("prune", "-f").stdout)
        self.assertEqual(snapshots - {r["id"] for r in records(d)}, set())
        before = records(d)
        out = d.client("prune", "-a", "-f").stdout
        after = records(d)
        freed = total(before) - total(after)
        self.assertGreater(freed, 400 * 1024)
        self.assertTrue(out.endswith(f"Total:\t{human_size(freed)}\n"), out)
        self.assertRegex(out.splitlines()[0], r"^ID\t+RECLAIMABLE\t+SIZE\t+LAST ACCESSED$")
        # Everything left is the tagged base image's, which still builds.
        self.assertTrue(after and all(r["shared"] == "true" for r in after), after)
        self.assertEqual(total(after), total([r for r in before if r["shared"] == "true"]))
        self.build(d, self.context(f"FROM {BASE}\nRUN test -x /bin/sh\n", name="again"))

    def test_a_prune_during_a_build_leaves_it_whole(self):
        d = self.daemon()
        ctx = self.context(f"FROM {BASE}\nCOPY data /data\nRUN echo before > /before\n"
                           "RUN sleep 4 && cat /data /before > /after\nRUN echo last > /last\n",
                           files={"data": "context data\n"})
        out_dir = self.path("out")
        progress_path = self.path("progress.txt")
        with open(progress_path, "w") as progress:
            build = subprocess.Popen(d.argv("build", "--progress", "plain", "-o", f"type=local,dest={out_dir}", ctx),
                                     env=d.env(), stdout=subprocess.DEVNULL, stderr=progress)
        try:
            def sleeping():
                with open(progress_path, errors="replace") as f:
                    return "RUN sleep 4" in f.read()
            self.assertTrue(wait_until(sleeping, 120), "the slow step did not start")
            pruned = d.client("prune", "-a", "-f").stdout
            self.assertEqual(build.wait(timeout=300), 0, open(progress_path, errors="replace").read()[-3000:])
        finally:
            if build.poll() is None:
                build.kill()
                build.wait()
        self.assertIn("Total:", pruned)
        with open(os.path.join(out_dir, "after")) as f:
            self.assertEqual(f.read(), "context data\nbefore\n")
        with open(os.path.join(out_dir, "last")) as f:
            self.assertEqual(f.read(), "last\n")
        # What the build made survived the prune: the same build again is all cache hits.
        again = self.build(d, ctx).stderr
        for step in ("RUN echo before", "RUN sleep 4", "RUN echo last"):
            self.assertRegex(again, rf"{step}[^\n]*\n#\d+ CACHED", step)

    def test_prune_removes_remembered_contexts_and_the_next_build_reads_them_again(self):
        d = self.daemon()
        dockerfile = f"FROM {BASE}\nCOPY . /ctx\n"
        one = self.context(dockerfile, name="one", files={"a": "one a\n", "big": "x" * 300000})
        two = self.context(dockerfile, name="two", files={"b": "two b\n"})
        self.build(d, one)
        self.build(d, two)
        recs = records(d)
        sources = [r for r in recs if r["type"] == "source.local"]
        self.assertEqual(len(sources), 2, sources)
        for r in sources:
            self.assertEqual(r["description"], "local source for context")
            self.assertEqual((r["in-use"], r["mutable"], r["shared"], r["usage-count"]), ("false", "true", "false", "1"))
            self.assertIn("last-used", r)
        self.assertGreaterEqual(max(int(r["size"]) for r in sources), 300000)
        contexts = os.path.join(d.root, "contexts")
        self.assertEqual(sorted(os.listdir(contexts)), sorted(r["id"] for r in sources))
        # du still adds up with the contexts on disk counted.
        counted, disk = total(recs), on_disk(d.root)
        self.assertLessEqual(counted, disk)
        self.assertLessEqual(disk - counted, 4 * 4096 * len(recs) + 64 * 1024, (counted, disk))
        listed = d.client("du", "--filter", "type=source.local").stdout.splitlines()
        self.assertEqual(len(listed), 3, listed)
        # The same directory built again reuses its record.
        self.build(d, two)
        again = [r for r in records(d, "type==source.local")]
        self.assertEqual(sorted(r["usage-count"] for r in again), ["1", "2"])
        before = records(d)
        out = d.client("prune", "-f", "--filter", "type=source.local").stdout
        after = records(d)
        self.assertEqual([r for r in after if r["type"] == "source.local"], [])
        self.assertEqual({r["id"] for r in after}, {r["id"] for r in before if r["type"] != "source.local"})
        freed = total(before) - total(after)
        self.assertGreaterEqual(freed, 300000)
        self.assertTrue(out.endswith(f"Total:\t{human_size(freed)}\n"), out)
        self.assertEqual(os.listdir(contexts), [])
        # The next build of the same directory reads it whole again, changes and all.
        write(os.path.join(one, "a"), "one a changed\n")
        out_dir = self.path("out")
        self.build(d, one, "-o", f"type=local,dest={out_dir}")
        with open(os.path.join(out_dir, "ctx", "a")) as f:
            self.assertEqual(f.read(), "one a changed\n")
        with open(os.path.join(out_dir, "ctx", "big")) as f:
            self.assertEqual(f.read(), "x" * 300000)
        self.assertEqual(len(records(d, "type==source.local")), 1)

    def test_a_prune_while_a_build_reads_a_large_context_leaves_it_whole(self):
        d = self.daemon()
        files = {f"f{i:03}": os.urandom(256 * 1024).hex() for i in range(160)}  # 80 MiB
        ctx = self.context(f"FROM {BASE}\nCOPY . /ctx\n", files=files)
        self.build(d, ctx)  # remembered: the next build updates it in place
        for i in range(0, 160, 2):
            files[f"f{i:03}"] = os.urandom(256 * 1024).hex()
            write(os.path.join(ctx, f"f{i:03}"), files[f"f{i:03}"])
        out_dir = self.path("out")
        build = subprocess.Popen(d.argv("build", "--progress", "plain", "-o", f"type=local,dest={out_dir}", ctx),
                                 env=d.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        prunes = 0
        try:
            while build.poll() is None:
                d.client("prune", "-f", "--filter", "type=source.local")
                prunes += 1
            stderr = build.communicate(timeout=300)[1]
        finally:
            if build.poll() is None:
                build.kill()
                build.wait()
        self.assertEqual(build.returncode, 0, stderr[-3000:])
        self.assertGreater(prunes, 0)
        for name, data in files.items():
            with open(os.path.join(out_dir, "ctx", name)) as f:
                self.assertEqual(f.read(), data, name)
        # Held no more, its context goes with the next prune.
        d.client("prune", "-f", "--filter", "type=source.local")
        self.assertEqual(records(d, "type==source.local"), [])
        self.assertEqual(os.listdir(os.path.join(d.root, "contexts")), [])

    def test_image_prune_takes_dangling_images_and_with_all_the_rest(self):
        d = self.daemon()
        ctx = self.context(f"FROM {BASE}\nRUN echo one > /v\n")
        self.build(d, ctx, "-t", "app:latest")
        first = d.image_id("app:latest")
        ctx = self.context(f"FROM {BASE}\nRUN echo two > /v\n")
        self.build(d, ctx, "-t", "app:latest")
        second = d.image_id("app:latest")
        self.assertNotEqual(first, second)
        refused = d.client("image", "prune", input="\n")
        self.assertEqual(refused.stdout, "WARNING! This will remove all dangling images.\n"
                                         "Are you sure you want to continue? [y/N] ")
        out = d.client("image", "prune", "-f").stdout
        self.assertTrue(out.startswith(f"Deleted Images:\ndeleted: {first}\n\nTotal reclaimed space: "), out)
        self.assertEqual(d.names(), {"app:latest", f"{BASE}:latest"})
        self.assertEqual(d.client("image", "prune", "-f").stdout, "Total reclaimed space: 0B\n")
        out = d.client("image", "prune", "-a", "-f").stdout
        self.assertIn("untagged: app:latest\n", out)
        self.assertIn(f"deleted: {second}\n", out)
        self.assertEqual(d.names(), set())

    def test_gc_policy_keeps_the_store_under_default_keep_storage(self):
        keep = 3 * 1024 * 1024
        d = self.daemon({"builder": {"gc": {"enabled": True, "defaultKeepStorage": "3MB"}}})
        layer = 2 * 1024 * 1024
        for i in range(4):
            ctx = self.context(f"FROM {BASE}\nRUN dd if=/dev/urandom of=/big bs=1k count={layer // 1024} "
                               f"&& echo {i}\n", name=f"ctx{i}")
            self.build(d, ctx)

        def under_limit():
            return total(records(d), shared=False) <= keep + layer
        self.assertTrue(wait_until(under_limit, 60, step=1), records(d))
        self.assertIn("garbage collection freed", d.log())
        # The last build is what stays: built again, its step is a cache hit.
        again = self.build(d, ctx).stderr
        self.assertRegex(again, r"RUN dd [^\n]*\n#\d+ CACHED")

    def test_a_load_that_fails_leaves_none_of_its_blobs_and_names_nothing(self):
        daemon = self.daemon()
        blobs_dir = os.path.join(daemon.root, "blobs", "sha256")
        # A good image, then one whose config promises another layer than the one it carries:
        # the second fails as its layer is checked, after the archive's blobs are all stored.
        good = self.path("good.tar")
        base_image.write_base_image(good, "gc-good")
        with tarfile.open(good) as tar:
            members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
        manifest = json.loads(next(data for m, data in members if m.name == "manifest.json"))
        config_name = manifest[0]["Config"]
        config = json.loads(next(data for m, data in members if m.name == config_name))
        config["rootfs"]["diff_ids"] = ["sha256:" + "0" * 64]
        lying = json.dumps(config).encode()
        lying_name = hashlib.sha256(lying).hexdigest() + ".json"
        manifest.append({"Config": lying_name, "RepoTags": ["gc-lying:1"], "Layers": manifest[0]["Layers"]})
        bad = self.path("bad.tar")
        with tarfile.open(bad, "w") as tar:
            for member, data in members:
                if member.name == "manifest.json":
                    data = json.dumps(manifest).encode()
                    member.size = len(data)
                tar.addfile(member, io.BytesIO(data) if data is not None else None)
            info = tarfile.TarInfo(lying_name)
            info.size = len(lying)
            tar.addfile(info, io.BytesIO(lying))
        before = sorted(os.listdir(blobs_dir))
        names = daemon.names()
        result = daemon.client("load", "-i", bad, check=False)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("sha256:" + "0" * 64, result.stderr)
        self.assertEqual(daemon.names(), names, "a name was set by a load that failed")
        self.assertEqual(sorted(os.listdir(blobs_dir)), before, "the failed load left blobs")
        # The good image alone loads (the same bytes as the base the store holds: no new blob),
        # and what the store had is still there for it.
        self.assertIn("Loaded image: gc-good:latest", daemon.client("load", "-i", good).stdout)
        self.assertEqual(sorted(os.listdir(blobs_dir)), before)
        self.build(daemon, self.context("FROM gc-good\nRUN true\n"))

    def test_bad_flags_and_filters_get_one_clear_error(self):
        d = self.daemon()
        cases = [
            (["prune", "-f", "--filter", "color=red"], "invalid filter 'color=red'"),
            (["prune", "-f", "--filter", "until=soon"],
             "\"until\" filter expects a duration (e.g., '24h'): time: invalid duration \"soon\""),
            (["prune", "-f", "--filter", "until=1h", "--filter", "unused-for=2h"],
             "conflicting filters \"until\" and \"unused-for\""),
            (["prune", "-f", "--keep-storage", "lots"],
             "invalid argument \"lots\" for \"--keep-storage\" flag: invalid size: 'lots'"),
            (["du", "--filter", "bogus"], "bad format of filter (expected name=value)"),
        ]
        for args, message in cases:
            result = d.client(*args, check=False)
            self.assertEqual(result.returncode, 1, (args, result.stdout))
            self.assertEqual(result.stderr, f"ERROR: {message}\n", args)
        # A daemon.json GC setting it cannot apply is refused when it is read.
        workdir = self.path("refused")
        config = os.path.join(workdir, "daemon.json")
        write(config, '{"builder": {"gc": {"defaultKeepStorage": "huge"}}}')
        result = run([os.path.join(harness.BUILD_DIR, "service/kbuildd"), "--listen", os.path.join(workdir, "s.sock"),
                      "--root", os.path.join(workdir, "root"), "--config", config], check=False, timeout=60)
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"{config}:1:43: builder.gc.defaultKeepStorage must be a size such as \"10GB\"", result.stderr)


def main():
    return suite.main("gc", GcTest, needs_root="they run root daemons", harness=harness)


if __name__ == "__main__":
    sys.exit(main())
