#!/usr/bin/env python3
"""End-to-end tests of kbuildd and kbuildctl: a real daemon on a private socket and store,
real builds, and the images checked with skopeo and umoci. Run as root:

    python3 tests/integration/test_daemon.py [--build-dir build] [-k PATTERN]
"""
import argparse
import atexit
import functools
import grp
import gzip
import hashlib
import io
import json
import os
import pwd
import select
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import unittest

BUILD_DIR = "build"
MEMBER = "kbuild-test-member"
OUTSIDER = "kbuild-test-outsider"
GROUP = "kbuild-test"


def demotion(user):
    """A preexec_fn that makes the child `user`, with its groups."""
    pw = pwd.getpwnam(user)
    groups = [g.gr_gid for g in grp.getgrall() if user in g.gr_mem] + [pw.pw_gid]

    def demote():
        os.setgroups(groups)
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    return demote


def run(cmd, check=True, user=None, **kwargs):
    if user:
        kwargs["preexec_fn"] = demotion(user)
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


class Daemon:
    """kbuildd on a socket and store of its own, stopped with SIGTERM."""

    # Something of the daemon's own that no process a caller can inspect may carry.
    SECRET = "kbuildd-secret-7f3a9c"

    def __init__(self, workdir, group):
        self.socket = os.path.join(workdir, "kbuild.sock")
        self.root = os.path.join(workdir, "root")
        self.log = open(os.path.join(workdir, "kbuildd.log"), "w")
        self.process = subprocess.Popen(
            [os.path.join(BUILD_DIR, "service/kbuildd"), "--listen", self.socket, "--root", self.root,
             "--config", os.path.join(workdir, "daemon.json"), "--group", group],
            stdout=self.log, stderr=subprocess.STDOUT, env=dict(os.environ, KBUILD_IT_SECRET=self.SECRET))
        for _ in range(100):
            if os.path.exists(self.socket):
                return
            time.sleep(0.05)
        raise AssertionError("kbuildd did not create its socket")

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)
        self.log.close()


def kbuildctl(daemon, *args, user=None, check=True, **kwargs):
    return run([kbuildctl_for(user), "--host", "unix://" + daemon.socket] + list(args), check=check, user=user,
               **kwargs)


@functools.lru_cache(maxsize=None)
def kbuildctl_for(user):
    """The kbuildctl `user` can run: for another user, a copy in a directory anyone may enter, as
    the checkout may sit where only root can (a clone under /root, a 0700 mktemp dir)."""
    built = os.path.abspath(os.path.join(BUILD_DIR, "cli/kbuildctl"))
    if user is None:
        return built
    shared = tempfile.mkdtemp(prefix="kbuild-client-")
    os.chmod(shared, 0o755)
    atexit.register(shutil.rmtree, shared, True)
    copy = os.path.join(shared, "kbuildctl")
    shutil.copy(built, copy)
    os.chmod(copy, 0o755)
    return copy


# The system's python: test users cannot run one under /root.
PYTHON = "/usr/bin/python3"
RAW_CALL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "raw_call.py")


def raw_call(daemon, method, signature, arguments, fds=(), user=None):
    """A call of `method` made by hand (raw_call.py) in the background, as `user`: a client that
    passes the fds `fds` of this process (named by number among `arguments`) and does nothing
    else with them. Killing it is the client disconnecting."""
    return subprocess.Popen([PYTHON, RAW_CALL, daemon.socket, method, signature, json.dumps(arguments)],
                            pass_fds=list(fds), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=demotion(user) if user else None)


def build_call(daemon, dockerfile, context, progress, output, context_type="dir", outputs=()):
    """Build(options, context, progress, output) made by hand, with these fds."""
    options = [["dockerfile", ["ay", list(dockerfile.encode())]], ["context-type", ["s", context_type]]]
    if outputs:
        options.append(["outputs", ["aa{ss}", [list(o.items()) for o in outputs]]])
    return raw_call(daemon, "Build", "a{sv}hhh", [options, context, progress, output],
                    fds={context, progress, output})


