#!/usr/bin/env python3
"""Image names held to Docker's reference grammar everywhere, before any work starts: a real
kbuildd on a private socket and store (test_registry.Daemon). Every invalid form goes through
each kbuildctl command that takes a name (build -t, --output name=, tag, rmi, save, pull, push)
and through the D-Bus method behind it called by hand (busctl, or raw_call.py where the method
takes fds), and gets the exact error docker, buildx or BuildKit prints for it, a non-zero exit,
and leaves nothing behind: no new image name, no new file in the store, no output file, no
progress from the daemon. FROM, COPY --from and RUN --mount from= fail at conversion, before
any step runs. A valid but unusual name (an upper-case first component is a registry, as in
current Docker) is shown, stored and found the same way by every command. Run as root:

    python3 tests/integration/test_references.py [--build-dir build] [-k PATTERN]

The last line is `references: N passed, M failed, K skipped` (scripts/test.sh sums it).
"""
import fcntl
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
from test_registry import run, write  # noqa: E402

RAW_CALL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "raw_call.py")
BUS = ["org.kbuild.Builder1", "/org/kbuild/Builder1", "org.kbuild.Builder1"]

FORMAT = "invalid reference format"
LOWER = FORMAT + ": repository name ({}) must be lowercase"
TOO_LONG = "repository name must not be more than 255 characters"
HEX64 = "0123456789abcdef" * 4

# Every invalid form: (text, what reference.Parse says (buildx's check of -t; None: it takes
# it), what ParseNormalizedNamed says (docker's client and daemon, BuildKit's frontend)).
INVALID = [
    ("", "repository name must have at least one component", FORMAT),
    (" ", FORMAT, FORMAT),
    ("Bad Tag", FORMAT, LOWER.format("library/Bad Tag")),
    ("Bad", "repository name must be lowercase", LOWER.format("library/Bad")),
    ("me/Upper", "repository name must be lowercase", LOWER.format("me/Upper")),
    ("A_B/app", "repository name must be lowercase", "repository name must be lowercase"),
    ("app:", FORMAT, FORMAT),
    ("app:-x", FORMAT, FORMAT),
    ("app:bad!tag", FORMAT, FORMAT),
    ("app:" + "t" * 129, FORMAT, FORMAT),
    ("a" * 256, TOO_LONG, TOO_LONG),
    ("me/" + "a" * 253, TOO_LONG, TOO_LONG),
    (":", FORMAT, FORMAT),
    (":tag", FORMAT, FORMAT),
    ("app/", FORMAT, FORMAT),
    ("a//b", FORMAT, FORMAT),
    ("app\nevil", FORMAT, FORMAT),
    ("me\\app", FORMAT, FORMAT),
    ("a,b", FORMAT, FORMAT),
    ("../app", FORMAT, FORMAT),
    ("/app", FORMAT, FORMAT),
    ("me/-app", FORMAT, FORMAT),
    ("host:port/app", FORMAT, FORMAT),
    ("app@", FORMAT, FORMAT),
    ("app@sha256:abc", FORMAT, FORMAT),
    ("app@sha256:" + "g" * 64, FORMAT, FORMAT),
    ("app@sha256:" + "a" * 63, "invalid checksum digest length", "invalid checksum digest length"),
    ("app@sha256:" + "A" * 64, "invalid checksum digest format", "invalid checksum digest format"),
    ("app@md5:" + "a" * 32, "unsupported digest algorithm", "unsupported digest algorithm"),
    (HEX64, None, f"invalid repository name ({HEX64}), cannot specify 64-byte hexadecimal strings"),
]
# What names a stored image may also be: an image ID (rmi, save, tag's source).
NAMES_ONLY = [(text, normalized) for text, _, normalized in INVALID if text != HEX64]


def tag_error(text, parsed, normalized):
    return f'invalid tag "{text}": {parsed if parsed is not None else normalized}'


def go_quote(text):
    return json.dumps(text)  # the same as Go's %q for the printable ASCII used here


class ReferencesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.workdir = tempfile.mkdtemp(prefix="kbuild-refs-")
        os.chmod(cls.workdir, 0o755)
        cls.daemon = harness.Daemon(os.path.join(cls.workdir, "d"))
        cls.ctx = os.path.join(cls.workdir, "ctx")
        write(os.path.join(cls.ctx, "Dockerfile"), "FROM scratch\nCOPY f /f\n")
        write(os.path.join(cls.ctx, "f"), "content\n")
        cls.daemon.client("build", "--progress", "plain", "-t", "it-ref", cls.ctx, timeout=300)

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop()
        unmount_all_under(cls.workdir)
        shutil.rmtree(cls.workdir, ignore_errors=True)

    # -- helpers --------------------------------------------------------------------------------

    def store_files(self):
        """Every path in the store but the database's own journal files."""
        paths = set()
        for top, dirs, files in os.walk(self.daemon.root):
            for name in dirs + files:
                if not name.endswith(("-wal", "-shm", "-journal")):
                    paths.add(os.path.relpath(os.path.join(top, name), self.daemon.root))
        return paths

    def assertNothingLeft(self, names, files, what):
        self.assertEqual(self.daemon.names(), names, what)
        self.assertEqual(self.store_files() - files, set(), what)
        self.assertEqual(self.daemon.blob_temp_files(), [], what)

    def refused(self, args, expected, what=None):
        """kbuildctl ARGS exits 1 with exactly `expected` on stderr and leaves nothing."""
        names, files = self.daemon.names(), self.store_files()
        result = self.daemon.client(*args, check=False, timeout=120)
        what = what or repr(args)[:200]
        self.assertEqual(result.returncode, 1, what)
        self.assertEqual(result.stderr, expected + "\n", what)
        self.assertNothingLeft(names, files, what)
        return result

    def busctl(self, method, signature, *args):
        return run(["busctl", f"--address=unix:path={self.daemon.socket}", "call", *BUS, method, signature,
                    *[str(a) for a in args]], check=False, timeout=120)

    def assertBusRefuses(self, expected, method, signature, *args):
        names, files = self.daemon.names(), self.store_files()
        result = self.busctl(method, signature, *args)
        what = f"{method} {args}"[:200]
        self.assertNotEqual(result.returncode, 0, what)
        self.assertEqual(result.stderr.strip(), f"Call failed: {expected}", what)
        self.assertNothingLeft(names, files, what)

    def raw(self, method, signature, arguments, fds):
        """A call made by hand with fds (raw_call.py): (exit code, its "ok"/"error NAME: MESSAGE")."""
        result = subprocess.run([sys.executable, RAW_CALL, self.daemon.socket, method, signature,
                                 json.dumps(arguments)], pass_fds=list(fds), capture_output=True, text=True,
                                timeout=120)
        return result.returncode, result.stdout.strip()

    def raw_build(self, options, dockerfile="FROM scratch\nCOPY f /f\n"):
        """Build called by hand with the context directory, a progress pipe and /dev/null; returns
        the result and whatever progress the daemon wrote."""
        names, files = self.daemon.names(), self.store_files()
        context = os.open(self.ctx, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        progress_read, progress_write = os.pipe2(os.O_CLOEXEC)
        output = os.open("/dev/null", os.O_WRONLY | os.O_CLOEXEC)
        try:
            all_options = [["dockerfile", ["ay", list(dockerfile.encode())]], ["context-type", ["s", "dir"]],
                           *options]
            result = self.raw("Build", "a{sv}hhh", [all_options, context, progress_write, output],
                              [context, progress_write, output])
            os.close(progress_write)
            progress_write = -1
            fcntl.fcntl(progress_read, fcntl.F_SETFL, os.O_NONBLOCK)
            try:
                progress = os.read(progress_read, 65536)
            except BlockingIOError:
                progress = b""
        finally:
            for fd in (context, progress_read, progress_write, output):
                if fd >= 0:
                    os.close(fd)
        self.assertNothingLeft(names, files, f"Build {options}"[:200])
        return result, progress

    # -- tests ----------------------------------------------------------------------------------

    def test_build_tags_and_output_names_are_refused_before_the_build_starts(self):
        for text, parsed, normalized in INVALID:
            expected = tag_error(text, parsed, normalized)
            self.refused(["build", "--progress", "plain", "-t", text, self.ctx], "ERROR: " + expected)
            # Not half-named: a valid -t before it names nothing either.
            self.refused(["build", "--progress", "plain", "-t", "it-first", "-t", text, self.ctx],
                         "ERROR: " + expected)
            (code, reply), progress = self.raw_build([["tags", ["as", ["it-first", text]]]])
            self.assertEqual(code, 1, text)
            self.assertTrue(reply.startswith("error ") and reply.endswith(": " + expected), (text, reply))
            self.assertEqual(progress, b"", text)  # nothing reported: the build never started
            if text.strip() and "," not in text:
                self.refused(["build", "--progress", "plain", "-o", f"type=image,name={text}", self.ctx],
                             "ERROR: " + expected)
                dest = os.path.join(self.workdir, "never.tar")
                self.refused(["build", "--progress", "plain", "-o", f"type=oci,dest={dest},name={text}", self.ctx],
                             "ERROR: " + expected)
                self.assertFalse(os.path.exists(dest), text)
            # An image output's name= is a comma-separated list (so "a,b" there is two good
            # names); an empty entry is skipped.
            if text and "," not in text:
                (code, reply), progress = self.raw_build(
                    [["outputs", ["aa{ss}", [[["type", "image"], ["name", f"it-first,,{text}"]]]]]])
                self.assertEqual(code, 1, text)
                self.assertTrue(reply.endswith(": " + expected), (text, reply))
                self.assertEqual(progress, b"", text)

    def test_registry_cache_refs_are_refused_before_the_build_starts(self):
        for text, _, normalized in INVALID:
            if not text.strip() or "," in text or "=" in text:
                continue
            for flag in ("--cache-to", "--cache-from"):
                key = flag[2:]
                expected = f'{key}: invalid ref "{text}": {normalized}'
                self.refused(["build", "--progress", "plain", flag, f"type=registry,ref={text}", self.ctx],
                             "ERROR: " + expected)
                (code, reply), progress = self.raw_build(
                    [[key, ["aa{ss}", [[["type", "registry"], ["ref", text]]]]]])
                self.assertEqual(code, 1, text)
                self.assertTrue(reply.endswith(": " + expected), (text, reply))
                self.assertEqual(progress, b"")

    def test_tag_refuses_in_dockers_words(self):
        for text, normalized in NAMES_ONLY + [(HEX64, INVALID[-1][2])]:
            expected = f"error parsing reference: {go_quote(text)} is not a valid repository/tag: {normalized}"
            self.refused(["tag", "it-ref", text], "ERROR: " + expected)
            self.assertBusRefuses(expected, "TagImage", "ss", "it-ref", text)
        for text, normalized in NAMES_ONLY:
            expected = f"error parsing reference: {go_quote(text)} is not a valid repository/tag: {normalized}"
            self.refused(["tag", text, "it-new"], "ERROR: " + expected)
            self.assertBusRefuses(expected, "TagImage", "ss", text, "it-new")
        digest = "it-new@sha256:" + "a" * 64
        self.refused(["tag", "it-ref", digest], "ERROR: refusing to create a tag with a digest reference")
        self.assertBusRefuses("refusing to create a tag with a digest reference", "TagImage", "ss", "it-ref", digest)

    def test_rmi_refuses_each_bad_name_and_removes_the_good_ones(self):
        for text, normalized in NAMES_ONLY:
            self.refused(["rmi", text], "Error response from daemon: " + normalized)
            self.assertBusRefuses(normalized, "RemoveImage", "sb", text, "false")
        # As docker rmi: the bad name is reported, the good one still removed, the exit is 1.
        self.daemon.client("tag", "it-ref", "it-gone")
        result = self.daemon.client("rmi", "Bad", "it-gone", check=False)
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr, "Error response from daemon: " + LOWER.format("library/Bad") + "\n")
        self.assertEqual(result.stdout, "Untagged: it-gone:latest\n")
        self.assertNotIn("it-gone:latest", self.daemon.names())

    def test_load_of_an_archive_with_a_bad_name_names_and_unpacks_nothing(self):
        # An OCI archive names its images in index.json's annotations: a docker-archive's
        # RepoTags are checked as they are read, these only when the images are stored.
        archive = os.path.join(self.workdir, "good-name.tar")
        base_image.write_base_image(os.path.join(self.workdir, "base.tar"), "it-base")
        self.daemon.client("load", "-i", os.path.join(self.workdir, "base.tar"))
        ctx = os.path.join(self.workdir, "load-ctx")
        write(os.path.join(ctx, "Dockerfile"), "FROM it-base\nRUN echo layer-of-its-own > /own\n")
        self.daemon.client("build", "--progress", "plain", "-o", f"type=oci,dest={archive},name=it-good", ctx,
                           timeout=300)
        self.daemon.client("rmi", "it-base")
        with tarfile.open(archive) as tar:
            members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
        bad = os.path.join(self.workdir, "bad-name.tar")
        with tarfile.open(bad, "w") as tar:
            for member, data in members:
                if member.name == "index.json":
                    index = json.loads(data)
                    index["manifests"].append(dict(index["manifests"][0]))
                    index["manifests"][1]["annotations"] = {"io.containerd.image.name": "Bad Name:1"}
                    data = json.dumps(index).encode()
                    member.size = len(data)
                tar.addfile(member, io.BytesIO(data) if data is not None else None)
        other = harness.Daemon(os.path.join(self.workdir, "load-d"))
        try:
            result = other.client("load", "-i", bad, check=False)
            self.assertEqual(result.returncode, 1)
            self.assertIn('the archive names an image "Bad Name:1": ' + LOWER.format("library/Bad Name"),
                          result.stderr)
            self.assertEqual(other.names(), set())
            self.assertEqual(os.listdir(os.path.join(other.root, "snapshots")), [])
            # The archive without the bad name loads.
            self.assertIn("Loaded image: it-good", other.client("load", "-i", archive).stdout)
        finally:
            other.stop()

    def test_save_refuses_before_it_writes_anything(self):
        for text, normalized in NAMES_ONLY:
            out = os.path.join(self.workdir, "never-saved.tar")
            self.refused(["save", "-o", out, "it-ref", text], "ERROR: " + normalized)
            self.assertFalse(os.path.exists(out), text)
            with open(out, "wb") as sink:
                code, reply = self.raw("SaveImages", "ash", [["it-ref", text], sink.fileno()], [sink.fileno()])
            self.assertEqual(code, 1, text)
            self.assertTrue(reply.endswith(": " + normalized), (text, reply))
            self.assertEqual(os.path.getsize(out), 0, text)
            os.unlink(out)

    def test_pull_and_push_refuse_in_dockers_words(self):
        for text, _, normalized in INVALID:
            for command, method in (("pull", "PullImage"), ("push", "PushImage")):
                self.refused([command, text], "ERROR: " + normalized)
                self.assertBusRefuses(normalized, method, "sa{sv}", text, "0")
        digest = "it-ref@sha256:" + "a" * 64
        self.refused(["push", digest], "ERROR: cannot push a digest reference")
        self.assertBusRefuses("cannot push a digest reference", "PushImage", "sa{sv}", digest, "0")

    def test_dockerfile_image_names_fail_at_conversion(self):
        marker = "RUN echo this-step-ran"
        cases = {}
        for text in ("Bad", "me/Upper", "a//b", "app@sha256:abc", "app:-x", HEX64):
            normalized = next(n for t, _, n in INVALID if t == text)
            expected = f'failed to parse stage name "{text}": {normalized}'
            cases[f"FROM {text}\n{marker}\n"] = expected
            cases[f"FROM scratch AS unused\nFROM {text}\nFROM scratch\n{marker}\n"] = expected
            cases[f"FROM scratch\n{marker}\nCOPY --from={text} /f /f\n"] = expected
            cases[f"FROM scratch\n{marker}\nRUN --mount=from={text},target=/m true\n"] = expected
        ctx = os.path.join(self.workdir, "frontend")
        for dockerfile, expected in cases.items():
            write(os.path.join(ctx, "Dockerfile"), dockerfile)
            names, files = self.daemon.names(), self.store_files()
            result = self.daemon.client("build", "--progress", "plain", "-t", "it-frontend", ctx, check=False,
                                        timeout=120)
            self.assertEqual(result.returncode, 1, dockerfile)
            self.assertIn(expected, result.stderr, dockerfile)
            # The step before the bad name never started (its vertex would be "#N [1/2] RUN ...").
            self.assertNotRegex(result.stderr, r"(?m)^#\d+ \[.*\] RUN echo this-step-ran", dockerfile)
            self.assertNothingLeft(names, files, dockerfile)
            (code, reply), _ = self.raw_build([["tags", ["as", ["it-frontend"]]]], dockerfile=dockerfile)
            self.assertEqual(code, 1, dockerfile)
            self.assertIn(expected, reply, dockerfile)

    def test_an_upper_case_registry_name_is_shown_stored_and_found_alike(self):
        # Current Docker reads an upper-case first component as a registry: a valid name.
        self.daemon.client("tag", "it-ref", "UPPER/x:1")
        self.assertIn("UPPER/x:1", self.daemon.names())
        self.assertEqual(self.busctl("TagImage", "ss", "UPPER/x:1", "UPPER/y").returncode, 0)
        self.assertIn("UPPER/y:latest", self.daemon.names())
        archive = os.path.join(self.workdir, "upper.tar")
        self.daemon.client("save", "-o", archive, "UPPER/x:1")
        with tarfile.open(archive) as tar:
            self.assertEqual(json.load(tar.extractfile("manifest.json"))[0]["RepoTags"], ["UPPER/x:1"])
        self.assertEqual(self.daemon.image_id("UPPER/x:1"), self.daemon.image_id("it-ref"))
        self.daemon.client("build", "--progress", "plain", "-t", "UPPER/z:2", self.ctx, timeout=300)
        self.assertIn("UPPER/z:2", self.daemon.names())
        removed = self.daemon.client("rmi", "UPPER/x:1", "UPPER/z:2")
        self.assertEqual(removed.stdout, "Untagged: UPPER/x:1\nUntagged: UPPER/z:2\n")
        result = self.busctl("RemoveImage", "sb", "UPPER/y", "false")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn('"Untagged: UPPER/y:latest"', result.stdout)
        self.assertFalse({"UPPER/x:1", "UPPER/y:latest", "UPPER/z:2"} & self.daemon.names())


def main():
    return suite.main("references", ReferencesTest, needs_root="they run a root daemon", harness=harness)


if __name__ == "__main__":
    sys.exit(main())
