#!/usr/bin/env python3
"""End-to-end tests of build secrets (`kbuildctl build --secret`, `RUN --mount=type=secret`), as
current BuildKit gives them: the file, env and shorthand forms; the mount's defaults (id from
source=/id=/the target's base name, /run/secrets/<id>, 0400 root:root) and its custom target,
mode, uid and gid; required and optional secrets; env= as a variable; the mount a read-only tmpfs
(nodev, nosuid, noexec unless the mode has exec bits); a changed value leaving the step CACHED.
Then where a secret must never be: a distinctive random value is looked for (raw, and as it
reads inside base64, in every gzip or zstd stream opened) in the exported image, every file of
the daemon's store, the progress (rawjson and plain), the daemon's log, the metadata file and
the build caches exported to Debian's docker-registry and to a local directory. Fds that are not
a regular file or a sealed memfd are refused, by a raw D-Bus Build call, with their kind named.
Each test runs a kbuildd of its own; everything lives in one temp dir, removed at the end. Run
as root:

    python3 tests/integration/test_secrets.py [--build-dir build] [-k PATTERN]

The last line is `secrets: N passed, M failed, K skipped` (scripts/test.sh sums it).
"""
import base64
import fcntl
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import unittest
import uuid
import zlib

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite  # noqa: E402
import base_image  # noqa: E402
import test_registry as harness  # noqa: E402  -- Daemon, DistributionRegistry and their helpers
from mounts import mount_points_under, unmount_all_under  # noqa: E402
from test_cache import Progress, processes_under, session_members  # noqa: E402
from test_registry import DistributionRegistry, run, wait_until, write  # noqa: E402

BASE = base_image.DEFAULT_TAG
RAW_CALL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "raw_call.py")
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def random_secret(what):
    """A value no file, log or layer holds by chance."""
    return f"kbsecret-{what}-{uuid.uuid4().hex}{uuid.uuid4().hex}"


def sha256_hex(text):
    return hashlib.sha256(text.encode()).hexdigest()


def uses_file(path, value):
    """A shell test that the file at `path` holds `value`, which neither prints nor spells it."""
    return f'test "$(sha256sum < {path} | cut -d" " -f1)" = "{sha256_hex(value)}"'


def uses_variable(name, value):
    return f'test "$(printf %s "${name}" | sha256sum | cut -d" " -f1)" = "{sha256_hex(value)}"'


# -- looking for a secret's bytes ----------------------------------------------------------------

def needles(value):
    """The forms `value` takes in stored bytes: itself, and what any base64 text holding it
    holds whatever its alignment (progress logs and JSON carry bytes as base64)."""
    raw = value.encode()
    found = [raw]
    for skip in range(3):
        encoded = base64.b64encode(raw[skip:])
        found.append(encoded[:-4])  # the last group depends on what follows
    return found


def zstd_decompress(data):
    if shutil.which("zstd") is None:
        raise AssertionError("a zstd stream to search, and no zstd program to open it (apt-get install zstd)")
    return subprocess.run(["zstd", "-d", "-c", "-q"], input=data, capture_output=True, timeout=120).stdout


def streams(data, depth=0):
    """`data` and every stream it holds that a layer can be compressed with: a gzip or zstd file,
    and those inside a tar's members (a docker archive's layers), decompressed, recursively."""
    yield data
    if depth > 3:
        return
    if data.startswith(GZIP_MAGIC):
        try:
            inner = gzip.decompress(data)
        except (OSError, EOFError, zlib.error):
            inner = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)
        yield from streams(inner, depth + 1)
    elif data.startswith(ZSTD_MAGIC):
        yield from streams(zstd_decompress(data), depth + 1)
    elif len(data) > 512 and data[257:262] == b"ustar":
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
                for member in tar:
                    if member.isfile():
                        member_data = tar.extractfile(member).read()
                        if member_data.startswith((GZIP_MAGIC, ZSTD_MAGIC)) or member_data[257:262] == b"ustar":
                            yield from streams(member_data, depth + 1)
        except tarfile.TarError:
            pass


def hits_in_bytes(data, value):
    """How many times `value` shows in `data` or any stream inside it."""
    return sum(stream.count(needle) for stream in streams(data) for needle in needles(value))