def thread_count(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Threads:"))


def children(pid):
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return found


def wait_until(predicate, timeout, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


class DaemonTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.workdir = tempfile.mkdtemp(prefix="kbuild-it-")
        os.chmod(cls.workdir, 0o755)
        cls.daemon = Daemon(cls.workdir, GROUP)

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop()
        shutil.rmtree(cls.workdir, ignore_errors=True)

    def context(self, name, files):
        path = os.path.join(self.workdir, "contexts", name)
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        os.chmod(path, 0o755)
        for rel, text in files.items():
            write(os.path.join(path, rel), text)
        return path

    def build(self, ctx, *args, **kwargs):
        return kbuildctl(self.daemon, "build", "--progress", "plain", *args, ".", cwd=ctx, **kwargs)

    # -- building -------------------------------------------------------------------------------

    def test_second_identical_build_reports_every_step_cached(self):
        ctx = self.context("cache", {"Dockerfile": "FROM scratch\nCOPY a /a\nWORKDIR /w\nENV X=1\n", "a": "one\n"})
        first = self.build(ctx, "-t", "it-cache")
        self.assertIn("[1/2] COPY a /a", first.stderr)
        second = self.build(ctx, "-t", "it-cache")
        self.assertEqual(second.stderr.count("CACHED"), 2, second.stderr)
        id1 = kbuildctl(self.daemon, "build", "-q", ".", cwd=ctx).stdout.strip()
        id2 = kbuildctl(self.daemon, "build", "-q", ".", cwd=ctx).stdout.strip()
        self.assertTrue(id1.startswith("sha256:"), id1)
        self.assertEqual(id1, id2)
        write(os.path.join(ctx, "a"), "two\n")
        third = self.build(ctx, "-t", "it-cache")
        self.assertNotIn("#4 CACHED", third.stderr.split("COPY a /a")[1].split("\n\n")[0])

    def test_mtime_change_alone_keeps_the_cache(self):
        ctx = self.context("mtime", {"Dockerfile": "FROM scratch\nCOPY a /a\n", "a": "same\n"})
        self.build(ctx)
        os.utime(os.path.join(ctx, "a"), (1, 1))
        self.assertIn("CACHED", self.build(ctx).stderr)

    # The context's owners are the caller's, not the build's: reset to 0 as BuildKit's client
    # does, so the same files owned by another user (another host's CI runner) hit the cache.
    def test_the_same_context_owned_by_another_user_is_all_cached(self):
        dockerfile = "FROM scratch\nCOPY f /f\n"
        iids = []
        for uid in (1000, 2000):
            ctx = self.context(f"owned-{uid}", {"Dockerfile": dockerfile, "f": "whoever owns it\n"})
            for rel in ("", "Dockerfile", "f"):
                os.lchown(os.path.join(ctx, rel), uid, uid)
            iid = os.path.join(self.workdir, f"owned-{uid}.iid")
            result = self.build(ctx, "--iidfile", iid)
            with open(iid) as f:
                iids.append(f.read().strip())
            if uid == 1000:
                self.assertIn("[1/1] COPY f /f", result.stderr)
                self.assertNotIn("CACHED", result.stderr)
        self.assertEqual(result.stderr.count("CACHED"), 1, result.stderr)  # every step: the one COPY
        self.assertEqual(iids[0], iids[1])

    def test_the_same_tar_context_made_by_another_user_is_all_cached(self):
        stderr = []
        for uid in (1000, 2000):
            archive = os.path.join(self.workdir, f"owned-{uid}.tar")
            with tarfile.open(archive, "w") as t:
                for name, text in (("Dockerfile", "FROM scratch\nCOPY f /f\n"), ("f", "tarred by whoever\n")):
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime, info.uid, info.gid = len(text), 1600000000, uid, uid
                    t.addfile(info, io.BytesIO(text.encode()))
            with open(archive, "rb") as stdin:
                stderr.append(kbuildctl(self.daemon, "build", "--progress", "plain", "-", stdin=stdin).stderr)
        self.assertNotIn("CACHED", stderr[0])
        self.assertEqual(stderr[1].count("CACHED"), 1, stderr[1])

    def test_oci_and_docker_outputs_are_valid_images(self):
        ctx = self.context("outputs", {
            "Dockerfile": "FROM scratch\nCOPY hello.txt /srv/\nLABEL a=b\nCMD [\"/srv/hello.txt\"]\n",
            "hello.txt": "hello\n"})
        oci = os.path.join(self.workdir, "out.oci.tar")
        docker = os.path.join(self.workdir, "out.docker.tar")
        self.build(ctx, "-t", "it-oci:v1", "-o", f"type=oci,dest={oci}")
        self.build(ctx, "-t", "it-outputs:v1", "-o", f"type=docker,dest={docker}")
        inspect = json.loads(run(["skopeo", "inspect", "oci-archive:" + oci]).stdout)
        self.assertEqual(inspect["Labels"], {"a": "b"})
        self.assertEqual(len(inspect["Layers"]), 1)
        docker_inspect = json.loads(run(["skopeo", "inspect", "docker-archive:" + docker]).stdout)
        self.assertEqual(docker_inspect["Labels"], {"a": "b"})
        layout = os.path.join(self.workdir, "layout")
        shutil.rmtree(layout, ignore_errors=True)
        os.makedirs(layout)
        with tarfile.open(oci) as t:
            t.extractall(layout)
        with open(os.path.join(layout, "index.json")) as f:
            target = json.load(f)["manifests"][0]
        ref = target.get("annotations", {}).get("org.opencontainers.image.ref.name")
        with open(os.path.join(layout, "blobs", *target["digest"].split(":"))) as f:
            layers = json.load(f)["layers"]
        self.assertEqual([l["mediaType"] for l in layers], ["application/vnd.oci.image.layer.v1.tar+gzip"])
        bundle = os.path.join(self.workdir, "bundle")
        shutil.rmtree(bundle, ignore_errors=True)
        self.assertEqual(ref, "v1")
        run(["umoci", "unpack", "--image", layout + ":" + ref, bundle])
        with open(os.path.join(bundle, "rootfs/srv/hello.txt")) as f:
            self.assertEqual(f.read(), "hello\n")
        st = os.stat(os.path.join(bundle, "rootfs/srv/hello.txt"))
        self.assertEqual((st.st_uid, st.st_gid, st.st_mode & 0o777), (0, 0, 0o644))

    def test_layer_hashed_after_a_one_file_change_matches_its_tar(self):
        # big.bin sorts before d/: the second build's layer hash resumes after it, from the
        # first build's journal. The archive's layers must still hash to the config's diff_ids.
        big = bytes((i * 131 + i // 7) % 251 for i in range(3 << 20))
        ctx = self.context("journal", {"Dockerfile": "FROM scratch\nCOPY src /src\n", "src/d/small": "one\n"})
        with open(os.path.join(ctx, "src", "big.bin"), "wb") as f:
            f.write(big)
        # Files changed within the last few ticks are read again by the next build (racy git);
        # settled, big.bin keeps its inode in the daemon's copy of the context.
        time.sleep(0.2)
        self.build(ctx, "-t", "it-journal")
        write(os.path.join(ctx, "src", "d", "small"), "two\n")
        self.build(ctx, "-t", "it-journal")
        archive = os.path.join(self.workdir, "journal.docker.tar")
        self.build(ctx, "-o", f"type=docker,dest={archive}")
        with tarfile.open(archive) as t:
            manifest = json.load(t.extractfile("manifest.json"))[0]
            config = json.load(t.extractfile(manifest["Config"]))
            hashed = []
            for layer in manifest["Layers"]:
                digest = hashlib.sha256()
                with gzip.open(t.extractfile(layer)) as tar_bytes:
                    for chunk in iter(lambda: tar_bytes.read(1 << 20), b""):
                        digest.update(chunk)
                hashed.append("sha256:" + digest.hexdigest())
            layer_tar = tarfile.open(fileobj=gzip.open(t.extractfile(manifest["Layers"][0])))
            self.assertEqual(layer_tar.extractfile("src/d/small").read(), b"two\n")
            self.assertEqual(layer_tar.extractfile("src/big.bin").read(), big)
        self.assertEqual(hashed, config["rootfs"]["diff_ids"])

    def test_add_of_an_archive_linking_to_a_copied_file_leaves_other_layers_alone(self):
        # A layer may share a context file's inode. An archive's hard link to a file the same
        # ADD copied gets the archive's mode and times: they must not reach that inode.
        ctx = self.context("hardlink", {"Dockerfile": "FROM scratch\nCOPY a /a\n", "a": "hello\n",
                                        "Dockerfile.add": "FROM scratch\nADD a arch.tar /x/\n"})
        os.chmod(os.path.join(ctx, "a"), 0o644)
        with tarfile.open(os.path.join(ctx, "arch.tar"), "w") as t:
            link = tarfile.TarInfo("b")
            link.type, link.linkname, link.mode, link.mtime = tarfile.LNKTYPE, "a", 0o700, 1000
            t.addfile(link)
        time.sleep(0.2)  # settled: the daemon keeps these inodes in its copy of the context
        self.build(ctx, "-t", "it-hardlink-base")
        added = os.path.join(self.workdir, "hardlink-add")
        shutil.rmtree(added, ignore_errors=True)
        self.build(ctx, "-f", "Dockerfile.add", "-o", f"type=local,dest={added}")
        self.assertEqual(os.stat(os.path.join(added, "x", "b")).st_mode & 0o777, 0o700)
        self.assertEqual(os.stat(os.path.join(added, "x", "a")).st_ino, os.stat(os.path.join(added, "x", "b")).st_ino)
        archive = os.path.join(self.workdir, "hardlink-base.tar")
        self.build(ctx, "-o", f"type=docker,dest={archive}")
        with tarfile.open(archive) as t:
            manifest = json.load(t.extractfile("manifest.json"))[0]
            layer = tarfile.open(fileobj=gzip.open(t.extractfile(manifest["Layers"][0])))
            member = layer.getmember("a")
        self.assertEqual((member.mode, member.mtime), (0o644, int(os.stat(os.path.join(ctx, "a")).st_mtime)))

    def test_local_output_and_iidfile_and_metadata_file(self):
        ctx = self.context("local", {"Dockerfile": "FROM scratch\nCOPY d /d\n", "d/f": "x\n"})
        dest = os.path.join(self.workdir, "local-out")
        iid = os.path.join(self.workdir, "iid")
        meta = os.path.join(self.workdir, "meta.json")
        self.build(ctx, "-t", "it-local", "-o", f"type=local,dest={dest}", "--iidfile", iid, "--metadata-file", meta)
        with open(os.path.join(dest, "d/f")) as f:
            self.assertEqual(f.read(), "x\n")
        with open(iid) as f:
            image_id = f.read()
        with open(meta) as f:
            metadata = json.load(f)
        self.assertEqual(metadata["containerimage.config.digest"], image_id)
        self.assertTrue(metadata["containerimage.digest"].startswith("sha256:"))
        self.assertEqual(metadata["image.name"], "docker.io/library/it-local:latest")
        # The descriptor BuildKit writes: the stored manifest, by digest and size.
        descriptor = metadata["containerimage.descriptor"]
        self.assertEqual(descriptor["mediaType"], "application/vnd.oci.image.manifest.v1+json")
        self.assertEqual(descriptor["digest"], metadata["containerimage.digest"])
        stored = [os.path.join(top, name) for top, _, names in os.walk(self.daemon.root)
                  for name in names if name == descriptor["digest"].split(":")[1]]
        self.assertEqual(len(stored), 1, "the manifest is one blob in the store")
        with open(stored[0], "rb") as f:
            manifest = f.read()
        self.assertEqual(descriptor["size"], len(manifest))
        self.assertEqual("sha256:" + hashlib.sha256(manifest).hexdigest(), descriptor["digest"])

    def test_info_shows_the_service_and_what_its_store_holds(self):
        def info():
            lines = kbuildctl(self.daemon, "info").stdout.splitlines()
            return dict(line.split(": ", 1) for line in lines)
        before = info()
        self.assertEqual(before["snapshotter"], "overlayfs")
        self.assertIn(before["sandbox-backend"], ("direct", "systemd"))
        for key in ("images", "images-size", "cache-records", "cache-size", "blobs-size"):
            self.assertRegex(before["disk." + key], r"^\d+$", key)
        # A tagged image of 1 MiB more: the images' layers grow by about that much, once even
        # when a second name points at the same image.
        ctx = self.context("du", {"Dockerfile": "FROM scratch\nCOPY big /big\n", "big": "y" * (1 << 20)})
        self.build(ctx, "-t", "it-du-one")
        self.build(ctx, "-t", "it-du-two")
        after = info()
        self.assertEqual(int(after["disk.images"]), int(before["disk.images"]) + 1)
        grown = int(after["disk.images-size"]) - int(before["disk.images-size"])
        self.assertGreaterEqual(grown, 1 << 20)
        self.assertLess(grown, 2 << 20)

    def test_source_date_epoch_comes_from_the_build_arg_before_the_environment(self):
        ctx = self.context("epoch", {"Dockerfile": "FROM scratch\nCOPY f /f\n", "f": "x\n"})

        def created_and_mtime(*args, env=None):
            archive = os.path.join(self.workdir, "epoch.docker.tar")
            self.build(ctx, "-o", f"type=docker,dest={archive}", *args,
                       env=dict(os.environ, **(env or {})))
            with tarfile.open(archive) as t:
                manifest = json.load(t.extractfile("manifest.json"))[0]
                config = json.load(t.extractfile(manifest["Config"]))
                layer = tarfile.open(fileobj=gzip.open(t.extractfile(manifest["Layers"][0])))
                return config["created"], layer.getmember("f").mtime

        self.assertEqual(created_and_mtime("--build-arg", "SOURCE_DATE_EPOCH=1000000000"),
                         ("2001-09-09T01:46:40Z", 1000000000))
        self.assertEqual(created_and_mtime(env={"SOURCE_DATE_EPOCH": "1100000000"}),
                         ("2004-11-09T11:33:20Z", 1100000000))
        self.assertEqual(created_and_mtime("--build-arg", "SOURCE_DATE_EPOCH=1000000000",
                                           env={"SOURCE_DATE_EPOCH": "1100000000"}),
                         ("2001-09-09T01:46:40Z", 1000000000))
        bad = self.build(ctx, "--build-arg", "SOURCE_DATE_EPOCH=yesterday", check=False)
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn("invalid SOURCE_DATE_EPOCH: yesterday", bad.stderr)

    def test_tagged_image_serves_as_a_base_and_survives_save_and_load(self):
        base = self.context("base", {"Dockerfile": "FROM scratch\nCOPY etc /etc\nENV BASE=1\n",
                                     "etc/passwd": "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
                                     "etc/group": "root:x:0:\napp:x:1000:\n"})
        self.build(base, "-t", "it-base")
        child = self.context("child", {"Dockerfile": "FROM it-base\nCOPY --chown=app f /f\nRUN_NOT=1\n".replace("RUN_NOT=1\n", "ENV C=$BASE\n"),
                                       "f": "f\n"})
        tar_out = os.path.join(self.workdir, "child.tar")
        self.build(child, "-t", "it-child", "-o", f"type=tar,dest={tar_out}")
        with tarfile.open(tar_out) as t:
            f = t.getmember("f")
            self.assertEqual((f.uid, f.gid), (1000, 1000))
            self.assertIn("etc/passwd", t.getnames())
        saved = os.path.join(self.workdir, "saved.tar")
        kbuildctl(self.daemon, "save", "-o", saved, "it-child")
        removed = kbuildctl(self.daemon, "rmi", "it-child").stdout
        self.assertIn("Untagged: it-child:latest", removed)
        loaded = kbuildctl(self.daemon, "load", "-i", saved).stdout
        self.assertIn("Loaded image: it-child:latest", loaded)
        kbuildctl(self.daemon, "tag", "it-child", "it-child:again")
        self.assertIn("it-child", kbuildctl(self.daemon, "images").stdout)

    def test_heredoc_copy_reads_nothing_from_the_context(self):
        ctx = self.context("heredoc", {"Dockerfile": "FROM scratch\nCOPY <<EOF /hello.txt\nhello\nEOF\n",
                                       "other": "1\n"})
        first = self.build(ctx).stderr
        self.assertNotIn("load build context", first)
        with open(os.path.join(ctx, "other"), "w") as f:
            f.write("2\n")
        again = self.build(ctx).stderr
        self.assertRegex(again, r"#\d+ \[1/1\] COPY <<EOF /hello.txt\n#\d+ CACHED")

    def test_copy_link_layer_is_the_same_blob_whatever_the_base(self):
        layers = []
        for base_content in ("one", "two"):
            ctx = self.context(f"link-{base_content}", {
                "Dockerfile": f"FROM scratch\nCOPY {base_content} /base\nCOPY --link app /opt/app/\n",
                base_content: base_content + "\n", "app/bin": "#!/bin/sh\n"})
            out = os.path.join(self.workdir, f"link-{base_content}.tar")
            self.build(ctx, "-o", f"type=docker,dest={out}")
            with tarfile.open(out) as t:
                manifest = json.load(t.extractfile("manifest.json"))
                layers.append(manifest[0]["Layers"])
        self.assertNotEqual(layers[0][0], layers[1][0])
        self.assertEqual(layers[0][1], layers[1][1])

    def test_context_tar_on_stdin_carries_its_own_dockerfile_and_dockerignore(self):
        ctx = self.context("tarctx", {"Dockerfile": "FROM scratch\nCOPY . /c\n", "keep": "k\n", "drop": "d\n",
                                      ".dockerignore": "drop\n"})
        archive = os.path.join(self.workdir, "ctx.tar.gz")
        with tarfile.open(archive, "w:gz") as t:
            for name in ("Dockerfile", "keep", "drop", ".dockerignore"):
                t.add(os.path.join(ctx, name), arcname=name)
        out = os.path.join(self.workdir, "tarctx.tar")
        with open(archive, "rb") as stdin:
            kbuildctl(self.daemon, "build", "-o", f"type=tar,dest={out}", "-", stdin=stdin)
        with tarfile.open(out) as t:
            names = t.getnames()
        self.assertIn("c/keep", names)
        self.assertNotIn("c/drop", names)

    def test_dockerfile_from_stdin_with_a_context_directory(self):
        ctx = self.context("stdin-f", {"a": "from context\n", ".dockerignore": "b\n", "b": "ignored\n"})
        out = os.path.join(self.workdir, "stdin-f.tar")
        with open(self._write_tmp("stdin-f-df", "FROM scratch\nCOPY . /c\n"), "rb") as stdin:
            kbuildctl(self.daemon, "build", "-f", "-", "-o", f"type=tar,dest={out}", ctx, stdin=stdin)
        with tarfile.open(out) as t:
            self.assertIn("c/a", t.getnames())
            self.assertNotIn("c/b", t.getnames())
        with open(self._write_tmp("stdin-both", "FROM scratch\n"), "rb") as stdin:
            both = kbuildctl(self.daemon, "build", "-f", "-", "-", stdin=stdin, check=False)
        self.assertNotEqual(both.returncode, 0)
        self.assertIn("can't use stdin for both build context and dockerfile", both.stderr)

    def test_dockerfile_on_stdin_builds_without_a_context(self):
        with open(self._write_tmp("stdin-df", "FROM scratch\nENV A=1\n"), "rb") as stdin:
            result = kbuildctl(self.daemon, "build", "-q", "-", stdin=stdin)
        self.assertTrue(result.stdout.strip().startswith("sha256:"))

    def _write_tmp(self, name, text):
        path = os.path.join(self.workdir, name)
        write(path, text)
        return path

    def test_independent_stages_build_and_join(self):
        ctx = self.context("stages", {
            "Dockerfile": "FROM scratch AS a\nCOPY x /x\nFROM scratch AS b\nCOPY y /y\nFROM scratch AS unused\n"
                          "COPY missing /m\nFROM scratch\nCOPY --from=a /x /x\nCOPY --from=b /y /y\n",
            "x": "x\n", "y": "y\n"})
        out = os.path.join(self.workdir, "stages.tar")
        result = self.build(ctx, "-o", f"type=tar,dest={out}")
        self.assertNotIn("unused", result.stderr)
        with tarfile.open(out) as t:
            self.assertEqual(sorted(t.getnames()), ["x", "y"])

    # -- who may build --------------------------------------------------------------------------

    def test_outsider_is_refused_and_member_may_build(self):
        ctx = self.context("access", {"Dockerfile": "FROM scratch\nCOPY a /a\n", "a": "a\n"})
        refused = kbuildctl(self.daemon, "build", ".", cwd=ctx, user=OUTSIDER, check=False)
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn("only root and members of group kbuild may use kbuildd", refused.stderr)
        allowed = kbuildctl(self.daemon, "build", "--progress", "plain", ".", cwd=ctx, user=MEMBER)
        self.assertIn("exporting to image", allowed.stderr)

    def test_context_files_the_caller_cannot_read_fail_the_build(self):
        ctx = self.context("unreadable", {"Dockerfile": "FROM scratch\nCOPY . /c\n", "secret.txt": "s\n"})
        os.chmod(os.path.join(ctx, "secret.txt"), 0o600)
        result = kbuildctl(self.daemon, "build", "--progress", "plain", ".", cwd=ctx, user=MEMBER, check=False)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("permission denied", result.stderr.lower())
        self.assertIn("secret.txt", result.stderr)

    # -- symlinks in the context ----------------------------------------------------------------

    def test_symlink_source_resolves_inside_the_context(self):
        ctx = self.context("symlink", {"Dockerfile": "FROM scratch\nCOPY link /copied\nCOPY dir /dir\n",
                                       "etc/passwd": "context's own\n", "dir/f": "f\n"})
        os.symlink("/etc/passwd", os.path.join(ctx, "link"))
        os.symlink("/etc/shadow", os.path.join(ctx, "dir/escape"))
        out = os.path.join(self.workdir, "symlink.tar")
        self.build(ctx, "-o", f"type=tar,dest={out}")
        with tarfile.open(out) as t:
            self.assertEqual(t.extractfile("copied").read(), b"context's own\n")
            escape = t.getmember("dir/escape")
            self.assertTrue(escape.issym())
            self.assertEqual(escape.linkname, "/etc/shadow")

    # -- errors ---------------------------------------------------------------------------------

    def test_missing_dockerfile_is_one_clear_error(self):
        ctx = self.context("nodockerfile", {"a": "a"})
        result = self.build(ctx, check=False)
        self.assertEqual(result.returncode, 1)
        self.assertIn("failed to read dockerfile: open ./Dockerfile: no such file or directory", result.stderr)

    def test_copy_of_a_missing_file_names_the_line(self):
        ctx = self.context("missing", {"Dockerfile": "FROM scratch\n\nCOPY nothere /x\n"})
        result = self.build(ctx, "-t", "it-missing", check=False)
        self.assertEqual(result.returncode, 1)
        self.assertIn("   3 | >>> COPY nothere /x", result.stderr)
        self.assertIn("ERROR: failed to build: failed to solve:", result.stderr)
        self.assertIn('"/nothere": not found', result.stderr)
        self.assertNotIn("it-missing", kbuildctl(self.daemon, "images").stdout)

    def test_unknown_target_and_bad_output_are_refused(self):
        ctx = self.context("target", {"Dockerfile": "FROM scratch AS build\nFROM scratch\n"})
        result = self.build(ctx, "--target", "buld", check=False)
        self.assertIn('target stage "buld" could not be found (did you mean build?)', result.stderr)
        bad = self.build(ctx, "-o", "type=floppy,dest=x", check=False)
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn("unsupported output type floppy", bad.stderr)
        # Cache types BuildKit has and kbuild does not, and malformed entries: BuildKit's words.
        for flag, value, expected in (("--cache-to", "type=gha", 'unknown cache exporter: "gha"'),
                                      ("--cache-from", "type=s3,bucket=b", 'unknown cache importer: "s3"'),
                                      ("--cache-from", "type=inline", 'unknown cache importer: "inline"'),
                                      ("--cache-to", "mode=max", 'type required form> "mode=max"'),
                                      ("--cache-to", "type=registry", "cache-to: ref is required"),
                                      ("--cache-to", "type=registry,ref=r/a:c,mode=most", "mode"),
                                      ("--cache-to", "type=registry,ref=r/a:c,compression=lz4", "lz4")):
            refused = self.build(ctx, flag, value, check=False)
            self.assertNotEqual(refused.returncode, 0, value)
            self.assertIn(expected, refused.stderr, value)
            self.assertNotIn("FROM scratch", refused.stderr, value)

    def test_image_names_are_held_to_dockers_grammar(self):
        ctx = self.context("badref", {"Dockerfile": "FROM scratch\nCOPY f /f\n", "f": "x\n"})
        bad_tag = self.build(ctx, "-t", "me/Upper", check=False)
        self.assertNotEqual(bad_tag.returncode, 0)
        self.assertIn('invalid tag "me/Upper": repository name must be lowercase', bad_tag.stderr)  # buildx's Parse
        self.assertNotIn("COPY f /f", bad_tag.stderr, "refused before anything ran")
        self.build(ctx, "-t", "it-badref")
        for bad in ("Bad", "a//b", "x:" + "t" * 200):
            result = kbuildctl(self.daemon, "tag", "it-badref", bad, check=False)
            self.assertNotEqual(result.returncode, 0, bad)
            self.assertIn("invalid reference format", result.stderr, bad)
        write(os.path.join(ctx, "Dockerfile"), "FROM Alpine\nRUN true\n")
        bad_from = self.build(ctx, check=False)
        self.assertNotEqual(bad_from.returncode, 0)
        self.assertIn('failed to parse stage name "Alpine": invalid reference format: repository name '
                      "(library/Alpine) must be lowercase", bad_from.stderr)
        self.assertIn("FROM Alpine", bad_from.stderr)  # the Dockerfile excerpt: the line is known

    def test_malformed_dbus_call_gets_an_error_and_the_daemon_keeps_serving(self):
        result = run(["busctl", "--address=unix:path=" + self.daemon.socket, "call", "org.kbuild.Builder1",
                      "/org/kbuild/Builder1", "org.kbuild.Builder1", "TagImage", "s", "only-one"], check=False)
        self.assertNotEqual(result.returncode, 0)
        introspect = run(["busctl", "--address=unix:path=" + self.daemon.socket, "introspect", "org.kbuild.Builder1",
                          "/org/kbuild/Builder1"])
        self.assertIn(".Build", introspect.stdout)

    def test_killed_client_leaves_no_tag_and_the_next_build_works(self):
        ctx = self.context("killed", {"Dockerfile": "FROM scratch\nCOPY . /c\n"})
        for i in range(20000):  # enough files that reading the context takes a while
            d = os.path.join(ctx, f"d{i % 100}")
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, f"f{i}"), "w") as f:
                f.write("x" * 100)
        client = subprocess.Popen([os.path.abspath(os.path.join(BUILD_DIR, "cli/kbuildctl")), "--host",
                                   "unix://" + self.daemon.socket, "build", "--progress", "plain", "-t", "it-killed",
                                   "."], cwd=ctx, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for line in client.stderr:
            if "load build context" in line:
                break
        client.kill()
        client.wait()
        time.sleep(3)
        self.assertNotIn("it-killed", kbuildctl(self.daemon, "images").stdout)
        mounts_dir = os.path.join(self.daemon.root, "mounts")
        leftovers = [n for n in os.listdir(mounts_dir)] if os.path.isdir(mounts_dir) else []
        self.assertEqual(leftovers, [])
        self.build(ctx, "-t", "it-killed")
        self.assertIn("it-killed", kbuildctl(self.daemon, "images").stdout)

    # -- hostile clients ------------------------------------------------------------------------

    def assert_recovers(self, daemon, threads_before):
        """Within a second of its stalled clients leaving, kbuildd answers a new call and is back
        to the threads it had before them."""
        started = time.monotonic()
        info = run([PYTHON, RAW_CALL, daemon.socket, "Info", "", "[]"], check=False, timeout=1)
        self.assertEqual(info.returncode, 0, info.stderr)
        self.assertTrue(wait_until(lambda: thread_count(daemon.process.pid) <= threads_before,
                                   max(0.0, 1.0 - (time.monotonic() - started))),
                        f"kbuildd has {thread_count(daemon.process.pid)} threads, {threads_before} before the calls")

    def stalled_image(self):
        """An image whose archive is far larger than a pipe holds."""
        ctx = self.context("stall-image", {"Dockerfile": "FROM scratch\nCOPY big /big\n"})
        with open(os.path.join(ctx, "big"), "wb") as f:
            f.write(os.urandom(2 << 20))
        self.build(ctx, "-t", "it-stall-image")
        return ctx

    def test_load_and_save_clients_that_stall_then_leave_free_their_threads(self):
        self.stalled_image()
        time.sleep(0.5)
        before = thread_count(self.daemon.process.pid)
        load_read, load_write = os.pipe()  # nothing is ever written: the archive never comes
        save_read, save_write = os.pipe()  # nothing is ever read: the archive never fits
        calls = [raw_call(self.daemon, "LoadImages", "h", [load_read], fds=[load_read]),
                 raw_call(self.daemon, "SaveImages", "ash", [["it-stall-image"], save_write], fds=[save_write])]
        self.stall_then_leave(calls, save_read, 10, "SaveImages never began writing")
        self.assert_recovers(self.daemon, before)
        for fd in (load_read, load_write, save_read, save_write):
            os.close(fd)

    def stall_then_leave(self, calls, started_fd, timeout, never_began):
        """Waits until the daemon has begun on `started_fd`, checks every call is still stalled,
        then kills the clients: they leave without a word."""
        try:
            self.assertTrue(select.select([started_fd], [], [], timeout)[0], never_began)
            time.sleep(0.5)
            self.assertEqual([c.poll() for c in calls], [None] * len(calls),
                             [c.stderr.read() for c in calls if c.poll()])
        finally:
            for c in calls:
                c.kill()
                c.wait()

    def test_build_clients_that_stall_on_the_context_or_the_output_then_leave_free_their_threads(self):
        ctx = self.stalled_image()
        time.sleep(0.5)
        before = thread_count(self.daemon.process.pid)
        tar_read, tar_write = os.pipe()  # `build -` whose tar never comes
        out_read, out_write = os.pipe()  # `-o type=tar,dest=-` never read
        progress_read, progress_write = os.pipe()
        null = os.open(os.devnull, os.O_RDWR)
        context = os.open(ctx, os.O_RDONLY | os.O_DIRECTORY)
        calls = [build_call(self.daemon, "", tar_read, progress_write, null, context_type="tar"),
                 build_call(self.daemon, "FROM scratch\nCOPY big /big\n", context, null, out_write,
                            outputs=[{"type": "tar"}])]
        self.stall_then_leave(calls, out_read, 30, "the tar output never began")
        self.assert_recovers(self.daemon, before)
        for fd in (tar_read, tar_write, out_read, out_write, progress_read, progress_write, null, context):
            os.close(fd)

    def test_a_client_that_stops_reading_progress_slows_neither_its_build_nor_another(self):
        # Every step's name is long, so that its events fill a pipe many times over.
        long_dir = "/".join(["d" * 200] * 5)
        steps = [f"COPY a /{long_dir}/f{i}" for i in range(60)]
        ctx = self.context("slow-reader", {"Dockerfile": "FROM scratch\n" + "\n".join(steps) + "\n", "a": "a\n"})
        other = self.context("not-slowed", {"Dockerfile": "FROM scratch\nCOPY b /b\n", "b": "b\n"})
        client = subprocess.Popen([os.path.join(BUILD_DIR, "cli/kbuildctl"), "--host", "unix://" + self.daemon.socket,
                                   "build", "--progress", "plain", "-t", "it-slow-reader", "."], cwd=ctx,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            for line in client.stderr:
                if "load build definition" in line:
                    break
            client.send_signal(signal.SIGSTOP)
            started = time.monotonic()
            concurrent = subprocess.Popen([os.path.join(BUILD_DIR, "cli/kbuildctl"), "--host",
                                           "unix://" + self.daemon.socket, "build", "-q", "-t", "it-not-slowed", "."],
                                          cwd=other, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            concurrent.wait(timeout=60)
            other_took = time.monotonic() - started
            self.assertEqual(concurrent.returncode, 0, concurrent.stderr.read())
            self.assertLess(other_took, 10)
            self.assertTrue(wait_until(lambda: "it-slow-reader" in kbuildctl(self.daemon, "images").stdout, 60, 0.25),
                            "the build whose client reads no progress never finished")
            print(f"\n  stalled reader: its build finished {time.monotonic() - started:.1f}s after the client "
                  f"stopped; another build took {other_took:.1f}s", file=sys.stderr)
        finally:
            client.send_signal(signal.SIGCONT)
            client.kill()
            client.wait()

    def test_calls_in_flight_are_capped_per_caller(self):
        before = thread_count(self.daemon.process.pid)
        pipes = [os.pipe() for _ in range(8)]
        calls = [raw_call(self.daemon, "LoadImages", "h", [r], fds=[r], user=MEMBER) for r, _ in pipes]
        try:
            # Each call has a thread while it runs (a thread of an earlier test may end meanwhile:
            # the count only paces the test).
            wait_until(lambda: thread_count(self.daemon.process.pid) >= before + 8, 5)
            time.sleep(0.5)
            self.assertEqual([c.poll() for c in calls], [None] * 8, [c.stdout.read() for c in calls if c.poll()])
            ninth_read, ninth_write = os.pipe()
            ninth = raw_call(self.daemon, "LoadImages", "h", [ninth_read], fds=[ninth_read], user=MEMBER)
            try:
                out, err = ninth.communicate(timeout=5)
            finally:
                if ninth.poll() is None:
                    ninth.kill()
                    ninth.wait()
                os.close(ninth_read)
                os.close(ninth_write)
            self.assertNotEqual(ninth.returncode, 0, "the ninth call was let in")
            self.assertIn("error org.kbuild.Error.TooManyRequests: too many calls in flight", out)
            self.assertIn("the limit per caller is 8", out)
            # Another caller is not held to this one's limit.
            self.assertIn("version", kbuildctl(self.daemon, "info").stdout.lower())
        finally:
            for c in calls:
                c.kill()
                c.wait()
            for r, w in pipes:
                os.close(r)
                os.close(w)
        self.assertTrue(wait_until(lambda: kbuildctl(self.daemon, "info", user=MEMBER, check=False).returncode == 0, 5),
                        "the caller could not call again once its calls ended")

    def test_sigterm_stops_the_daemon_within_five_seconds_whatever_its_clients_do(self):
        workdir = tempfile.mkdtemp(prefix="kbuild-it-term-")
        os.chmod(workdir, 0o755)
        daemon = Daemon(workdir, GROUP)
        fds, calls = [], []
        try:
            ctx = self.context("term", {"Dockerfile": "FROM scratch\nCOPY big /big\n"})
            with open(os.path.join(ctx, "big"), "wb") as f:
                f.write(os.urandom(2 << 20))
            load_read, load_write = os.pipe()
            tar_read, tar_write = os.pipe()
            out_read, out_write = os.pipe()
            progress_read, progress_write = os.pipe()
            null = os.open(os.devnull, os.O_RDWR)
            context = os.open(ctx, os.O_RDONLY | os.O_DIRECTORY)
            fds = [load_read, load_write, tar_read, tar_write, out_read, out_write, progress_read, progress_write,
                   null, context]
            calls = [raw_call(daemon, "LoadImages", "h", [load_read], fds=[load_read]),
                     build_call(daemon, "", tar_read, progress_write, null, context_type="tar"),
                     build_call(daemon, "FROM scratch\nCOPY big /big\n", context, progress_write, out_write,
                                outputs=[{"type": "tar"}])]
            self.assertTrue(select.select([out_read], [], [], 30)[0], "the tar output never began")
            time.sleep(0.5)
            started = time.monotonic()
            daemon.process.send_signal(signal.SIGTERM)
            try:
                daemon.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daemon.process.kill()
                daemon.process.wait()
            took = time.monotonic() - started
            print(f"\n  kbuildd exited {took:.2f}s after SIGTERM", file=sys.stderr)
            self.assertLess(took, 5)
        finally:
            for c in calls:
                c.kill()
                c.wait()
            for fd in fds:
                os.close(fd)
            if daemon.process.poll() is None:
                daemon.process.kill()
                daemon.process.wait()
            daemon.log.close()
            shutil.rmtree(workdir, ignore_errors=True)

    def test_context_reader_is_a_fresh_program_the_caller_cannot_inspect(self):
        ctx = self.context("reader", {"Dockerfile": "FROM scratch\nCOPY . /c\n"})
        for i in range(20000):  # enough files that the reader runs for a while
            d = os.path.join(ctx, f"d{i % 100}")
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, f"f{i}"), "w") as f:
                f.write("x")
        member = pwd.getpwnam(MEMBER).pw_uid
        with open("/proc/sys/fs/suid_dumpable") as f:
            saved = f.read().strip()
        reader = None

        def stop_reader():
            # The caller's reader, stopped once it made itself non-dumpable (the files in its
            # /proc directory then belong to root).
            nonlocal reader
            for pid in children(self.daemon.process.pid):
                try:
                    with open(f"/proc/{pid}/status") as f:
                        uid = int(next(line for line in f if line.startswith("Uid:")).split()[1])
                    if uid != member:
                        continue
                    os.kill(pid, signal.SIGSTOP)
                    if os.stat(f"/proc/{pid}/environ").st_uid == 0:
                        reader = pid
                        return True
                    os.kill(pid, signal.SIGCONT)
                except (OSError, StopIteration):
                    pass
            return False

        probe = ("import sys\nfor name in ('mem', 'environ'):\n    try:\n"
                 "        open(f'/proc/{sys.argv[1]}/{name}', 'rb').close()\n        print(name, 'open')\n"
                 "    except OSError:\n        print(name, 'denied')\n")
        try:
            with open("/proc/sys/fs/suid_dumpable", "w") as f:
                f.write("1")
            client = subprocess.Popen([os.path.join(BUILD_DIR, "cli/kbuildctl"), "--host",
                                       "unix://" + self.daemon.socket, "build", "-q", "."], cwd=ctx,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                      preexec_fn=demotion(MEMBER))
            try:
                self.assertTrue(wait_until(stop_reader, 60, 0.002), "no context reader ran as the caller")
                exe = os.readlink(f"/proc/{reader}/exe")
                with open(f"/proc/{reader}/maps") as f:
                    maps = f.read()
                with open(f"/proc/{reader}/environ", "rb") as f:
                    environ = f.read()
                as_caller = run([PYTHON, "-c", probe, str(reader)], user=MEMBER).stdout
            finally:
                if reader:
                    os.kill(reader, signal.SIGCONT)
                client.wait(timeout=120)
        finally:
            with open("/proc/sys/fs/suid_dumpable", "w") as f:
                f.write(saved)
        self.assertEqual(client.returncode, 0, client.stderr.read())
        self.assertEqual(os.path.basename(exe), "kbuild-context-reader")
        self.assertNotIn("kbuildd", maps)
        self.assertNotIn(Daemon.SECRET.encode(), environ)
        self.assertEqual(as_caller, "mem denied\nenviron denied\n")



def ensure_test_users():
    try:
        grp.getgrnam(GROUP)
    except KeyError:
        run(["groupadd", "--system", GROUP])
    for user, groups in ((MEMBER, [GROUP]), (OUTSIDER, [])):
        try:
            pwd.getpwnam(user)
        except KeyError:
            run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin"]
                + (["--groups", ",".join(groups)] if groups else []) + [user])


def main():
    global BUILD_DIR
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-dir", default="build")
    parser.add_argument("-k", dest="pattern")
    args = parser.parse_args()
    BUILD_DIR = os.path.abspath(args.build_dir)
    if os.geteuid() != 0:
        print("integration tests need root (they run a root daemon and create test users)", file=sys.stderr)
        return 2
    ensure_test_users()
    loader = unittest.TestLoader()
    if args.pattern:
        loader.testNamePatterns = [f"*{args.pattern}*"]
    suite = loader.loadTestsFromTestCase(DaemonTest)
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    failed = len(result.failures) + len(result.errors)
    print(f"integration: {result.testsRun - failed - len(result.skipped)} passed, {failed} failed, "
          f"{len(result.skipped)} skipped")
    return 0 if failed == 0 and result.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