def files_holding(root, value):
    """Every file under `root` (not following symlinks) whose bytes hold `value`, with counts."""
    found = {}
    for directory, dirs, files in os.walk(root):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(directory, d))]:
            path = os.path.join(directory, name)
            try:
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode):
                    data = os.readlink(path).encode()
                elif stat.S_ISREG(st.st_mode):
                    with open(path, "rb") as f:
                        data = f.read()
                else:
                    continue
            except OSError:
                continue
            count = hits_in_bytes(data, value) + hits_in_bytes(name.encode(), value)
            if count:
                found[os.path.relpath(path, root)] = count
    return found


def layer_entries(archive):
    """Names (no "./") of every entry of every layer of the image in a docker archive."""
    names = []
    with tarfile.open(archive) as tar:
        entry = json.load(tar.extractfile("manifest.json"))[0]
        for layer in entry["Layers"]:
            with tarfile.open(fileobj=tar.extractfile(layer), mode="r:*") as layer_tar:
                names.append([m.name.removeprefix("./").rstrip("/") for m in layer_tar])
    return names


def image_files(archive):
    """{path: bytes} of the regular files of the image, its layers merged, and its config."""
    files = {}
    with tarfile.open(archive) as tar:
        entry = json.load(tar.extractfile("manifest.json"))[0]
        config = json.load(tar.extractfile(entry["Config"]))
        for layer in entry["Layers"]:
            with tarfile.open(fileobj=tar.extractfile(layer), mode="r:*") as layer_tar:
                for member in layer_tar:
                    if member.isfile():
                        files[member.name.removeprefix("./")] = layer_tar.extractfile(member).read()
    return files, config


# -- the tests ----------------------------------------------------------------------------------

class SecretsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.workdir = tempfile.mkdtemp(prefix="kbuild-secrets-")
        os.chmod(cls.workdir, 0o755)
        cls.all_daemons, cls.registries = [], []
        try:
            cls.base_archive = os.path.join(cls.workdir, "base.tar")
            base_image.write_base_image(cls.base_archive, BASE)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for registry in getattr(cls, "registries", []):
            registry.stop()
        for daemon in getattr(cls, "all_daemons", []):
            daemon.stop()
        for pid, cmdline in processes_under(cls.workdir):
            print(f"cleanup: process {pid} still runs, killed: {cmdline[:200]}", file=sys.stderr)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        unmount_all_under(cls.workdir)
        shutil.rmtree(cls.workdir, ignore_errors=True)

    def setUp(self):
        self.daemons = []
        self.addCleanup(self.check_nothing_left)

    # -- helpers --------------------------------------------------------------------------------

    def name(self):
        return self.id().rsplit(".", 1)[-1]

    def path(self, *parts):
        # Short: a daemon's socket lives here, and a socket's path has 107 bytes at most.
        return os.path.join(self.workdir, self.name().removeprefix("test_")[:24], *parts)

    def daemon(self, name="d"):
        daemon = harness.Daemon(self.path(name))
        self.daemons.append(daemon)
        self.all_daemons.append(daemon)
        self.addCleanup(daemon.stop)
        daemon.client("load", "-i", self.base_archive)
        return daemon

    def check_nothing_left(self):
        problems = []
        for daemon in self.daemons:
            if daemon.process.poll() is None:
                problems.append(f"kbuildd {daemon.process.pid} still runs")
            for pid in session_members(daemon.process.pid):
                problems.append(f"process {pid} of kbuildd {daemon.process.pid}'s session still runs")
        for pid, cmdline in processes_under(self.path()):
            problems.append(f"process {pid} still runs: {cmdline[:200]}")
        mounts = mount_points_under(self.path())
        if mounts:
            problems.append(f"still mounted: {mounts}")
        if problems:
            unmount_all_under(self.path())
            self.fail("the test left:\n  " + "\n  ".join(problems))

    def context(self, dockerfile, name="ctx", files=None):
        path = self.path(name)
        shutil.rmtree(path, ignore_errors=True)
        write(os.path.join(path, "Dockerfile"), dockerfile)
        for file, content in (files or {}).items():
            write(os.path.join(path, file), content)
        return path

    def secret_file(self, name, value, mode=0o600):
        path = self.path("secret-files", name)
        write(path, value, mode)
        return path

    def build(self, daemon, ctx, *args, check=True, env=None, cwd=None, progress="rawjson"):
        """`kbuildctl build --progress rawjson ARGS CTX` from `cwd` (default: the context) with
        `env` added to the client's environment: (result, Progress)."""
        client_env = daemon.env()
        client_env.update(env or {})
        result = subprocess.run(daemon.argv("build", "--progress", progress, *args, ctx), cwd=cwd or ctx,
                                env=client_env, capture_output=True, text=True, errors="replace", timeout=300)
        progress_events = Progress(result.stderr) if progress == "rawjson" else None
        if check and result.returncode != 0:
            self.fail(f"kbuildctl build {' '.join(args)} exited {result.returncode}:\n{result.stderr[-4000:]}\n"
                      f"{result.stdout[-1000:]}\nkbuildd's log:\n{daemon.log()[-3000:]}")
        return result, progress_events

    def saved(self, daemon, name):
        archive = self.path(f"saved-{uuid.uuid4().hex[:8]}.tar")
        daemon.client("save", name, "-o", archive)
        try:
            return image_files(archive)
        finally:
            os.unlink(archive)

    def run_vertex(self, progress, marker):
        """The vertex of the RUN step whose command holds `marker`."""
        found = [v for v in progress.vertices.values() if "RUN" in v.get("name", "") and marker in v["name"]]
        self.assertEqual(len(found), 1, f"RUN ... {marker}: {[v.get('name') for v in progress.vertices.values()]}")
        return found[0]

    # -- 1. the forms of --secret ---------------------------------------------------------------

    def test_file_env_type_env_and_shorthand_secrets_reach_the_step(self):
        values = {k: random_secret(k) for k in ("file", "env", "typeenv", "shortenv", "shortfile", "source")}
        d = self.daemon()
        ctx = self.context(f"""\
FROM {BASE}
RUN mkdir /out
RUN --mount=type=secret,id=f cat /run/secrets/f > /out/f
RUN --mount=type=secret,id=e cat /run/secrets/e > /out/e
RUN --mount=type=secret,id=t cat /run/secrets/t > /out/t
RUN --mount=type=secret,id=SHORT_ENV cat /run/secrets/SHORT_ENV > /out/short-env
RUN --mount=type=secret,id=shortfile cat /run/secrets/shortfile > /out/short-file
RUN --mount=type=secret,source=srcid cat /run/secrets/srcid > /out/source
""")
        # The shorthand's file is the id as a path from the client's working directory.
        client_cwd = self.path("client-cwd")
        write(os.path.join(client_cwd, "shortfile"), values["shortfile"] + "\n", 0o600)
        self.build(d, ctx, "-t", "forms",
                   "--secret", f"id=f,src={self.secret_file('f', values['file'])}",
                   "--secret", "id=e,env=VAR_E",
                   "--secret", "type=env,id=t,src=VAR_T",
                   "--secret", "id=SHORT_ENV",
                   "--secret", "id=shortfile",
                   "--secret", f"id=srcid,source={self.secret_file('srcid', values['source'])}",
                   env={"VAR_E": values["env"], "VAR_T": values["typeenv"], "SHORT_ENV": values["shortenv"]},
                   cwd=client_cwd)
        files, config = self.saved(d, "forms")
        self.assertEqual(files["out/f"], values["file"].encode())
        self.assertEqual(files["out/e"], values["env"].encode())
        self.assertEqual(files["out/t"], values["typeenv"].encode())
        self.assertEqual(files["out/short-env"], values["shortenv"].encode())
        self.assertEqual(files["out/short-file"], (values["shortfile"] + "\n").encode())
        self.assertEqual(files["out/source"], values["source"].encode())
        self.assertNotIn("secret", json.dumps(config.get("config", {}).get("Env", [])))

    def test_a_client_side_refusal_sends_nothing(self):
        d = self.daemon()
        ctx = self.context(f"FROM {BASE}\nRUN --mount=type=secret,id=s true\n")
        cases = {
            "id=a,x": "invalid field 'x' must be a key=value pair",
            "id=a,foo=bar": "unexpected key 'foo' in 'foo=bar'",
            "id=a,type=blob": 'unsupported secret type "blob"',
            "src=/etc/hostname": "secret missing ID",
            f"id=s,src={self.path('absent')}": f"failed to stat {self.path('absent')}: stat {self.path('absent')}: "
                                                "no such file or directory",
        }
        big = self.secret_file("big", "b" * 512001)
        cases[f"id=s,src={big}"] = "secret s too big. max size 500KiB"
        for flag, expected in cases.items():
            result, _ = self.build(d, ctx, "-t", "refused", "--secret", flag, check=False)
            self.assertNotEqual(result.returncode, 0, flag)
            self.assertIn(expected, result.stderr, flag)
        self.assertNotIn("refused:latest", d.names(), "a refused build made an image")
        # The same build with a good secret is not refused: the refusals above were the flags'.
        self.build(d, ctx, "-t", "refused", "--secret", f"id=s,src={self.secret_file('good', 'good')}")
        self.assertIn("refused:latest", d.names())

    # -- 2. the mount: target, mode, uid, gid ---------------------------------------------------

    def test_defaults_and_custom_target_mode_uid_gid(self):
        value = random_secret("mount")
        d = self.daemon()
        ctx = self.context(f"""\
FROM {BASE}
RUN mkdir -m 777 /out
RUN --mount=type=secret,id=s stat -c '%a %u %g %F' /run/secrets/s > /out/default
RUN --mount=type=secret,id=s,target=/etc/app/key,mode=0440,uid=1000,gid=1001 \
    stat -c '%a %u %g' /etc/app/key > /out/custom && cat /etc/app/key > /out/custom-value
WORKDIR /work
RUN --mount=type=secret,id=s,target=relative/key stat -c '%a' /work/relative/key > /out/relative
RUN --mount=type=secret,target=/somewhere/s stat -c '%a' /somewhere/s > /out/from-target-base
USER builder
RUN --mount=type=secret,id=s sh -c 'cat /run/secrets/s >/dev/null 2>&1 && echo READ || echo DENIED' > /out/as-builder
RUN --mount=type=secret,id=s,uid=1000 sh -c 'cat /run/secrets/s >/dev/null 2>&1 && echo READ || echo DENIED' \
    > /out/as-builder-owner
""")
        self.build(d, ctx, "-t", "mount", "--secret", f"id=s,src={self.secret_file('s', value)}")
        files, _ = self.saved(d, "mount")
        self.assertEqual(files["out/default"], b"400 0 0 regular file\n")
        self.assertEqual(files["out/custom"], b"440 1000 1001\n")
        self.assertEqual(files["out/custom-value"], value.encode())
        self.assertEqual(files["out/relative"], b"400\n")
        self.assertEqual(files["out/from-target-base"], b"400\n", "the id from the target's base name")
        self.assertEqual(files["out/as-builder"], b"DENIED\n", "a 0400 root secret read by uid 1000")
        self.assertEqual(files["out/as-builder-owner"], b"READ\n")

    # -- 3. required and optional ---------------------------------------------------------------

    def test_a_missing_required_secret_fails_the_step_with_its_id(self):
        d = self.daemon()
        for n, mount in enumerate(["id=nope,required", "id=nope,required=true", "id=nope,env=NOPE,required=true"]):
            ctx = self.context(f"FROM {BASE}\nRUN --mount=type=secret,{mount} echo RAN-{n}\n", name=f"ctx{n}")
            result, progress = self.build(d, ctx, "--secret", f"id=other,src={self.secret_file('o', 'x')}",
                                          check=False)
            self.assertNotEqual(result.returncode, 0, mount)
            self.assertIn("secret nope: not found", result.stderr, mount)
            self.assertNotIn(f"RAN-{n}", progress.output(), mount)

    def test_a_missing_optional_secret_runs_without_the_file_and_with_an_empty_variable(self):
        d = self.daemon()
        ctx = self.context(f"""\
FROM {BASE}
RUN mkdir /out
RUN --mount=type=secret,id=nope sh -c 'test -e /run/secrets/nope && echo EXISTS || echo ABSENT' > /out/file
RUN --mount=type=secret,id=nope,target=/x/nope sh -c 'test -e /x/nope && echo EXISTS || echo ABSENT' > /out/target
RUN --mount=type=secret,id=nope,env=NOPE sh -c 'echo "${{NOPE+set}}:${{NOPE}}:"' > /out/env
""")
        self.build(d, ctx, "-t", "optional")
        files, _ = self.saved(d, "optional")
        self.assertEqual(files["out/file"], b"ABSENT\n")
        self.assertEqual(files["out/target"], b"ABSENT\n")
        self.assertEqual(files["out/env"], b"set::\n", "a missing optional env= secret is VAR= (empty, set)")

    # -- 4. env= --------------------------------------------------------------------------------

    def test_env_sets_the_variable_and_with_a_target_the_file_too(self):
        value = random_secret("env")
        d = self.daemon()
        ctx = self.context(f"""\
FROM {BASE}
RUN mkdir /out
ENV MY_VAR=from-the-dockerfile
RUN --mount=type=secret,id=s,env=MY_VAR sh -c 'printf %s "$MY_VAR" > /out/var; \
    test -e /run/secrets/s && echo EXISTS > /out/file || echo ABSENT > /out/file'
RUN --mount=type=secret,id=s,env=OTHER,target=/t/s sh -c 'printf %s "$OTHER" > /out/both-var; cat /t/s > /out/both-file'
RUN printf %s "$MY_VAR" > /out/after; printf %s "${{OTHER-unset}}" > /out/after-other
""")
        self.build(d, ctx, "-t", "env", "--secret", f"id=s,src={self.secret_file('s', value)}")
        files, config = self.saved(d, "env")
        self.assertEqual(files["out/var"], value.encode(), "the secret wins over the image's ENV")
        self.assertEqual(files["out/file"], b"ABSENT\n", "env= alone mounts no file")
        self.assertEqual(files["out/both-var"], value.encode())
        self.assertEqual(files["out/both-file"], value.encode())
        self.assertEqual(files["out/after"], b"from-the-dockerfile", "the variable outlived its step")
        self.assertEqual(files["out/after-other"], b"unset")
        self.assertIn("MY_VAR=from-the-dockerfile", config["config"]["Env"])
        self.assertNotIn(value, json.dumps(config))

    # -- 5. a read-only tmpfs -------------------------------------------------------------------

    def test_the_secret_is_a_read_only_nodev_nosuid_noexec_tmpfs_unless_its_mode_is_executable(self):
        d = self.daemon()
        script = "#!/bin/sh\necho EXECUTED\n"
        ctx = self.context(f"""\
FROM {BASE}
RUN mkdir /out
RUN --mount=type=secret,id=s grep ' /run/secrets/s ' /proc/mounts > /out/mounts; \
    (echo overwritten > /run/secrets/s) 2>/dev/null && echo WRITABLE > /out/write || echo REFUSED > /out/write; \
    rm -f /run/secrets/s 2>/dev/null; test -e /run/secrets/s && echo KEPT > /out/rm || echo REMOVED > /out/rm; \
    /run/secrets/s > /out/exec 2>&1 || echo NOT-EXECUTED >> /out/exec
RUN --mount=type=secret,id=s,mode=0500 grep ' /run/secrets/s ' /proc/mounts > /out/mounts-exec; \
    /run/secrets/s > /out/exec-mode 2>&1 || echo NOT-EXECUTED >> /out/exec-mode
""")
        self.build(d, ctx, "-t", "tmpfs", "--secret", f"id=s,src={self.secret_file('s', script)}")
        files, _ = self.saved(d, "tmpfs")
        lines = files["out/mounts"].decode().splitlines()
        self.assertEqual(len(lines), 1, lines)
        _, point, fstype, options = lines[0].split()[:4]
        options = set(options.split(","))
        self.assertEqual((point, fstype), ("/run/secrets/s", "tmpfs"), lines[0])
        self.assertLessEqual({"ro", "nodev", "nosuid", "noexec"}, options, lines[0])
        self.assertEqual(files["out/write"], b"REFUSED\n")
        self.assertEqual(files["out/rm"], b"KEPT\n")
        self.assertIn(b"NOT-EXECUTED", files["out/exec"])
        self.assertNotIn(b"EXECUTED\n", files["out/exec"].replace(b"NOT-EXECUTED", b""))

        lines = files["out/mounts-exec"].decode().splitlines()
        self.assertEqual(len(lines), 1, lines)
        options = set(lines[0].split()[3].split(","))
        self.assertLessEqual({"ro", "nodev", "nosuid"}, options, lines[0])
        self.assertNotIn("noexec", options, lines[0])
        self.assertEqual(files["out/exec-mode"], b"EXECUTED\n")

    # -- 6. the cache key -----------------------------------------------------------------------

    def test_a_changed_value_leaves_the_step_cached_a_changed_target_does_not(self):
        d = self.daemon()

        def dockerfile(target):
            return (f"FROM {BASE}\nRUN --mount=type=secret,id=s,target={target} "
                    f"{uses_file(target, 'first')} || true; cat /proc/sys/kernel/random/uuid > /random\n")
        ctx = self.context(dockerfile("/run/secrets/s"))
        first_file = self.secret_file("first", "first")
        second_file = self.secret_file("second", "second value, another length")
        _, first = self.build(d, ctx, "-t", "c:1", "--secret", f"id=s,src={first_file}")
        self.assertFalse(self.run_vertex(first, "random").get("cached"), "the first build's step was cached")
        _, second = self.build(d, ctx, "-t", "c:2", "--secret", f"id=s,src={second_file}")
        self.assertTrue(self.run_vertex(second, "random").get("cached"),
                        "a changed secret value ran the step again: the value is in its key")
        _, by_env = self.build(d, ctx, "-t", "c:3", "--secret", "id=s,env=S", env={"S": "third"})
        self.assertTrue(self.run_vertex(by_env, "random").get("cached"), "an env= value is in the key")
        self.assertEqual(self.saved(d, "c:1")[0]["random"], self.saved(d, "c:2")[0]["random"])

        moved = self.context(dockerfile("/elsewhere/s"), name="ctx-moved")
        _, third = self.build(d, moved, "-t", "c:4", "--secret", f"id=s,src={first_file}")
        self.assertFalse(self.run_vertex(third, "random").get("cached"), "a changed target was taken from the cache")

    # -- 7. where the secret must never be ------------------------------------------------------

    def test_the_value_is_in_no_image_store_file_progress_log_or_metadata(self):
        file_value, env_value = random_secret("file"), random_secret("env")
        marker = random_secret("marker")  # not a secret: written to the image, so it must be found
        d = self.daemon()
        ctx = self.context(f"""\
FROM {BASE}
RUN --mount=type=secret,id=f {uses_file('/run/secrets/f', file_value)} && echo USED-F
RUN --mount=type=secret,id=e,env=SECRET_E {uses_variable('SECRET_E', env_value)} && echo USED-E
RUN --mount=type=secret,id=f,target=/deep/dir/f,mode=0755 {uses_file('/deep/dir/f', file_value)} && echo USED-DEEP
RUN --mount=type=secret,id=f echo {marker} > /marker
RUN --mount=type=secret,id=f,target=/tmp/s {uses_file('/tmp/s', file_value)} && echo USED-TMP
""")
        secret_args = ["--secret", f"id=f,src={self.secret_file('f', file_value)}", "--secret", "id=e,env=SECRET_E"]
        env = {"SECRET_E": env_value}
        archive, metadata = self.path("image.tar"), self.path("metadata.json")
        raw, progress = self.build(d, ctx, "-t", "leak", "-o", f"type=docker,dest={archive}",
                                   "--metadata-file", metadata, *secret_args, env=env)
        for used in ("USED-F", "USED-E", "USED-DEEP", "USED-TMP"):
            self.assertIn(used, progress.output(), f"the step that prints {used} did not use the secret")
        plain, _ = self.build(d, ctx, "-t", "leak", "--no-cache", *secret_args, env=env, progress="plain")
        self.assertIn("USED-E", plain.stderr)
        saved = self.path("saved.tar")
        d.client("save", "leak", "-o", saved)

        # The searches find what is there: the marker, written to the image.
        with open(archive, "rb") as f:
            self.assertGreater(hits_in_bytes(f.read(), marker), 0, "the search misses what the export holds")
        self.assertTrue(files_holding(d.root, marker), "the search misses what the store holds")

        places = {"the exported image": archive, "kbuildctl save": saved, "the metadata file": metadata,
                  "kbuildd's log": d.log_path}
        leaks = []
        for value in (file_value, env_value):
            for what, path in places.items():
                with open(path, "rb") as f:
                    count = hits_in_bytes(f.read(), value)
                if count:
                    leaks.append(f"{what} ({path}): {count}")
            for what, text in (("rawjson progress", raw.stderr + raw.stdout), ("its logs", progress.output()),
                               ("plain progress", plain.stderr + plain.stdout)):
                count = hits_in_bytes(text.encode(), value)
                if count:
                    leaks.append(f"{what}: {count}")
            for path, count in files_holding(d.root, value).items():
                leaks.append(f"the store's {path}: {count}")
        self.assertFalse(leaks, "the secret's value is in:\n  " + "\n  ".join(leaks))

        # No stub of a mount point is left in a layer: not /run/secrets, not /deep.
        for layer in layer_entries(saved)[1:]:
            stubs = [n for n in layer if n in ("run", "deep", "tmp/s") or n.startswith(("run/", "deep/"))]
            self.assertFalse(stubs, f"a layer keeps mount stubs: {stubs}")

    # -- 8. fds kbuildd refuses -----------------------------------------------------------------

    def raw_build(self, daemon, ctx, secret_fd, extra_options=(), secrets=None):
        """A Build call by hand with secrets=["s"] and secret-fd-0 = `secret_fd` (or `secrets`,
        [(id, fd or None)], the N-th fd as secret-fd-N): what the daemon answered ("ok" or
        "error NAME: MESSAGE")."""
        secrets = secrets if secrets is not None else [("s", secret_fd)]
        with open(os.path.join(ctx, "Dockerfile")) as f:
            dockerfile = f.read()
        context = os.open(ctx, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        progress_read, progress_write = os.pipe()
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        options = [["dockerfile", ["ay", list(dockerfile.encode())]], ["context-type", ["s", "dir"]],
                   ["secrets", ["as", [id for id, _ in secrets]]]] + list(extra_options)
        options += [[f"secret-fd-{n}", ["h", fd]] for n, (_, fd) in enumerate(secrets) if fd is not None]
        secret_fds = [fd for _, fd in secrets if fd is not None]
        # Progress is read, so that the daemon never waits on a full pipe.
        reader = threading.Thread(target=lambda: [None for _ in iter(lambda: os.read(progress_read, 1 << 16), b"")])
        reader.start()
        try:
            call = subprocess.run([sys.executable, RAW_CALL, daemon.socket, "Build", "a{sv}hhh",
                                   json.dumps([options, context, progress_write, null])],
                                  pass_fds=secret_fds + [context, progress_write, null], capture_output=True, text=True,
                                  timeout=120)
        finally:
            for fd in (context, progress_write, null):
                os.close(fd)
            reader.join(30)
            os.close(progress_read)
        return (call.stdout + call.stderr).strip()

    def held_by(self, pid, wanted):
        """Which of `wanted` (what /proc/PID/fd/N links read: "/path", "socket:[ino]", ...) an fd of
        `pid` is, or starts with."""
        held = []
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if any(link == w or link.startswith(w) for w in wanted):
                held.append(link)
        return held

    def test_fds_that_are_not_a_regular_file_or_a_sealed_memfd_are_refused_by_kind(self):
        d = self.daemon()
        ctx = self.context(f"FROM {BASE}\nRUN --mount=type=secret,id=s,required cat /run/secrets/s > /value\n")
        scratch = self.path("fds")
        os.makedirs(scratch)
        write(os.path.join(scratch, "file"), "value in a file")
        os.mkfifo(os.path.join(scratch, "fifo"))
        first, second = socket.socketpair()
        pipe_read, pipe_write = os.pipe()
        unsealed = os.memfd_create("kbuild-test-unsealed")
        os.write(unsealed, b"unsealed value")
        cases = {
            "a directory": os.open(scratch, os.O_RDONLY | os.O_DIRECTORY),
            "an O_PATH fd": os.open(os.path.join(scratch, "file"), os.O_PATH),
            "a pipe or FIFO": os.open(os.path.join(scratch, "fifo"), os.O_RDONLY | os.O_NONBLOCK),
            "a socket": first.fileno(),
            "a pipe": pipe_read,
            "a device": os.open("/dev/null", os.O_RDONLY),
            "a memfd that is not sealed against writes": unsealed,
            "not open for reading": os.open(os.path.join(scratch, "file"), os.O_WRONLY),
        }
        expected_kind = {"a pipe": "a pipe or FIFO"}
        # What the daemon would hold if it kept a passed fd.
        ours = [scratch, "/memfd:kbuild-test-unsealed", f"socket:[{os.fstat(first.fileno()).st_ino}]",
                f"pipe:[{os.fstat(pipe_read).st_ino}]"]
        mounts_dir = os.path.join(d.root, "mounts")
        images_before = d.names()
        try:
            for kind, fd in cases.items():
                started = time.monotonic()
                said = self.raw_build(d, ctx, fd)
                self.assertLess(time.monotonic() - started, 30, f"{kind}: the refusal took long")
                self.assertTrue(said.startswith("error "), f"{kind}: {said}")
                self.assertIn(f"secret s: the fd is {expected_kind.get(kind, kind)}", said)
                leftovers = os.listdir(mounts_dir) if os.path.isdir(mounts_dir) else []
                self.assertEqual(leftovers, [], f"{kind}: left in {mounts_dir}")
                self.assertEqual(mount_points_under(d.root), [], f"{kind}: left mounted")
                self.assertTrue(wait_until(lambda: not self.held_by(d.process.pid, ours), 5),
                                f"{kind}: kbuildd still holds {self.held_by(d.process.pid, ours)}")
            self.assertEqual(d.names(), images_before)

            # The same call with a regular file or a sealed memfd builds.
            regular = os.open(os.path.join(scratch, "file"), os.O_RDONLY)
            sealed = os.memfd_create("kbuild-test-sealed", os.MFD_ALLOW_SEALING)
            os.write(sealed, b"sealed value")
            fcntl.fcntl(sealed, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
            for what, fd, value in (("file", regular, b"value in a file"), ("memfd", sealed, b"sealed value")):
                # A step of its own: the value is not in the key, the first one's would be a cache hit.
                taken = self.context(f"FROM {BASE}\nRUN --mount=type=secret,id=s,required cat /run/secrets/s > /value"
                                     f" && echo {what}\n", name=f"ctx-{what}")
                output = [["type", "image"], ["name", f"raw:{what}"]]
                said = self.raw_build(d, taken, fd, [["outputs", ["aa{ss}", [output]]]])
                self.assertEqual(said, "ok", what)
                files, _ = self.saved(d, f"raw:{what}")
                self.assertEqual(files["value"], value, what)
                os.close(fd)
        finally:
            for kind, fd in cases.items():
                if kind != "a socket":
                    os.close(fd)
            first.close()
            second.close()
            os.close(pipe_write)

    def test_a_secret_without_its_fd_without_an_id_or_given_twice_is_refused(self):
        d = self.daemon()
        ctx = self.context(f"FROM {BASE}\nRUN --mount=type=secret,id=s,required cat /run/secrets/s > /value\n")
        path = self.secret_file("s", "a value")
        fds = [os.open(path, os.O_RDONLY) for _ in range(2)]
        try:
            cases = {
                "secret t: no secret-fd-1 given": [("s", fds[0]), ("t", None)],
                "secret s is given twice": [("s", fds[0]), ("s", fds[1])],
                "secret missing ID": [("", fds[0])],
            }
            for expected, secrets in cases.items():
                said = self.raw_build(d, ctx, None, secrets=secrets)
                self.assertTrue(said.startswith("error "), f"{secrets}: {said}")
                self.assertIn(expected, said)
            self.assertEqual(d.names(), {f"{BASE}:latest"})
        finally:
            for fd in fds:
                os.close(fd)

    # -- 10. exported caches ---------------------------------------------------------------------

    def test_exported_caches_hold_no_secret(self):
        file_value, env_value = random_secret("cache-file"), random_secret("cache-env")
        marker = random_secret("cache-marker")
        registry = DistributionRegistry(self.workdir, self.name())
        self.registries.append(registry)
        self.addCleanup(registry.stop)
        d = self.daemon()
        ctx = self.context(f"""\
FROM {BASE}
RUN --mount=type=secret,id=f {uses_file('/run/secrets/f', file_value)} && echo used-f > /used-f
RUN --mount=type=secret,id=e,env=SECRET_E {uses_variable('SECRET_E', env_value)} && echo used-e > /used-e
RUN --mount=type=secret,id=f echo {marker} > /marker
""")
        local = self.path("local-cache")
        ref = f"{registry.host}/t/secrets:buildcache"
        secret_args = ["--secret", f"id=f,src={self.secret_file('f', file_value)}", "--secret", "id=e,env=SECRET_E"]
        self.build(d, ctx, "-t", "cached", *secret_args, "--cache-to", f"type=registry,ref={ref},mode=max",
                   env={"SECRET_E": env_value})
        self.build(d, ctx, "-t", "cached", *secret_args, "--cache-to", f"type=local,dest={local},mode=max",
                   env={"SECRET_E": env_value})
        self.assertTrue(os.path.isfile(os.path.join(local, "index.json")), os.listdir(local))

        # What skopeo fetches from the registry, and the registry's own storage.
        fetched = self.path("skopeo-dir")
        skopeo_env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        skopeo_env["REGISTRY_AUTH_FILE"] = self.path("skopeo-auth.json")
        write(skopeo_env["REGISTRY_AUTH_FILE"], "{}")
        run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{ref}", f"dir:{fetched}"], env=skopeo_env)
        storage = os.path.join(registry.dir, "storage")
        for what, root in (("the registry's storage", storage), ("skopeo's copy", fetched),
                           ("the local cache", local)):
            self.assertTrue(files_holding(root, marker), f"{what}: the search misses the marker layer")
            for value in (file_value, env_value):
                self.assertEqual(files_holding(root, value), {}, f"{what} holds the secret")
        blobs = [n for n in os.listdir(fetched) if len(n) == 64]
        self.assertGreaterEqual(len(blobs), 3, f"skopeo fetched only {os.listdir(fetched)}")


def main():
    return suite.main("secrets", SecretsTest, needs_root="they run root daemons", harness=harness)


if __name__ == "__main__":
    sys.exit(main())
